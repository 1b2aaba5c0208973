package envelope

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
)

var update = flag.Bool("update", false, "regenerate testdata/envelope and the fuzz seed corpora")

const vectorDir = "../../testdata/envelope"

type vectorFile struct {
	Comment   string   `json:"comment"`
	IngestKey string   `json:"ingest_key"`
	Couriers  []string `json:"couriers"`
	Vectors   []vector `json:"vectors"`
}

type vector struct {
	Name          string `json:"name"`
	File          string `json:"file"`
	Description   string `json:"description"`
	Seen          bool   `json:"seen,omitempty"`
	MaxContent    int64  `json:"max_content,omitempty"`
	Expect        string `json:"expect"`
	UserID        string `json:"user_id,omitempty"`
	UploadID      string `json:"upload_id,omitempty"`
	ItemID        string `json:"item_id,omitempty"`
	Size          int64  `json:"size,omitempty"`
	ContentSHA256 string `json:"content_sha256,omitempty"`
}

// TestVectors replays testdata/envelope: one subtest per vector, each with
// its declared outcome.
func TestVectors(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(vectorDir, "vectors.json"))
	if err != nil {
		t.Fatalf("%v (regenerate with -run TestGenerateVectors -update)", err)
	}
	var vf vectorFile
	if err := json.Unmarshal(b, &vf); err != nil {
		t.Fatal(err)
	}
	ingest := readKeyFile(t, vf.IngestKey)
	var couriers openpgp.EntityList
	for _, c := range vf.Couriers {
		couriers = append(couriers, readKeyFile(t, c)...)
	}
	if len(vf.Vectors) < 20 {
		t.Fatalf("only %d vectors", len(vf.Vectors))
	}
	for _, v := range vf.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			env, err := os.ReadFile(filepath.Join(vectorDir, v.File))
			if err != nil {
				t.Fatal(err)
			}
			p := OpenParams{
				IngestKeys: ingest,
				Couriers:   couriers,
				Seen:       func(string) (bool, error) { return v.Seen, nil },
				Limits:     Limits{MaxContent: v.MaxContent},
			}
			up, content, err := openAll(env, p)
			if got := errName(err); got != v.Expect {
				t.Fatalf("%s: got %s (%v), want %s", v.Description, got, err, v.Expect)
			}
			if v.Expect != "ok" {
				return
			}
			sum := sha256.Sum256(content)
			if up.UserID != v.UserID || up.UploadID != v.UploadID || up.Manifest.ItemID != v.ItemID ||
				int64(len(content)) != v.Size || hex.EncodeToString(sum[:]) != v.ContentSHA256 {
				t.Fatalf("opened %q %q %q %d bytes %x, want %+v", up.UserID, up.UploadID, up.Manifest.ItemID, len(content), sum, v)
			}
		})
	}
}

func readKeyFile(t *testing.T, name string) openpgp.EntityList {
	t.Helper()
	f, err := os.Open(filepath.Join(vectorDir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	el, err := ReadKeys(f)
	if err != nil {
		t.Fatal(err)
	}
	return el
}

// TestGenerateVectors rewrites testdata/envelope and the fuzz seed corpora
// with fresh keys. It only runs with -update.
func TestGenerateVectors(t *testing.T) {
	if !*update {
		return // replaying is TestVectors; regenerating needs -update
	}
	ingest, err := GenerateIngestKey("vector ingest")
	if err != nil {
		t.Fatal(err)
	}
	other, err := GenerateIngestKey("vector other ingest")
	if err != nil {
		t.Fatal(err)
	}
	courier, err := GenerateCourierKey("vector courier p521", CourierP521)
	if err != nil {
		t.Fatal(err)
	}
	courierEd, err := GenerateCourierKey("vector courier ed25519", CourierEd25519)
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := GenerateCourierKey("vector rogue courier", CourierP521)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(vectorDir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(vectorDir, "keys"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeKey := func(name string, e *openpgp.Entity, secret bool) string {
		var b bytes.Buffer
		var err error
		if secret {
			err = WritePrivateKey(&b, e)
		} else {
			err = WritePublicKey(&b, e)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(vectorDir, "keys", name), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return "keys/" + name
	}
	vf := vectorFile{
		Comment:   "Upload envelope vectors (docs/formats/envelope.md). Test keys only: never use them elsewhere. Regenerate: go test ./ingest/envelope -run TestGenerateVectors -update",
		IngestKey: writeKey("ingest.sec.asc", ingest, true),
		Couriers:  []string{writeKey("courier-p521.pub.asc", courier, false), writeKey("courier-ed25519.pub.asc", courierEd, false)},
	}
	writeKey("rogue-courier.pub.asc", rogue, false)
	writeKey("other-ingest.pub.asc", other, false)

	content := []byte("correct horse battery staple")
	m := testManifest(content)
	user := m.UserID
	add := func(name, desc, expect string, env []byte, mod func(*vector)) {
		id := ""
		if len(env) >= 27+len(user) && string(env[:8]) == EnvelopeMagic {
			var raw [UploadIDSize]byte
			copy(raw[:], env[11+len(user):])
			id = uploadIDString(raw)
		}
		v := vector{Name: name, File: name + ".env", Description: desc, Expect: expect}
		if expect == "ok" {
			v.UserID, v.UploadID, v.ItemID, v.Size = user, id, m.ItemID, m.Size
			v.ContentSHA256 = hex.EncodeToString(m.Digest[:])
		}
		if mod != nil {
			mod(&v)
		}
		if err := os.WriteFile(filepath.Join(vectorDir, v.File), env, 0o644); err != nil {
			t.Fatal(err)
		}
		vf.Vectors = append(vf.Vectors, v)
	}
	sealed := seal(t, ingest, m, content)
	id := NewUploadID()
	good := bind(t, courier, user, id, sealed)
	sigStart := len(headerFor(user, id, sealed).encode()) + 2
	withManifest := func(f func(*Manifest)) []byte {
		mm := testManifest(content)
		f(&mm)
		return bind(t, courier, user, NewUploadID(), sealRaw(t, ingest, rawItem(rawManifest(mm), content)))
	}

	add("ok-p521", "sealed by SealItem, bound by a P-521 courier", "ok", good, nil)
	add("ok-ed25519", "bound by an Ed25519 courier", "ok", bind(t, courierEd, user, NewUploadID(), sealed), nil)
	{
		g := newGnuPG(t)
		g.importKey(ingest, false)
		item, _ := EncodeItem(m)
		gs := g.run(append(item, content...), "--encrypt", "--recipient", hexs(ingest.PrimaryKey.Fingerprint), "--output", "-")
		add("ok-gnupg", "sealed by gpg --encrypt (GnuPG 2.2, default compression)", "ok", bind(t, courier, user, NewUploadID(), gs), nil)
	}
	{
		mm := testManifest(nil)
		mm.Beneficiaries = nil
		env := bind(t, courier, user, NewUploadID(), seal(t, ingest, mm, nil))
		add("ok-empty-content", "zero-byte content, no beneficiaries", "ok", env, func(v *vector) {
			v.Size, v.ContentSHA256 = 0, hex.EncodeToString(mm.Digest[:])
		})
	}
	add("unknown-courier", "signed by a courier key that is not pinned", "ErrUnknownCourier", bind(t, rogue, user, NewUploadID(), sealed), nil)
	add("forged-header", "upload id changed after signing", "ErrBadSignature", func() []byte {
		e := bytes.Clone(good)
		copy(e[11+len(user):], bytes.Repeat([]byte{0xaa}, UploadIDSize))
		return e
	}(), nil)
	add("forged-issuer", "rogue signature relabelled with the pinned courier's fingerprint", "ErrBadSignature",
		bytes.ReplaceAll(bind(t, rogue, user, NewUploadID(), sealed), rogue.PrimaryKey.Fingerprint, courier.PrimaryKey.Fingerprint), nil)
	add("swapped-signature", "signature taken from another envelope", "ErrBadSignature", func() []byte {
		o := bind(t, courier, user, NewUploadID(), sealed)
		return append(bytes.Clone(good[:sigStart]), o[sigStart:]...)
	}(), nil)
	add("replay", "upload id already in the seen-set", "ErrReplay", bind(t, courier, user, NewUploadID(), sealed), func(v *vector) { v.Seen = true })
	add("wrong-ingest-key", "sealed to another appliance's ingest key", "ErrWrongIngestKey", bind(t, courier, user, NewUploadID(), seal(t, other, m, content)), nil)
	add("truncated-header", "cut inside the signature", "ErrTruncated", good[:sigStart+20], nil)
	add("truncated-sealed", "cut inside the sealed part", "ErrTruncated", good[:len(good)-40], nil)
	add("trailing-data", "a byte after the sealed part", "ErrFormat", append(bytes.Clone(good), 0x0a), nil)
	add("bad-magic", "not an envelope", "ErrFormat", append([]byte("COFFRENX"), good[8:]...), nil)
	add("content-over-limit", "content larger than the appliance's MaxContent", "ErrTooLarge", bind(t, courier, user, NewUploadID(), sealed), func(v *vector) { v.MaxContent = 16 })
	add("user-id-too-long", "manifest user id over 128 bytes", "ErrTooLarge", withManifest(func(m *Manifest) { m.UserID = strings.Repeat("u", MaxUserID+1) }), nil)
	add("too-many-beneficiaries", "33 designations", "ErrTooLarge", withManifest(func(m *Manifest) {
		m.Beneficiaries = make([]Designation, MaxBeneficiaries+1)
		for i := range m.Beneficiaries {
			m.Beneficiaries[i].Email = fmt.Sprintf("b%d@example.org", i)
		}
	}), nil)
	add("bad-kind", "kind with upper case and space", "ErrFormat", withManifest(func(m *Manifest) { m.Kind = "Seed Phrase" }), nil)
	add("content-digest-mismatch", "manifest digest differs from the content", "ErrDigestMismatch", withManifest(func(m *Manifest) { m.Digest[0] ^= 0x80 }), nil)
	add("sealed-digest-mismatch", "signed sealed_sha256 differs from the sealed part", "ErrDigestMismatch", func() []byte {
		h := headerFor(user, NewUploadID(), sealed)
		h.sealedDigest[5] ^= 1
		return bindRaw(t, courier, h, sealed)
	}(), nil)
	add("mdc-broken", "MDC altered, then bound (the courier signed the altered bytes)", "ErrDigestMismatch", func() []byte {
		s := bytes.Clone(sealed)
		s[len(s)-1] ^= 1
		return bind(t, courier, user, NewUploadID(), s)
	}(), nil)
	add("user-mismatch", "courier binds another user than the manifest names", "ErrUserMismatch", bind(t, courier, "mallory@example.org", NewUploadID(), sealed), nil)
	add("content-longer", "literal data continues past manifest size", "ErrTooLarge",
		bind(t, courier, user, NewUploadID(), sealRaw(t, ingest, rawItem(rawManifest(m), append(bytes.Clone(content), 'x')))), nil)
	add("content-shorter", "literal data ends before manifest size", "ErrFormat",
		bind(t, courier, user, NewUploadID(), sealRaw(t, ingest, rawItem(rawManifest(m), content[:5]))), nil)
	add("compressed-bomb", "8 MiB of zeros after the content, deflated", "ErrTooLarge",
		bind(t, courier, user, NewUploadID(), sealBomb(t, ingest, rawItem(rawManifest(m), content), 8<<20)), nil)
	add("not-encrypted", "sealed part is a bare literal data packet", "ErrWrongIngestKey", func() []byte {
		var b bytes.Buffer
		w, _ := packetLiteral(&b)
		w.Write(rawItem(rawManifest(m), content))
		w.Close()
		return bindRaw(t, courier, headerFor(user, NewUploadID(), b.Bytes()), b.Bytes())
	}(), nil)

	out, err := json.MarshalIndent(vf, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vectorDir, "vectors.json"), append(out, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}

	// Fuzz seed corpora: the small vectors for FuzzOpen, manifests for
	// FuzzManifest. FuzzOpen opens with the vector keys.
	fuzzDir := filepath.Join("testdata", "fuzz")
	os.RemoveAll(fuzzDir)
	for _, v := range vf.Vectors {
		env, _ := os.ReadFile(filepath.Join(vectorDir, v.File))
		if len(env) <= 8<<10 {
			writeSeed(t, "FuzzOpen", v.Name, env)
		}
	}
	full := testManifest(content)
	mb, _ := full.MarshalBinary()
	writeSeed(t, "FuzzManifest", "full", mb)
	mm := testManifest(nil)
	mm.Beneficiaries = nil
	mb2, _ := mm.MarshalBinary()
	writeSeed(t, "FuzzManifest", "minimal", mb2)
	writeSeed(t, "FuzzManifest", "truncated", mb[:len(mb)/2])
	writeSeed(t, "FuzzManifest", "trailing", append(bytes.Clone(mb), 0))
	writeSeed(t, "FuzzManifest", "bad-version", append([]byte{2}, mb[1:]...))
	writeSeed(t, "FuzzManifest", "empty", nil)
	item, _ := EncodeItem(full)
	dct := sealFixed(t, append(item, content...))
	writeSeed(t, "FuzzDecrypted", "ok", dct)
	writeSeed(t, "FuzzDecrypted", "truncated", dct[:len(dct)-5])
	writeSeed(t, "FuzzDecrypted", "content-longer", sealFixed(t, append(append(item, content...), "more"...)))
	writeSeed(t, "FuzzDecrypted", "empty", nil)
}

func writeSeed(t *testing.T, fuzz, name string, b []byte) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", fuzz)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
	if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// packetLiteral starts a bare binary literal data packet.
func packetLiteral(w io.Writer) (io.WriteCloser, error) {
	return serializeLiteral(w)
}
