package bailiff

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// upgradeOrder drafts an algorithm-upgrade order for users, signed by the
// bailiffs idx.
func (v *testVault) upgradeOrder(t *testing.T, users []string, idx ...int) *ReencapOrder {
	t.Helper()
	o, err := NewReencapOrder(v.roster, ActionUpgrade, [32]byte{}, time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC), AlgKeyPQ, users, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range idx {
		k := v.openKey(t, i)
		if err := o.Sign(v.roster, k, time.Now()); err != nil {
			t.Fatal(err)
		}
		WipeKey(k)
	}
	return o
}

// quorum opens a quorum session for the order with bailiffs idx present.
func (v *testVault) quorum(t *testing.T, o *ReencapOrder, idx ...int) *Quorum {
	t.Helper()
	q, err := NewQuorum(v.roster, o, UnlockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range idx {
		if _, err := q.AddKey(v.openKey(t, i)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(q.Close)
	return q
}

func TestEscrowPQBundle(t *testing.T) {
	v := getVault(t)
	esc, err := NewEscrowPQ("user-pq", v.roster)
	if err != nil {
		t.Fatal(err)
	}
	if esc.Version != 2 || !esc.PQ() || len(esc.Fingerprint) != 64 || esc.KeyAlgorithm() != AlgKeyPQ {
		t.Fatalf("v%d fingerprint %s", esc.Version, esc.Fingerprint)
	}
	b := esc.Marshal()
	if !bytes.HasPrefix(b, []byte("coffre-escrow v2\n")) {
		t.Fatalf("bundle starts %q", b[:20])
	}
	back, err := ParseEscrow(b, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.Marshal(), b) || back.Version != 2 {
		t.Fatal("v2 bundle does not re-encode to the same bytes")
	}
	t.Logf("v2 bundle %d bytes: public key %d, sealed key %d", len(b), len(esc.Public), len(esc.Sealed))
	// A v2 bundle relabelled v1 (or the reverse) does not parse: the key
	// length and profile are those of its version.
	if _, err := ParseEscrow(bytes.Replace(b, []byte("coffre-escrow v2"), []byte("coffre-escrow v1"), 1), time.Now()); err == nil {
		t.Fatal("v2 bundle accepted as v1")
	}
	old, _ := NewEscrow("user-pq", v.roster)
	if _, err := ParseEscrow(bytes.Replace(old.Marshal(), []byte("coffre-escrow v1"), []byte("coffre-escrow v2"), 1), time.Now()); err == nil {
		t.Fatal("v1 bundle accepted as v2")
	}
	if _, err := NewEscrowPQ("coffre:x", v.roster); err == nil {
		t.Fatal("reserved user id accepted")
	}
	// The shares stay in the GnuPG 2.2 profile: each bailiff opens theirs
	// alone, as with a v1 bundle.
	k := v.openKey(t, 1)
	defer WipeKey(k)
	s, err := esc.openShareMessage(k)
	if err != nil {
		t.Fatal(err)
	}
	s.Wipe()
	first, err := packet.Read(bytes.NewReader(esc.Shares[1].Message))
	if err != nil || first.(*packet.EncryptedKey).Version != 3 || first.(*packet.EncryptedKey).Algo != packet.PubKeyAlgoECDH {
		t.Fatalf("share message does not start with a PKESK v3 to ECDH: %v", err)
	}
}

// TestSealItemPQPackets: the PQ profile on the wire — an anonymous PKESK
// v6 to ML-KEM-1024+X448, SEIPD v2 AES-256/OCB, one literal packet.
func TestSealItemPQPackets(t *testing.T) {
	v := getVault(t)
	esc, _ := NewEscrowPQ("user-pq-packets", v.roster)
	var ct bytes.Buffer
	algs, err := SealEscrowItem(&ct, esc, strings.NewReader("pq item"))
	if err != nil || algs != ItemAlgorithmsPQ {
		t.Fatalf("%v %v", algs, err)
	}
	r := packet.NewReader(bytes.NewReader(ct.Bytes()))
	p, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	ek, ok := p.(*packet.EncryptedKey)
	if !ok || ek.Version != 6 || ek.KeyVersion != 0 || ek.KeyFingerprint != nil || ek.Algo != packet.PubKeyAlgoMlkem1024X448 {
		t.Fatalf("first packet %T %+v", p, ek)
	}
	p, err = r.Next()
	if err != nil {
		t.Fatal(err)
	}
	se, ok := p.(*packet.SymmetricallyEncrypted)
	if !ok || se.Version != 2 || se.Cipher != packet.CipherAES256 || se.Mode != packet.AEADModeOCB || se.ChunkSizeByte != 10 {
		t.Fatalf("second packet %T %+v", p, se)
	}
	if pkeskVersion(ct.Bytes()) != 6 {
		t.Fatal("pkeskVersion does not see v6")
	}
	v1 := sealBytes(t, mustEscrow(t, "user-v1", v), []byte("x"))
	if pkeskVersion(v1) != 3 {
		t.Fatal("pkeskVersion does not see v3")
	}
}

func mustEscrow(t *testing.T, user string, v *testVault) *Escrow {
	t.Helper()
	e, err := NewEscrow(user, v.roster)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestUpgradeItem is the algorithm upgrade of one item end to end under a
// quorum: the result opens with the new (post-quantum) escrow key only, its
// session key is fresh, the old session key does not open its data packet,
// and the plaintext is the same.
func TestUpgradeItem(t *testing.T) {
	v := getVault(t)
	const user = "user-upgrade"
	oldEsc := mustEscrow(t, user, v)
	pt := bytes.Repeat([]byte("the letter to my heirs. "), 30000) // > one 256 KiB chunk
	digest := sha256.Sum256(pt)
	oldCT := sealBytes(t, oldEsc, pt)
	newEsc, err := NewEscrowPQ(user, v.roster)
	if err != nil {
		t.Fatal(err)
	}
	q := v.quorum(t, v.upgradeOrder(t, []string{user}, 0, 2), 0, 2)
	oldKey, err := q.OpenEscrow(oldEsc)
	if err != nil {
		t.Fatal(err)
	}
	defer oldKey.Close()
	var newCT bytes.Buffer
	algs, n, err := UpgradeItem(&newCT, bytes.NewReader(oldCT), oldKey, newEsc, digest[:])
	if err != nil || algs != ItemAlgorithmsPQ || n != int64(len(pt)) {
		t.Fatalf("%v %d %v", algs, n, err)
	}
	newKey, err := q.OpenEscrow(newEsc)
	if err != nil {
		t.Fatal(err)
	}
	defer newKey.Close()

	// The new key opens it, with our strict reader and go-crypto's own.
	got := readAll(t, newKey, newCT.Bytes())
	if !bytes.Equal(got, pt) {
		t.Fatal("upgraded item decrypts to different bytes")
	}
	md, err := openpgp.ReadMessage(bytes.NewReader(newCT.Bytes()), openpgp.EntityList{newKey.key}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(md.UnverifiedBody); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("go-crypto ReadMessage: %v", err)
	}

	// The old escrow key does not open the new record (either reader).
	if r, err := oldKey.Open(bytes.NewReader(newCT.Bytes())); err == nil {
		if _, err := io.ReadAll(r); err == nil {
			t.Fatal("the old escrow key opens the upgraded item")
		}
	}
	if md, err := openpgp.ReadMessage(bytes.NewReader(newCT.Bytes()), openpgp.EntityList{oldKey.key}, nil, nil); err == nil {
		if _, err := io.ReadAll(md.UnverifiedBody); err == nil {
			t.Fatal("go-crypto opens the upgraded item with the old escrow key")
		}
	}
	// Fresh session key: the old one (what a harvest-now-decrypt-later
	// adversary recovers from the old PKESK) does not open the new data.
	oldSK := sessionKey(t, oldCT, oldKey.key)
	newSK := sessionKey(t, newCT.Bytes(), newKey.key)
	if bytes.Equal(oldSK, newSK) {
		t.Fatal("the upgraded item reuses the old session key")
	}
	if _, err := decryptWithSessionKey(newCT.Bytes(), oldSK); err == nil {
		t.Fatal("the old session key opens the new data packet")
	}
	if got, err := decryptWithSessionKey(newCT.Bytes(), newSK); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("the new session key does not open the new data packet: %v", err)
	}

	// A wrong digest writes nothing usable and says so.
	bad := digest
	bad[0] ^= 1
	if _, _, err := UpgradeItem(io.Discard, bytes.NewReader(oldCT), oldKey, newEsc, bad[:]); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Fatalf("wrong digest: %v", err)
	}
	// A damaged old item fails (the MDC, at its end).
	dam := bytes.Clone(oldCT)
	dam[len(dam)-30] ^= 1
	if _, _, err := UpgradeItem(io.Discard, bytes.NewReader(dam), oldKey, newEsc, nil); err == nil {
		t.Fatal("damaged old item upgraded")
	}
	// Damaged or truncated PQ items fail.
	for name, c := range map[string][]byte{
		"flipped":   flip(newCT.Bytes(), newCT.Len()-100),
		"truncated": newCT.Bytes()[:newCT.Len()-20],
		"tag":       flip(newCT.Bytes(), newCT.Len()-1),
	} {
		r, err := newKey.Open(bytes.NewReader(c))
		if err == nil {
			_, err = io.ReadAll(r)
		}
		if err == nil {
			t.Errorf("%s PQ item opened", name)
		}
	}
}

func flip(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 0x40; return c }

func readAll(t *testing.T, k *EscrowKey, ct []byte) []byte {
	t.Helper()
	r, err := k.Open(bytes.NewReader(ct))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sessionKey decrypts the first PKESK of an item with key.
func sessionKey(t *testing.T, ct []byte, key *openpgp.Entity) []byte {
	t.Helper()
	p, err := packet.Read(bytes.NewReader(ct))
	if err != nil {
		t.Fatal(err)
	}
	ek := p.(*packet.EncryptedKey)
	for _, k := range (openpgp.EntityList{key}).DecryptionKeys() {
		if k.PublicKey.PubKeyAlgo == ek.Algo && ek.Decrypt(k.PrivateKey, nil) == nil {
			return ek.Key
		}
	}
	t.Fatal("no session key")
	return nil
}

// decryptWithSessionKey opens the SEIPD v2 packet of a PQ item with a raw
// session key (what someone holding only that key could do).
func decryptWithSessionKey(ct, sk []byte) ([]byte, error) {
	r := packet.NewReader(bytes.NewReader(ct))
	for {
		p, err := r.Next()
		if err != nil {
			return nil, err
		}
		se, ok := p.(*packet.SymmetricallyEncrypted)
		if !ok {
			continue
		}
		dec, err := se.Decrypt(packet.CipherAES256, sk)
		if err != nil {
			return nil, err
		}
		lp, err := packet.Read(dec)
		if err != nil {
			return nil, err
		}
		lit, ok := lp.(*packet.LiteralData)
		if !ok {
			return nil, errors.New("not literal")
		}
		b, err := io.ReadAll(lit.Body)
		if err != nil {
			return nil, err
		}
		return b, dec.Close()
	}
}

func TestQuorumLimits(t *testing.T) {
	v := getVault(t)
	o := v.upgradeOrder(t, []string{"user-q1"}, 0, 1)
	// one signature is not a quorum
	o1 := v.upgradeOrder(t, []string{"user-q1"}, 0)
	if _, err := NewQuorum(v.roster, o1, UnlockOptions{}); err == nil {
		t.Fatal("order with one signature opened a quorum session")
	}
	q := v.quorum(t, o, 0, 1)
	// a bailiff who did not sign the order cannot take part
	if _, err := q.AddKey(v.openKey(t, 2)); err == nil {
		t.Fatal("non-signatory joined the session")
	}
	// only the users the order lists
	other := mustEscrow(t, "user-q2", v)
	if _, err := q.OpenEscrow(other); !errors.Is(err, ErrWrongEscrow) {
		t.Fatalf("escrow of an unlisted user: %v", err)
	}
	// a retirement order opens nothing
	ro, err := NewReencapOrder(v.roster, ActionRetire, [32]byte{}, time.Now(), "", nil, []uint64{3, 9}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1} {
		k := v.openKey(t, i)
		ro.Sign(v.roster, k, time.Now())
		WipeKey(k)
	}
	if _, err := NewQuorum(v.roster, ro, UnlockOptions{}); err == nil {
		t.Fatal("retirement order opened a quorum session")
	}
	// expiry wipes the keys
	now := time.Now()
	q2, err := NewQuorum(v.roster, o, UnlockOptions{TTL: time.Minute, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	q2.AddKey(v.openKey(t, 0))
	q2.AddKey(v.openKey(t, 1))
	now = now.Add(2 * time.Minute)
	if _, err := q2.OpenEscrow(mustEscrow(t, "user-q1", v)); !errors.Is(err, ErrUnlockExpired) {
		t.Fatalf("expired session: %v", err)
	}
	if h, _ := q2.Have(); h != 0 {
		t.Fatal("expired session kept its keys")
	}
	if s := q.String(); strings.Contains(s, "PRIVATE") {
		t.Fatal(s)
	}
}

func TestReencapOrderRoundTrip(t *testing.T) {
	v := getVault(t)
	o := v.upgradeOrder(t, []string{"zed", "alice", "coffre:verify-shares"}, 1, 2)
	b := o.Marshal()
	back, err := ParseReencapOrder(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.Marshal(), b) {
		t.Fatal("order does not re-encode to the same bytes")
	}
	if err := back.Verify(v.roster); err != nil {
		t.Fatal(err)
	}
	if back.Users[0] != "alice" {
		t.Fatalf("users not sorted: %v", back.Users)
	}
	tampered := bytes.Replace(b, []byte("user zed"), []byte("user zoe"), 1)
	to, err := ParseReencapOrder(tampered)
	if err != nil {
		t.Fatal(err)
	}
	if err := to.Verify(v.roster); err == nil {
		t.Fatal("tampered order verifies")
	}
	for name, bad := range map[string][]byte{
		"unsorted":  bytes.Replace(b, []byte("user alice\nuser coffre"), []byte("user coffre:verify-shares\nuser alice\nuser coffre"), 1),
		"action":    bytes.Replace(b, []byte("action algorithm-upgrade"), []byte("action rekey"), 1),
		"target":    bytes.Replace(b, []byte("target "+AlgKeyPQ), []byte("target openpgp-v4-ecdsa-p521+ecdh-p521"), 1),
		"trailing":  append(bytes.Clone(b), "x y\n"...),
		"crlf":      bytes.Replace(b, []byte("\n"), []byte("\r\n"), 1),
		"zero-pol":  bytes.Replace(b, []byte("policy default"), []byte("policy "+strings.Repeat("0", 64)), 1),
		"lead-zero": bytes.Replace(b, []byte("records 0"), []byte("records 00"), 1),
	} {
		if _, err := ParseReencapOrder(bad); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

// TestRestitutionOfPQItems: a restitution from a post-quantum escrow
// re-encrypts each item to the beneficiary in the GnuPG 2.2 profile, and
// gpg opens the package.
func TestRestitutionOfPQItems(t *testing.T) {
	v := getVault(t)
	ben, benPub := newBeneficiary(t)
	esc, err := NewEscrowPQ("user-pq-rest", v.roster)
	if err != nil {
		t.Fatal(err)
	}
	pts := [][]byte{[]byte("seed: abandon ability able"), bytes.Repeat([]byte{7, 0, 255}, 200000)}
	var items []ItemSource
	for i, pt := range pts {
		var ct bytes.Buffer
		if _, err := SealEscrowItem(&ct, esc, bytes.NewReader(pt)); err != nil {
			t.Fatal(err)
		}
		d := sha256.Sum256(pt)
		s := source(string(rune('a'+i)), 1, ct.Bytes())
		s.Digest = d[:]
		items = append(items, s)
	}
	o := v.signedOrder(t, "user-pq-rest", benPub, 0, 1)
	u, err := NewUnlock(v.roster, o, esc, UnlockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u.AddShareWithKey(v.secrets[0], []byte(v.pass[0]))
	u.AddShareWithKey(v.secrets[1], []byte(v.pass[1]))
	signer, _ := newBeneficiary(t)
	out := filepath.Join(t.TempDir(), "pkg")
	m, err := Restitute(u, items, nil, out, signer)
	if err != nil {
		t.Fatal(err)
	}
	g := newGPG(t)
	var sec bytes.Buffer
	ben.SerializePrivateWithoutSigning(&sec, nil)
	g.run(sec.Bytes(), "--import")
	for i, it := range m.Items {
		if got := g.run(nil, "--decrypt", filepath.Join(out, it.File)); !bytes.Equal(got, pts[i]) {
			t.Errorf("gpg: item %d differs", i)
		}
	}
	lp := string(g.run(mustRead(t, filepath.Join(out, m.Items[0].File)), "--list-packets"))
	if !strings.Contains(lp, "version 3, algo 18") || !strings.Contains(lp, "mdc_method: 2") {
		t.Errorf("package item is not in the GnuPG 2.2 profile:\n%s", lp)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReadSealedKey: the reader of AEAD-authenticated escrow secret keys
// gives an entity that works like ReadKeyRing's, for both key versions, and
// refuses what is not one unencrypted secret key.
func TestReadSealedKey(t *testing.T) {
	now := time.Now()
	v1, err := newP521Entity("Coffre escrow key", "", now)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := newPQEntity(now)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []*openpgp.Entity{v1, v2} {
		var sec bytes.Buffer
		if err := k.SerializePrivateWithoutSigning(&sec, nil); err != nil {
			t.Fatal(err)
		}
		e, err := readSealedKey(sec.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if Fingerprint(e) != Fingerprint(k) {
			t.Fatal("fingerprint differs")
		}
		enc, ok := e.EncryptionKey(now)
		if !ok {
			t.Fatalf("v%d: no encryption key", k.PrimaryKey.Version)
		}
		var ct bytes.Buffer
		if k.PrimaryKey.Version == 6 {
			err = sealToPQ(&ct, enc.PublicKey, strings.NewReader("x"), true, now)
		} else {
			err = encryptBytes(&ct, e, []byte("x"), true, now)
		}
		if err != nil {
			t.Fatal(err)
		}
		r, err := openItemAny(&ct, openpgp.EntityList{e})
		if err != nil {
			t.Fatal(err)
		}
		if b, err := io.ReadAll(r); err != nil || string(b) != "x" {
			t.Fatalf("v%d: %q %v", k.PrimaryKey.Version, b, err)
		}
		var pub bytes.Buffer
		k.Serialize(&pub)
		if _, err := readSealedKey(pub.Bytes()); err == nil {
			t.Fatal("public key accepted")
		}
		if _, err := readSealedKey(sec.Bytes()[:sec.Len()/2]); err == nil {
			t.Fatal("truncated key accepted")
		}
	}
	if _, err := readSealedKey([]byte("junk")); err == nil {
		t.Fatal("junk accepted")
	}
}

// TestRosterVerifyRemembers: Verify remembers only the exact bytes that
// verified; any change is verified again.
func TestRosterVerifyRemembersPQ(t *testing.T) {
	v := getVault(t)
	r, err := ParseRoster(v.roster.Marshal(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(); err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(); err != nil {
		t.Fatal(err)
	}
	r.Threshold = 3
	if err := r.Verify(); err == nil {
		t.Fatal("threshold changed after verification, still verifies")
	}
	r.Threshold = 2
	if err := r.Verify(); err != nil {
		t.Fatal(err)
	}
	for f := range r.Signatures {
		delete(r.Signatures, f)
		break
	}
	if err := r.Verify(); err == nil {
		t.Fatal("signature removed after verification, still verifies")
	}
}

// TestFastOpen: the crypto/ecdh key packet path gives the same plaintext
// as go-crypto's for items of every size, is taken for SealItem's shape,
// and anything it does not take still opens (or fails) as before.
func TestFastOpen(t *testing.T) {
	v := getVault(t)
	esc := mustEscrow(t, "user-fast", v)
	q := v.quorum(t, v.upgradeOrder(t, []string{"user-fast"}, 0, 1), 0, 1)
	k, err := q.OpenEscrow(esc)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if k.fast == nil {
		t.Fatal("no fast key for a P-521 escrow")
	}
	for _, size := range []int{0, 1, 1024, openBuf - 1, openBuf + 7, 3 << 20} {
		pt := make([]byte, size)
		rand.Read(pt)
		ct := sealBytes(t, esc, pt)
		n, sk := k.fast.sessionKey(ct[:min(len(ct), 512)])
		if sk == nil || n == 0 {
			t.Fatalf("size %d: fast path not taken", size)
		}
		if slow := sessionKey(t, ct, k.key); !bytes.Equal(sk, slow) {
			t.Fatalf("size %d: session keys differ", size)
		}
		if got := readAll(t, k, ct); !bytes.Equal(got, pt) {
			t.Fatalf("size %d: plaintext differs", size)
		}
		// damage: flipped data fails at the end, as with the slow path
		r, err := k.Open(bytes.NewReader(flip(ct, len(ct)-5)))
		if err == nil {
			_, err = io.ReadAll(r)
		}
		if err == nil {
			t.Fatalf("size %d: damaged item opened", size)
		}
	}
	// a damaged key packet is not taken by the fast path and fails in the slow one
	ct := sealBytes(t, esc, []byte("x"))
	bad := flip(ct, 40)
	if _, sk := k.fast.sessionKey(bad); sk != nil {
		t.Fatal("fast path took a damaged key packet")
	}
	if r, err := k.Open(bytes.NewReader(bad)); err == nil {
		if _, err := io.ReadAll(r); err == nil {
			t.Fatal("damaged key packet opened")
		}
	}
	// another escrow's item: not opened
	other := sealBytes(t, mustEscrow(t, "user-fast", v), []byte("y"))
	if r, err := k.Open(bytes.NewReader(other)); err == nil {
		if _, err := io.ReadAll(r); err == nil {
			t.Fatal("another escrow's item opened")
		}
	}
}
