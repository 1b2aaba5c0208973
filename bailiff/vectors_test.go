package bailiff

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"coffre/bailiff/internal/canon"
	"coffre/bailiff/shamir"
)

// Vectors live in testdata/{roster,escrow,restitution}/ at the repository
// root: vectors.json lists each file with its expected outcome; the files
// are the exact bytes. The bailiff secret keys (test only, passphrase
// "vector-passphrase-N") let a reimplementation open the escrow vectors.
// Regenerate with COFFRE_WRITE_VECTORS=1 (new random keys).

type fileVector struct {
	Name        string `json:"name"`
	File        string `json:"file"`
	Expect      string `json:"expect"`
	Description string `json:"description"`
	// escrow vectors: expected escrow key fingerprint and the plaintext of
	// item.pgp when opened with bailiffs 1 and 2.
	Fingerprint string `json:"fingerprint,omitempty"`
	Plaintext   string `json:"plaintext,omitempty"`
}

const testdataRoot = "../testdata"

var vectorTime = time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)

func loadVectors(t *testing.T, dir string) []fileVector {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testdataRoot, dir, "vectors.json"))
	if err != nil {
		t.Fatalf("vectors of %s missing (regenerate with COFFRE_WRITE_VECTORS=1): %v", dir, err)
	}
	var vs []fileVector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) == 0 {
		t.Fatalf("no vectors in %s", dir)
	}
	return vs
}

func vectorBailiffKeys(t *testing.T) []*openpgp.Entity {
	t.Helper()
	var keys []*openpgp.Entity
	for i := 1; i <= 3; i++ {
		b, err := os.ReadFile(filepath.Join(testdataRoot, "roster", fmt.Sprintf("bailiff-%d.sec.asc", i)))
		if err != nil {
			t.Fatal(err)
		}
		k, err := OpenBailiffKey(b, []byte(fmt.Sprintf("vector-passphrase-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	return keys
}

func TestRosterVectors(t *testing.T) {
	for _, v := range loadVectors(t, "roster") {
		t.Run(v.Name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(testdataRoot, "roster", v.File))
			if err != nil {
				t.Fatal(err)
			}
			r, err := ParseRoster(b, vectorTime)
			if v.Expect == "parse-error" {
				if err == nil {
					t.Fatal("parsed, want a parse error")
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if !bytes.Equal(r.Marshal(), b) {
				t.Fatal("re-encoding differs")
			}
			err = r.Verify()
			switch v.Expect {
			case "valid":
				if err != nil {
					t.Fatal(err)
				}
			case "unsigned":
				if !errors.Is(err, ErrRosterUnsigned) {
					t.Fatalf("err = %v, want ErrRosterUnsigned", err)
				}
			default:
				t.Fatalf("unknown expectation %q", v.Expect)
			}
		})
	}
}

func vectorRoster(t *testing.T) *Roster {
	b, err := os.ReadFile(filepath.Join(testdataRoot, "roster", "ok-2of3.txt"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseRoster(b, vectorTime)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestEscrowVectors(t *testing.T) { checkEscrowVectors(t, "escrow", 1) }

// checkEscrowVectors checks the escrow vectors of testdata/dir, of escrow
// bundle version (1: bound to the vector roster, shares in roster order,
// the item opened by go-crypto; 2: post-quantum, the item opened by
// openItemAny).
func checkEscrowVectors(t *testing.T, dir string, version int) {
	keys := vectorBailiffKeys(t)
	r := vectorRoster(t)
	item, err := os.ReadFile(filepath.Join(testdataRoot, dir, "item.pgp"))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range loadVectors(t, dir) {
		t.Run(v.Name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(testdataRoot, dir, v.File))
			if err != nil {
				t.Fatal(err)
			}
			e, err := ParseEscrow(b, vectorTime)
			if v.Expect == "parse-error" {
				if err == nil {
					t.Fatal("parsed, want a parse error")
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if !bytes.Equal(e.Marshal(), b) {
				t.Fatal("re-encoding differs")
			}
			if version == 2 && e.Version != 2 {
				t.Fatalf("escrow version %d, want 2", e.Version)
			}
			if version == 1 && e.RosterDigest != r.Digest() {
				t.Fatal("escrow not bound to the vector roster")
			}
			var shares []shamir.Share
			var openErr error
			for i := 0; i < 2; i++ {
				s, err := e.openShareMessage(keys[i])
				if err != nil {
					openErr = err
					break
				}
				if idx := r.index(Fingerprint(keys[i])); version == 1 && s.Index != idx+1 {
					t.Fatalf("share index %d, want %d", s.Index, idx+1)
				}
				shares = append(shares, s)
			}
			var key *openpgp.Entity
			if openErr == nil {
				key, openErr = e.openKey(shares, vectorTime)
			}
			switch v.Expect {
			case "opens":
				if openErr != nil {
					t.Fatal(openErr)
				}
				defer WipeKey(key)
				if Fingerprint(key) != v.Fingerprint {
					t.Fatalf("escrow key %s, want %s", Fingerprint(key), v.Fingerprint)
				}
				var pt []byte
				if version == 1 {
					pt, err = decryptBytes(bytes.NewReader(item), openpgp.EntityList{key}, 1<<10)
				} else {
					var pr io.Reader
					if pr, err = openItemAny(bytes.NewReader(item), openpgp.EntityList{key}); err == nil {
						pt, err = io.ReadAll(pr)
					}
				}
				if err != nil || string(pt) != v.Plaintext {
					t.Fatalf("item.pgp: %q %v", pt, err)
				}
			case "open-error":
				if openErr == nil {
					WipeKey(key)
					t.Fatal("opened, want an error")
				}
			default:
				t.Fatalf("unknown expectation %q", v.Expect)
			}
		})
	}
}

func TestOrderVectors(t *testing.T) {
	r := vectorRoster(t)
	for _, v := range loadVectors(t, "restitution") {
		t.Run(v.Name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(testdataRoot, "restitution", v.File))
			if err != nil {
				t.Fatal(err)
			}
			o, err := ParseOrder(b, vectorTime)
			if v.Expect == "parse-error" {
				if err == nil {
					t.Fatal("parsed, want a parse error")
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if !bytes.Equal(o.Marshal(), b) {
				t.Fatal("re-encoding differs")
			}
			err = o.Verify(r)
			switch v.Expect {
			case "valid":
				if err != nil {
					t.Fatal(err)
				}
			case "rejected":
				if err == nil {
					t.Fatal("verified, want rejection")
				}
			default:
				t.Fatalf("unknown expectation %q", v.Expect)
			}
		})
	}
}

// TestWriteFormatVectors regenerates the vectors when COFFRE_WRITE_VECTORS=1.
func TestWriteFormatVectors(t *testing.T) {
	if os.Getenv("COFFRE_WRITE_VECTORS") != "1" {
		return
	}
	write := func(dir, name string, b []byte) {
		os.MkdirAll(filepath.Join(testdataRoot, dir), 0o755)
		if err := os.WriteFile(filepath.Join(testdataRoot, dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeIndex := func(dir string, vs []fileVector) {
		b, _ := json.MarshalIndent(vs, "", "  ")
		write(dir, "vectors.json", append(b, '\n'))
	}
	// bailiffs
	var gks []*GeneratedKey
	var keys []*BailiffKey
	for i := 1; i <= 3; i++ {
		gk, err := GenerateBailiffKey(fmt.Sprintf("Vector Bailiff %d", i), fmt.Sprintf("b%d@vector.example", i), []byte(fmt.Sprintf("vector-passphrase-%d", i)), vectorTime)
		if err != nil {
			t.Fatal(err)
		}
		write("roster", fmt.Sprintf("bailiff-%d.sec.asc", i), gk.ArmoredSecret)
		gks = append(gks, gk)
		keys = append(keys, gk.Key)
	}
	var vaultID [32]byte
	copy(vaultID[:], "coffre vector vault id 32 bytes!")
	r, err := NewRoster(vaultID, 2, keys, vectorTime)
	if err != nil {
		t.Fatal(err)
	}
	for _, gk := range gks {
		sig, err := detachSign(gk.priv, r.Body(), vectorTime)
		if err != nil {
			t.Fatal(err)
		}
		r.Signatures[gk.Key.Fingerprint] = sig
	}
	ok := r.Marshal()
	rv := []fileVector{{Name: "ok-2of3", File: "ok-2of3.txt", Expect: "valid", Description: "2-of-3 roster signed by all three bailiffs"}}
	write("roster", "ok-2of3.txt", ok)
	add := func(dir string, vs *[]fileVector, name, expect, desc string, b []byte) {
		write(dir, name+".txt", b)
		*vs = append(*vs, fileVector{Name: name, File: name + ".txt", Expect: expect, Description: desc})
	}
	lines := strings.SplitAfter(string(ok), "\n")
	lines = lines[:len(lines)-1]
	join := func(ls []string) []byte { return []byte(strings.Join(ls, "")) }
	{
		r2, _ := ParseRoster(ok, vectorTime)
		delete(r2.Signatures, r2.Bailiffs[2].Fingerprint)
		add("roster", &rv, "unsigned-one-missing", "unsigned", "third bailiff's signature missing", r2.Marshal())
		r3, _ := ParseRoster(ok, vectorTime)
		r3.Threshold = 3
		add("roster", &rv, "unsigned-threshold-changed", "unsigned", "threshold raised to 3 after signing", r3.Marshal())
	}
	add("roster", &rv, "bad-crlf", "parse-error", "CRLF line endings", []byte(strings.ReplaceAll(string(ok), "\n", "\r\n")))
	add("roster", &rv, "bad-trailing-line", "parse-error", "extra line after the signatures", append(bytes.Clone(ok), "extra x\n"...))
	add("roster", &rv, "bad-no-final-lf", "parse-error", "missing final line feed", ok[:len(ok)-1])
	add("roster", &rv, "bad-version", "parse-error", "version v2", []byte(strings.Replace(string(ok), "coffre-roster v1", "coffre-roster v2", 1)))
	add("roster", &rv, "bad-threshold-over-n", "parse-error", "threshold 4 of 3", []byte(strings.Replace(string(ok), "threshold 2\n", "threshold 4\n", 1)))
	add("roster", &rv, "bad-threshold-one", "parse-error", "threshold 1", []byte(strings.Replace(string(ok), "threshold 2\n", "threshold 1\n", 1)))
	add("roster", &rv, "bad-threshold-leading-zero", "parse-error", "threshold 02", []byte(strings.Replace(string(ok), "threshold 2\n", "threshold 02\n", 1)))
	add("roster", &rv, "bad-time", "parse-error", "created with a time zone offset", []byte(strings.Replace(string(ok), "T00:00:00Z", "T00:00:00+00:00", 1)))
	{
		// swap the first two bailiff blocks (order by fingerprint broken)
		ls := append([]string(nil), lines...)
		b1 := ls[5:8]
		b2 := ls[8:11]
		sw := append(append(append(append([]string(nil), ls[:5]...), b2...), b1...), ls[11:]...)
		add("roster", &rv, "bad-unsorted", "parse-error", "bailiffs not sorted by fingerprint", join(sw))
		ls2 := append([]string(nil), lines...)
		ls2[5] = "bailiff " + strings.Repeat("0", 40) + "\n"
		add("roster", &rv, "bad-fingerprint-mismatch", "parse-error", "listed fingerprint differs from the key's", join(ls2))
		ls3 := append([]string(nil), lines...)
		ls3[5] = strings.ToUpper(ls3[5][:8]) + ls3[5][8:]
		add("roster", &rv, "bad-field-case", "parse-error", "field name in upper case", join(ls3))
		ls4 := append([]string(nil), lines...)
		ls4[7] = strings.TrimSuffix(ls4[7], "\n")
		ls4[7] = strings.TrimRight(ls4[7], "=") + "\n"
		add("roster", &rv, "bad-base64-unpadded", "parse-error", "key base64 without padding", join(ls4))
		ls5 := append([]string(nil), lines...)
		ls5[6] = "name  Vector Bailiff\n"
		add("roster", &rv, "bad-name-spaces", "parse-error", "name with a double space", join(ls5))
	}
	writeIndex("roster", rv)

	// escrow
	e, err := newEscrow("vector-user", r, vectorTime)
	if err != nil {
		t.Fatal(err)
	}
	var item bytes.Buffer
	const pt = "coffre escrow vector\n"
	if _, err := e.Seal(&item, strings.NewReader(pt)); err != nil {
		t.Fatal(err)
	}
	write("escrow", "item.pgp", item.Bytes())
	eb := e.Marshal()
	ev := []fileVector{{Name: "ok", File: "ok.txt", Expect: "opens", Description: "escrow of vector-user; bailiffs 1 and 2 open it and item.pgp", Fingerprint: e.Fingerprint, Plaintext: pt}}
	write("escrow", "ok.txt", eb)
	{
		e2, _ := ParseEscrow(eb, vectorTime)
		e2.Sealed[10] ^= 1
		add("escrow", &ev, "tampered-sealed", "open-error", "one bit of the sealed key flipped: AEAD fails", e2.Marshal())
		e3, _ := ParseEscrow(eb, vectorTime)
		e3.UserID = "vector-other"
		add("escrow", &ev, "wrong-user", "open-error", "user id changed: AEAD associated data differs", e3.Marshal())
		e4, _ := ParseEscrow(eb, vectorTime)
		e4.Shares[0].Commitment[0] ^= 1
		e4.Shares[1].Commitment[0] ^= 1
		e4.Shares[2].Commitment[0] ^= 1
		add("escrow", &ev, "bad-commitments", "open-error", "share commitments altered: shares are named as tampered", e4.Marshal())
	}
	els := strings.SplitAfter(string(eb), "\n")
	els = els[:len(els)-1]
	add("escrow", &ev, "bad-aead", "parse-error", "unknown aead", []byte(strings.Replace(string(eb), "aead xchacha20poly1305", "aead aes-256-gcm", 1)))
	add("escrow", &ev, "bad-user-space", "parse-error", "user id with a space", []byte(strings.Replace(string(eb), "user vector-user", "user vector user", 1)))
	add("escrow", &ev, "bad-shares-below-threshold", "parse-error", "shares 1 < threshold 2", []byte(strings.Replace(string(eb), "shares 3\n", "shares 1\n", 1)))
	{
		ls := append([]string(nil), els...)
		last := len(ls) - 1
		ls[last-1], ls[last] = ls[last], ls[last-1]
		add("escrow", &ev, "bad-share-order", "parse-error", "shares 2 and 3 swapped", join(ls))
		ls2 := append([]string(nil), els...)
		ls2[3] = "key " + strings.Repeat("a", 40) + "\n"
		add("escrow", &ev, "bad-key-mismatch", "parse-error", "key fingerprint differs from the public key", join(ls2))
		add("escrow", &ev, "bad-truncated", "parse-error", "last share line missing", join(els[:len(els)-1]))
		ls3 := append([]string(nil), els...)
		ls3[6] = strings.ToUpper(ls3[6])
		add("escrow", &ev, "bad-nonce-uppercase", "parse-error", "nonce in upper-case hex", join(ls3))
	}
	writeIndex("escrow", ev)

	// restitution orders
	ben, err := newP521Entity("Vector Beneficiary", "heir@vector.example", vectorTime)
	if err != nil {
		t.Fatal(err)
	}
	benPub, _ := publicBytes(ben)
	o, err := NewOrder(r, "vector-user", "Tribunal judiciaire de Paris, RG 26/01234", benPub, vectorTime)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(o *Order, i int) {
		sig, err := detachSign(gks[i].priv, o.Body(), vectorTime)
		if err != nil {
			t.Fatal(err)
		}
		o.Signatures[gks[i].Key.Fingerprint] = sig
	}
	sign(o, 0)
	sign(o, 1)
	ob := o.Marshal()
	var ov []fileVector
	add("restitution", &ov, "order-ok", "valid", "order signed by bailiffs 1 and 2 (k = 2)", ob)
	{
		o1, _ := ParseOrder(ob, vectorTime)
		delete(o1.Signatures, gks[1].Key.Fingerprint)
		add("restitution", &ov, "order-one-signature", "rejected", "only one bailiff signed (k = 2)", o1.Marshal())
		o2, _ := ParseOrder(ob, vectorTime)
		o2.UserID = "vector-other"
		add("restitution", &ov, "order-user-changed", "rejected", "user id changed after signing", o2.Marshal())
		o3, _ := ParseOrder(ob, vectorTime)
		o3.RosterDigest[0] ^= 1
		add("restitution", &ov, "order-other-roster", "rejected", "bound to another roster", o3.Marshal())
	}
	add("restitution", &ov, "order-bad-version", "parse-error", "version v9", []byte(strings.Replace(string(ob), "order v1", "order v9", 1)))
	add("restitution", &ov, "order-bad-reference", "parse-error", "reference with trailing space", []byte(strings.Replace(string(ob), "RG 26/01234\n", "RG 26/01234 \n", 1)))
	add("restitution", &ov, "order-bad-beneficiary", "parse-error", "beneficiary fingerprint differs from the key", []byte(strings.Replace(string(ob), "beneficiary "+o.BeneficiaryFingerprint, "beneficiary "+strings.Repeat("b", 40), 1)))
	add("restitution", &ov, "order-bad-control", "parse-error", "tab in the reference", []byte(strings.Replace(string(ob), "Tribunal judiciaire", "Tribunal\tjudiciaire", 1)))
	writeIndex("restitution", ov)
	for _, gk := range gks {
		gk.Wipe()
	}
	_ = canon.TimeLayout
}
