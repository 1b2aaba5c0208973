package bailiff

import (
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
