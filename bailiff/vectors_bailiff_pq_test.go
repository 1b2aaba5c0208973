package bailiff

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"coffre/bailiff/shamir"
)

// Post-quantum bailiff vectors (testdata/roster-pq/, docs/formats/roster.md
// "Vectors"): three v6 bailiff keys (passphrase "vector-pq-passphrase-N",
// test only), the roster they sign, a roster-change order that moves the
// vault of testdata/roster/ to it (signed by classical vector bailiffs 1
// and 2), a v2 escrow split to them with an item, and a retirement order
// they sign. Regenerate with COFFRE_WRITE_VECTORS_PQ_BAILIFFS=1 (new random
// keys; the other vector directories are left alone).

const rosterPQDir = "roster-pq"

func vectorPQBailiffKeys(t *testing.T) []*openpgp.Entity {
	t.Helper()
	var keys []*openpgp.Entity
	for i := 1; i <= 3; i++ {
		b, err := os.ReadFile(filepath.Join(testdataRoot, rosterPQDir, fmt.Sprintf("bailiff-pq-%d.sec.asc", i)))
		if err != nil {
			t.Fatal(err)
		}
		k, err := OpenBailiffKey(b, []byte(fmt.Sprintf("vector-pq-passphrase-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	return keys
}

func readPQVector(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testdataRoot, rosterPQDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRosterPQVectors replays testdata/roster-pq/, one subtest per vector.
func TestRosterPQVectors(t *testing.T) {
	keys := vectorPQBailiffKeys(t)
	defer func() {
		for _, k := range keys {
			WipeKey(k)
		}
	}()
	classical, err := ParseRoster(readPQVector(t, "../roster/ok-2of3.txt"), vectorTime)
	if err != nil {
		t.Fatal(err)
	}
	pqRoster, err := ParseRoster(readPQVector(t, "roster.txt"), vectorTime)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range loadVectors(t, rosterPQDir) {
		t.Run(v.Name, func(t *testing.T) {
			b := readPQVector(t, v.File)
			switch v.Expect {
			case "valid", "unsigned", "parse-error":
				r, err := ParseRoster(b, vectorTime)
				if v.Expect == "parse-error" {
					if err == nil {
						t.Fatal("parsed")
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(r.Marshal(), b) {
					t.Fatal("does not re-encode to the same bytes")
				}
				err = r.Verify()
				if v.Expect == "valid" {
					if err != nil {
						t.Fatal(err)
					}
					for _, bk := range r.Bailiffs {
						if !bk.PQ() || len(bk.Fingerprint) != 64 {
							t.Fatalf("bailiff %s is not post-quantum", bk.Fingerprint)
						}
					}
				} else if !errors.Is(err, ErrRosterUnsigned) {
					t.Fatalf("Verify = %v, want ErrRosterUnsigned", err)
				}
			case "valid-change":
				o, err := ParseQuorumOrder(b)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(o.Marshal(), b) {
					t.Fatal("does not re-encode")
				}
				if err := o.VerifyChange(classical, pqRoster); err != nil {
					t.Fatal(err)
				}
			case "valid-order":
				o, err := ParseReencapOrder(b)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(o.Marshal(), b) {
					t.Fatal("does not re-encode")
				}
				if err := o.Verify(pqRoster); err != nil {
					t.Fatal(err)
				}
				for f := range o.Signatures {
					if len(f) != 64 {
						t.Fatalf("signature by %s, want a v6 fingerprint", f)
					}
				}
			case "opens":
				e, err := ParseEscrow(b, vectorTime)
				if err != nil {
					t.Fatal(err)
				}
				if e.Fingerprint != v.Fingerprint || e.RosterDigest != pqRoster.Digest() {
					t.Fatalf("escrow key %s under roster %x", e.Fingerprint, e.RosterDigest[:4])
				}
				if got := e.ShareAlgorithms(); len(got) != 1 || got[0] != AlgPKESKPQNamed {
					t.Fatalf("share algorithms %v", got)
				}
				var shares []shamir.Share
				for _, k := range keys[:2] {
					s, err := e.openShareMessage(k)
					if err != nil {
						t.Fatal(err)
					}
					shares = append(shares, s)
				}
				key, err := e.openKey(shares, vectorTime)
				if err != nil {
					t.Fatal(err)
				}
				defer WipeKey(key)
				pr, err := openItemAny(bytes.NewReader(readPQVector(t, "item.pgp")), openpgp.EntityList{key})
				if err != nil {
					t.Fatal(err)
				}
				var pt bytes.Buffer
				if _, err := pt.ReadFrom(pr); err != nil || pt.String() != v.Plaintext {
					t.Fatalf("item: %q %v", pt.String(), err)
				}
			default:
				t.Fatalf("unknown expectation %q", v.Expect)
			}
		})
	}
}

// TestWritePQBailiffVectors regenerates testdata/roster-pq/.
func TestWritePQBailiffVectors(t *testing.T) {
	if os.Getenv("COFFRE_WRITE_VECTORS_PQ_BAILIFFS") != "1" {
		t.Skip("set COFFRE_WRITE_VECTORS_PQ_BAILIFFS=1 to regenerate testdata/roster-pq")
	}
	dir := filepath.Join(testdataRoot, rosterPQDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var vs []fileVector
	add := func(v fileVector, b []byte) {
		write(v.File, b)
		vs = append(vs, v)
	}
	classical, err := ParseRoster(readPQVector(t, "../roster/ok-2of3.txt"), vectorTime)
	if err != nil {
		t.Fatal(err)
	}
	var gks []*GeneratedKey
	var pubs []*BailiffKey
	for i := 1; i <= 3; i++ {
		gk, err := GenerateBailiffKeyPQ(fmt.Sprintf("Vector PQ Bailiff %d", i), fmt.Sprintf("pq%d@vector.example", i), []byte(fmt.Sprintf("vector-pq-passphrase-%d", i)), vectorTime)
		if err != nil {
			t.Fatal(err)
		}
		defer gk.Wipe()
		write(fmt.Sprintf("bailiff-pq-%d.sec.asc", i), gk.ArmoredSecret)
		gks = append(gks, gk)
		pubs = append(pubs, gk.Key)
	}
	at := vectorTime.Add(time.Hour)
	r, err := NewRoster(classical.VaultID, 2, pubs, at)
	if err != nil {
		t.Fatal(err)
	}
	for _, gk := range gks {
		sig, err := detachSign(gk.priv, r.Body(), at)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.AddSignature(sig); err != nil {
			t.Fatal(err)
		}
	}
	ok := r.Marshal()
	add(fileVector{Name: "roster", File: "roster.txt", Expect: "valid", Description: "2-of-3 roster of post-quantum (v6) bailiffs, signed by all three"}, ok)
	r2, _ := ParseRoster(ok, vectorTime)
	delete(r2.Signatures, r2.Bailiffs[1].Fingerprint)
	add(fileVector{Name: "unsigned-one-missing", File: "unsigned-one-missing.txt", Expect: "unsigned", Description: "second bailiff's signature missing"}, r2.Marshal())
	fpr := r.Bailiffs[0].Fingerprint
	add(fileVector{Name: "bad-fingerprint-v4-length", File: "bad-fingerprint-v4-length.txt", Expect: "parse-error", Description: "a v6 bailiff listed under the first 40 hex digits of its fingerprint"},
		[]byte(strings.Replace(string(ok), "bailiff "+fpr+"\n", "bailiff "+fpr[:40]+"\n", 1)))
	add(fileVector{Name: "bad-fingerprint-48", File: "bad-fingerprint-48.txt", Expect: "parse-error", Description: "a signature line with a 48-digit fingerprint"},
		[]byte(strings.Replace(string(ok), "signature "+fpr+" ", "signature "+fpr[:48]+" ", 1)))

	// The classical vault's quorum (vector bailiffs 1 and 2) approves it.
	old := vectorBailiffKeys(t)
	defer func() {
		for _, k := range old {
			WipeKey(k)
		}
	}()
	o, err := NewRosterChangeOrder(classical, r, "bailiff keys move to ML-DSA-87+Ed448 / ML-KEM-1024+X448", at)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range old[:2] {
		if err := o.Sign(classical, k, at); err != nil {
			t.Fatal(err)
		}
	}
	add(fileVector{Name: "change", File: "change.txt", Expect: "valid-change", Description: "roster-change order from testdata/roster/ok-2of3.txt to roster.txt, signed by classical vector bailiffs 1 and 2"}, o.Marshal())

	// A v2 escrow split to the PQ bailiffs, and an item sealed to it.
	esc, err := makeEscrow("vector-user", r, vectorTime, 2)
	if err != nil {
		t.Fatal(err)
	}
	const pt = "opened by two post-quantum bailiffs"
	var item bytes.Buffer
	if _, err := SealEscrowItem(&item, esc, strings.NewReader(pt)); err != nil {
		t.Fatal(err)
	}
	write("item.pgp", item.Bytes())
	add(fileVector{Name: "escrow", File: "escrow.txt", Expect: "opens", Description: "v2 escrow under roster.txt: PQ bailiffs 1 and 2 open their shares (PKESK v6 naming their key) and the key opens item.pgp",
		Fingerprint: esc.Fingerprint, Plaintext: pt}, esc.Marshal())

	// A retirement order signed by PQ bailiffs 1 and 3 (64-hex signature lines).
	ro, err := NewReencapOrder(r, ActionRetire, [32]byte{}, at, "", nil, []uint64{5, 9}, at)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 2} {
		if err := ro.Sign(r, gks[i].priv, at); err != nil {
			t.Fatal(err)
		}
	}
	add(fileVector{Name: "order", File: "order.txt", Expect: "valid-order", Description: "retirement order under roster.txt, signed by PQ bailiffs 1 and 3"}, ro.Marshal())

	b, _ := json.MarshalIndent(vs, "", "  ")
	write("vectors.json", append(b, '\n'))
}
