package qr

import (
	"errors"
	"fmt"
)

// base45Alphabet is the RFC 9285 alphabet: exactly the 45 characters of the
// QR code alphanumeric mode.
const base45Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"

var base45Value [256]int8

func init() {
	for i := range base45Value {
		base45Value[i] = -1
	}
	for i := 0; i < len(base45Alphabet); i++ {
		base45Value[base45Alphabet[i]] = int8(i)
	}
}

// ErrBase45 reports text that is not canonical base45.
var ErrBase45 = errors.New("qr: invalid base45")

// Base45Encode encodes b as RFC 9285 base45: each pair of bytes [a, b] is the
// number a*256+b written as three characters c, d, e (least significant
// first) with n = c + d*45 + e*45*45; a trailing single byte is written as
// two characters.
func Base45Encode(b []byte) string {
	out := make([]byte, 0, Base45EncodedLen(len(b)))
	for len(b) >= 2 {
		n := int(b[0])<<8 | int(b[1])
		out = append(out, base45Alphabet[n%45], base45Alphabet[(n/45)%45], base45Alphabet[n/2025])
		b = b[2:]
	}
	if len(b) == 1 {
		n := int(b[0])
		out = append(out, base45Alphabet[n%45], base45Alphabet[n/45])
	}
	return string(out)
}

// Base45EncodedLen is the length of the base45 encoding of n bytes.
func Base45EncodedLen(n int) int { return n/2*3 + n%2*2 }

// Base45Decode decodes RFC 9285 base45. It rejects characters outside the
// alphabet, a length of 1 modulo 3, and chunks whose value overflows (more
// than 65535 for three characters, more than 255 for two), as RFC 9285
// section 4.2 requires, so every accepted text is the canonical encoding of
// its result.
func Base45Decode(s string) ([]byte, error) {
	if len(s)%3 == 1 {
		return nil, fmt.Errorf("%w: length %d leaves a single character", ErrBase45, len(s))
	}
	out := make([]byte, 0, len(s)/3*2+1)
	for i := 0; i < len(s); i += 3 {
		rest := min(3, len(s)-i)
		n := 0
		mul := 1
		for j := 0; j < rest; j++ {
			v := base45Value[s[i+j]]
			if v < 0 {
				return nil, fmt.Errorf("%w: character %q at offset %d is not in the alphabet", ErrBase45, s[i+j], i+j)
			}
			n += int(v) * mul
			mul *= 45
		}
		if rest == 3 {
			if n > 0xffff {
				return nil, fmt.Errorf("%w: chunk at offset %d overflows", ErrBase45, i)
			}
			out = append(out, byte(n>>8), byte(n))
		} else {
			if n > 0xff {
				return nil, fmt.Errorf("%w: final chunk at offset %d overflows", ErrBase45, i)
			}
			out = append(out, byte(n))
		}
	}
	return out, nil
}

// IsAlphanumeric reports whether s uses only QR alphanumeric characters
// (the base45 alphabet), so that it was carried in alphanumeric or numeric
// mode and a decoder's text is exact.
func IsAlphanumeric(s string) bool {
	for i := 0; i < len(s); i++ {
		if base45Value[s[i]] < 0 {
			return false
		}
	}
	return true
}
