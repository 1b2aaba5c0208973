package bailiff

import (
	"bytes"
	"crypto/rand"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// TestECDHP521KeyPacket: the crypto/ecdh key packet is read by go-crypto,
// opens with the recipient's key to the same session key, names the
// recipient or hides it, and has the exact shape of go-crypto's own.
func TestECDHP521KeyPacket(t *testing.T) {
	now := time.Now()
	e, err := newP521Entity("r", "", now)
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := e.EncryptionKey(now)
	for _, hidden := range []bool{true, false} {
		for i := 0; i < 20; i++ {
			key := make([]byte, 32)
			rand.Read(key)
			head, err := ecdhP521KeyPacket(enc.PublicKey, key, hidden)
			if err != nil {
				t.Fatal(err)
			}
			var ref bytes.Buffer
			if err := packet.SerializeEncryptedKeyAEADwithHiddenOption(&ref, enc.PublicKey, packet.CipherAES256, false, key, hidden, config(now)); err != nil {
				t.Fatal(err)
			}
			if len(head) != ref.Len() || !bytes.Equal(head[:13], ref.Bytes()[:13]) {
				t.Fatalf("hidden=%v: packet %x…, go-crypto writes %x… (%d vs %d bytes)", hidden, head[:13], ref.Bytes()[:13], len(head), ref.Len())
			}
			r := bytes.NewReader(head)
			p, err := packet.Read(r)
			if err != nil || r.Len() != 0 {
				t.Fatalf("go-crypto cannot read the packet: %v (%d bytes left)", err, r.Len())
			}
			ek, ok := p.(*packet.EncryptedKey)
			if !ok || ek.Version != 3 || ek.Algo != packet.PubKeyAlgoECDH {
				t.Fatalf("read as %T %+v", p, p)
			}
			if want := map[bool]uint64{true: 0, false: enc.PublicKey.KeyId}[hidden]; ek.KeyId != want {
				t.Fatalf("hidden=%v: key id %x, want %x", hidden, ek.KeyId, want)
			}
			if err := ek.Decrypt(enc.PrivateKey, nil); err != nil {
				t.Fatal(err)
			}
			if ek.CipherFunc != packet.CipherAES256 || !bytes.Equal(ek.Key, key) {
				t.Fatal("the packet carries another session key")
			}
		}
	}
}

// TestSessionKeyPacketOtherKeys: keys that are not ECDH P-521 go through
// go-crypto and still work.
func TestSessionKeyPacketOtherKeys(t *testing.T) {
	now := time.Now()
	cfg := config(now)
	cfg.Algorithm = packet.PubKeyAlgoEdDSA
	cfg.Curve = packet.Curve25519
	e, err := openpgp.NewEntity("x", "", "", cfg)
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := e.EncryptionKey(now)
	if _, err := ecdhP521KeyPacket(enc.PublicKey, make([]byte, 32), true); err != errNotP521 {
		t.Fatalf("Curve25519 key: err = %v, want errNotP521", err)
	}
	var ct bytes.Buffer
	if err := encryptBytes(&ct, e, []byte("hello"), true, now); err != nil {
		t.Fatal(err)
	}
	pt, err := decryptBytes(&ct, openpgp.EntityList{e}, 100)
	if err != nil || string(pt) != "hello" {
		t.Fatalf("round trip through go-crypto's key packet: %q %v", pt, err)
	}
}
