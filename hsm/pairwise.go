package hsm

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
)

// ErrPairwise is returned when a freshly generated key fails its
// pair-wise consistency check; the key must be discarded.
var ErrPairwise = errors.New("hsm: generated key failed its pair-wise consistency check: key discarded")

var pairwiseMsg = []byte("coffre pair-wise consistency test")

// PairwiseEd25519 signs and verifies with a generated Ed25519 key.
func PairwiseEd25519(k ed25519.PrivateKey) error {
	if len(k) != ed25519.PrivateKeySize {
		return ErrPairwise
	}
	sig := ed25519.Sign(k, pairwiseMsg)
	if !ed25519.Verify(k.Public().(ed25519.PublicKey), pairwiseMsg, sig) {
		return ErrPairwise
	}
	return nil
}

// PairwiseECDSA signs and verifies with a generated ECDSA key.
func PairwiseECDSA(k *ecdsa.PrivateKey) error {
	d := sha256.Sum256(pairwiseMsg)
	sig, err := ecdsa.SignASN1(rand.Reader, k, d[:])
	if err != nil || !ecdsa.VerifyASN1(&k.PublicKey, d[:], sig) {
		return ErrPairwise
	}
	return nil
}

// PairwiseECDH agrees a secret both ways between the generated key and a
// fresh ephemeral key on the same curve (P-521 ingest/escrow keys, X25519).
func PairwiseECDH(k *ecdh.PrivateKey) error {
	eph, err := k.Curve().GenerateKey(rand.Reader)
	if err != nil {
		return ErrPairwise
	}
	a, err1 := k.ECDH(eph.PublicKey())
	b, err2 := eph.ECDH(k.PublicKey())
	if err1 != nil || err2 != nil || subtle.ConstantTimeCompare(a, b) != 1 {
		return ErrPairwise
	}
	return nil
}
