package bailiff

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"coffre/bailiff/shamir"
)

// Vectors of the post-quantum escrow bundle (testdata/escrow-v2/) and of
// re-encapsulation orders and steps (testdata/reencap/), made with the
// vector bailiffs and roster of testdata/roster/. Regenerate with
// COFFRE_WRITE_VECTORS_PQ=1 (after COFFRE_WRITE_VECTORS=1 when the roster
// vectors change); testdata/item-key-pq.sec, the fixed key of
// FuzzOpenItemPQ, is written then too.

func TestEscrowV2Vectors(t *testing.T) {
	keys := vectorBailiffKeys(t)
	r := vectorRoster(t)
	item, err := os.ReadFile(filepath.Join(testdataRoot, "escrow-v2", "item.pgp"))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range loadVectors(t, "escrow-v2") {
		t.Run(v.Name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(testdataRoot, "escrow-v2", v.File))
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
			if !bytes.Equal(e.Marshal(), b) || e.Version != 2 {
				t.Fatal("re-encoding differs or not v2")
			}
			var shares []shamir.Share
			var openErr error
			for i := 0; i < 2; i++ {
				s, err := e.openShareMessage(keys[i])
				if err != nil {
					openErr = err
					break
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
				r, err := openItemAny(bytes.NewReader(item), openpgp.EntityList{key})
				if err != nil {
					t.Fatal(err)
				}
				pt, err := io.ReadAll(r)
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
	_ = r
}

func TestReencapVectors(t *testing.T) {
	keys := vectorBailiffKeys(t)
	r := vectorRoster(t)
	signer := keys[0] // the vectors' steps are signed by bailiff 1 standing in for the appliance
	for _, v := range loadVectors(t, "reencap") {
		t.Run(v.Name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(testdataRoot, "reencap", v.File))
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(v.Name, "step") {
				s, err := ParseReencapStep(b)
				if v.Expect == "parse-error" {
					if err == nil {
						t.Fatal("parsed, want a parse error")
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(s.Marshal(), b) {
					t.Fatal("re-encoding differs")
				}
				if err := s.Verify(signer); (err == nil) != (v.Expect == "valid") {
					t.Fatalf("verify: %v, want %s", err, v.Expect)
				}
				return
			}
			o, err := ParseReencapOrder(b)
			if v.Expect == "parse-error" {
				if err == nil {
					t.Fatal("parsed, want a parse error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(o.Marshal(), b) {
				t.Fatal("re-encoding differs")
			}
			if err := o.Verify(r); (err == nil) != (v.Expect == "valid") {
				t.Fatalf("verify: %v, want %s", err, v.Expect)
			}
		})
	}
}

func TestWritePQVectors(t *testing.T) {
	if os.Getenv("COFFRE_WRITE_VECTORS_PQ") == "" {
		t.Skip("set COFFRE_WRITE_VECTORS_PQ=1 to regenerate the post-quantum vectors")
	}
	keys := vectorBailiffKeys(t)
	r := vectorRoster(t)
	write := func(dir, name string, b []byte) {
		if err := os.MkdirAll(filepath.Join(testdataRoot, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(testdataRoot, dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	add := func(dir string, vs *[]fileVector, name, expect, desc string, b []byte) {
		write(dir, name+".txt", b)
		*vs = append(*vs, fileVector{Name: name, File: name + ".txt", Expect: expect, Description: desc})
	}
	index := func(dir string, vs []fileVector) {
		b, _ := json.MarshalIndent(vs, "", "  ")
		write(dir, "vectors.json", append(b, '\n'))
	}
	// escrow v2
	e, err := makeEscrow("vector-user", r, vectorTime, 2)
	if err != nil {
		t.Fatal(err)
	}
	const pt = "coffre post-quantum escrow vector\n"
	var item bytes.Buffer
	if _, err := SealEscrowItem(&item, e, strings.NewReader(pt)); err != nil {
		t.Fatal(err)
	}
	write("escrow-v2", "item.pgp", item.Bytes())
	eb := e.Marshal()
	ev := []fileVector{{Name: "ok", File: "ok.txt", Expect: "opens", Description: "v2 escrow of vector-user; bailiffs 1 and 2 open it and item.pgp (PQ profile)", Fingerprint: e.Fingerprint, Plaintext: pt}}
	write("escrow-v2", "ok.txt", eb)
	e2, _ := ParseEscrow(eb, vectorTime)
	e2.Sealed[10] ^= 1
	add("escrow-v2", &ev, "tampered-sealed", "open-error", "one bit of the sealed key flipped: AEAD fails", e2.Marshal())
	e3, _ := ParseEscrow(eb, vectorTime)
	e3.UserID = "vector-other"
	add("escrow-v2", &ev, "wrong-user", "open-error", "user id changed: AEAD associated data differs", e3.Marshal())
	add("escrow-v2", &ev, "bad-relabelled-v1", "parse-error", "a v2 bundle labelled v1", bytes.Replace(eb, []byte("coffre-escrow v2"), []byte("coffre-escrow v1"), 1))
	els := strings.SplitAfter(string(eb), "\n")
	els[3] = "key " + strings.Repeat("a", 64) + "\n"
	add("escrow-v2", &ev, "bad-key-mismatch", "parse-error", "key fingerprint differs from the public key", []byte(strings.Join(els, "")))
	v1, err := newEscrow("vector-user", r, vectorTime)
	if err != nil {
		t.Fatal(err)
	}
	add("escrow-v2", &ev, "bad-public-v1-key", "parse-error", "a v1 (P-521) bundle labelled v2", bytes.Replace(v1.Marshal(), []byte("coffre-escrow v1"), []byte("coffre-escrow v2"), 1))
	index("escrow-v2", ev)

	// re-encapsulation orders and steps
	var rv []fileVector
	sign := func(b []byte, i int) []byte {
		sig, err := detachSign(keys[i], b, vectorTime)
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	o, err := NewReencapOrder(r, ActionUpgrade, [32]byte{}, time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC), AlgKeyPQ, []string{"vector-user", "coffre:verify-shares"}, nil, vectorTime)
	if err != nil {
		t.Fatal(err)
	}
	o.Signatures[Fingerprint(keys[0])] = sign(o.Body(), 0)
	o.Signatures[Fingerprint(keys[1])] = sign(o.Body(), 1)
	ob := o.Marshal()
	add("reencap", &rv, "order-ok", "valid", "algorithm upgrade of two users signed by bailiffs 1 and 2 (k = 2)", ob)
	o1, _ := ParseReencapOrder(ob)
	delete(o1.Signatures, Fingerprint(keys[1]))
	add("reencap", &rv, "order-one-signature", "rejected", "only one bailiff signed (k = 2)", o1.Marshal())
	add("reencap", &rv, "order-user-changed", "rejected", "a user changed after signing", bytes.Replace(ob, []byte("user vector-user"), []byte("user vector-usex"), 1))
	ro, err := NewReencapOrder(r, ActionRetire, [32]byte{}, vectorTime, "", nil, []uint64{12, 13, 40}, vectorTime)
	if err != nil {
		t.Fatal(err)
	}
	ro.Signatures[Fingerprint(keys[1])] = sign(ro.Body(), 1)
	ro.Signatures[Fingerprint(keys[2])] = sign(ro.Body(), 2)
	add("reencap", &rv, "order-retire-ok", "valid", "retirement of records 12, 13 and 40 signed by bailiffs 2 and 3", ro.Marshal())
	add("reencap", &rv, "order-bad-action", "parse-error", "unknown action", bytes.Replace(ob, []byte("action algorithm-upgrade"), []byte("action rekey"), 1))
	add("reencap", &rv, "order-bad-target", "parse-error", "upgrade to a classical key", bytes.Replace(ob, []byte("target "+AlgKeyPQ), []byte("target "+AlgKey), 1))
	add("reencap", &rv, "order-bad-unsorted", "parse-error", "users not in ascending order", bytes.Replace(ob, []byte("user coffre:verify-shares\nuser vector-user\n"), []byte("user vector-user\nuser coffre:verify-shares\n"), 1))
	add("reencap", &rv, "order-bad-retire-with-users", "parse-error", "a retirement listing a user", bytes.Replace(ro.Body(), []byte("users 0\n"), []byte("users 1\nuser x\n"), 1))
	add("reencap", &rv, "order-bad-record-zero-pad", "parse-error", "record number with a leading zero", bytes.Replace(ro.Marshal(), []byte("record 12\n"), []byte("record 012\n"), 1))
	step := &ReencapStep{VaultID: r.VaultID, Order: o.Digest(), Action: ActionUpgrade, Created: vectorTime, UserID: "vector-user",
		OldEscrow: 7, OldEscrowKey: v1.Fingerprint, NewEscrowKey: e.Fingerprint, EscrowDone: true,
		Items: []StepItem{{Record: 9}, {Record: 11}}}
	step.Items[0].Digest[0], step.Items[1].Digest[31] = 1, 2
	if err := step.Sign(keys[0], vectorTime); err != nil {
		t.Fatal(err)
	}
	sb := step.Marshal()
	add("reencap", &rv, "step-ok", "valid", "upgrade step of vector-user, signed by bailiff 1 (standing in for the appliance's key)", sb)
	add("reencap", &rv, "step-tampered", "rejected", "an item record changed after signing", bytes.Replace(sb, []byte("item 11 "), []byte("item 12 "), 1))
	add("reencap", &rv, "step-bad-escrow-state", "parse-error", "escrow neither done nor pending", bytes.Replace(sb, []byte("escrow done"), []byte("escrow maybe"), 1))
	add("reencap", &rv, "step-bad-item-order", "parse-error", "items not ascending", bytes.Replace(sb, []byte("item 11 "), []byte("item 8 "), 1))
	index("reencap", rv)

	// the fixed key of FuzzOpenItemPQ
	k, err := newPQEntity(vectorTime)
	if err != nil {
		t.Fatal(err)
	}
	var sec bytes.Buffer
	if err := k.SerializePrivateWithoutSigning(&sec, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("testdata/item-key-pq.sec", sec.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var seed bytes.Buffer
	enc, _ := k.EncryptionKey(vectorTime)
	if err := sealToPQ(&seed, enc.PublicKey, strings.NewReader("fuzz seed item"), true, vectorTime); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzOpenItemPQ")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "seed-ok"), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", seed.Bytes())), 0o644)
}
