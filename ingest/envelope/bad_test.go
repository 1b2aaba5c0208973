package envelope

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// TestBadInputs: every kind of bad envelope gives its named error, from Open
// or at the latest from the content reader, and never io.EOF.
func TestBadInputs(t *testing.T) {
	k := getKeys(t)
	content := []byte("correct horse battery staple")
	m := testManifest(content)
	user := m.UserID
	id := NewUploadID()
	sealed := seal(t, k.ingest, m, content)
	good := bind(t, k.courier, user, id, sealed)
	if _, _, err := openAll(good, params(k)); err != nil {
		t.Fatal(err)
	}
	sealedWith := func(mm Manifest, c []byte) []byte {
		return bind(t, k.courier, user, id, sealRaw(t, k.ingest, rawItem(rawManifest(mm), c)))
	}
	withManifest := func(f func(*Manifest)) []byte {
		mm := testManifest(content)
		f(&mm)
		return sealedWith(mm, content)
	}
	hdr := headerFor(user, id, sealed)
	sigStart := len(hdr.encode()) + 2

	cases := []struct {
		name   string
		env    []byte
		params func(*OpenParams)
		want   error
	}{
		{name: "unknown courier", env: bind(t, k.rogue, user, id, sealed), want: ErrUnknownCourier},
		{name: "no courier pinned", env: good, params: func(p *OpenParams) { p.Couriers = nil }, want: ErrUnknownCourier},
		{name: "forged header (upload id changed after signing)", env: func() []byte {
			e := bytes.Clone(good)
			copy(e[len(EnvelopeMagic)+1+2+len(user):], bytes.Repeat([]byte{0xaa}, UploadIDSize))
			return e
		}(), want: ErrBadSignature},
		{name: "forged signature (rogue key, pinned courier's key id)", env: func() []byte {
			// The rogue signs the header, then its issuer subpackets are
			// rewritten to name the pinned courier.
			e := bind(t, k.rogue, user, id, sealed)
			e = bytes.ReplaceAll(e, k.rogue.PrimaryKey.Fingerprint, k.courier.PrimaryKey.Fingerprint)
			return e
		}(), want: ErrBadSignature},
		{name: "signature swapped from another envelope", env: func() []byte {
			other := bind(t, k.courier, user, NewUploadID(), sealed)
			e := bytes.Clone(good[:sigStart])
			return append(e, other[sigStart:]...)
		}(), want: ErrBadSignature},
		{name: "replayed upload id", env: good, params: func(p *OpenParams) {
			p.Seen = func(u string) (bool, error) { return u == id, nil }
		}, want: ErrReplay},
		{name: "replay check unavailable", env: good, params: func(p *OpenParams) {
			p.Seen = func(string) (bool, error) { return false, errors.New("catalog closed") }
		}, want: errCatalog},
		{name: "no replay check", env: good, params: func(p *OpenParams) { p.Seen = nil }, want: ErrReplay},
		{name: "wrong ingest key", env: bind(t, k.courier, user, id, seal(t, k.otherIngest, m, content)), want: ErrWrongIngestKey},
		{name: "not encrypted", env: func() []byte {
			var b bytes.Buffer
			w, _ := packet.SerializeLiteral(nopCloser{&b}, true, "", 0)
			w.Write(rawItem(rawManifest(m), content))
			w.Close()
			return bindRaw(t, k.courier, headerFor(user, id, b.Bytes()), b.Bytes())
		}(), want: ErrWrongIngestKey},
		{name: "sealed to a passphrase", env: func() []byte {
			var b bytes.Buffer
			w, err := openpgp.SymmetricallyEncrypt(&b, []byte("pw"), nil, sealConfig())
			if err != nil {
				t.Fatal(err)
			}
			w.Write(rawItem(rawManifest(m), content))
			w.Close()
			return bindRaw(t, k.courier, headerFor(user, id, b.Bytes()), b.Bytes())
		}(), want: ErrWrongIngestKey},
		{name: "truncated in magic", env: good[:4], want: ErrTruncated},
		{name: "truncated in signature", env: good[:sigStart+10], want: ErrTruncated},
		{name: "truncated in PKESK", env: good[:len(good)-len(sealed)+20], want: ErrTruncated},
		{name: "truncated in content", env: good[:len(good)-30], want: ErrTruncated},
		{name: "truncated last byte", env: good[:len(good)-1], want: ErrTruncated},
		{name: "empty", env: nil, want: ErrTruncated},
		{name: "trailing data", env: append(bytes.Clone(good), 0), want: ErrFormat},
		{name: "bad magic", env: append([]byte("COFFRENX"), good[8:]...), want: ErrFormat},
		{name: "future version", env: func() []byte { e := bytes.Clone(good); e[8] = 2; return e }(), want: ErrFormat},
		{name: "sealed part over limit", env: good, params: func(p *OpenParams) { p.Limits.MaxSealed = int64(len(sealed) - 1) }, want: ErrTooLarge},
		{name: "declared sealed length huge", env: bindRaw(t, k.courier, header{userID: user, sealedLen: 1 << 62}, sealed), want: ErrTooLarge},
		{name: "content over limit", env: good, params: func(p *OpenParams) { p.Limits.MaxContent = int64(len(content) - 1) }, want: ErrTooLarge},
		{name: "user id over limit in header", env: bindRaw(t, k.courier, headerFor(strings.Repeat("u", MaxUserID+1), id, sealed), sealed), want: ErrTooLarge},
		{name: "user id over limit in manifest", env: withManifest(func(m *Manifest) { m.UserID = strings.Repeat("u", MaxUserID+1) }), want: ErrTooLarge},
		{name: "item id over limit", env: withManifest(func(m *Manifest) { m.ItemID = strings.Repeat("i", MaxItemID+1) }), want: ErrTooLarge},
		{name: "note over limit", env: withManifest(func(m *Manifest) { m.Beneficiaries[0].Note = strings.Repeat("n", MaxDesignationNote+1) }), want: ErrTooLarge},
		{name: "too many beneficiaries", env: withManifest(func(m *Manifest) {
			m.Beneficiaries = make([]Designation, MaxBeneficiaries+1)
			for i := range m.Beneficiaries {
				m.Beneficiaries[i].Name = "x"
			}
		}), want: ErrTooLarge},
		{name: "manifest length over limit", env: bind(t, k.courier, user, id, sealRaw(t, k.ingest, append(itemHeader(nil)[:len(ItemMagic)+1], 0, 1, 0, 1))), want: ErrTooLarge},
		{name: "bad kind", env: withManifest(func(m *Manifest) { m.Kind = "Seed Phrase" }), want: ErrFormat},
		{name: "version zero", env: withManifest(func(m *Manifest) { m.Version = 0 }), want: ErrFormat},
		{name: "control character in name", env: withManifest(func(m *Manifest) { m.Beneficiaries[0].Name = "Bob\x1b[2J" }), want: ErrFormat},
		{name: "bad item magic", env: bind(t, k.courier, user, id, sealRaw(t, k.ingest, append([]byte("COFFREXX"), rawItem(rawManifest(m), content)[8:]...))), want: ErrFormat},
		{name: "trailing bytes in manifest", env: bind(t, k.courier, user, id, sealRaw(t, k.ingest, rawItem(append(rawManifest(m), 0), content))), want: ErrFormat},
		{name: "content digest mismatch", env: withManifest(func(m *Manifest) { m.Digest[31] ^= 1 }), want: ErrDigestMismatch},
		{name: "sealed digest mismatch in signed header", env: func() []byte {
			h := headerFor(user, id, sealed)
			h.sealedDigest[0] ^= 1
			return bindRaw(t, k.courier, h, sealed)
		}(), want: ErrDigestMismatch},
		{name: "MDC broken, header re-signed", env: func() []byte {
			s := bytes.Clone(sealed)
			s[len(s)-3] ^= 1 // inside the MDC hash
			return bind(t, k.courier, user, id, s)
		}(), want: ErrDigestMismatch},
		{name: "user mismatch", env: bind(t, k.courier, "mallory@example.org", id, sealed), want: ErrUserMismatch},
		{name: "content shorter than manifest", env: sealedWith(m, content[:10]), want: ErrFormat},
		{name: "content longer than manifest", env: sealedWith(m, append(bytes.Clone(content), make([]byte, 1<<20)...)), want: ErrTooLarge},
		{name: "compressed bomb longer than manifest", env: bind(t, k.courier, user, id, sealBomb(t, k.ingest, rawItem(rawManifest(m), content), 64<<20)), want: ErrTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := params(k)
			if c.params != nil {
				c.params(&p)
			}
			up, got, err := openAll(c.env, p)
			if err == nil {
				t.Fatalf("accepted (%d content bytes)", len(got))
			}
			if up != nil && int64(len(got)) > up.Manifest.Size {
				t.Fatalf("content reader returned %d bytes, manifest says %d", len(got), up.Manifest.Size)
			}
			if c.want == errCatalog {
				if errName(err) != "other" || !strings.Contains(err.Error(), "catalog closed") {
					t.Fatalf("got %v", err)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v (%s), want %v", err, errName(err), c.want)
			}
			if !strings.HasPrefix(err.Error(), "envelope: ") {
				t.Fatalf("error without package prefix: %v", err)
			}
			// Errors never carry plaintext: neither content nor the
			// sealed manifest's other fields.
			for _, secret := range []string{string(content), "Bob Martin", "my sister", "mallory@example.org\"", "item-1"} {
				if strings.Contains(err.Error(), secret) && !(c.name == "user mismatch" && secret == "mallory@example.org\"") {
					t.Fatalf("error carries plaintext %q: %v", secret, err)
				}
			}
		})
	}
}

var errCatalog = errors.New("catalog error passed through")

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// sealBomb seals item followed by extra zero bytes, deflate-compressed
// inside the encryption (as GnuPG does by default).
func sealBomb(t testing.TB, to *openpgp.Entity, item []byte, extra int64) []byte {
	t.Helper()
	var b bytes.Buffer
	sub, _ := to.EncryptionKey(to.PrimaryKey.CreationTime)
	key := make([]byte, 32)
	if err := packet.SerializeEncryptedKeyAEAD(&b, sub.PublicKey, packet.CipherAES256, false, key, nil); err != nil {
		t.Fatal(err)
	}
	enc, err := packet.SerializeSymmetricallyEncrypted(&b, packet.CipherAES256, false, packet.CipherSuite{}, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	comp, err := packet.SerializeCompressed(enc, packet.CompressionZIP, &packet.CompressionConfig{Level: flate.BestSpeed})
	if err != nil {
		t.Fatal(err)
	}
	lit, err := packet.SerializeLiteral(comp, true, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	lit.Write(item)
	if _, err := io.Copy(lit, io.LimitReader(zeros{}, extra)); err != nil {
		t.Fatal(err)
	}
	if err := lit.Close(); err != nil {
		t.Fatal(err)
	}
	if b.Len() > 1<<20 {
		t.Fatalf("bomb is %d bytes", b.Len())
	}
	return b.Bytes()
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestBitFlips flips one bit in every byte of a small envelope: each must be
// rejected (by Open or by the content reader), never accepted, never panic.
func TestBitFlips(t *testing.T) {
	k := getKeys(t)
	content := []byte("tiny secret")
	m := testManifest(content)
	sealed := seal(t, k.ingest, m, content)
	good := bind(t, k.courier, m.UserID, NewUploadID(), sealed)
	sealedLen := len(sealed)
	sigAt := len(EnvelopeMagic) + 1 + 2 + len(m.UserID) + UploadIDSize + 8 + 32 + 2
	counts := map[string]int{}
	for i := range good {
		env := bytes.Clone(good)
		env[i] ^= 1 << (i % 8)
		_, _, err := openAll(env, params(k))
		if err == nil {
			t.Errorf("flip at byte %d bit %d accepted (signature starts at %d, sealed part at %d)", i, i%8, sigAt, len(good)-sealedLen)
			continue
		}
		counts[errName(err)]++
	}
	if counts["other"] != 0 {
		t.Errorf("%d flips gave an error outside the named ones", counts["other"])
	}
	t.Logf("%d positions, errors: %v", len(good), counts)
}

func TestSealedDigestIsOverCiphertext(t *testing.T) {
	// The signed digest is the SHA-256 of the sealed bytes exactly.
	k := getKeys(t)
	content := []byte("x")
	sealed := seal(t, k.ingest, testManifest(content), content)
	env := bind(t, k.courier, "alice@example.org", NewUploadID(), sealed)
	d := sha256.Sum256(sealed)
	if !bytes.Contains(env[:len(env)-len(sealed)], d[:]) || !bytes.Equal(env[len(env)-len(sealed):], sealed) {
		t.Fatal("envelope does not carry the sealed digest and the sealed bytes")
	}
}
