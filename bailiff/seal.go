package bailiff

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// SealItem encrypts plaintext to the escrow public key as an OpenPGP message
// in the GnuPG 2.2 profile: one PKESK v3 with the wildcard key id (recipient
// hidden), a SEIPD v1 packet with MDC, AES-256, a binary literal packet with
// no file name and time 0, no compression, no signature. It streams: memory
// does not grow with the item. It returns the algorithms used, for the
// stored object to name them.
func SealItem(w io.Writer, escrowPub *openpgp.Entity, plaintext io.Reader) (Algorithms, error) {
	if escrowPub == nil {
		return Algorithms{}, errors.New("bailiff: seal: no escrow key")
	}
	if err := checkP521Public(escrowPub, time.Now()); err != nil {
		return Algorithms{}, fmt.Errorf("bailiff: seal: escrow key: %v", err)
	}
	if err := sealTo(w, escrowPub, plaintext, true); err != nil {
		return Algorithms{}, fmt.Errorf("bailiff: seal: %w", err)
	}
	return ItemAlgorithms, nil
}

// Seal is SealItem to this escrow's public key.
func (e *Escrow) Seal(w io.Writer, plaintext io.Reader) (Algorithms, error) {
	return SealItem(w, e.pub, plaintext)
}

// sealTo writes plaintext as a message to the encryption key of to, in
// bounded memory, reading ahead on a second goroutine for large inputs.
func sealTo(w io.Writer, to *openpgp.Entity, plaintext io.Reader, hidden bool) error {
	now := time.Now()
	enc, ok := to.EncryptionKey(now)
	if !ok {
		return errors.New("recipient has no valid encryption key")
	}
	key, head, err := sessionKeyPacket(enc.PublicKey, hidden, now)
	if err != nil {
		return err
	}
	defer clear(key)
	return sealStream(w, head, key, plaintext)
}

// An ItemSealer is SealItem in two halves, for an item whose escrow key is
// not made yet (a user's first upload): the session key is drawn first and
// the encrypted data packet streamed with it (Body), while the key is made;
// the key packet to it, which goes in front, is made afterwards
// (KeyPacket). KeyPacket's output followed by Body's is byte for byte the
// message SealItem writes: one PKESK v3 (recipient hidden), then SEIPD v1
// with MDC, AES-256, a binary literal packet with no name and time 0.
type ItemSealer struct {
	key []byte
}

// NewItemSealer draws the session key. Call Wipe when done.
func NewItemSealer() (*ItemSealer, error) {
	key := make([]byte, packet.CipherAES256.KeySize())
	if _, err := io.ReadFull(rand.Reader, key); err != nil {
		return nil, err
	}
	return &ItemSealer{key: key}, nil
}

// Body writes the encrypted data packet of plaintext to w, streaming in
// bounded memory like SealItem. It may run beside KeyPacket.
func (s *ItemSealer) Body(w io.Writer, plaintext io.Reader) error {
	if err := sealStream(w, nil, s.key, plaintext); err != nil {
		return fmt.Errorf("bailiff: seal: %w", err)
	}
	return nil
}

// KeyPacket returns the key packet that goes in front of Body's output,
// encrypting the session key to the escrow public key (checked as SealItem
// checks it), and the algorithms the item uses.
func (s *ItemSealer) KeyPacket(escrowPub *openpgp.Entity) ([]byte, Algorithms, error) {
	if escrowPub == nil {
		return nil, Algorithms{}, errors.New("bailiff: seal: no escrow key")
	}
	now := time.Now()
	if err := checkP521Public(escrowPub, now); err != nil {
		return nil, Algorithms{}, fmt.Errorf("bailiff: seal: escrow key: %v", err)
	}
	enc, ok := escrowPub.EncryptionKey(now)
	if !ok {
		return nil, Algorithms{}, errors.New("bailiff: seal: recipient has no valid encryption key")
	}
	head, err := keyPacket(enc.PublicKey, s.key, true, now)
	if err != nil {
		return nil, Algorithms{}, fmt.Errorf("bailiff: seal: %w", err)
	}
	return head, ItemAlgorithms, nil
}

// Wipe clears the session key, once Body and KeyPacket have returned.
func (s *ItemSealer) Wipe() { clear(s.key) }

// Rewrap replaces the key packet of a sealed item: it decrypts the session
// key with oldKey (an opened escrow private key) and writes a new PKESK v3
// (hidden) to newPub, followed by the item's encrypted data packet copied
// byte for byte. The payload and its session key are unchanged: use it for a
// recipient change only, never to retire an ageing cipher (that needs a
// fresh session key: decrypt and SealItem again).
func Rewrap(w io.Writer, item io.Reader, oldKey, newPub *openpgp.Entity) error {
	p, err := packet.Read(item)
	if err != nil {
		return fmt.Errorf("bailiff: rewrap: reading the key packet: %s", sanitize(err))
	}
	ek, ok := p.(*packet.EncryptedKey)
	if !ok {
		return errors.New("bailiff: rewrap: item does not start with a public-key encrypted session key packet")
	}
	if ek.Version != 3 {
		return fmt.Errorf("bailiff: rewrap: PKESK version %d, want 3", ek.Version)
	}
	var lastErr error
	keys := []*packet.PrivateKey{}
	if oldKey.PrivateKey != nil {
		keys = append(keys, oldKey.PrivateKey)
	}
	for _, s := range oldKey.Subkeys {
		if s.PrivateKey != nil {
			keys = append(keys, s.PrivateKey)
		}
	}
	decrypted := false
	for _, k := range keys {
		if k.PubKeyAlgo != ek.Algo {
			continue
		}
		if lastErr = ek.Decrypt(k, nil); lastErr == nil {
			decrypted = true
			break
		}
	}
	if !decrypted {
		return errors.New("bailiff: rewrap: the old key does not open this item's session key")
	}
	defer clear(ek.Key)
	if ek.CipherFunc != packet.CipherAES256 {
		return fmt.Errorf("bailiff: rewrap: item cipher %d is not AES-256; re-encrypt instead", ek.CipherFunc)
	}
	enc, ok := newPub.EncryptionKey(time.Now())
	if !ok {
		return errors.New("bailiff: rewrap: new key has no valid encryption key")
	}
	if err := packet.SerializeEncryptedKeyAEADwithHiddenOption(w, enc.PublicKey, ek.CipherFunc, false, ek.Key, true, config(time.Now())); err != nil {
		return fmt.Errorf("bailiff: rewrap: writing the new key packet: %w", err)
	}
	if _, err := io.Copy(w, item); err != nil {
		return fmt.Errorf("bailiff: rewrap: copying the encrypted data: %w", err)
	}
	return nil
}
