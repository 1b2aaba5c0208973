package bailiff

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"errors"
	"hash"
	"io"
)

// The writer side of the GnuPG 2.2 profile, written here rather than
// through go-crypto's packet writers for throughput on the appliance's hot
// path (every item is re-encrypted once): CFB with 16-byte XORs and 64 KiB
// partial-length chunks. It produces exactly RFC 4880 packets: a SEIPD v1
// packet (tag 18) whose CFB stream (AES-256, zero IV, no resync) holds the
// 18-byte prefix, a literal data packet (tag 11, format 'b', no name, time
// 0) and the MDC packet (tag 19: SHA-1 over prefix, plaintext packets and
// the 0xD3 0x14 header). Readers are go-crypto, GnuPG, Sequoia and RNP
// (tested).

const partialChunk = 1 << 16 // 2^16: partial length byte 0xE0|16

// partialWriter writes one new-format packet body with partial lengths.
type partialWriter struct {
	w   io.Writer
	buf []byte
}

func newPartialWriter(w io.Writer, tag byte) (*partialWriter, error) {
	if _, err := w.Write([]byte{0xC0 | tag}); err != nil {
		return nil, err
	}
	return &partialWriter{w: w, buf: make([]byte, 0, 2*partialChunk)}, nil
}

func (p *partialWriter) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		take := min(len(b), cap(p.buf)-len(p.buf))
		p.buf = append(p.buf, b[:take]...)
		b = b[take:]
		for len(p.buf) > partialChunk {
			if _, err := p.w.Write([]byte{0xE0 | 16}); err != nil {
				return 0, err
			}
			if _, err := p.w.Write(p.buf[:partialChunk]); err != nil {
				return 0, err
			}
			rest := copy(p.buf, p.buf[partialChunk:])
			p.buf = p.buf[:rest]
		}
	}
	return n, nil
}

// Close writes the final segment with a regular length (which may be 0).
func (p *partialWriter) Close() error {
	l := len(p.buf)
	var hdr []byte
	switch {
	case l < 192:
		hdr = []byte{byte(l)}
	case l < 8384:
		hdr = []byte{byte((l-192)>>8) + 192, byte(l - 192)}
	default:
		hdr = []byte{255, byte(l >> 24), byte(l >> 16), byte(l >> 8), byte(l)}
	}
	if _, err := p.w.Write(hdr); err != nil {
		return err
	}
	_, err := p.w.Write(p.buf)
	clear(p.buf)
	p.buf = p.buf[:0]
	return err
}

// cfbEncrypter is plain CFB-128 encryption.
type cfbEncrypter struct {
	b    cipher.Block
	next [16]byte // keystream block
	used int      // bytes of next already used
	prev [16]byte // ciphertext block being built
}

func newCFB(b cipher.Block) *cfbEncrypter {
	c := &cfbEncrypter{b: b, used: 16}
	return c
}

func (c *cfbEncrypter) XORKeyStream(dst, src []byte) {
	for len(src) > 0 {
		if c.used == 16 {
			c.b.Encrypt(c.next[:], c.prev[:])
			c.used = 0
		}
		n := subtle.XORBytes(dst, src, c.next[c.used:])
		copy(c.prev[c.used:], dst[:n])
		c.used += n
		dst, src = dst[n:], src[n:]
	}
}

// seipdWriter encrypts and MDC-hashes the packets written into it.
type seipdWriter struct {
	out *partialWriter
	cfb *cfbEncrypter
	h   hash.Hash
	buf []byte
}

func newSEIPDv1(w io.Writer, key []byte) (*seipdWriter, error) {
	if len(key) != 32 {
		return nil, errors.New("seipd: want an AES-256 key")
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	out, err := newPartialWriter(w, 18)
	if err != nil {
		return nil, err
	}
	if _, err := out.Write([]byte{1}); err != nil {
		return nil, err
	}
	s := &seipdWriter{out: out, cfb: newCFB(blk), h: sha1.New(), buf: make([]byte, sealBuf)}
	var prefix [18]byte
	if _, err := io.ReadFull(rand.Reader, prefix[:16]); err != nil {
		return nil, err
	}
	prefix[16], prefix[17] = prefix[14], prefix[15]
	if _, err := s.Write(prefix[:]); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *seipdWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		m := min(len(p), len(s.buf))
		s.h.Write(p[:m])
		s.cfb.XORKeyStream(s.buf[:m], p[:m])
		if _, err := s.out.Write(s.buf[:m]); err != nil {
			return 0, err
		}
		p = p[m:]
	}
	return n, nil
}

// Close appends the MDC packet and ends the SEIPD packet.
func (s *seipdWriter) Close() error {
	mdcHdr := []byte{0xD3, 0x14}
	s.h.Write(mdcHdr)
	mdc := append(mdcHdr, s.h.Sum(nil)...)
	enc := make([]byte, len(mdc))
	s.cfb.XORKeyStream(enc, mdc)
	if _, err := s.out.Write(enc); err != nil {
		return err
	}
	clear(s.buf)
	return s.out.Close()
}

// literalWriter frames the plaintext as a literal data packet inside the
// SEIPD stream; Close ends both.
type literalWriter struct {
	lit   *partialWriter
	seipd *seipdWriter
}

func newLiteral(s *seipdWriter) (*literalWriter, error) {
	lit, err := newPartialWriter(s, 11)
	if err != nil {
		return nil, err
	}
	if _, err := lit.Write([]byte{'b', 0, 0, 0, 0, 0}); err != nil {
		return nil, err
	}
	return &literalWriter{lit: lit, seipd: s}, nil
}

func (l *literalWriter) Write(p []byte) (int, error) { return l.lit.Write(p) }

func (l *literalWriter) Close() error {
	if err := l.lit.Close(); err != nil {
		return err
	}
	return l.seipd.Close()
}
