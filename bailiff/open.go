package bailiff

import (
	"bufio"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha1"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// The reader side of the GnuPG 2.2 profile for items (sealed by SealItem or
// any RFC 4880 writer in the same profile): PKESK v3 packets, then one SEIPD
// v1 packet, AES-256, holding one literal data packet. It is what
// Restitute decrypts items with; anything outside the profile (compression,
// signatures inside, SED without MDC, AEAD, other ciphers) is refused. Like
// every OpenPGP streaming reader it releases plaintext before the MDC is
// checked at EOF: callers read to EOF and discard everything on error.

// ErrItemFormat is wrapped by errors about an item outside the profile.
var ErrItemFormat = errors.New("bailiff: item is not in the Coffre OpenPGP profile")

// openItem returns the plaintext stream of an item, decrypting its session
// key with the first key of keys that opens one of its PKESKs.
func openItem(r io.Reader, keys openpgp.EntityList) (rd io.Reader, err error) {
	defer func() {
		if p := recover(); p != nil {
			rd, err = nil, fmt.Errorf("%w: malformed packets", ErrItemFormat)
		}
	}()
	br := bufio.NewReaderSize(r, 64<<10)
	var eks []*packet.EncryptedKey
	var se *packet.SymmetricallyEncrypted
	for se == nil {
		if len(eks) > 64 {
			return nil, fmt.Errorf("%w: too many key packets", ErrItemFormat)
		}
		p, err := packet.Read(br)
		if err != nil {
			return nil, fmt.Errorf("%w: %s", ErrItemFormat, sanitize(err))
		}
		switch p := p.(type) {
		case *packet.EncryptedKey:
			eks = append(eks, p)
		case *packet.SymmetricallyEncrypted:
			if !p.IntegrityProtected || p.Version != 1 {
				return nil, fmt.Errorf("%w: want SEIPD v1 with MDC", ErrItemFormat)
			}
			se = p
		default:
			return nil, fmt.Errorf("%w: unexpected packet %T", ErrItemFormat, p)
		}
	}
	var key []byte
	for _, ek := range eks {
		if ek.Version != 3 {
			continue
		}
		for _, k := range keys.DecryptionKeys() {
			if k.PrivateKey == nil || k.PrivateKey.Encrypted || k.PublicKey.PubKeyAlgo != ek.Algo {
				continue
			}
			if ek.KeyId != 0 && ek.KeyId != k.PublicKey.KeyId {
				continue
			}
			if ek.Decrypt(k.PrivateKey, nil) == nil {
				if ek.CipherFunc != packet.CipherAES256 {
					clear(ek.Key)
					return nil, fmt.Errorf("%w: cipher %d, want AES-256", ErrItemFormat, ek.CipherFunc)
				}
				key = ek.Key
				break
			}
		}
		if key != nil {
			break
		}
	}
	if key == nil {
		return nil, errors.New("bailiff: no key packet of the item opens with the given key")
	}
	blk, err := aes.NewCipher(key)
	clear(key)
	if err != nil {
		return nil, err
	}
	m := &mdcReader{src: se.Contents, blk: blk, h: sha1.New(), in: make([]byte, sealBuf+mdcLen)}
	if err := m.start(); err != nil {
		return nil, err
	}
	p, err := packet.Read(m)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrItemFormat, sanitize(err))
	}
	lit, ok := p.(*packet.LiteralData)
	if !ok {
		return nil, fmt.Errorf("%w: inner packet %T, want literal data", ErrItemFormat, p)
	}
	return &literalEOF{body: lit.Body, m: m}, nil
}

const mdcLen = 22 // 0xD3 0x14 + SHA-1

// mdcReader decrypts a SEIPD v1 body (CFB-128, zero IV, no resync) and
// holds back the trailing MDC packet, checking it at EOF.
type mdcReader struct {
	src    io.Reader
	blk    cipher.Block
	h      hash.Hash
	prev   [16]byte // previous ciphertext block
	ks     [16]byte
	used   int
	in     []byte // decrypted bytes not yet returned; the last mdcLen are held back
	n      int    // len of valid data in in
	eof    bool
	done   bool
	cipher []byte
}

func (m *mdcReader) decrypt(dst, src []byte) {
	for len(src) > 0 {
		if m.used == 16 {
			m.blk.Encrypt(m.ks[:], m.prev[:])
			m.used = 0
		}
		n := min(len(src), 16-m.used)
		copy(m.prev[m.used:], src[:n])
		subtle.XORBytes(dst[:n], src[:n], m.ks[m.used:m.used+n])
		m.used += n
		dst, src = dst[n:], src[n:]
	}
}

// fill reads and decrypts more ciphertext into m.in.
func (m *mdcReader) fill() error {
	if m.eof {
		return nil
	}
	if m.cipher == nil {
		m.cipher = make([]byte, sealBuf)
	}
	room := min(len(m.in)-m.n, len(m.cipher))
	k, err := io.ReadAtLeast(m.src, m.cipher[:room], 1)
	if k > 0 {
		m.decrypt(m.in[m.n:m.n+k], m.cipher[:k])
		m.n += k
	}
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		if err == io.ErrUnexpectedEOF {
			return fmt.Errorf("%w: truncated", ErrItemFormat)
		}
		m.eof = true
		return nil
	}
	return err
}

func (m *mdcReader) start() error {
	m.used = 16
	for m.n < 18 && !m.eof {
		if err := m.fill(); err != nil {
			return err
		}
	}
	if m.n < 18+mdcLen {
		for !m.eof && m.n < 18+mdcLen {
			if err := m.fill(); err != nil {
				return err
			}
		}
		if m.n < 18+mdcLen {
			return fmt.Errorf("%w: encrypted packet too short", ErrItemFormat)
		}
	}
	if m.in[16] != m.in[14] || m.in[17] != m.in[15] {
		return errors.New("bailiff: item does not decrypt with this key (prefix check)")
	}
	m.h.Write(m.in[:18])
	m.n = copy(m.in, m.in[18:m.n])
	return nil
}

func (m *mdcReader) Read(p []byte) (int, error) {
	for m.n <= mdcLen && !m.eof {
		if err := m.fill(); err != nil {
			return 0, err
		}
	}
	avail := m.n - mdcLen
	if avail <= 0 {
		if err := m.finish(); err != nil {
			return 0, err
		}
		return 0, io.EOF
	}
	k := copy(p, m.in[:min(avail, len(p))])
	m.h.Write(p[:k])
	m.n = copy(m.in, m.in[k:m.n])
	return k, nil
}

// finish checks the MDC packet once the ciphertext is exhausted.
func (m *mdcReader) finish() error {
	if m.done {
		return nil
	}
	if m.n != mdcLen || m.in[0] != 0xD3 || m.in[1] != 0x14 {
		return fmt.Errorf("%w: missing or damaged MDC", ErrItemFormat)
	}
	m.h.Write(m.in[:2])
	sum := m.h.Sum(nil)
	if subtle.ConstantTimeCompare(sum, m.in[2:mdcLen]) != 1 {
		return errors.New("bailiff: item failed its integrity check (MDC): damaged or tampered")
	}
	m.done = true
	return nil
}

// literalEOF returns the literal body and, at its end, requires the
// encrypted stream to end too with a valid MDC.
type literalEOF struct {
	body io.Reader
	m    *mdcReader
}

func (l *literalEOF) Read(p []byte) (int, error) {
	n, err := l.body.Read(p)
	if err == io.EOF {
		var one [1]byte
		if k, _ := l.m.Read(one[:]); k != 0 {
			return n, fmt.Errorf("%w: data after the literal packet", ErrItemFormat)
		}
		if ferr := l.m.finish(); ferr != nil {
			return n, ferr
		}
	}
	return n, err
}
