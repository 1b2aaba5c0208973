// Package shamir splits a secret into k-of-n shares over GF(2^8) and
// combines them back, in constant time with respect to the secret.
//
// Unlike plain Shamir, a split here is self-checking: every share carries the
// split id, the threshold, its index and a checksum, and the secret is
// extended with a digest before splitting, so that combining a wrong or
// tampered share fails with an error naming the share instead of returning
// garbage. The byte format and the share card text are specified in
// docs/formats/shares.md.
package shamir

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
)

// Errors returned by Combine and the parsers.
var (
	// ErrDigest means the shares combined into something whose digest does
	// not match: at least one share is wrong or tampered with.
	ErrDigest = errors.New("shamir: combined secret fails its digest: a share is wrong or tampered with; have each bailiff re-open their share")
	// ErrTooFewShares means fewer shares than the threshold were given.
	ErrTooFewShares = errors.New("shamir: fewer shares than the threshold")
)

// BadShareError names the share that was found wrong.
type BadShareError struct {
	Index  int    // index of the share (1..255)
	Reason string // what is wrong with it
}

func (e *BadShareError) Error() string {
	return fmt.Sprintf("shamir: share %d: %s", e.Index, e.Reason)
}

// Share is one share of a split. Value is secret material: wipe it with
// Wipe when done. Share has no String method on purpose.
type Share struct {
	SplitID   [SplitIDLen]byte
	Threshold int
	Index     int
	Value     []byte // len = secret length + TagLen
}

// Wipe overwrites the share value.
func (s *Share) Wipe() {
	clear(s.Value)
	s.Value = nil
}

// tag computes the digest appended to a secret before splitting.
func tag(id [SplitIDLen]byte, secret []byte) []byte {
	h := sha256.New()
	h.Write([]byte("coffre/shamir/v1 digest\x00"))
	h.Write(id[:])
	h.Write(secret)
	return h.Sum(nil)[:TagLen]
}

// Split splits secret into n shares of which any k rebuild it. The split id
// is random. rnd may be nil for crypto/rand.
func Split(secret []byte, k, n int, rnd io.Reader) ([]Share, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	if len(secret) == 0 || len(secret) > MaxSecretLen {
		return nil, fmt.Errorf("shamir: secret length %d outside 1..%d", len(secret), MaxSecretLen)
	}
	if k < MinThreshold || k > n || n > MaxShares {
		return nil, fmt.Errorf("shamir: threshold %d of %d shares is invalid (need %d <= k <= n <= %d)", k, n, MinThreshold, MaxShares)
	}
	var id [SplitIDLen]byte
	if _, err := io.ReadFull(rnd, id[:]); err != nil {
		return nil, fmt.Errorf("shamir: reading randomness: %w", err)
	}
	val := make([]byte, 0, len(secret)+TagLen)
	val = append(val, secret...)
	val = append(val, tag(id, secret)...)
	defer clear(val)

	shares := make([]Share, n)
	for i := range shares {
		shares[i] = Share{SplitID: id, Threshold: k, Index: i + 1, Value: make([]byte, len(val))}
	}
	coef := make([]byte, k-1)
	defer clear(coef)
	for b, c0 := range val {
		if _, err := io.ReadFull(rnd, coef); err != nil {
			for i := range shares {
				shares[i].Wipe()
			}
			return nil, fmt.Errorf("shamir: reading randomness: %w", err)
		}
		for i := range shares {
			x := byte(i + 1)
			// Horner: c0 + x*(c1 + x*(c2 + ...))
			var y byte
			for j := k - 2; j >= 0; j-- {
				y = gfMul(y, x) ^ coef[j]
			}
			shares[i].Value[b] = gfMul(y, x) ^ c0
		}
	}
	return shares, nil
}

// Combine rebuilds the secret from at least Threshold shares of one split
// and checks its digest. When the digest fails and more shares than the
// threshold were given, the share whose omission makes the digest pass is
// named in a *BadShareError; otherwise ErrDigest is returned.
func Combine(shares []Share) ([]byte, error) {
	if err := checkSet(shares); err != nil {
		return nil, err
	}
	secret, ok := combine(shares)
	if ok {
		return secret, nil
	}
	if len(shares) > shares[0].Threshold {
		sub := make([]Share, 0, len(shares)-1)
		for i := range shares {
			sub = append(sub[:0], shares[:i]...)
			sub = append(sub, shares[i+1:]...)
			if s, ok := combine(sub); ok {
				clear(s)
				return nil, &BadShareError{Index: shares[i].Index, Reason: "does not agree with the others (wrong or tampered share)"}
			}
		}
	}
	return nil, ErrDigest
}

func checkSet(shares []Share) error {
	if len(shares) == 0 {
		return ErrTooFewShares
	}
	first := shares[0]
	if first.Threshold < MinThreshold || first.Threshold > MaxShares {
		return &BadShareError{Index: first.Index, Reason: "invalid threshold"}
	}
	if len(shares) < first.Threshold {
		return fmt.Errorf("%w: have %d, need %d", ErrTooFewShares, len(shares), first.Threshold)
	}
	var seen [256]bool
	for _, s := range shares {
		if s.Index < 1 || s.Index > MaxShares {
			return &BadShareError{Index: s.Index, Reason: "index outside 1..255"}
		}
		if subtle.ConstantTimeCompare(s.SplitID[:], first.SplitID[:]) != 1 {
			return &BadShareError{Index: s.Index, Reason: "belongs to another split (different split id)"}
		}
		if s.Threshold != first.Threshold {
			return &BadShareError{Index: s.Index, Reason: "threshold differs from the other shares"}
		}
		if len(s.Value) != len(first.Value) || len(s.Value) <= TagLen || len(s.Value) > MaxSecretLen+TagLen {
			return &BadShareError{Index: s.Index, Reason: "value length differs from the other shares"}
		}
		if seen[s.Index] {
			return &BadShareError{Index: s.Index, Reason: "given twice"}
		}
		seen[s.Index] = true
	}
	return nil
}

// combine interpolates at 0 and checks the digest.
func combine(shares []Share) ([]byte, bool) {
	n := len(shares[0].Value)
	val := make([]byte, n)
	for i, si := range shares {
		// Lagrange basis at 0: prod_{j!=i} x_j / (x_j - x_i)
		li := byte(1)
		xi := byte(si.Index)
		for j, sj := range shares {
			if i == j {
				continue
			}
			xj := byte(sj.Index)
			li = gfMul(li, gfDiv(xj, xj^xi))
		}
		for b := 0; b < n; b++ {
			val[b] ^= gfMul(li, si.Value[b])
		}
	}
	secret := val[:n-TagLen]
	want := tag(shares[0].SplitID, secret)
	ok := subtle.ConstantTimeCompare(want, val[n-TagLen:]) == 1
	clear(val[n-TagLen:])
	if !ok {
		clear(val)
		return nil, false
	}
	return secret[:len(secret):len(secret)], true
}

// Commitment returns a binding digest of the share (split id, threshold,
// index, value), safe to store next to the shares' holders: the value has at
// least 128 bits of entropy so the digest reveals nothing usable. Checking a
// share against its commitment names a tampered share before combining.
func (s *Share) Commitment() [32]byte {
	h := sha256.New()
	h.Write([]byte("coffre/shamir/v1 commitment\x00"))
	h.Write(s.SplitID[:])
	h.Write([]byte{byte(s.Threshold), byte(s.Index)})
	h.Write(s.Value)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// CheckCommitment compares the share's commitment with want in constant
// time and returns a *BadShareError naming the share when they differ.
func (s *Share) CheckCommitment(want [32]byte) error {
	got := s.Commitment()
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return &BadShareError{Index: s.Index, Reason: "does not match its commitment (wrong or tampered share)"}
	}
	return nil
}

// String names the share without its value, so that a share printed by
// mistake (%v, %+v, %s) leaks nothing.
func (s Share) String() string {
	return fmt.Sprintf("shamir share %d (threshold %d, split %x, value redacted)", s.Index, s.Threshold, s.SplitID)
}

// GoString is String for %#v.
func (s Share) GoString() string { return s.String() }
