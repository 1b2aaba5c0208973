//go:build vectorgen

package bailiff

// The generators of the post-quantum vectors (testdata/escrow-v2,
// testdata/reencap, testdata/roster-pq). They are not part of the test
// suite, which replays the committed vectors; regenerate with
//
//	go test -tags vectorgen -run '^TestWrite' ./bailiff/
//
// and review the diff: a changed vector is a changed format.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWritePQVectors(t *testing.T) {
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

// TestWritePQBailiffVectors regenerates testdata/roster-pq/.
func TestWritePQBailiffVectors(t *testing.T) {
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
