package bailiff

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"coffre/bailiff/shamir"
)

// nextRoster makes a roster with bailiffs 0 and 1 of the test vault and a
// newly generated bailiff instead of bailiff 2, signed by all three. It
// returns the new bailiff's armored secret key and passphrase.
func nextRoster(t *testing.T, v *testVault) (*Roster, []byte, string) {
	t.Helper()
	now := time.Now()
	pass := "passphrase-of-Denise"
	gk, err := GenerateBailiffKey("Denise Roy", "dr@example.org", []byte(pass), now)
	if err != nil {
		t.Fatal(err)
	}
	defer gk.Wipe()
	r, err := NewRoster(v.roster.VaultID, 2, []*BailiffKey{v.roster.Bailiffs[0], v.roster.Bailiffs[1], gk.Key}, now.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		k := v.openKey(t, i)
		sig, err := detachSign(k, r.Body(), now)
		WipeKey(k)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.AddSignature(sig); err != nil {
			t.Fatal(err)
		}
	}
	sig, err := detachSign(gk.priv, r.Body(), now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.AddSignature(sig); err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(); err != nil {
		t.Fatal(err)
	}
	return r, gk.ArmoredSecret, pass
}

func signReencap(t *testing.T, v *testVault, o *QuorumOrder, idx ...int) {
	t.Helper()
	for _, i := range idx {
		k := v.openKey(t, i)
		err := o.Sign(v.roster, k, time.Now())
		WipeKey(k)
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestRosterChangeResplit(t *testing.T) {
	v := getVault(t)
	next, dSec, dPass := nextRoster(t, v)
	esc, err := NewEscrow("user-roster", v.roster)
	if err != nil {
		t.Fatal(err)
	}
	item := sealBytes(t, esc, []byte("kept across the roster change"))

	o, err := NewRosterChangeOrder(v.roster, next, "Chloé Dubois retires; Denise Roy joins", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	signReencap(t, v, o, 0)
	if err := o.VerifyChange(v.roster, next); err == nil || !strings.Contains(err.Error(), "1 valid bailiff signatures, needs 2") {
		t.Fatalf("one signature: %v", err)
	}
	signReencap(t, v, o, 2) // the bailiff who leaves may be part of the approving quorum
	back, err := ParseQuorumOrder(o.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.Marshal(), o.Marshal()) {
		t.Fatal("order does not re-encode")
	}
	if err := back.VerifyChange(v.roster, next); err != nil {
		t.Fatal(err)
	}
	// A new roster missing one of its bailiffs' signatures is refused.
	unsigned, _ := ParseRoster(next.Marshal(), time.Now())
	delete(unsigned.Signatures, next.Bailiffs[0].Fingerprint)
	if err := back.VerifyChange(v.roster, unsigned); !errors.Is(err, ErrRosterUnsigned) {
		t.Fatalf("unsigned new roster: %v", err)
	}

	q, err := NewEscrowQuorum(v.roster, back)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, err := q.AddKey(v.secrets[0], []byte(v.pass[0])); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Resplit(esc, next); err == nil || !strings.Contains(err.Error(), "1 of the 2 shares") {
		t.Fatalf("one key: %v", err)
	}
	// bailiff 2 (leaving) opened their share with gpg and brings the card
	k := v.openKey(t, 2)
	msg, _, ok := ShareMessage(esc, v.roster.Bailiffs[2].Fingerprint)
	if !ok {
		t.Fatal("no share message for bailiff 2")
	}
	card, err := decryptBytes(bytes.NewReader(msg), openpgp.EntityList{k}, 8192)
	WipeKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.AddShareCard(card); err != nil {
		t.Fatal(err)
	}
	ne, err := q.Resplit(esc, next)
	if err != nil {
		t.Fatal(err)
	}
	if ne.Fingerprint != esc.Fingerprint || ne.RosterDigest != next.Digest() || ne.SplitID == esc.SplitID || bytes.Equal(ne.Sealed, esc.Sealed) {
		t.Fatal("re-split escrow: same key, new roster, new split and new sealing expected")
	}
	nb, err := ParseEscrow(ne.Marshal(), time.Now())
	if err != nil || !bytes.Equal(nb.Marshal(), ne.Marshal()) {
		t.Fatalf("re-split bundle does not round-trip: %v", err)
	}
	// The leaving bailiff holds no share of the new bundle.
	if _, _, ok := ShareMessage(nb, v.roster.Bailiffs[2].Fingerprint); ok {
		t.Fatal("the leaving bailiff still holds a share")
	}
	// The new quorum (bailiff 1 and the new one) opens the item.
	nk, err := OpenBailiffKey(dSec, []byte(dPass))
	if err != nil {
		t.Fatal(err)
	}
	s1, err := nb.openShareMessage(nk)
	WipeKey(nk)
	if err != nil {
		t.Fatal(err)
	}
	k1 := v.openKey(t, 1)
	s2, err := nb.openShareMessage(k1)
	WipeKey(k1)
	if err != nil {
		t.Fatal(err)
	}
	key, err := nb.openKey([]shamir.Share{s1, s2}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer WipeKey(key)
	pt, err := decryptBytes(bytes.NewReader(item), openpgp.EntityList{key}, 100)
	if err != nil || string(pt) != "kept across the roster change" {
		t.Fatalf("item after the roster change: %q %v", pt, err)
	}
	// A re-split escrow is not re-split again by the same quorum.
	if _, err := q.Resplit(nb, next); !errors.Is(err, ErrWrongEscrow) {
		t.Fatalf("re-split twice: %v", err)
	}
}

func TestEscrowRotationRewrap(t *testing.T) {
	v := getVault(t)
	esc, _ := NewEscrow("user-rotate", v.roster)
	other, _ := NewEscrow("user-other", v.roster)
	pts := []string{"first", strings.Repeat("second item, larger. ", 20000)}
	var items [][]byte
	for _, p := range pts {
		items = append(items, sealBytes(t, esc, []byte(p)))
	}
	o, err := NewRotationOrder(v.roster, []string{"user-rotate"}, "recipient change asked by the user", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	signReencap(t, v, o, 0, 1)
	q, err := NewEscrowQuorum(v.roster, o)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for i := 0; i < 2; i++ {
		if _, err := q.AddKey(v.secrets[i], []byte(v.pass[i])); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := q.Rotate(other, v.roster); !errors.Is(err, ErrWrongEscrow) {
		t.Fatalf("a user the order does not name: %v", err)
	}
	rot, err := q.Rotate(esc, v.roster)
	if err != nil {
		t.Fatal(err)
	}
	defer rot.Close()
	if rot.New.Fingerprint == esc.Fingerprint || rot.New.UserID != esc.UserID {
		t.Fatal("rotation did not make a new key for the same user")
	}
	newKey, err := rot.New.openKey(quorumShares(t, v, rot.New, 1, 2), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer WipeKey(newKey)
	oldKey, _ := esc.openKey(quorumShares(t, v, esc, 0, 2), time.Now())
	defer WipeKey(oldKey)
	// Both ways of opening and writing the key packet: crypto/ecdh for
	// the shape SealItem writes, go-crypto for any other.
	fast := rot.fast
	if fast == nil {
		t.Fatal("a P-521 escrow's rotation does not take the crypto/ecdh path")
	}
	for j, ct := range append(slices.Clone(items), items...) {
		i := j % len(items)
		if rot.fast = fast; j >= len(items) {
			rot.fast = nil
		}
		r, err := rot.Rewrap(bytes.NewReader(ct))
		if err != nil {
			t.Fatal(err)
		}
		out, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		first, _ := packet.Read(bytes.NewReader(ct))
		var pk bytes.Buffer
		first.(*packet.EncryptedKey).Serialize(&pk)
		if !bytes.HasSuffix(out, ct[pk.Len():]) {
			t.Fatalf("item %d: the encrypted data packet changed", i)
		}
		pt, err := openItemBytes(out, newKey)
		if err != nil || pt != pts[i] {
			t.Fatalf("item %d with the new key: %v", i, err)
		}
		if _, err := openItemBytes(out, oldKey); err == nil {
			t.Fatalf("item %d still opens with the old key", i)
		}
	}
	rot.fast = fast
	// An item of another escrow does not re-wrap.
	if _, err := rot.Rewrap(bytes.NewReader(sealBytes(t, other, []byte("x")))); err == nil {
		t.Fatal("re-wrapped another user's item")
	}
	// Garbage is an error, not a panic.
	for _, b := range [][]byte{nil, {0xc1, 0x01}, bytes.Repeat([]byte{0xff}, 64)} {
		if _, err := rot.Rewrap(bytes.NewReader(b)); err == nil {
			t.Fatalf("re-wrapped garbage %x", b)
		}
	}
}

func openItemBytes(ct []byte, key *openpgp.Entity) (string, error) {
	r, err := openItem(bytes.NewReader(ct), openpgp.EntityList{key})
	if err != nil {
		return "", err
	}
	b, err := io.ReadAll(r)
	return string(b), err
}

func TestQuorumOrderRules(t *testing.T) {
	v := getVault(t)
	if _, err := NewRotationOrder(v.roster, nil, "x", time.Now()); err == nil {
		t.Fatal("rotation of no user accepted")
	}
	if _, err := NewRotationOrder(v.roster, []string{"bad user"}, "x", time.Now()); err == nil {
		t.Fatal("bad user id accepted")
	}
	if _, err := NewRotationOrder(v.roster, []string{"a"}, " x", time.Now()); err == nil {
		t.Fatal("bad reason accepted")
	}
	if _, err := NewRosterChangeOrder(v.roster, v.roster, "x", time.Now()); err == nil {
		t.Fatal("roster change to the same roster accepted")
	}
	o, err := NewRotationOrder(v.roster, []string{"b", "a", "b"}, "two users", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.Users, ",") != "a,b" {
		t.Fatalf("users %v, want sorted and distinct", o.Users)
	}
	signReencap(t, v, o, 0, 1)
	if err := o.Verify(v.roster); err != nil {
		t.Fatal(err)
	}
	o.Users = append(o.Users, "c") // changed after signing
	if err := o.Verify(v.roster); err == nil {
		t.Fatal("order changed after signing verifies")
	}
}

func TestParseStoredEscrow(t *testing.T) {
	v := getVault(t)
	esc, _ := NewEscrow("user-stored", v.roster)
	b := esc.Marshal()
	st, err := ParseStoredEscrow(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(st.Marshal(), b) || st.PublicKey() != nil {
		t.Fatal("stored parse differs or carries a key")
	}
	other, _ := NewEscrow("user-other-stored", v.roster)
	bad := strings.Replace(string(b), "key "+esc.Fingerprint, "key "+other.Fingerprint, 1)
	if _, err := ParseStoredEscrow([]byte(bad)); err == nil {
		t.Fatal("fingerprint mismatch accepted")
	}
	// The full parse and the stored parse accept the same vectors.
	for _, v := range loadVectors(t, "escrow") {
		b, _ := os.ReadFile(filepath.Join(testdataRoot, "escrow", v.File))
		_, e1 := ParseEscrow(b, vectorTime)
		_, e2 := ParseStoredEscrow(b)
		if (e1 == nil) != (e2 == nil) {
			t.Fatalf("%s: ParseEscrow %v, ParseStoredEscrow %v", v.Name, e1, e2)
		}
	}
}

func TestQuorumPrintsNoSecret(t *testing.T) {
	v := getVault(t)
	esc, _ := NewEscrow("user-print", v.roster)
	o, _ := NewRotationOrder(v.roster, []string{"user-print"}, "print", time.Now())
	signReencap(t, v, o, 0, 1)
	q, err := NewEscrowQuorum(v.roster, o)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	q.AddKey(v.secrets[0], []byte(v.pass[0]))
	q.AddKey(v.secrets[1], []byte(v.pass[1]))
	rot, err := q.Rotate(esc, v.roster)
	if err != nil {
		t.Fatal(err)
	}
	defer rot.Close()
	for _, s := range []string{fmt.Sprintf("%v %+v %#v", q, q, q), fmt.Sprintf("%v %s", rot, rot)} {
		if !strings.Contains(s, "redacted") || strings.Contains(s, "PrivateKey") || strings.Contains(s, "Value") {
			t.Fatalf("printed: %s", s)
		}
	}
}

// TestRosterVerifyRemembers: Verify remembers a success only for the exact
// roster bytes; any change is verified again.
func TestRosterVerifyRemembers(t *testing.T) {
	v := getVault(t)
	r, err := ParseRoster(v.roster.Marshal(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(); err != nil {
		t.Fatal(err)
	}
	sig := r.Signatures[r.Bailiffs[0].Fingerprint]
	delete(r.Signatures, r.Bailiffs[0].Fingerprint)
	if err := r.Verify(); !errors.Is(err, ErrRosterUnsigned) {
		t.Fatalf("signature removed: %v", err)
	}
	r.Signatures[r.Bailiffs[0].Fingerprint] = sig
	if err := r.Verify(); err != nil {
		t.Fatal(err)
	}
	r.Threshold = 3
	if err := r.Verify(); !errors.Is(err, ErrRosterUnsigned) {
		t.Fatalf("threshold changed after signing: %v", err)
	}
}

// openSecret accepts the sealed bytes only when they start with the secret
// key packet of the bundle's own public key (v4 P-521 and v6 PQ keys).
func TestSameKeyPacket(t *testing.T) {
	now := time.Now()
	keys := map[string]func() (*openpgp.Entity, error){
		"p521": func() (*openpgp.Entity, error) { return generateP521Entity("a", "", now) },
		"pq":   func() (*openpgp.Entity, error) { return newPQEntity(now) },
	}
	for name, gen := range keys {
		t.Run(name, func(t *testing.T) {
			// pub and sec of a fresh key
			key := func() (pub, sec []byte) {
				k, err := gen()
				if err == nil {
					pub, err = publicBytes(k)
				}
				var b bytes.Buffer
				if err == nil {
					err = k.SerializePrivateWithoutSigning(&b, nil)
				}
				if err != nil {
					t.Fatal(err)
				}
				return pub, b.Bytes()
			}
			pubA, secA := key()
			pubB, _ := key()
			for _, c := range []struct {
				what           string
				secret, public []byte
				want           bool
			}{
				{"own key", secA, pubA, true},
				{"another key", secA, pubB, false},
				{"public key as secret", pubA, pubA, false},
				{"secret key as public", secA, secA, false},
				{"truncated secret", secA[:40], pubA, false},
				{"empty", nil, pubA, false},
			} {
				if got := sameKeyPacket(c.secret, c.public); got != c.want {
					t.Errorf("%s: %v, want %v", c.what, got, c.want)
				}
			}
		})
	}
}

// verifyDetached remembers successes only, for the exact key, message and
// signature, and only for a while; the signer of a signature is tried
// first when a signature is added.
func TestVerifyDetachedMemo(t *testing.T) {
	now := time.Now()
	a, err := generateP521Entity("a", "", now)
	if err != nil {
		t.Fatal(err)
	}
	b, err := generateP521Entity("b", "", now)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("roster body\n")
	sig, err := detachSign(a, msg, now)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 { // the second time from the memo
		if err := verifyDetached(a, msg, sig); err != nil {
			t.Fatalf("try %d: %v", i+1, err)
		}
		if !verifiedSigs.seen(sigMemoKey(a, msg, sig)) {
			t.Fatalf("try %d: success not remembered", i+1)
		}
	}
	if err := verifyDetached(a, []byte("roster body!\n"), sig); err == nil {
		t.Fatal("another message verified with a remembered signature")
	}
	if err := verifyDetached(b, msg, sig); err == nil {
		t.Fatal("another key verified a remembered signature")
	}
	if verifiedSigs.seen(sigMemoKey(b, msg, sig)) {
		t.Fatal("a failure was remembered")
	}

	clock := now
	m := &sigMemo{ttl: time.Minute, max: 2, now: func() time.Time { return clock }}
	k1, k2, k3 := [32]byte{1}, [32]byte{2}, [32]byte{3}
	m.add(k1)
	clock = clock.Add(59 * time.Second)
	if !m.seen(k1) {
		t.Fatal("forgotten before its time")
	}
	clock = clock.Add(2 * time.Second)
	if m.seen(k1) {
		t.Fatal("remembered after its time")
	}
	m.add(k1)
	m.add(k2)
	m.add(k3) // full: starts again
	if m.seen(k1) || m.seen(k2) || !m.seen(k3) {
		t.Fatal("the memo grew past its bound")
	}

	bs := []*BailiffKey{{Fingerprint: Fingerprint(b), entity: b}, {Fingerprint: Fingerprint(a), entity: a}}
	if got := issuerFirst(bs, sig); got[0].entity != a || got[1].entity != b {
		t.Fatalf("issuer not first: %s, %s", got[0].Fingerprint, got[1].Fingerprint)
	}
	if got := issuerFirst(bs, []byte("not a signature")); got[0].entity != b {
		t.Fatal("an unreadable signature reordered the bailiffs")
	}
}
