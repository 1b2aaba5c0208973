package envelope

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"io"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// sealConfig pins the GnuPG 2.2 profile for writing: AES-256, SEIPDv1 with
// MDC (AEADConfig nil), no compression, v4.
func sealConfig() *packet.Config {
	return &packet.Config{
		DefaultCipher:          packet.CipherAES256,
		DefaultCompressionAlgo: packet.CompressionNone,
		AEADConfig:             nil,
	}
}

// readConfig is the configuration for reading and verifying.
func readConfig() *packet.Config { return &packet.Config{} }

// signConfig is the configuration the courier signs with (SHA-512).
func signConfig() *packet.Config {
	c := keyConfig(0, "")
	return c
}

// sealWriter starts an OpenPGP message to to's encryption key with the
// pinned profile, written packet by packet so that no recipient preference
// can change it: one PKESK v3, one SEIPDv1 (MDC) with AES-256, one binary
// literal data packet with empty name and zero date. The returned writer must
// be closed to finish the message (the MDC is written on Close).
func sealWriter(w io.Writer, to *openpgp.Entity) (io.WriteCloser, error) {
	cfg := sealConfig()
	key, ok := to.EncryptionKey(time.Now())
	if !ok {
		return nil, errorf(ErrWrongIngestKey, "ingest key %X has no valid encryption subkey: export the ingest public key again from the appliance", to.PrimaryKey.Fingerprint)
	}
	if key.PublicKey.Version != 4 || key.PublicKey.PubKeyAlgo != packet.PubKeyAlgoECDH {
		return nil, errorf(ErrWrongIngestKey, "ingest key %X: encryption subkey is v%d algorithm %d, want a v4 ECDH key", to.PrimaryKey.Fingerprint, key.PublicKey.Version, key.PublicKey.PubKeyAlgo)
	}
	sessionKey := make([]byte, packet.CipherAES256.KeySize())
	if _, err := rand.Read(sessionKey); err != nil {
		return nil, wrapf(ErrFormat, err, "drawing session key")
	}
	if err := packet.SerializeEncryptedKeyAEAD(w, key.PublicKey, packet.CipherAES256, false, sessionKey, cfg); err != nil {
		return nil, wrapf(ErrWrongIngestKey, err, "encrypting session key to ingest key %X", to.PrimaryKey.Fingerprint)
	}
	enc, err := packet.SerializeSymmetricallyEncrypted(w, packet.CipherAES256, false, packet.CipherSuite{}, sessionKey, cfg)
	if err != nil {
		return nil, wrapf(ErrFormat, err, "starting encrypted packet")
	}
	clear(sessionKey)
	lit, err := packet.SerializeLiteral(enc, true, "", 0)
	if err != nil {
		return nil, wrapf(ErrFormat, err, "starting literal data packet")
	}
	return lit, nil
}

// SealItem writes the sealed part for one item: an OpenPGP message to
// ingest's encryption subkey (profile in sealWriter) whose plaintext is the
// item header (with m) followed by the content.
//
// m.Size and m.Digest describe the content. When m.Digest is all zero and
// content is an io.Seeker, SealItem computes both by reading content once
// and seeking back; otherwise they must be set, and SealItem fails — leaving
// an unfinished message without its MDC, which every reader rejects — when
// the content read does not match them. On error, discard what was written.
func SealItem(w io.Writer, ingest *openpgp.Entity, m Manifest, content io.Reader) error {
	var zero [32]byte
	if m.Digest == zero {
		s, ok := content.(io.Seeker)
		if !ok {
			return errorf(ErrFormat, "seal: manifest digest not set and content cannot be read twice: set Manifest.Size and Manifest.Digest")
		}
		start, err := s.Seek(0, io.SeekCurrent)
		if err != nil {
			return wrapf(ErrFormat, err, "seal: manifest digest not set and content cannot be read twice (a pipe?): set Manifest.Size and Manifest.Digest, or seal from a regular file")
		}
		h := sha256.New()
		n, err := io.Copy(h, content)
		if err != nil {
			return wrapf(ErrFormat, err, "seal: reading content")
		}
		m.Size = n
		copy(m.Digest[:], h.Sum(nil))
		if _, err := s.Seek(start, io.SeekStart); err != nil {
			return wrapf(ErrFormat, err, "seal: content")
		}
	}
	item, err := EncodeItem(m)
	if err != nil {
		return err
	}
	lw, err := sealWriter(w, ingest)
	if err != nil {
		return err
	}
	if _, err := lw.Write(item); err != nil {
		return wrapf(ErrFormat, err, "seal: writing")
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(lw, h), io.LimitReader(content, m.Size+1))
	if err != nil {
		return wrapf(ErrFormat, err, "seal: copying content")
	}
	if n != m.Size {
		if n > m.Size {
			return errorf(ErrTooLarge, "seal: content is longer than manifest size %d", m.Size)
		}
		return errorf(ErrTruncated, "seal: content is %d bytes, manifest says %d", n, m.Size)
	}
	if subtle.ConstantTimeCompare(h.Sum(nil), m.Digest[:]) != 1 {
		return errorf(ErrDigestMismatch, "seal: content does not match manifest digest")
	}
	if err := lw.Close(); err != nil {
		return wrapf(ErrFormat, err, "seal: finishing message")
	}
	return nil
}
