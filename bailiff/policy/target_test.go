package policy

import (
	"bytes"
	"crypto"
	"io"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// TestTargetAlgorithmsInGoCrypto: the upgrade targets the default policy
// names exist in the go-crypto the tree pins — a v6 ML-DSA-87+Ed448 key
// gets an ML-KEM-1024+X448 subkey and round-trips a SEIPD v2 (AES-256/OCB)
// message; a v4 P-521 key takes an ML-KEM-768+X25519 subkey.
func TestTargetAlgorithmsInGoCrypto(t *testing.T) {
	now := time.Now()
	cfg := &packet.Config{
		V6Keys: true, Algorithm: packet.PubKeyAlgoMldsa87Ed448,
		DefaultCipher: packet.CipherAES256, DefaultHash: crypto.SHA512,
		AEADConfig: &packet.AEADConfig{DefaultMode: packet.AEADModeOCB},
		Time:       func() time.Time { return now },
	}
	e, err := openpgp.NewEntity("escrow", "", "", cfg)
	if err != nil {
		t.Fatalf("v6 ML-DSA-87+Ed448 key (%s): %v", AlgKeyPQ, err)
	}
	if e.PrimaryKey.Version != 6 || e.PrimaryKey.PubKeyAlgo != packet.PubKeyAlgoMldsa87Ed448 {
		t.Fatalf("primary v%d algo %d", e.PrimaryKey.Version, e.PrimaryKey.PubKeyAlgo)
	}
	enc, ok := e.EncryptionKey(now)
	if !ok || enc.PublicKey.PubKeyAlgo != packet.PubKeyAlgoMlkem1024X448 {
		t.Fatalf("encryption subkey: %v", enc.PublicKey)
	}
	var msg bytes.Buffer
	w, err := openpgp.Encrypt(&msg, openpgp.EntityList{e}, nil, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("item"))
	w.Close()
	md, err := openpgp.ReadMessage(bytes.NewReader(msg.Bytes()), openpgp.EntityList{e}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := io.ReadAll(md.UnverifiedBody)
	if err != nil || string(pt) != "item" {
		t.Fatalf("round trip: %q %v", pt, err)
	}
	// SEIPD v2 packet: tag 18, version 2 (new-format header, then length).
	if !hasSEIPDv2(t, msg.Bytes()) {
		t.Fatalf("message is not SEIPD v2 (%s)", AlgDataPQ)
	}

	v4 := &packet.Config{Algorithm: packet.PubKeyAlgoECDSA, Curve: packet.CurveNistP521, Time: cfg.Time}
	e4, err := openpgp.NewEntity("escrow-v4", "", "", v4)
	if err != nil {
		t.Fatal(err)
	}
	if err := e4.AddEncryptionSubkey(&packet.Config{Algorithm: packet.PubKeyAlgoMlkem768X25519, Time: cfg.Time}); err != nil {
		t.Fatalf("v4 ML-KEM-768+X25519 subkey (%s): %v", AlgKeyPQv4, err)
	}
	if e4.Subkeys[len(e4.Subkeys)-1].PublicKey.PubKeyAlgo != packet.PubKeyAlgoMlkem768X25519 || e4.PrimaryKey.Version != 4 {
		t.Fatal("v4 hybrid subkey not made")
	}
}

func hasSEIPDv2(t *testing.T, b []byte) bool {
	t.Helper()
	r := packet.NewReader(bytes.NewReader(b))
	for {
		p, err := r.Next()
		if err != nil {
			return false
		}
		if s, ok := p.(*packet.SymmetricallyEncrypted); ok {
			return s.Version == 2
		}
	}
}
