package envelope

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

func TestRoundTrip(t *testing.T) {
	k := getKeys(t)
	content := []byte("abandon ability able about above absent absorb abstract absurd abuse access accident")
	m := testManifest(content)
	for _, c := range []struct {
		name    string
		courier *openpgp.Entity
	}{{"p521", k.courier}, {"ed25519", k.courierEd}} {
		t.Run(c.name, func(t *testing.T) {
			id := NewUploadID()
			env := bind(t, c.courier, m.UserID, id, seal(t, k.ingest, m, content))
			var asked []string
			p := params(k)
			p.Seen = func(u string) (bool, error) { asked = append(asked, u); return false, nil }
			up, got, err := openAll(env, p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, content) {
				t.Fatalf("content differs")
			}
			if up.UploadID != id || up.UserID != m.UserID || len(asked) != 1 || asked[0] != id {
				t.Fatalf("upload id %q user %q seen calls %q", up.UploadID, up.UserID, asked)
			}
			if want := c.courier.PrimaryKey.Fingerprint; up.CourierFingerprint != strings.ToLower(hexs(want)) {
				t.Fatalf("courier fingerprint %s", up.CourierFingerprint)
			}
			if up.IngestFingerprint != hexs(k.ingest.PrimaryKey.Fingerprint) {
				t.Fatalf("ingest fingerprint %s", up.IngestFingerprint)
			}
			if up.Manifest.ItemID != m.ItemID || up.Manifest.Digest != m.Digest || len(up.Manifest.Beneficiaries) != 2 ||
				up.Manifest.Beneficiaries[1] != m.Beneficiaries[1] {
				t.Fatalf("manifest %+v", up.Manifest)
			}
			// Reading again after EOF keeps returning EOF.
			if n, err := up.Content.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("read after EOF: %d %v", n, err)
			}
		})
	}
}

func TestSealComputesDigestFromSeeker(t *testing.T) {
	k := getKeys(t)
	content := bytes.Repeat([]byte("x"), 1000)
	m := testManifest(content)
	m.Size, m.Digest = 0, [32]byte{}
	var sealed bytes.Buffer
	if err := SealItem(&sealed, k.ingest, m, bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	up, got, err := openAll(bind(t, k.courier, m.UserID, NewUploadID(), sealed.Bytes()), params(k))
	if err != nil || !bytes.Equal(got, content) || up.Manifest.Size != 1000 || up.Manifest.Digest != sha256.Sum256(content) {
		t.Fatalf("err %v size %d", err, len(got))
	}
	// A plain reader without digest is refused.
	if err := SealItem(io.Discard, k.ingest, m, io.MultiReader(strings.NewReader("x"))); !errors.Is(err, ErrFormat) {
		t.Fatalf("want ErrFormat, got %v", err)
	}
	// Nor is a pipe (an *os.File whose Seek fails).
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	pw.Close()
	if err := SealItem(io.Discard, k.ingest, m, pr); !errors.Is(err, ErrFormat) {
		t.Fatalf("pipe: want ErrFormat, got %v", err)
	}
	// Declared size/digest that do not match the content are refused.
	m2 := testManifest(content)
	if err := SealItem(io.Discard, k.ingest, m2, bytes.NewReader(content[:999])); !errors.Is(err, ErrTruncated) {
		t.Fatalf("short content: %v", err)
	}
	if err := SealItem(io.Discard, k.ingest, m2, bytes.NewReader(append(content, 'y'))); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("long content: %v", err)
	}
	m2.Digest[0] ^= 1
	if err := SealItem(io.Discard, k.ingest, m2, bytes.NewReader(content)); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("wrong digest: %v", err)
	}
}

// TestSealProfile checks the packets SealItem writes: PKESK v3 (ECDH) to the
// v4 subkey, SEIPD v1 with MDC, AES-256 session key, an uncompressed binary
// literal data packet, nothing else.
func TestSealProfile(t *testing.T) {
	k := getKeys(t)
	content := []byte("hello")
	sealed := seal(t, k.ingest, testManifest(content), content)
	pr := packet.NewReader(bytes.NewReader(sealed))
	p, err := pr.Next()
	if err != nil {
		t.Fatal(err)
	}
	ek, ok := p.(*packet.EncryptedKey)
	if !ok || ek.Version != 3 || ek.Algo != packet.PubKeyAlgoECDH {
		t.Fatalf("first packet %T %+v, want PKESK v3 ECDH", p, p)
	}
	sub, _ := k.ingest.EncryptionKey(k.ingest.PrimaryKey.CreationTime)
	if ek.KeyId != sub.PublicKey.KeyId || sub.PublicKey.Version != 4 {
		t.Fatalf("PKESK key id %x, want v4 subkey %x", ek.KeyId, sub.PublicKey.KeyId)
	}
	if err := ek.Decrypt(sub.PrivateKey, nil); err != nil {
		t.Fatal(err)
	}
	if ek.CipherFunc != packet.CipherAES256 {
		t.Fatalf("session cipher %v, want AES-256", ek.CipherFunc)
	}
	p, err = pr.Next()
	if err != nil {
		t.Fatal(err)
	}
	se, ok := p.(*packet.SymmetricallyEncrypted)
	if !ok || se.Version != 1 || !se.IntegrityProtected {
		t.Fatalf("second packet %T, want SEIPD v1", p)
	}
	dec, err := se.Decrypt(ek.CipherFunc, ek.Key)
	if err != nil {
		t.Fatal(err)
	}
	inner, err := packet.Read(dec)
	if err != nil {
		t.Fatal(err)
	}
	lit, ok := inner.(*packet.LiteralData)
	if !ok || !lit.IsBinary {
		t.Fatalf("inner packet %T, want binary literal data (no compression)", inner)
	}
	body, err := io.ReadAll(lit.Body)
	if err != nil {
		t.Fatal(err)
	}
	item, _ := EncodeItem(testManifest(content))
	if !bytes.Equal(body, append(item, content...)) {
		t.Fatalf("literal body is not the item layout")
	}
	if err := dec.Close(); err != nil {
		t.Fatalf("MDC: %v", err)
	}
	if _, err := pr.Next(); err != io.EOF {
		t.Fatalf("packet after SEIPD: %v", err)
	}
}

func TestKeys(t *testing.T) {
	k := getKeys(t)
	if k.ingest.PrimaryKey.Version != 4 || k.ingest.PrimaryKey.PubKeyAlgo != packet.PubKeyAlgoECDSA {
		t.Fatalf("ingest primary v%d algo %d", k.ingest.PrimaryKey.Version, k.ingest.PrimaryKey.PubKeyAlgo)
	}
	sub, _ := k.ingest.EncryptionKey(k.ingest.PrimaryKey.CreationTime)
	for _, pk := range []*packet.PublicKey{k.ingest.PrimaryKey, sub.PublicKey, k.courier.PrimaryKey} {
		if c, err := pk.Curve(); err != nil || c != packet.CurveNistP521 || pk.Version != 4 {
			t.Fatalf("key %X: curve %v v%d, want P-521 v4", pk.Fingerprint, c, pk.Version)
		}
	}
	if sub.PublicKey.PubKeyAlgo != packet.PubKeyAlgoECDH {
		t.Fatalf("ingest subkey algo %d", sub.PublicKey.PubKeyAlgo)
	}
	if k.courierEd.PrimaryKey.PubKeyAlgo != packet.PubKeyAlgoEdDSA {
		t.Fatalf("ed25519 courier algo %d", k.courierEd.PrimaryKey.PubKeyAlgo)
	}
	if _, err := GenerateCourierKey("x", CourierAlgo(9)); !errors.Is(err, ErrFormat) {
		t.Fatalf("unknown algo: %v", err)
	}
	// Armored export/import round trip; public export carries no secret.
	var pub, sec bytes.Buffer
	if err := WritePublicKey(&pub, k.ingest); err != nil {
		t.Fatal(err)
	}
	if err := WritePrivateKey(&sec, k.ingest); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pub.String(), "-----BEGIN PGP PUBLIC KEY BLOCK-----") || !strings.HasPrefix(sec.String(), "-----BEGIN PGP PRIVATE KEY BLOCK-----") {
		t.Fatal("armor headers")
	}
	pubs, err := ReadKeys(&pub)
	if err != nil || len(pubs) != 1 || pubs[0].PrivateKey != nil {
		t.Fatalf("read public: %v", err)
	}
	secs, err := ReadKeys(&sec)
	if err != nil || len(secs) != 1 || secs[0].PrivateKey == nil {
		t.Fatalf("read private: %v", err)
	}
	// The re-imported keys work: seal to the public, open with the secret.
	content := []byte("z")
	env := bind(t, k.courier, "alice@example.org", NewUploadID(), seal(t, pubs[0], testManifest(content), content))
	p := params(k)
	p.IngestKeys = secs
	if _, _, err := openAll(env, p); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "not a key", strings.Repeat("A", MaxKeyFile+1)} {
		if _, err := ReadKeys(strings.NewReader(bad)); err == nil {
			t.Fatalf("ReadKeys accepted %.20q", bad)
		}
	}
}

func TestUploadID(t *testing.T) {
	a, b := NewUploadID(), NewUploadID()
	if a == b || len(a) != 32 {
		t.Fatalf("%q %q", a, b)
	}
	if _, err := parseUploadID(a); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", strings.ToUpper(a), a[:31], a + "0", "g" + a[1:]} {
		if _, err := parseUploadID(bad); !errors.Is(err, ErrFormat) {
			t.Fatalf("accepted %q", bad)
		}
	}
}

func hexs(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// TestSEIPDv2Accepted: an ingest key that advertises SEIPDv2 (not ours:
// GenerateIngestKey never does) receives AEAD-encrypted messages from
// OpenPGP implementations that honour it; Open reads those too.
func TestSEIPDv2Accepted(t *testing.T) {
	k := getKeys(t)
	cfg := keyConfig(packet.PubKeyAlgoECDSA, packet.CurveNistP521)
	cfg.AEADConfig = &packet.AEADConfig{DefaultMode: packet.AEADModeOCB}
	aeadKey, err := openpgp.NewEntity("aead ingest", "", "", cfg)
	if err != nil {
		t.Fatal(err)
	}
	content := bytes.Repeat([]byte("aead "), 50000)
	m := testManifest(content)
	item, _ := EncodeItem(m)
	var sealed bytes.Buffer
	w, err := openpgp.Encrypt(&sealed, []*openpgp.Entity{aeadKey}, nil, &openpgp.FileHints{IsBinary: true}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(append(item, content...))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	pr := packet.NewReader(bytes.NewReader(sealed.Bytes()))
	pr.Next()
	if p, _ := pr.Next(); p == nil || p.(*packet.SymmetricallyEncrypted).Version != 2 {
		t.Fatalf("test setup: not SEIPDv2: %T", p)
	}
	p := params(k)
	p.IngestKeys = openpgp.EntityList{aeadKey}
	env := bind(t, k.courier, m.UserID, NewUploadID(), sealed.Bytes())
	_, got, err := openAll(env, p)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("SEIPDv2: %v", err)
	}
	// A flipped bit in the AEAD data is caught.
	bad := bytes.Clone(sealed.Bytes())
	bad[len(bad)-40] ^= 1
	if _, _, err := openAll(bind(t, k.courier, m.UserID, NewUploadID(), bad), p); err == nil {
		t.Fatal("altered SEIPDv2 accepted")
	}
}
