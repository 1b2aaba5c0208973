package envelope

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

var (
	vectorKeysOnce           sync.Once
	vectorIngest, vectorCour openpgp.EntityList
)

func vectorKeys(t *testing.T) (openpgp.EntityList, openpgp.EntityList) {
	vectorKeysOnce.Do(func() {
		b, err := os.ReadFile(filepath.Join(vectorDir, "vectors.json"))
		if err != nil {
			t.Fatal(err)
		}
		var vf vectorFile
		if err := json.Unmarshal(b, &vf); err != nil {
			t.Fatal(err)
		}
		vectorIngest = readKeyFile(t, vf.IngestKey)
		for _, c := range vf.Couriers {
			vectorCour = append(vectorCour, readKeyFile(t, c)...)
		}
	})
	if vectorIngest == nil {
		t.Fatal("vector keys missing")
	}
	return vectorIngest, vectorCour
}

// FuzzOpen feeds arbitrary bytes to Open with the vector keys. It must
// never panic, never hand out more content than the manifest declares, and
// when it accepts, the content must match the manifest's size and digest.
func FuzzOpen(f *testing.F) {
	f.Add([]byte(EnvelopeMagic + "\x01"))
	f.Fuzz(func(t *testing.T, env []byte) {
		ingest, couriers := vectorKeys(t)
		p := OpenParams{
			IngestKeys: ingest,
			Couriers:   couriers,
			Seen:       func(string) (bool, error) { return false, nil },
			Limits:     Limits{MaxContent: 1 << 20, MaxSealed: 2 << 20},
		}
		up, err := Open(bytes.NewReader(env), p)
		if err != nil {
			if up != nil {
				t.Fatal("upload with error")
			}
			return
		}
		defer up.Close()
		content, err := io.ReadAll(io.LimitReader(up.Content, up.Manifest.Size+1))
		if int64(len(content)) > up.Manifest.Size {
			t.Fatalf("content reader returned %d bytes, manifest says %d", len(content), up.Manifest.Size)
		}
		if err != nil {
			return
		}
		if int64(len(content)) != up.Manifest.Size || sha256.Sum256(content) != up.Manifest.Digest || up.UserID != up.Manifest.UserID {
			t.Fatal("accepted content that does not match its manifest")
		}
	})
}

// FuzzManifest: ParseManifest never panics, and what it accepts re-encodes
// to the same bytes (canonical encoding).
func FuzzManifest(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			return
		}
		re, err := m.MarshalBinary()
		if err != nil {
			t.Fatalf("parsed manifest does not re-encode: %v", err)
		}
		if !bytes.Equal(re, b) {
			t.Fatalf("non-canonical manifest accepted:\n in %x\nout %x", b, re)
		}
	})
}

// fuzzKey is the fixed AES-256 session key of FuzzDecrypted.
var fuzzKey = bytes.Repeat([]byte{0x42}, 32)

// FuzzDecrypted drives what follows the session key — the SEIPDv1 decrypter
// with its MDC check, the inner packet parser and the item parser — without
// public-key operations (too slow under fuzzing instrumentation). Accepted
// input must be consistent: content of the declared size, MDC verified.
func FuzzDecrypted(f *testing.F) {
	f.Fuzz(func(t *testing.T, ct []byte) {
		q := newStopper()
		defer q.stop()
		mr, err := newMDCReader(bytes.NewReader(ct), packet.CipherAES256, fuzzKey, q, int64(len(ct)))
		if err != nil {
			t.Fatal(err)
		}
		body, err := literalBody(mr)
		if err != nil {
			return
		}
		m, err := readItemHeader(body)
		if err != nil {
			return
		}
		content, err := io.ReadAll(io.LimitReader(body, 1<<20))
		if err != nil {
			return
		}
		if _, err := io.Copy(io.Discard, mr); err != nil {
			return
		}
		if !mr.eof {
			t.Fatal("decrypter reached EOF without checking the MDC")
		}
		_ = m
		_ = content
	})
}

// sealFixed encrypts plaintext packets (already framed) as a SEIPDv1 body
// under fuzzKey: the input FuzzDecrypted takes.
func sealFixed(t testing.TB, item []byte) []byte {
	var b bytes.Buffer
	enc, err := packet.SerializeSymmetricallyEncrypted(&b, packet.CipherAES256, false, packet.CipherSuite{}, fuzzKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	lit, err := packet.SerializeLiteral(enc, true, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	lit.Write(item)
	if err := lit.Close(); err != nil {
		t.Fatal(err)
	}
	// Strip the SEIPD packet header and version byte: FuzzDecrypted takes
	// the packet body after the version.
	pr := packet.NewReader(&b)
	p, err := pr.Next()
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(p.(*packet.SymmetricallyEncrypted).Contents)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func TestDecryptedRoundTrip(t *testing.T) {
	content := []byte("fuzz me")
	m := testManifest(content)
	item, _ := EncodeItem(m)
	ct := sealFixed(t, append(item, content...))
	q := newStopper()
	defer q.stop()
	mr, err := newMDCReader(bytes.NewReader(ct), packet.CipherAES256, fuzzKey, q, int64(len(ct)))
	if err != nil {
		t.Fatal(err)
	}
	body, err := literalBody(mr)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readItemHeader(body)
	if err != nil || got.ItemID != m.ItemID {
		t.Fatalf("%v %+v", err, got)
	}
	rest, err := io.ReadAll(body)
	if err != nil || !bytes.Equal(rest, content) {
		t.Fatalf("%v %q", err, rest)
	}
	if _, err := io.Copy(io.Discard, mr); err != nil || !mr.eof {
		t.Fatalf("MDC: %v", err)
	}
	// Every single-bit flip in the ciphertext is caught by the MDC (or
	// earlier), never accepted.
	for i := range ct {
		bad := bytes.Clone(ct)
		bad[i] ^= 0x10
		q := newStopper()
		mr, _ := newMDCReader(bytes.NewReader(bad), packet.CipherAES256, fuzzKey, q, int64(len(bad)))
		_, err := io.Copy(io.Discard, mr)
		q.stop()
		if err == nil {
			t.Fatalf("flip at %d passed the MDC", i)
		}
	}
}
