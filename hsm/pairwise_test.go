package hsm_test

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"

	"coffre/hsm"
)

func TestPairwise(t *testing.T) {
	_, ek, _ := ed25519.GenerateKey(rand.Reader)
	if err := hsm.PairwiseEd25519(ek); err != nil {
		t.Fatal(err)
	}
	// A key whose public half does not match its seed fails.
	bad := append(ed25519.PrivateKey{}, ek...)
	bad[40] ^= 1
	if err := hsm.PairwiseEd25519(bad); !errors.Is(err, hsm.ErrPairwise) {
		t.Fatalf("mismatched Ed25519 key = %v, want ErrPairwise", err)
	}
	pk, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err := hsm.PairwiseECDSA(pk); err != nil {
		t.Fatal(err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	//lint:ignore SA1019 a mismatched key pair can only be built from the raw fields
	mixed := &ecdsa.PrivateKey{PublicKey: other.PublicKey, D: pk.D}
	if err := hsm.PairwiseECDSA(mixed); !errors.Is(err, hsm.ErrPairwise) {
		t.Fatalf("mismatched ECDSA key = %v, want ErrPairwise", err)
	}
	for _, c := range []ecdh.Curve{ecdh.P521(), ecdh.X25519()} {
		k, _ := c.GenerateKey(rand.Reader)
		if err := hsm.PairwiseECDH(k); err != nil {
			t.Fatal(err)
		}
	}
}
