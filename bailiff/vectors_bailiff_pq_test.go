package bailiff

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"

	"coffre/bailiff/shamir"
)

// Post-quantum bailiff vectors (testdata/roster-pq/, docs/formats/roster.md
// "Vectors"): three v6 bailiff keys (passphrase "vector-pq-passphrase-N",
// test only), the roster they sign, a roster-change order that moves the
// vault of testdata/roster/ to it (signed by classical vector bailiffs 1
// and 2), a v2 escrow split to them with an item, and a retirement order
// they sign. Regenerate with `go test -tags vectorgen -run TestWritePQBailiffVectors ./bailiff/` (new random
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
