package bailiff

import (
	"bufio"
	"bytes"
	"coffre/internal/cfb"
	"crypto/ecdh"
	"crypto/sha1"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/aes/keywrap"
	pecdh "github.com/ProtonMail/go-crypto/openpgp/ecdh"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// The algorithm upgrade opens every item of the vault once with the old
// escrow key, and a roster change or escrow rotation opens k share
// messages per escrow with the bailiffs' keys; the ECDH P-521 key
// agreement of their key packets is most of the cost. go-crypto computes it through crypto/elliptic (big.Int
// conversions, about 8% slower than crypto/ecdh on the same nistec code),
// so for the one shape SealItem and share messages have — a single PKESK v3, ECDH
// P-521, KDF SHA-512 and AES-256 key wrap (RFC 6637) — the session key is
// recovered here with crypto/ecdh; the encrypted data packet is then read
// exactly as openItem reads it. Anything else, or any mismatch before a
// byte is consumed, goes to openItemAny unchanged.

// fastBuf sizes the read buffers of the upgrade's item reader: most items
// are a few KiB, and an upgrade opens them by the thousand.
const fastBuf = 16 << 10

// fastKey is an escrow ECDH P-521 subkey prepared for crypto/ecdh.
type fastKey struct {
	priv        *ecdh.PrivateKey
	fingerprint []byte // v4 fingerprint of the subkey (KDF parameter)
	keyID       uint64 // its key id: a key packet names it, or 0 (hidden)
	hashID      byte
	cipherID    byte
}

// newFastKey prepares the ECDH P-521 subkey of an opened escrow key, or
// returns nil when the key is not of that shape.
func newFastKey(e *openpgp.Entity) *fastKey {
	var found *fastKey
	for _, s := range e.Subkeys {
		if s.PrivateKey == nil || s.PublicKey.PubKeyAlgo != packet.PubKeyAlgoECDH || s.PublicKey.Version != 4 {
			continue
		}
		fk := newFastSubkey(s.PrivateKey)
		if fk == nil || found != nil {
			return nil // unusable, or two candidate subkeys: leave it to go-crypto
		}
		found = fk
	}
	return found
}

// newFastSubkey prepares one ECDH P-521 private subkey (KDF SHA-512,
// AES-256), or returns nil when it is not of that shape.
func newFastSubkey(s *packet.PrivateKey) *fastKey {
	if s == nil || s.PubKeyAlgo != packet.PubKeyAlgoECDH || s.Version != 4 {
		return nil
	}
	if c, err := s.Curve(); err != nil || c != packet.CurveNistP521 {
		return nil
	}
	k, ok := s.PrivateKey.(*pecdh.PrivateKey)
	if !ok || len(k.D) == 0 || len(k.D) > 66 || k.KDF.Hash == nil || k.KDF.Cipher == nil {
		return nil
	}
	d := make([]byte, 66)
	copy(d[66-len(k.D):], k.D)
	priv, err := ecdh.P521().NewPrivateKey(d)
	clear(d)
	if err != nil {
		return nil
	}
	fk := &fastKey{priv: priv, fingerprint: bytes.Clone(s.Fingerprint), keyID: s.KeyId, hashID: k.KDF.Hash.Id(), cipherID: k.KDF.Cipher.Id()}
	if fk.hashID != 10 || fk.cipherID != 9 { // SHA-512, AES-256
		return nil
	}
	return fk
}

// openItemFast opens an item with the escrow key, through the fast key
// packet path when the item has the shape SealItem writes.
func openItemFast(r io.Reader, keys openpgp.EntityList, fk *fastKey) (io.Reader, error) {
	br := bufio.NewReaderSize(r, fastBuf)
	if fk == nil {
		return openItemAny(br, keys)
	}
	head, _ := br.Peek(512)
	n, key := fk.sessionKey(head)
	if key == nil {
		return openItemAny(br, keys)
	}
	defer clear(key)
	if _, err := br.Discard(n); err != nil {
		return nil, err
	}
	return openSEIPDv1(br, key)
}

// sessionKey parses a PKESK v3 packet at the start of head and recovers its
// AES-256 session key; it returns the packet's length with the key, or a
// nil key when the packet is not of the expected shape or does not open.
func (fk *fastKey) sessionKey(head []byte) (int, []byte) {
	// New-format header, tag 1, one- or two-octet length (a P-521 PKESK
	// is about 180 octets).
	if len(head) < 3 || head[0] != 0xc1 {
		return 0, nil
	}
	body, hdr := 0, 0
	switch l := int(head[1]); {
	case l < 192:
		body, hdr = l, 2
	case l < 224:
		body, hdr = (l-192)<<8+int(head[2])+192, 3
	default:
		return 0, nil
	}
	if len(head) < hdr+body {
		return 0, nil
	}
	p := head[hdr : hdr+body]
	// version 3, key id 0 (hidden: items) or this key's (share
	// messages), algorithm ECDH
	if len(p) < 12 || p[0] != 3 || p[9] != byte(packet.PubKeyAlgoECDH) {
		return 0, nil
	}
	if id := binary.BigEndian.Uint64(p[1:9]); id != 0 && id != fk.keyID {
		return 0, nil
	}
	bits := int(binary.BigEndian.Uint16(p[10:12]))
	pl := (bits + 7) / 8
	if pl != 133 || len(p) < 12+pl+1 {
		return 0, nil
	}
	point := p[12 : 12+pl]
	cl := int(p[12+pl])
	if len(p) != 12+pl+1+cl {
		return 0, nil
	}
	wrapped := p[12+pl+1:]
	pub, err := ecdh.P521().NewPublicKey(point)
	if err != nil {
		return 0, nil
	}
	zb, err := fk.priv.ECDH(pub)
	if err != nil {
		return 0, nil
	}
	defer clear(zb)
	// RFC 6637 §7: MB = SHA-512(00 00 00 01 || ZB || Param), KEK = MB[:32].
	h := sha512.New()
	h.Write([]byte{0, 0, 0, 1})
	h.Write(zb)
	h.Write(p521OID)
	h.Write([]byte{byte(packet.PubKeyAlgoECDH), 3, 1, fk.hashID, fk.cipherID})
	h.Write([]byte("Anonymous Sender    "))
	h.Write(fk.fingerprint)
	mb := h.Sum(nil)
	defer clear(mb)
	m, err := keywrap.Unwrap(mb[:32], wrapped)
	if err != nil {
		return 0, nil
	}
	// m = cipher || session key || checksum || PKCS#5 padding
	if len(m) == 0 || int(m[len(m)-1]) > len(m) {
		clear(m)
		return 0, nil
	}
	m = m[:len(m)-int(m[len(m)-1])]
	if len(m) != 1+32+2 || m[0] != byte(packet.CipherAES256) {
		clear(m)
		return 0, nil
	}
	var sum uint16
	for _, b := range m[1:33] {
		sum += uint16(b)
	}
	if sum != binary.BigEndian.Uint16(m[33:]) {
		clear(m)
		return 0, nil
	}
	key := bytes.Clone(m[1:33])
	clear(m)
	return hdr + body, key
}

// openSEIPDv1 reads the encrypted data packet that follows the key packet
// with the session key: one SEIPD v1 packet with MDC holding one literal
// packet, as openItem reads it (mdcReader, literalEOF).
func openSEIPDv1(r io.Reader, key []byte) (rd io.Reader, err error) {
	defer func() {
		if p := recover(); p != nil {
			rd, err = nil, fmt.Errorf("%w: malformed packets", ErrItemFormat)
		}
	}()
	p, err := packet.Read(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrItemFormat, sanitize(err))
	}
	se, ok := p.(*packet.SymmetricallyEncrypted)
	if !ok || !se.IntegrityProtected || se.Version != 1 {
		return nil, fmt.Errorf("%w: want one key packet, then SEIPD v1 with MDC", ErrItemFormat)
	}
	dec, err := cfb.NewDecrypter(key, make([]byte, cfb.BlockSize))
	if err != nil {
		return nil, err
	}
	m := &mdcReader{src: se.Contents, dec: dec, h: sha1.New(), buf: make([]byte, fastBuf)}
	if err := m.start(); err != nil {
		dec.Wipe()
		return nil, err
	}
	lp, err := packet.Read(m)
	if err != nil {
		m.release()
		return nil, fmt.Errorf("%w: %s", ErrItemFormat, sanitize(err))
	}
	lit, ok := lp.(*packet.LiteralData)
	if !ok {
		m.release()
		return nil, fmt.Errorf("%w: inner packet %T, want literal data", ErrItemFormat, lp)
	}
	return &literalEOF{body: lit.Body, m: m}, nil
}
