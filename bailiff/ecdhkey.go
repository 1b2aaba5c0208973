package bailiff

import (
	"crypto"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ProtonMail/go-crypto/openpgp/aes/keywrap"
	pecdh "github.com/ProtonMail/go-crypto/openpgp/ecdh"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// The key packet of every item: a PKESK v3 to a v4 ECDH P-521 key (RFC
// 6637, RFC 9580 §5.1.4 and §11.5), written here with crypto/ecdh rather
// than by go-crypto, whose generic curve code goes through crypto/elliptic
// and big.Int conversions: for a small item the public-key operations are
// most of the work. The bytes are the same as go-crypto's (tested: go-crypto
// decrypts them; gpg, sq and rnp open the items). Other key types go to
// go-crypto.

// p521OID is the curve OID field of a P-521 key: length, then 1.3.132.0.35.
var p521OID = []byte{0x05, 0x2B, 0x81, 0x04, 0x00, 0x23}

// errNotP521 sends a key to go-crypto's general path.
var errNotP521 = errors.New("not a v4 ECDH P-521 key")

// ecdhP521KeyPacket returns the PKESK v3 packet carrying the AES-256
// session key to pub (key id 0 when hidden).
func ecdhP521KeyPacket(pub *packet.PublicKey, key []byte, hidden bool) ([]byte, error) {
	epk, ok := pub.PublicKey.(*pecdh.PublicKey)
	if !ok || pub.Version != 4 || pub.PubKeyAlgo != packet.PubKeyAlgoECDH || len(pub.Fingerprint) != 20 {
		return nil, errNotP521
	}
	if c, err := pub.Curve(); err != nil || c != packet.CurveNistP521 {
		return nil, errNotP521
	}
	if epk.KDF.Hash == nil || epk.KDF.Cipher == nil {
		return nil, errNotP521
	}
	switch epk.KDF.Hash.HashFunc() {
	case crypto.SHA256, crypto.SHA384, crypto.SHA512:
	default:
		return nil, errNotP521
	}
	kekLen := epk.KDF.Cipher.KeySize()
	switch packet.CipherFunction(epk.KDF.Cipher.Id()) {
	case packet.CipherAES128, packet.CipherAES192, packet.CipherAES256:
	default:
		return nil, errNotP521
	}
	if len(key) != 32 {
		return nil, errors.New("ecdh: want an AES-256 session key")
	}
	recipient, err := ecdh.P521().NewPublicKey(epk.Point)
	if err != nil {
		return nil, fmt.Errorf("ecdh: recipient point: %w", err)
	}
	eph, err := ecdh.P521().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	z, err := eph.ECDH(recipient)
	if err != nil {
		return nil, err
	}
	defer clear(z)

	// KDF (RFC 6637 §7): Hash(00 00 00 01 || Z || Param), leftmost bits.
	h := epk.KDF.Hash.New()
	h.Write([]byte{0, 0, 0, 1})
	h.Write(z)
	h.Write(p521OID)
	h.Write([]byte{byte(packet.PubKeyAlgoECDH), 3, 1, epk.KDF.Hash.Id(), epk.KDF.Cipher.Id()})
	h.Write([]byte("Anonymous Sender    "))
	h.Write(pub.Fingerprint)
	mb := h.Sum(nil)
	defer clear(mb)

	// m = cipher || key || checksum, PKCS#5-padded to 40 bytes (§8).
	var m [40]byte
	defer clear(m[:])
	m[0] = byte(packet.CipherAES256)
	copy(m[1:], key)
	var sum uint16
	for _, b := range key {
		sum += uint16(b)
	}
	binary.BigEndian.PutUint16(m[33:], sum)
	for i := 35; i < 40; i++ {
		m[i] = 5
	}
	c, err := keywrap.Wrap(mb[:kekLen], m[:])
	if err != nil {
		return nil, err
	}

	point := eph.PublicKey().Bytes() // 0x04 || X || Y, 133 bytes: 1059 bits
	body := make([]byte, 0, 10+2+len(point)+1+len(c))
	body = append(body, 3)
	if hidden {
		body = append(body, 0, 0, 0, 0, 0, 0, 0, 0)
	} else {
		body = binary.BigEndian.AppendUint64(body, pub.KeyId)
	}
	body = append(body, byte(packet.PubKeyAlgoECDH))
	body = binary.BigEndian.AppendUint16(body, uint16(8*(len(point)-1)+3))
	body = append(body, point...)
	body = append(body, byte(len(c)))
	body = append(body, c...)
	out := appendLength([]byte{0xC0 | 1}, len(body))
	return append(out, body...), nil
}
