package envelope

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// testKeys are generated once per test binary (P-521 generation is slow).
type testKeys struct {
	ingest, otherIngest       *openpgp.Entity
	courier, courierEd, rogue *openpgp.Entity
}

var (
	keysOnce sync.Once
	keys     testKeys
	keysErr  error
)

func getKeys(t testing.TB) testKeys {
	t.Helper()
	keysOnce.Do(func() {
		var k testKeys
		if k.ingest, keysErr = GenerateIngestKey("test ingest"); keysErr != nil {
			return
		}
		if k.otherIngest, keysErr = GenerateIngestKey("other ingest"); keysErr != nil {
			return
		}
		if k.courier, keysErr = GenerateCourierKey("test courier", CourierP521); keysErr != nil {
			return
		}
		if k.courierEd, keysErr = GenerateCourierKey("test courier ed25519", CourierEd25519); keysErr != nil {
			return
		}
		if k.rogue, keysErr = GenerateCourierKey("rogue courier", CourierP521); keysErr != nil {
			return
		}
		keys = k
	})
	if keysErr != nil {
		t.Fatal(keysErr)
	}
	return keys
}

func params(k testKeys) OpenParams {
	return OpenParams{
		IngestKeys: openpgp.EntityList{k.ingest},
		Couriers:   openpgp.EntityList{k.courier, k.courierEd},
		Seen:       func(string) (bool, error) { return false, nil },
	}
}

func testManifest(content []byte) Manifest {
	return Manifest{
		UserID:      "alice@example.org",
		ItemID:      "item-1",
		Version:     1,
		Kind:        "seed-phrase",
		ContentType: "text/plain; charset=utf-8",
		Size:        int64(len(content)),
		Digest:      sha256.Sum256(content),
		Beneficiaries: []Designation{
			{Name: "Bob Martin", Email: "bob@example.org", Share: 6000},
			{Fingerprint: "0123456789abcdef0123456789abcdef01234567", Share: 4000, Note: "my sister\nin Lyon"},
		},
	}
}

// seal seals content with m to the key and returns the sealed part.
func seal(t testing.TB, to *openpgp.Entity, m Manifest, content []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := SealItem(&b, to, m, bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// sealRaw encrypts arbitrary plaintext with the upload profile (to build
// malformed items the API refuses to make).
func sealRaw(t testing.TB, to *openpgp.Entity, plaintext []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := sealWriter(&b, to)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(plaintext)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// rawItem builds an item plaintext from an encoded manifest and content.
func rawItem(manifest, content []byte) []byte {
	return append(itemHeader(manifest), content...)
}

// rawManifest encodes m without validation.
func rawManifest(m Manifest) []byte {
	var b bytes.Buffer
	b.WriteByte(ManifestVersion)
	putStr(&b, m.UserID)
	putStr(&b, m.ItemID)
	b.Write(binary.BigEndian.AppendUint32(nil, m.Version))
	putStr(&b, m.Kind)
	putStr(&b, m.ContentType)
	b.Write(binary.BigEndian.AppendUint64(nil, uint64(m.Size)))
	b.Write(m.Digest[:])
	b.Write(binary.BigEndian.AppendUint16(nil, uint16(len(m.Beneficiaries))))
	for _, d := range m.Beneficiaries {
		putStr(&b, d.Name)
		putStr(&b, d.Email)
		putStr(&b, d.Fingerprint)
		b.Write(binary.BigEndian.AppendUint16(nil, d.Share))
		putStr(&b, d.Note)
	}
	return b.Bytes()
}

func bind(t testing.TB, courier *openpgp.Entity, user, uploadID string, sealed []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Bind(&b, courier, user, uploadID, bytes.NewReader(sealed)); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// bindRaw builds an envelope around any sealed bytes with a header the test
// controls (no checks on the sealed part).
func bindRaw(t testing.TB, courier *openpgp.Entity, hd header, sealed []byte) []byte {
	t.Helper()
	signed := hd.encode()
	var sig bytes.Buffer
	if err := openpgp.DetachSign(&sig, courier, bytes.NewReader(signed), signConfig()); err != nil {
		t.Fatal(err)
	}
	out := append(signed, binary.BigEndian.AppendUint16(nil, uint16(sig.Len()))...)
	out = append(out, sig.Bytes()...)
	return append(out, sealed...)
}

func headerFor(user, uploadID string, sealed []byte) header {
	id, _ := parseUploadID(uploadID)
	return header{userID: user, uploadID: id, sealedLen: uint64(len(sealed)), sealedDigest: sha256.Sum256(sealed)}
}

// openAll opens env and reads its content; err is the first error of either.
func openAll(env []byte, p OpenParams) (*Upload, []byte, error) {
	up, err := Open(bytes.NewReader(env), p)
	if err != nil {
		return nil, nil, err
	}
	content, err := io.ReadAll(up.Content)
	if err != nil {
		return up, content, err
	}
	return up, content, nil
}

// errName is the name of the sentinel err wraps ("ok" for nil).
func errName(err error) string {
	if err == nil {
		return "ok"
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			return s.name
		}
	}
	return "other"
}

var sentinels = []struct {
	name string
	err  error
}{
	{"ErrUnknownCourier", ErrUnknownCourier},
	{"ErrBadSignature", ErrBadSignature},
	{"ErrReplay", ErrReplay},
	{"ErrWrongIngestKey", ErrWrongIngestKey},
	{"ErrTruncated", ErrTruncated},
	{"ErrTooLarge", ErrTooLarge},
	{"ErrDigestMismatch", ErrDigestMismatch},
	{"ErrUserMismatch", ErrUserMismatch},
	{"ErrFormat", ErrFormat},
}

func serializeLiteral(w io.Writer) (io.WriteCloser, error) {
	return packet.SerializeLiteral(nopCloser{w}, true, "", 0)
}
