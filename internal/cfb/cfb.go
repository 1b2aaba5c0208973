// Package cfb is AES in CFB-128 mode as OpenPGP's symmetrically encrypted
// integrity protected data packet, version 1 (RFC 4880 §5.13, RFC 9580
// §5.13.1), uses it: full 16-byte feedback, an IV given by the caller (zero
// for SEIPD v1, whose random prefix is part of the stream) and no resync.
// It streams: XORKeyStream may be called with any lengths and the output is
// the same as one call over the concatenation.
//
// It exists for throughput. crypto/cipher's CFB works a byte at a time
// around one block call per 16 bytes. Here whole blocks go to assembly on
// amd64 with AES-NI (AES-256 keys): decryption runs eight independent
// blocks at once (its keystream inputs are ciphertext, all known), and
// encryption, which is a chain, keeps the round keys in registers and
// folds the plaintext into the last round key. Other key sizes and
// platforms use crypto/aes a block at a time. The assembly is checked
// against crypto/aes by a known-answer test before its first use (a
// failure makes New return an error: fail closed) and by the package tests.
package cfb

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"sync"
)

// BlockSize is the AES block size and the CFB feedback size.
const BlockSize = aes.BlockSize

// Stream is one direction of AES-CFB-128. It holds the expanded key: call
// Wipe when done with it. Not safe for concurrent use.
type Stream struct {
	decrypt bool
	fast    bool // the assembly path (AES-256 on amd64 with AES-NI)
	xk      [60]uint32
	blk     cipher.Block
	iv      [BlockSize]byte // the feedback register: last ciphertext block
	ks      [BlockSize]byte // keystream of the block being consumed
	used    int             // bytes of ks already used; BlockSize when none is pending
}

// NewEncrypter returns a CFB encrypter with an AES key (16, 24 or 32
// bytes) and a 16-byte IV.
func NewEncrypter(key, iv []byte) (*Stream, error) { return newStream(key, iv, false) }

// NewDecrypter returns a CFB decrypter with an AES key and a 16-byte IV.
func NewDecrypter(key, iv []byte) (*Stream, error) { return newStream(key, iv, true) }

var (
	selfTest    sync.Once
	selfTestErr error
)

func newStream(key, iv []byte, decrypt bool) (*Stream, error) {
	if len(iv) != BlockSize {
		return nil, errors.New("cfb: IV must be 16 bytes")
	}
	s := &Stream{decrypt: decrypt, used: BlockSize}
	copy(s.iv[:], iv)
	if len(key) == 32 && haveAsm {
		selfTest.Do(func() { selfTestErr = knownAnswer() })
		if selfTestErr != nil {
			return nil, selfTestErr
		}
		s.fast = true
		expandKey256(&key[0], &s.xk[0])
		return s, nil
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	s.blk = b
	return s, nil
}

// XORKeyStream encrypts or decrypts src into dst. dst must be at least as
// long as src and either be src exactly or not overlap it.
func (s *Stream) XORKeyStream(dst, src []byte) {
	if len(dst) < len(src) {
		panic("cfb: output smaller than input")
	}
	dst = dst[:len(src)]
	if inexactOverlap(dst, src) {
		panic("cfb: invalid buffer overlap")
	}
	// finish a partly used keystream block
	if s.used < BlockSize {
		n := s.partial(dst, src)
		dst, src = dst[n:], src[n:]
	}
	if full := len(src) / BlockSize * BlockSize; full > 0 {
		s.blocks(dst[:full], src[:full])
		dst, src = dst[full:], src[full:]
	}
	if len(src) > 0 {
		s.encryptBlock(s.ks[:], s.iv[:])
		s.used = 0
		s.partial(dst, src)
	}
}

// partial consumes the pending keystream, byte-wise feedback.
func (s *Stream) partial(dst, src []byte) int {
	n := min(len(src), BlockSize-s.used)
	u := s.used
	if s.decrypt {
		copy(s.iv[u:u+n], src[:n])
		subtle.XORBytes(dst[:n], src[:n], s.ks[u:u+n])
	} else {
		subtle.XORBytes(dst[:n], src[:n], s.ks[u:u+n])
		copy(s.iv[u:u+n], dst[:n])
	}
	s.used += n
	return n
}

func (s *Stream) encryptBlock(dst, src []byte) {
	if s.fast {
		encryptBlocks256(&s.xk[0], &dst[0], &src[0], 1)
		return
	}
	s.blk.Encrypt(dst, src)
}

// blocks processes whole blocks starting at a block boundary.
func (s *Stream) blocks(dst, src []byte) {
	n := len(src) / BlockSize
	if s.fast {
		if s.decrypt {
			decryptCFB256(&s.xk[0], &s.iv, &dst[0], &src[0], n)
		} else {
			encryptCFB256(&s.xk[0], &s.iv, &dst[0], &src[0], n)
		}
		return
	}
	if s.decrypt {
		// The keystream of a chunk comes from known ciphertext: compute it
		// a chunk at a time so the block calls are independent.
		var ks [32 * BlockSize]byte
		for len(src) > 0 {
			c := min(len(src), len(ks))
			s.blk.Encrypt(ks[:BlockSize], s.iv[:])
			for j := BlockSize; j < c; j += BlockSize {
				s.blk.Encrypt(ks[j:j+BlockSize], src[j-BlockSize:j])
			}
			copy(s.iv[:], src[c-BlockSize:c])
			subtle.XORBytes(dst[:c], src[:c], ks[:c])
			dst, src = dst[c:], src[c:]
		}
		clear(ks[:])
		return
	}
	for i := 0; i < len(src); i += BlockSize {
		s.blk.Encrypt(s.ks[:], s.iv[:])
		subtle.XORBytes(dst[i:i+BlockSize], src[i:i+BlockSize], s.ks[:])
		copy(s.iv[:], dst[i:i+BlockSize])
	}
}

// Wipe clears the key schedule and the stream state. The Stream must not
// be used afterwards.
func (s *Stream) Wipe() {
	clear(s.xk[:])
	clear(s.ks[:])
	clear(s.iv[:])
	s.blk = nil
	s.fast = false
	s.used = BlockSize
}

// inexactOverlap reports whether x and y share memory at different
// offsets (the same rule as crypto/cipher).
func inexactOverlap(x, y []byte) bool {
	if len(x) == 0 || len(y) == 0 || &x[0] == &y[0] {
		return false
	}
	return anyOverlap(x, y)
}

// knownAnswer checks the assembly against crypto/aes and the NIST SP
// 800-38A CFB128-AES256 vectors before first use.
func knownAnswer() error {
	key, _ := hex.DecodeString("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
	iv, _ := hex.DecodeString("000102030405060708090a0b0c0d0e0f")
	pt, _ := hex.DecodeString("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51" +
		"30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710")
	ct, _ := hex.DecodeString("dc7e84bfda79164b7ecd8486985d386039ffed143b28b1c832113c6331e5407b" +
		"df10132415e54b92a13ed0a8267ae2f975a385741ab9cef82031623d55b1e471")
	fail := errors.New("cfb: AES-NI self-test failed; refusing to encrypt")
	var xk [60]uint32
	expandKey256(&key[0], &xk[0])
	defer clear(xk[:])
	ref, _ := aes.NewCipher(key)
	var a, b [BlockSize]byte
	ref.Encrypt(a[:], iv)
	encryptBlocks256(&xk[0], &b[0], &iv[0], 1)
	if a != b {
		return fail
	}
	// three repetitions (12 blocks) run the eight-block decryption loop
	// and its one-block tail; crypto/aes gives the expected output
	var bigPT, want []byte
	for range 3 {
		bigPT = append(bigPT, pt...)
	}
	want = make([]byte, len(bigPT))
	var fb [BlockSize]byte
	copy(fb[:], iv)
	for i := 0; i < len(bigPT); i += BlockSize {
		ref.Encrypt(a[:], fb[:])
		subtle.XORBytes(want[i:i+BlockSize], bigPT[i:i+BlockSize], a[:])
		copy(fb[:], want[i:i+BlockSize])
	}
	if subtle.ConstantTimeCompare(want[:len(ct)], ct) != 1 {
		return fail
	}
	var civ [BlockSize]byte
	out := make([]byte, len(bigPT))
	copy(civ[:], iv)
	encryptCFB256(&xk[0], &civ, &out[0], &bigPT[0], len(bigPT)/BlockSize)
	if subtle.ConstantTimeCompare(out, want) != 1 || subtle.ConstantTimeCompare(civ[:], want[len(want)-BlockSize:]) != 1 {
		return fail
	}
	back := make([]byte, len(out))
	copy(civ[:], iv)
	decryptCFB256(&xk[0], &civ, &back[0], &out[0], len(out)/BlockSize)
	if subtle.ConstantTimeCompare(back, bigPT) != 1 || subtle.ConstantTimeCompare(civ[:], want[len(want)-BlockSize:]) != 1 {
		return fail
	}
	return nil
}
