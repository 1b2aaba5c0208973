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

	"coffre/bailiff/shamir"
)

func TestGenesisRosterSignedByAll(t *testing.T) {
	v := getVault(t)
	if err := v.roster.Verify(); err != nil {
		t.Fatal(err)
	}
	back, err := ParseRoster(v.roster.Marshal(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := back.Verify(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.Marshal(), v.roster.Marshal()) {
		t.Fatal("roster does not round-trip")
	}
	// generated private keys are gone from the appliance
	for _, gk := range v.genKeys {
		if gk.priv != nil {
			t.Fatalf("private key of %s still held after FixRoster", gk.Key.Name)
		}
	}
	// one missing signature fails verification, naming the bailiff
	r2, _ := ParseRoster(v.roster.Marshal(), time.Now())
	delete(r2.Signatures, r2.Bailiffs[1].Fingerprint)
	if err := r2.Verify(); !errors.Is(err, ErrRosterUnsigned) || !strings.Contains(err.Error(), r2.Bailiffs[1].Name) {
		t.Fatalf("err = %v, want ErrRosterUnsigned naming %s", err, r2.Bailiffs[1].Name)
	}
	// a changed threshold invalidates every signature
	r2, _ = ParseRoster(v.roster.Marshal(), time.Now())
	r2.Threshold = 3
	if err := r2.Verify(); !errors.Is(err, ErrRosterUnsigned) {
		t.Fatalf("tampered threshold: err = %v", err)
	}
	tr := v.result.Transcript
	md := string(tr.Markdown())
	for _, b := range v.roster.Bailiffs {
		if !strings.Contains(string(tr.Marshal()), b.Fingerprint) || !strings.Contains(md, b.Fingerprint) {
			t.Fatalf("transcript lacks %s", b.Fingerprint)
		}
	}
	for _, want := range []string{"print-card", "wipe-key", "vault-check", "finish"} {
		if !strings.Contains(string(tr.Marshal()), " "+want+" ") {
			t.Fatalf("transcript lacks step %s", want)
		}
	}
}

func TestKeyCardScansBack(t *testing.T) {
	v := getVault(t)
	gk := v.genKeys[0]
	back, err := ReadKeyCard(gk.Card.PNG)
	if err != nil {
		t.Fatal(err)
	}
	// the card carries the same protected key as the armored export
	k, err := OpenBailiffKey(back, []byte(v.pass[v.roster.index(gk.Key.Fingerprint)]))
	if err != nil {
		t.Fatal(err)
	}
	if Fingerprint(k) != gk.Key.Fingerprint {
		t.Fatal("card key has another fingerprint")
	}
	WipeKey(k)
	if _, err := OpenBailiffKey(back, []byte("wrong passphrase")); err == nil || strings.Contains(err.Error(), "passphrase-of") {
		t.Fatalf("wrong passphrase: err = %v", err)
	}
	if !strings.Contains(gk.Card.Caption(), gk.Card.Checksum) {
		t.Fatal("caption lacks the checksum")
	}
}

func TestExportedKeyIsIteratedS2K(t *testing.T) {
	v := getVault(t)
	el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(v.secrets[0]))
	if err != nil {
		t.Fatal(err)
	}
	pk := el[0].PrivateKey
	if !pk.Encrypted {
		t.Fatal("exported secret key is not encrypted")
	}
	if pk.PublicKey.Version != 4 {
		t.Fatalf("key version %d", pk.PublicKey.Version)
	}
	// the S2K specifier: usage 254, cipher AES-256 (9), S2K type 3 (iterated+salted), hash SHA-256 (8)
	var raw bytes.Buffer
	if err := el[0].SerializePrivateWithoutSigning(&raw, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw.Bytes(), []byte{254, 9, 3, 8}) {
		t.Fatal("exported key does not use S2K usage 254, AES-256, iterated+salted SHA-256")
	}
}

func TestVerifyShares(t *testing.T) {
	v := getVault(t)
	for i := range v.roster.Bailiffs {
		c, err := VerifyShare(v.check, v.roster, v.secrets[i], []byte(v.pass[i]))
		if err != nil {
			t.Fatalf("bailiff %d: %v", i, err)
		}
		if c.Index != i+1 || c.Bailiff != v.roster.Bailiffs[i].Fingerprint {
			t.Fatalf("bailiff %d: got share %d of %s", i, c.Index, c.Bailiff)
		}
	}
	if _, err := VerifyShare(v.check, v.roster, v.secrets[0], []byte("nope")); err == nil {
		t.Fatal("wrong passphrase verified")
	}
	// a real user's escrow is refused
	esc, err := NewEscrow("user-1", v.roster)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyShare(esc, v.roster, v.secrets[0], []byte(v.pass[0])); !errors.Is(err, ErrWrongEscrow) {
		t.Fatalf("verify-shares on a user escrow: err = %v", err)
	}
	// quorum dry run with cards the bailiffs opened themselves
	var cards [][]byte
	for i := 0; i < 2; i++ {
		k := v.openKey(t, i)
		card, err := decryptBytes(bytes.NewReader(v.check.Shares[i].Message), openpgp.EntityList{k}, 8192)
		WipeKey(k)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := VerifyShareCard(v.check, v.roster, bytes.Clone(card)); err != nil {
			t.Fatal(err)
		}
		cards = append(cards, card)
	}
	if err := VerifyQuorum(v.check, v.roster, cards); err != nil {
		t.Fatal(err)
	}
}

func TestEscrowBundleRoundTrip(t *testing.T) {
	v := getVault(t)
	esc, err := NewEscrow("user-42", v.roster)
	if err != nil {
		t.Fatal(err)
	}
	b := esc.Marshal()
	back, err := ParseEscrow(b, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.Marshal(), b) {
		t.Fatal("bundle does not round-trip")
	}
	if _, err := NewEscrow("coffre:verify-shares", v.roster); err == nil {
		t.Fatal("reserved user id accepted")
	}
	if _, err := NewEscrow("bad id", v.roster); err == nil {
		t.Fatal("user id with a space accepted")
	}
}

// TestSealedItemPackets checks the GnuPG 2.2 profile on the wire: PKESK v3
// with wildcard key id, SEIPD v1, AES-256, literal data.
func TestSealedItemPackets(t *testing.T) {
	v := getVault(t)
	esc, err := NewEscrow("user-packets", v.roster)
	if err != nil {
		t.Fatal(err)
	}
	algs, err := esc.Seal(io.Discard, strings.NewReader("x"))
	if err != nil || algs != ItemAlgorithms {
		t.Fatalf("algs %v err %v", algs, err)
	}
	ct := sealBytes(t, esc, []byte("hello escrow"))
	pr := packet.NewReader(bytes.NewReader(ct))
	p, err := pr.Next()
	if err != nil {
		t.Fatal(err)
	}
	ek, ok := p.(*packet.EncryptedKey)
	if !ok || ek.Version != 3 || ek.KeyId != 0 || ek.Algo != packet.PubKeyAlgoECDH {
		t.Fatalf("first packet %T %+v, want PKESK v3 ECDH with key id 0", p, p)
	}
	p, err = pr.Next()
	if err != nil {
		t.Fatal(err)
	}
	se, ok := p.(*packet.SymmetricallyEncrypted)
	if !ok || se.Version != 1 || !se.IntegrityProtected {
		t.Fatalf("second packet %T, want SEIPD v1 with MDC", p)
	}
	// the session key is AES-256: decrypt the PKESK with the escrow key
	key, err := esc.openKey(quorumShares(t, v, esc, 0, 1), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer WipeKey(key)
	enc, _ := key.EncryptionKey(time.Now())
	ek2, _ := packet.Read(bytes.NewReader(ct))
	if err := ek2.(*packet.EncryptedKey).Decrypt(enc.PrivateKey, nil); err != nil {
		t.Fatal(err)
	}
	if ek2.(*packet.EncryptedKey).CipherFunc != packet.CipherAES256 {
		t.Fatalf("cipher %v, want AES-256", ek2.(*packet.EncryptedKey).CipherFunc)
	}
	pt, err := decryptBytes(bytes.NewReader(ct), openpgp.EntityList{key}, 100)
	if err != nil || string(pt) != "hello escrow" {
		t.Fatalf("decrypt: %q %v", pt, err)
	}
}

// quorumShares opens the shares of bailiffs idx for esc.
func quorumShares(t *testing.T, v *testVault, esc *Escrow, idx ...int) []shamir.Share {
	t.Helper()
	var out []shamir.Share
	for _, i := range idx {
		k := v.openKey(t, i)
		s, err := esc.openShareMessage(k)
		WipeKey(k)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func TestRewrapKeepsPayload(t *testing.T) {
	v := getVault(t)
	oldEsc, _ := NewEscrow("user-rewrap", v.roster)
	newEsc, _ := NewEscrow("user-rewrap-2", v.roster)
	ct := sealBytes(t, oldEsc, []byte("payload stays"))
	oldKey, err := oldEsc.openKey(quorumShares(t, v, oldEsc, 0, 2), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer WipeKey(oldKey)
	var out bytes.Buffer
	if err := Rewrap(&out, bytes.NewReader(ct), oldKey, newEsc.PublicKey()); err != nil {
		t.Fatal(err)
	}
	// the encrypted data packet is byte-identical
	first, _ := packet.Read(bytes.NewReader(ct))
	var pk bytes.Buffer
	first.(*packet.EncryptedKey).Serialize(&pk)
	if !bytes.HasSuffix(out.Bytes(), ct[pk.Len():]) {
		t.Fatal("rewrap changed the encrypted data packet")
	}
	newKey, err := newEsc.openKey(quorumShares(t, v, newEsc, 1, 2), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer WipeKey(newKey)
	pt, err := decryptBytes(&out, openpgp.EntityList{newKey}, 100)
	if err != nil || string(pt) != "payload stays" {
		t.Fatalf("rewrapped item: %q %v", pt, err)
	}
	if _, err := decryptBytes(bytes.NewReader(out.Bytes()), openpgp.EntityList{oldKey}, 100); err == nil {
		t.Fatal("old key still opens the rewrapped item")
	}
}

func TestRestitutionEndToEnd(t *testing.T) {
	v := getVault(t)
	ben, benPub := newBeneficiary(t)
	escA, err := NewEscrow("user-A", v.roster)
	if err != nil {
		t.Fatal(err)
	}
	escB, err := NewEscrow("user-B", v.roster)
	if err != nil {
		t.Fatal(err)
	}
	pts := [][]byte{[]byte("seed phrase: abandon abandon ... about"), bytes.Repeat([]byte("letter "), 50000)}
	var items []ItemSource
	for i, pt := range pts {
		d := sha256.Sum256(pt)
		s := source("item-"+string(rune('a'+i)), 1, sealBytes(t, escA, pt))
		s.Digest = d[:]
		items = append(items, s)
	}
	items = append(items, source("item-a", 2, sealBytes(t, escA, []byte("second version"))))

	order := v.signedOrder(t, "user-A", benPub, 0, 2)
	orderBack, err := ParseOrder(order.Marshal(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	u, err := NewUnlock(v.roster, orderBack, escA, UnlockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.AddShareWithKey(v.secrets[0], []byte(v.pass[0])); err != nil {
		t.Fatal(err)
	}
	// bailiff 2 opened their share with their own tools and brings the card
	k := v.openKey(t, 1)
	card, err := decryptBytes(bytes.NewReader(escA.Shares[1].Message), openpgp.EntityList{k}, 8192)
	WipeKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.AddShareCard(card); err != nil {
		t.Fatal(err)
	}
	signer, _ := newBeneficiary(t)
	out := filepath.Join(t.TempDir(), "pkg")
	m, err := Restitute(u, items, []byte("designations: all to heir"), out, signer)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Items) != 3 || m.Designations == nil {
		t.Fatalf("manifest: %d items, designations %v", len(m.Items), m.Designations)
	}
	for i, it := range m.Items {
		f, err := os.ReadFile(filepath.Join(out, it.File))
		if err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(f) != it.FileSHA256 {
			t.Fatal("file digest mismatch")
		}
		pt, err := decryptBytes(bytes.NewReader(f), openpgp.EntityList{ben}, 1<<22)
		if err != nil {
			t.Fatal(err)
		}
		want := []byte("second version")
		if i < 2 {
			want = pts[i]
		}
		if !bytes.Equal(pt, want) || sha256.Sum256(pt) != it.PlaintextSHA256 {
			t.Fatalf("item %d plaintext differs", i)
		}
	}
	mb, _ := os.ReadFile(filepath.Join(out, ManifestFile))
	sig, _ := os.ReadFile(filepath.Join(out, ManifestSigFile))
	if _, err := openpgp.CheckArmoredDetachedSignature(openpgp.EntityList{signer}, bytes.NewReader(mb), bytes.NewReader(sig), nil); err != nil {
		t.Fatalf("manifest signature: %v", err)
	}
	// the session is used up
	if _, err := Restitute(u, items, nil, filepath.Join(t.TempDir(), "again"), signer); !errors.Is(err, ErrUnlockExpired) {
		t.Fatalf("second use: err = %v", err)
	}

	// user B stays sealed: A's order cannot be bound to B's escrow ...
	if _, err := NewUnlock(v.roster, orderBack, escB, UnlockOptions{}); !errors.Is(err, ErrWrongEscrow) {
		t.Fatalf("A's order on B's escrow: err = %v", err)
	}
	// ... B's shares are refused by an unlock for A ...
	u2, _ := NewUnlock(v.roster, orderBack, escA, UnlockOptions{})
	k = v.openKey(t, 0)
	cardB, _ := decryptBytes(bytes.NewReader(escB.Shares[0].Message), openpgp.EntityList{k}, 8192)
	WipeKey(k)
	if _, err := u2.AddShareCard(cardB); err == nil || !strings.Contains(err.Error(), "another escrow") {
		t.Fatalf("B's share in A's unlock: err = %v", err)
	}
	// ... and B's items do not open with A's key.
	u2.AddShareWithKey(v.secrets[0], []byte(v.pass[0]))
	u2.AddShareWithKey(v.secrets[1], []byte(v.pass[1]))
	bItem := source("b-item", 1, sealBytes(t, escB, []byte("B's secret")))
	out2 := filepath.Join(t.TempDir(), "pkg2")
	if _, err := Restitute(u2, []ItemSource{bItem}, nil, out2, signer); err == nil || !strings.Contains(err.Error(), "does not open with the escrow key") {
		t.Fatalf("B's item under A's restitution: err = %v", err)
	}
	if ents, _ := os.ReadDir(out2); len(ents) != 0 {
		t.Fatalf("failed restitution left %d entries behind", len(ents))
	}
}

func TestUnlockLimits(t *testing.T) {
	v := getVault(t)
	_, benPub := newBeneficiary(t)
	esc, _ := NewEscrow("user-limits", v.roster)
	// one signature is not a quorum
	o1 := v.signedOrder(t, "user-limits", benPub, 0)
	if _, err := NewUnlock(v.roster, o1, esc, UnlockOptions{}); err == nil || !strings.Contains(err.Error(), "needs 2") {
		t.Fatalf("1-signature order: err = %v", err)
	}
	o := v.signedOrder(t, "user-limits", benPub, 0, 1)
	now := time.Now()
	clock := func() time.Time { return now }
	u, err := NewUnlock(v.roster, o, esc, UnlockOptions{TTL: time.Minute, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.AddShareWithKey(v.secrets[0], []byte(v.pass[0])); err != nil {
		t.Fatal(err)
	}
	// k-1 shares open nothing
	signer, _ := newBeneficiary(t)
	if _, err := Restitute(u, nil, nil, t.TempDir(), signer); err == nil || !strings.Contains(err.Error(), "1 of 2 shares") {
		t.Fatalf("k-1 shares: err = %v", err)
	}
	u, _ = NewUnlock(v.roster, o, esc, UnlockOptions{TTL: time.Minute, Now: clock})
	u.AddShareWithKey(v.secrets[0], []byte(v.pass[0]))
	now = now.Add(2 * time.Minute)
	if _, err := u.AddShareWithKey(v.secrets[1], []byte(v.pass[1])); !errors.Is(err, ErrUnlockExpired) {
		t.Fatalf("after TTL: err = %v", err)
	}
	if h, _ := u.Have(); h != 0 {
		t.Fatal("expired session still holds shares")
	}
}

func TestTamperedShareNamedAtRestitution(t *testing.T) {
	v := getVault(t)
	_, benPub := newBeneficiary(t)
	esc, _ := NewEscrow("user-tamper", v.roster)
	o := v.signedOrder(t, "user-tamper", benPub, 0, 1)
	u, _ := NewUnlock(v.roster, o, esc, UnlockOptions{})
	k := v.openKey(t, 2)
	card, _ := decryptBytes(bytes.NewReader(esc.Shares[2].Message), openpgp.EntityList{k}, 8192)
	WipeKey(k)
	s, err := shamir.ParseCard(string(card))
	if err != nil {
		t.Fatal(err)
	}
	s.Value[3] ^= 0x10 // tampered, then re-encoded with a valid checksum
	forged, _ := s.CardText()
	_, err = u.AddShareCard([]byte(forged))
	var bad *shamir.BadShareError
	if !errors.As(err, &bad) || bad.Index != 3 {
		t.Fatalf("tampered share: err = %v, want share 3 named", err)
	}
}

func TestUnlockTwoUses(t *testing.T) {
	v := getVault(t)
	_, benPub := newBeneficiary(t)
	esc, _ := NewEscrow("user-two-uses", v.roster)
	item := source("i", 1, sealBytes(t, esc, []byte("x")))
	o := v.signedOrder(t, "user-two-uses", benPub, 0, 2)
	u, err := NewUnlock(v.roster, o, esc, UnlockOptions{Uses: 2})
	if err != nil {
		t.Fatal(err)
	}
	u.AddShareWithKey(v.secrets[0], []byte(v.pass[0]))
	u.AddShareWithKey(v.secrets[2], []byte(v.pass[2]))
	signer, _ := newBeneficiary(t)
	for i := 0; i < 2; i++ {
		if _, err := Restitute(u, []ItemSource{item}, nil, filepath.Join(t.TempDir(), "p"), signer); err != nil {
			t.Fatalf("use %d: %v", i+1, err)
		}
	}
	if h, _ := u.Have(); h != 0 {
		t.Fatal("shares kept after the last use")
	}
	if _, err := Restitute(u, []ItemSource{item}, nil, filepath.Join(t.TempDir(), "p"), signer); !errors.Is(err, ErrUnlockExpired) {
		t.Fatalf("third use: err = %v", err)
	}
}

// TestItemSealerHalves: the key packet made after the body, put in front
// of it, is the same message as SealItem's (PKESK v3 hidden, SEIPD v1) and
// opens with the escrow key, for an item of one chunk and of several; a
// post-quantum or missing key is refused.
func TestItemSealerHalves(t *testing.T) {
	v := getVault(t)
	esc, err := NewEscrow("user-halves", v.roster)
	if err != nil {
		t.Fatal(err)
	}
	key, err := esc.openKey(quorumShares(t, v, esc, 0, 2), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer WipeKey(key)
	for _, n := range []int{0, 11, 3*litChunk + 5} {
		pt := make([]byte, n)
		rand.Read(pt)
		s, err := NewItemSealer()
		if err != nil {
			t.Fatal(err)
		}
		var body bytes.Buffer
		if err := s.Body(&body, bytes.NewReader(pt)); err != nil {
			t.Fatal(err)
		}
		head, algs, err := s.KeyPacket(esc.PublicKey())
		s.Wipe()
		if err != nil || algs != ItemAlgorithms {
			t.Fatalf("key packet: algs %v err %v", algs, err)
		}
		ct := append(head, body.Bytes()...)
		pr := packet.NewReader(bytes.NewReader(ct))
		p, err := pr.Next()
		if ek, ok := p.(*packet.EncryptedKey); err != nil || !ok || ek.Version != 3 || ek.KeyId != 0 {
			t.Fatalf("%d bytes: first packet %T %v, want PKESK v3 with key id 0", n, p, err)
		}
		p, err = pr.Next()
		if se, ok := p.(*packet.SymmetricallyEncrypted); err != nil || !ok || se.Version != 1 || !se.IntegrityProtected {
			t.Fatalf("%d bytes: second packet %T %v, want SEIPD v1 with MDC", n, p, err)
		}
		got, err := decryptBytes(bytes.NewReader(ct), openpgp.EntityList{key}, int64(n+100))
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("%d bytes: decrypt: %v", n, err)
		}
	}
	s, _ := NewItemSealer()
	defer s.Wipe()
	if _, _, err := s.KeyPacket(nil); err == nil {
		t.Fatal("no key accepted")
	}
	pq, err := NewEscrowPQ("user-halves-pq", v.roster)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.KeyPacket(pq.PublicKey()); err == nil {
		t.Fatal("post-quantum escrow key accepted for a GnuPG 2.2 profile item")
	}
}

// TestShareMessageFastPath: a share message opens through the prepared
// ECDH subkey (fastopen.go) to the same card as through go-crypto; the
// prepared subkey of another bailiff does not take it (its key packet
// names the addressee) and the slow path then fails as it always did.
func TestShareMessageFastPath(t *testing.T) {
	v := getVault(t)
	esc, err := NewEscrow("user-fast-share", v.roster)
	if err != nil {
		t.Fatal(err)
	}
	k0, k1 := v.openKey(t, 0), v.openKey(t, 1)
	defer WipeKey(k0)
	defer WipeKey(k1)
	fk0, fk1 := newFastKey(k0), newFastKey(k1)
	if fk0 == nil || fk1 == nil {
		t.Fatal("bailiff keys are not of the fast shape (ECDH P-521, SHA-512, AES-256)")
	}
	msg := esc.shareFor(Fingerprint(k0)).Message
	if n, sk := fk0.sessionKey(msg[:min(len(msg), 512)]); sk == nil || n == 0 {
		t.Fatal("the fast path does not take a share message addressed to its key")
	}
	if _, sk := fk1.sessionKey(msg[:min(len(msg), 512)]); sk != nil {
		t.Fatal("another bailiff's subkey recovered a session key from a share message not addressed to it")
	}
	fast, err := decryptShare(msg, k0, fk0, 4096)
	if err != nil {
		t.Fatal(err)
	}
	slow, err := decryptShare(msg, k0, nil, 4096)
	if err != nil || !bytes.Equal(fast, slow) {
		t.Fatalf("fast and slow paths differ: %v", err)
	}
	if _, err := decryptShare(msg, k1, fk1, 4096); err == nil {
		t.Fatal("bailiff 1 opened bailiff 0's share message")
	}
	s, err := esc.openShareMessageFast(k0, fk0)
	if err != nil {
		t.Fatal(err)
	}
	s.Wipe()
}
