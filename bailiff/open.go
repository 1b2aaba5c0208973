package bailiff

import (
	"bufio"
	"crypto/sha1"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"coffre/internal/cfb"
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
	dec, err := cfb.NewDecrypter(key, make([]byte, cfb.BlockSize))
	clear(key)
	if err != nil {
		return nil, err
	}
	m := &mdcReader{src: se.Contents, dec: dec, h: sha1.New(), buf: make([]byte, openBuf)}
	if err := m.start(); err != nil {
		dec.Wipe()
		return nil, err
	}
	p, err := packet.Read(m)
	if err != nil {
		m.release()
		return nil, fmt.Errorf("%w: %s", ErrItemFormat, sanitize(err))
	}
	lit, ok := p.(*packet.LiteralData)
	if !ok {
		m.release()
		return nil, fmt.Errorf("%w: inner packet %T, want literal data", ErrItemFormat, p)
	}
	return &literalEOF{body: lit.Body, m: m}, nil
}

// openBuf is the decryption buffer of an item reader.
const openBuf = 128 << 10

// mdcReader decrypts a SEIPD v1 body (CFB-128, zero IV, no resync) in
// place, in large reads, and holds back the trailing MDC packet, checking
// it at EOF.
type mdcReader struct {
	src  io.Reader
	dec  *cfb.Stream
	h    hash.Hash
	buf  []byte // buf[r:w] is decrypted and not yet returned; its last mdcLen bytes are held back
	r, w int
	eof  bool
	done bool
}

// fill reads and decrypts more ciphertext.
func (m *mdcReader) fill() error {
	if m.eof {
		return nil
	}
	if m.r > 0 && len(m.buf)-m.w < len(m.buf)/2 {
		m.w = copy(m.buf, m.buf[m.r:m.w])
		m.r = 0
	}
	k, err := m.src.Read(m.buf[m.w:])
	if k > 0 {
		m.dec.XORKeyStream(m.buf[m.w:m.w+k], m.buf[m.w:m.w+k])
		m.w += k
	}
	switch err {
	case nil:
		return nil
	case io.EOF:
		m.eof = true
		return nil
	case io.ErrUnexpectedEOF:
		return fmt.Errorf("%w: truncated", ErrItemFormat)
	default:
		return err
	}
}

func (m *mdcReader) start() error {
	for m.w < prefixLen+mdcLen && !m.eof {
		if err := m.fill(); err != nil {
			return err
		}
	}
	if m.w < prefixLen+mdcLen {
		return fmt.Errorf("%w: encrypted packet too short", ErrItemFormat)
	}
	if m.buf[16] != m.buf[14] || m.buf[17] != m.buf[15] {
		return errors.New("bailiff: item does not decrypt with this key (prefix check)")
	}
	m.h.Write(m.buf[:prefixLen])
	m.r = prefixLen
	return nil
}

func (m *mdcReader) Read(p []byte) (int, error) {
	for m.w-m.r <= mdcLen && !m.eof {
		if err := m.fill(); err != nil {
			return 0, err
		}
	}
	avail := m.w - m.r - mdcLen
	if avail <= 0 {
		if err := m.finish(); err != nil {
			return 0, err
		}
		return 0, io.EOF
	}
	k := copy(p, m.buf[m.r:m.r+avail])
	m.h.Write(p[:k])
	m.r += k
	return k, nil
}

// finish checks the MDC packet once the ciphertext is exhausted.
func (m *mdcReader) finish() error {
	if m.done {
		return nil
	}
	tail := m.buf[m.r:m.w]
	if len(tail) != mdcLen || tail[0] != 0xD3 || tail[1] != 0x14 {
		return fmt.Errorf("%w: missing or damaged MDC", ErrItemFormat)
	}
	m.h.Write(tail[:2])
	sum := m.h.Sum(nil)
	ok := subtle.ConstantTimeCompare(sum, tail[2:]) == 1
	m.release()
	if !ok {
		return errors.New("bailiff: item failed its integrity check (MDC): damaged or tampered")
	}
	m.done = true
	return nil
}

// release wipes the key and the plaintext buffer.
func (m *mdcReader) release() {
	m.dec.Wipe()
	clear(m.buf)
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
