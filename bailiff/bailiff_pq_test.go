package bailiff

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"coffre/bailiff/shamir"
)

// pqBailiffs are three post-quantum bailiff keys, generated once.
type pqBailiffs struct {
	keys    []*GeneratedKey // generation order
	secrets map[string][]byte
	pass    map[string]string
}

var (
	pqOnce sync.Once
	pqBs   *pqBailiffs
	pqErr  error
)

func getPQBailiffs(t *testing.T) *pqBailiffs {
	t.Helper()
	pqOnce.Do(func() {
		pqBs = &pqBailiffs{secrets: map[string][]byte{}, pass: map[string]string{}}
		for _, n := range []string{"Nina Weber", "Omar Haddad", "Pia Lund"} {
			p := "pq-passphrase-of-" + n
			gk, err := GenerateBailiffKeyPQ(n, strings.ToLower(n[:1])+"@example.org", []byte(p), time.Now())
			if err != nil {
				pqErr = err
				return
			}
			pqBs.keys = append(pqBs.keys, gk)
			pqBs.secrets[gk.Key.Fingerprint] = gk.ArmoredSecret
			pqBs.pass[gk.Key.Fingerprint] = p
		}
	})
	if pqErr != nil {
		t.Fatal(pqErr)
	}
	return pqBs
}

func (p *pqBailiffs) open(t *testing.T, fpr string) *openpgp.Entity {
	t.Helper()
	k, err := OpenBailiffKey(p.secrets[fpr], []byte(p.pass[fpr]))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// pqRoster makes a 2-of-3 roster of the PQ bailiffs for the test vault,
// signed by all three.
func pqRoster(t *testing.T, v *testVault, p *pqBailiffs) *Roster {
	t.Helper()
	var keys []*BailiffKey
	for _, g := range p.keys {
		keys = append(keys, g.Key)
	}
	r, err := NewRoster(v.roster.VaultID, 2, keys, v.roster.Created.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range r.Bailiffs {
		k := p.open(t, b.Fingerprint)
		_, err := r.Sign(k, time.Now())
		WipeKey(k)
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Verify(); err != nil {
		t.Fatal(err)
	}
	return r
}

func dearmor(t *testing.T, b []byte) []byte {
	t.Helper()
	blk, err := armor.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	out.ReadFrom(blk.Body)
	return out.Bytes()
}

func TestPQBailiffKey(t *testing.T) {
	p := getPQBailiffs(t)
	gk := p.keys[0]
	if !gk.Key.PQ() || gk.Key.Algorithm() != AlgKeyPQ || gk.Key.SignatureAlgorithm() != AlgSignaturePQ || gk.Key.ShareAlgorithm() != AlgPKESKPQNamed {
		t.Fatalf("profile: pq=%v %s %s", gk.Key.PQ(), gk.Key.Algorithm(), gk.Key.SignatureAlgorithm())
	}
	if len(gk.Key.Fingerprint) != 64 || len(gk.Key.Public) > MaxPublicKeyLenPQ {
		t.Fatalf("fingerprint %q, public key %d bytes", gk.Key.Fingerprint, len(gk.Key.Public))
	}
	pub, err := gk.Key.ArmoredPublic()
	if err != nil {
		t.Fatal(err)
	}
	imp, err := ImportBailiffKey("Nina Weber", pub, time.Now())
	if err != nil || imp.Fingerprint != gk.Key.Fingerprint || !imp.PQ() {
		t.Fatalf("import: %v", err)
	}
	// The token file: Argon2 S2K with AEAD protection, and it opens.
	secret := dearmor(t, gk.ArmoredSecret)
	pk, err := packet.Read(bytes.NewReader(secret))
	if err != nil {
		t.Fatal(err)
	}
	if priv := pk.(*packet.PrivateKey); !priv.Encrypted || priv.Version != 6 {
		t.Fatalf("token file: encrypted=%v version %d", priv.Encrypted, priv.Version)
	}
	if !bytes.Contains(secret[:2700], []byte{253}) { // S2K usage octet 253 (AEAD) early in the packet
		t.Log("note: S2K usage 253 not seen in the first packet bytes")
	}
	if _, err := OpenBailiffKey(gk.ArmoredSecret, []byte("not the passphrase")); err == nil || strings.Contains(err.Error(), "not the passphrase") {
		t.Fatalf("wrong passphrase: %v", err)
	}
	k := p.open(t, gk.Key.Fingerprint)
	defer WipeKey(k)

	// Signatures: v6, SHA-512, under the limit, verified by the public key.
	msg := []byte("coffre-roster v1\n")
	sig, err := SignDetached(k, msg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sp, err := packet.Read(bytes.NewReader(sig))
	if err != nil {
		t.Fatal(err)
	}
	if s := sp.(*packet.Signature); s.Version != 6 || s.Hash != crypto.SHA512 || s.PubKeyAlgo != packet.PubKeyAlgoMldsa87Ed448 || len(sig) > MaxSignatureLen {
		t.Fatalf("signature v%d %v algo %d, %d bytes", s.Version, s.Hash, s.PubKeyAlgo, len(sig))
	}
	if err := imp.VerifyDetached(msg, sig); err != nil {
		t.Fatal(err)
	}
	if err := imp.VerifyDetached([]byte("other"), sig); err == nil {
		t.Fatal("signature verifies over other bytes")
	}

	// The key card carries the secret-key packets; with the public key
	// they give the token file back, byte for byte.
	back, err := ReadKeyCard(gk.Card.PNG)
	if err != nil {
		t.Fatal(err)
	}
	if gk.Card.Parts > MaxCardParts || len(back) >= len(secret) {
		t.Fatalf("card: %d parts, %d bytes (token %d)", gk.Card.Parts, len(back), len(secret))
	}
	restored, err := RestoreKeyCard(back, gk.Key.Public, time.Now())
	if err != nil || !bytes.Equal(restored, secret) {
		t.Fatalf("restore: %v", err)
	}
	if _, err := RestoreKeyCard(back, p.keys[1].Key.Public, time.Now()); err == nil {
		t.Fatal("a card restores with another bailiff's public key")
	}
	if _, err := RestoreKeyCard(back[:len(back)-40], gk.Key.Public, time.Now()); err == nil {
		t.Fatal("a truncated card restores")
	}
	if s := fmt.Sprintf("%v %+v %#v", gk, gk, gk); strings.Contains(s, string(gk.ArmoredSecret[40:80])) {
		t.Fatal("generated key prints its secret")
	}

	// A secret key is refused where a public key is expected.
	if _, err := ImportBailiffKey("Nina Weber", gk.ArmoredSecret, time.Now()); err == nil {
		t.Fatal("secret key imported as a bailiff key")
	}
}

// TestPQRoster: a roster of post-quantum bailiffs (and a mixed one) signs,
// round-trips and verifies; escrows under it send each share in the PQ
// profile, and each bailiff opens theirs.
func TestPQRoster(t *testing.T) {
	v := getVault(t)
	p := getPQBailiffs(t)
	r := pqRoster(t, v, p)
	if got := r.Algorithms(); !slices.Equal(got, []string{AlgSignaturePQ, AlgKeyPQ}) {
		t.Fatalf("PQ roster algorithms %v", got)
	}
	back, err := ParseRoster(r.Marshal(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.Marshal(), r.Marshal()) {
		t.Fatal("PQ roster does not re-encode")
	}
	if err := back.Verify(); err != nil {
		t.Fatal(err)
	}
	if len(r.Marshal()) > MaxRosterLen/2 {
		t.Fatalf("3-bailiff PQ roster of %d bytes", len(r.Marshal()))
	}
	mixed, err := NewRoster(v.roster.VaultID, 2, []*BailiffKey{v.roster.Bailiffs[0], p.keys[0].Key}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got := mixed.Algorithms(); !slices.Equal(got, []string{AlgSignature, AlgSignaturePQ, AlgKey, AlgKeyPQ}) {
		t.Fatalf("mixed roster algorithms %v", got)
	}

	esc, err := NewEscrowPQ("user-pq-roster", r)
	if err != nil {
		t.Fatal(err)
	}
	if got := esc.ShareAlgorithms(); !slices.Equal(got, []string{AlgPKESKPQNamed}) {
		t.Fatalf("share algorithms %v", got)
	}
	eb, err := ParseEscrow(esc.Marshal(), time.Now())
	if err != nil || !bytes.Equal(eb.Marshal(), esc.Marshal()) {
		t.Fatalf("escrow under a PQ roster does not round-trip: %v", err)
	}
	var shares []shamir.Share
	for _, s := range esc.Shares {
		pk, err := packet.Read(bytes.NewReader(s.Message))
		if err != nil {
			t.Fatal(err)
		}
		ek := pk.(*packet.EncryptedKey)
		if ek.Version != 6 || ek.Algo != packet.PubKeyAlgoMlkem1024X448 || ek.KeyVersion != 6 || len(ek.KeyFingerprint) != 32 {
			t.Fatalf("share %d: PKESK v%d algo %d key v%d %x", s.Index, ek.Version, ek.Algo, ek.KeyVersion, ek.KeyFingerprint)
		}
		k := p.open(t, s.Bailiff)
		sh, err := esc.openShareMessage(k)
		WipeKey(k)
		if err != nil {
			t.Fatal(err)
		}
		shares = append(shares, sh)
	}
	key, err := esc.openKey(shares[:2], time.Now())
	if err != nil {
		t.Fatal(err)
	}
	WipeKey(key)
	for i := range shares {
		shares[i].Wipe()
	}
	// Another bailiff's key does not open a share.
	k := p.open(t, esc.Shares[0].Bailiff)
	esc.Shares[0], esc.Shares[1] = esc.Shares[1], esc.Shares[0]
	esc.Shares[0].Bailiff, esc.Shares[1].Bailiff = esc.Shares[1].Bailiff, esc.Shares[0].Bailiff
	if _, err := esc.openShareMessage(k); err == nil {
		t.Fatal("a share message opens with another bailiff's key")
	}
	WipeKey(k)

	// verify-shares works for PQ bailiffs.
	check, err := NewVaultCheckPQ(r, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range p.keys {
		if _, err := VerifyShare(check, r, p.secrets[g.Key.Fingerprint], []byte(p.pass[g.Key.Fingerprint])); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRosterChangeToPQ: the classical quorum approves a roster of
// post-quantum bailiffs; an escrow re-split to it has every share in the
// PQ profile; a restitution order signed by two PQ bailiffs, with their
// keys, restitutes the user's item, which the beneficiary opens with gpg.
func TestRosterChangeToPQ(t *testing.T) {
	v := getVault(t)
	p := getPQBailiffs(t)
	next := pqRoster(t, v, p)
	esc, err := NewEscrowPQ("user-to-pq", v.roster)
	if err != nil {
		t.Fatal(err)
	}
	pt := []byte("opened by post-quantum bailiffs")
	var ct bytes.Buffer
	if _, err := SealEscrowItem(&ct, esc, bytes.NewReader(pt)); err != nil {
		t.Fatal(err)
	}
	o, err := NewRosterChangeOrder(v.roster, next, "bailiff keys move to ML-KEM-1024+X448 / ML-DSA-87+Ed448", time.Now())
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
	ne, err := q.Resplit(esc, next)
	if err != nil {
		t.Fatal(err)
	}
	if got := ne.ShareAlgorithms(); !slices.Equal(got, []string{AlgPKESKPQNamed}) {
		t.Fatalf("re-split shares %v", got)
	}
	for _, s := range ne.Shares {
		if next.Bailiff(s.Bailiff) == nil {
			t.Fatalf("share %d to %s, not on the new roster", s.Index, s.Bailiff)
		}
	}

	// Restitution under the PQ roster: order signed by two PQ bailiffs.
	ben, benPub := newBeneficiary(t)
	ro, err := NewOrder(next, "user-to-pq", "Tribunal judiciaire de Lyon, RG 36/00042", benPub, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range next.Bailiffs[:2] {
		k := p.open(t, b.Fingerprint)
		err := ro.Sign(next, k, time.Now())
		WipeKey(k)
		if err != nil {
			t.Fatal(err)
		}
	}
	rb, err := ParseOrder(ro.Marshal(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	u, err := NewUnlock(next, rb, ne, UnlockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range next.Bailiffs[:2] {
		if _, err := u.AddShareWithKey(p.secrets[b.Fingerprint], []byte(p.pass[b.Fingerprint])); err != nil {
			t.Fatal(err)
		}
	}
	d := sha256.Sum256(pt)
	src := source("letter", 1, ct.Bytes())
	src.Digest = d[:]
	signer, _ := newBeneficiary(t)
	out := filepath.Join(t.TempDir(), "pkg")
	m, err := Restitute(u, []ItemSource{src}, nil, out, signer)
	if err != nil {
		t.Fatal(err)
	}
	g := newGPG(t)
	var sec bytes.Buffer
	ben.SerializePrivateWithoutSigning(&sec, nil)
	g.run(sec.Bytes(), "--import")
	if got := g.run(nil, "--decrypt", filepath.Join(out, m.Items[0].File)); !bytes.Equal(got, pt) {
		t.Fatalf("gpg: restituted item %q", got)
	}
}
