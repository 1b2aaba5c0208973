package qr

import (
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
	"slices"
)

// xoshiro256** seeded from SHA-256(transfer id || seq as 4 big-endian bytes):
// the 32 digest bytes are the four little-endian 64-bit state words.
type prng struct{ s [4]uint64 }

func newPRNG(id TransferID, seq int) *prng {
	var in [12]byte
	copy(in[:8], id[:])
	binary.BigEndian.PutUint32(in[8:], uint32(seq))
	d := sha256.Sum256(in[:])
	p := &prng{}
	for i := range p.s {
		p.s[i] = binary.LittleEndian.Uint64(d[8*i:])
	}
	return p
}

func (p *prng) next() uint64 {
	s := &p.s
	r := bits.RotateLeft64(s[1]*5, 7) * 9
	t := s[1] << 17
	s[2] ^= s[0]
	s[3] ^= s[1]
	s[1] ^= s[2]
	s[0] ^= s[3]
	s[2] ^= t
	s[3] = bits.RotateLeft64(s[3], 45)
	return r
}

// below returns next() mod n (n > 0); the small modulo bias is part of the
// format.
func (p *prng) below(n int) int { return int(p.next() % uint64(n)) }

// mixIndices returns the sorted fragment indices XORed into frame seq of a
// transfer of count fragments. Systematic frames (seq < count) carry exactly
// fragment seq. For a mixed frame the degree is log-uniform from 2 up: with
// k = bitlen(count), b = 1 + below(k-1) (b = 0 when count is 1), then the
// degree is 2^b + below(min(count, 2^(b+1)-1) - 2^b + 1); the members are the first degree entries of a
// partial Fisher-Yates shuffle of 0..count-1. scratch (len >= count) is
// reused when given.
func mixIndices(id TransferID, seq, count int, scratch []int) []int {
	if seq < count {
		return []int{seq}
	}
	p := newPRNG(id, seq)
	k := bits.Len(uint(count))
	b := 0
	if k > 1 {
		b = 1 + p.below(k-1)
	}
	lo := 1 << b
	hi := min(count, 1<<(b+1)-1)
	d := lo + p.below(hi-lo+1)
	if len(scratch) < count {
		scratch = make([]int, count)
	}
	idx := scratch[:count]
	for i := range idx {
		idx[i] = i
	}
	for i := 0; i < d; i++ {
		j := i + p.below(count-i)
		idx[i], idx[j] = idx[j], idx[i]
	}
	out := make([]int, d)
	copy(out, idx[:d])
	slices.Sort(out)
	return out
}

func xorInto(dst, src []byte) {
	n := len(dst)
	i := 0
	for ; i+8 <= n; i += 8 {
		v := binary.LittleEndian.Uint64(dst[i:]) ^ binary.LittleEndian.Uint64(src[i:])
		binary.LittleEndian.PutUint64(dst[i:], v)
	}
	for ; i < n; i++ {
		dst[i] ^= src[i]
	}
}
