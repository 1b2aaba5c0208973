package storage

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/chacha20poly1305"
)

// chunkNonce is the XChaCha20 nonce of chunk i: record nonce (16) ||
// big-endian 56-bit counter (7) || last-chunk flag (1).
func chunkNonce(rec [16]byte, i uint64, last bool) []byte {
	var n [chacha20poly1305.NonceSizeX]byte
	copy(n[:], rec[:])
	setChunkCounter(&n, i, last)
	return n[:]
}

// setChunkCounter writes the counter and last-chunk flag of chunk i into a
// nonce that already holds the record nonce.
func setChunkCounter(n *[chacha20poly1305.NonceSizeX]byte, i uint64, last bool) {
	var c [8]byte
	binary.BigEndian.PutUint64(c[:], i)
	copy(n[16:23], c[1:])
	n[23] = 0
	if last {
		n[23] = 1
	}
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != RecordKeySize {
		return nil, fmt.Errorf("storage: record key is %d bytes, want %d", len(key), RecordKeySize)
	}
	return chacha20poly1305.NewX(key)
}

// streamReader decrypts a STREAM payload read from r, yielding plaintext
// (meta followed by body).
type streamReader struct {
	aead   cipher.AEAD
	nonce  [16]byte
	aad    []byte
	r      io.Reader
	left   uint64 // payload bytes not yet read
	i      uint64
	buf    []byte // ciphertext buffer
	plain  []byte // unread plaintext
	err    error
	isLast bool
}

func newStreamReader(aead cipher.AEAD, h *Header, vault [16]byte, r io.Reader) *streamReader {
	return &streamReader{aead: aead, nonce: h.Nonce, aad: h.aad(vault), r: r, left: h.PayloadLen,
		buf: make([]byte, ChunkSize+16)}
}

var errAuth = errors.New("storage: record body failed authentication (wrong key or corrupt drive)")

func (s *streamReader) Read(p []byte) (int, error) {
	for len(s.plain) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		if s.isLast {
			s.err = io.EOF
			return 0, io.EOF
		}
		n := uint64(ChunkSize + 16)
		last := false
		if s.left <= n {
			n, last = s.left, true
		}
		if n < 16 {
			s.err = fmt.Errorf("storage: record payload truncated: %w", ErrCorrupt)
			return 0, s.err
		}
		if _, err := io.ReadFull(s.r, s.buf[:n]); err != nil {
			s.err = fmt.Errorf("storage: reading record payload: %w", err)
			return 0, s.err
		}
		s.left -= n
		out, err := s.aead.Open(s.buf[:0], chunkNonce(s.nonce, s.i, last), s.buf[:n], s.aad)
		cleanVector()
		if err != nil {
			s.err = errAuth
			return 0, s.err
		}
		if !last && len(out) != ChunkSize {
			s.err = fmt.Errorf("storage: short non-final chunk: %w", ErrCorrupt)
			return 0, s.err
		}
		if last && len(out) == 0 && s.i > 0 {
			s.err = fmt.Errorf("storage: empty final chunk: %w", ErrCorrupt)
			return 0, s.err
		}
		s.i++
		s.isLast = last
		s.plain = out
	}
	n := copy(p, s.plain)
	s.plain = s.plain[n:]
	return n, nil
}
