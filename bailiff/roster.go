package bailiff

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"coffre/bailiff/internal/canon"
)

// Roster is the list of bailiffs of a vault and the threshold k of n, signed
// by every bailiff (docs/formats/roster.md).
type Roster struct {
	VaultID   [32]byte
	Created   time.Time
	Threshold int
	Bailiffs  []*BailiffKey // sorted by fingerprint
	// Signatures maps a bailiff fingerprint to its binary detached
	// signature over Body().
	Signatures map[string][]byte
}

// ErrRosterUnsigned means some bailiff has not (validly) signed the roster.
var ErrRosterUnsigned = errors.New("bailiff: roster is not signed by every bailiff")

// NewRoster fixes a roster. Keys are sorted by fingerprint; duplicates are
// refused.
func NewRoster(vaultID [32]byte, threshold int, keys []*BailiffKey, created time.Time) (*Roster, error) {
	n := len(keys)
	if n < MinThreshold || n > MaxBailiffs {
		return nil, fmt.Errorf("bailiff: roster of %d bailiffs; need %d..%d", n, MinThreshold, MaxBailiffs)
	}
	if threshold < MinThreshold || threshold > n {
		return nil, fmt.Errorf("bailiff: threshold %d of %d is invalid; need %d <= k <= n", threshold, n, MinThreshold)
	}
	ks := slices.Clone(keys)
	slices.SortFunc(ks, func(a, b *BailiffKey) int { return bytes.Compare([]byte(a.Fingerprint), []byte(b.Fingerprint)) })
	for i := 1; i < n; i++ {
		if ks[i].Fingerprint == ks[i-1].Fingerprint {
			return nil, fmt.Errorf("bailiff: key %s is on the roster twice", ks[i].Fingerprint)
		}
	}
	return &Roster{VaultID: vaultID, Created: created.UTC().Truncate(time.Second), Threshold: threshold, Bailiffs: ks, Signatures: map[string][]byte{}}, nil
}

// Body returns the canonical bytes every bailiff signs.
func (r *Roster) Body() []byte {
	var w canon.Writer
	w.Line("coffre-roster", "v1")
	w.Line("vault", hex.EncodeToString(r.VaultID[:]))
	w.Line("created", canon.EncTime(r.Created))
	w.Line("threshold", fmt.Sprint(r.Threshold))
	w.Line("bailiffs", fmt.Sprint(len(r.Bailiffs)))
	for _, b := range r.Bailiffs {
		w.Line("bailiff", b.Fingerprint)
		w.Line("name", b.Name)
		w.Line("key", canon.EncB64(b.Public))
	}
	return w.Bytes()
}

// Digest is SHA-256 of Body(): what escrow bundles and orders bind to.
func (r *Roster) Digest() [32]byte { return sha256.Sum256(r.Body()) }

// Marshal returns the signed roster file: Body() followed by the
// signatures section.
func (r *Roster) Marshal() []byte {
	return append(r.Body(), marshalSignatures(r.Signatures)...)
}

// Bailiff returns the roster entry with that fingerprint, or nil.
func (r *Roster) Bailiff(fingerprint string) *BailiffKey {
	for _, b := range r.Bailiffs {
		if b.Fingerprint == fingerprint {
			return b
		}
	}
	return nil
}

// index returns the position of a bailiff (share index - 1), or -1.
func (r *Roster) index(fingerprint string) int {
	for i, b := range r.Bailiffs {
		if b.Fingerprint == fingerprint {
			return i
		}
	}
	return -1
}

// AddSignature verifies a detached signature (binary or armored, e.g. from
// `gpg --detach-sign roster.txt`) over Body() against every bailiff and
// records it for the one who made it. It returns that bailiff.
func (r *Roster) AddSignature(sig []byte) (*BailiffKey, error) {
	return addBailiffSignature(r.Signatures, r, r.Body(), sig, "roster",
		"bailiff: roster signature does not verify against any bailiff on the roster; sign the exact roster bytes with `gpg --detach-sign`")
}

// Verify checks the roster is signed by every bailiff on it (a roster binds
// all n: each bailiff attests the whole list and threshold). It returns
// ErrRosterUnsigned wrapped with the names of those missing.
//
// A roster is verified many times (every escrow made, every order and
// quorum checked): verifyDetached remembers the signatures that verified,
// so only the first check of given bytes pays for the public-key work.
func (r *Roster) Verify() error {
	body := r.Body()
	var missing []string
	for _, b := range r.Bailiffs {
		sig, ok := r.Signatures[b.Fingerprint]
		if !ok || verifyDetached(b.entity, body, sig) != nil {
			missing = append(missing, fmt.Sprintf("%s (%s)", b.Name, b.Fingerprint))
		}
	}
	for f := range r.Signatures {
		if r.Bailiff(f) == nil {
			return fmt.Errorf("bailiff: roster carries a signature by %s who is not on it", f)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: missing or invalid for %v; have them sign the roster", ErrRosterUnsigned, missing)
	}
	return nil
}

// ParseRoster parses a signed roster file strictly (canonical encoding,
// limits, key algorithms) and returns it. It does not check signatures:
// call Verify.
func ParseRoster(b []byte, now time.Time) (*Roster, error) {
	rd, err := canon.NewReader("bailiff: roster", b, MaxRosterLen)
	if err != nil {
		return nil, err
	}
	r := &Roster{Signatures: map[string][]byte{}}
	if v, err := rd.Field("coffre-roster"); err != nil {
		return nil, err
	} else if v != "v1" {
		return nil, fmt.Errorf("bailiff: roster version %q is not supported (want v1)", v)
	}
	wrap := func(field string, err error) error { return fmt.Errorf("bailiff: roster: %s: %w", field, err) }
	v, err := rd.Field("vault")
	if err != nil {
		return nil, err
	}
	id, err := canon.Hex(v, 32)
	if err != nil {
		return nil, wrap("vault", err)
	}
	copy(r.VaultID[:], id)
	if v, err = rd.Field("created"); err != nil {
		return nil, err
	}
	if r.Created, err = canon.Time(v); err != nil {
		return nil, wrap("created", err)
	}
	if v, err = rd.Field("threshold"); err != nil {
		return nil, err
	}
	if r.Threshold, err = canon.Uint(v, MinThreshold, MaxBailiffs); err != nil {
		return nil, wrap("threshold", err)
	}
	if v, err = rd.Field("bailiffs"); err != nil {
		return nil, err
	}
	n, err := canon.Uint(v, MinThreshold, MaxBailiffs)
	if err != nil {
		return nil, wrap("bailiffs", err)
	}
	if r.Threshold > n {
		return nil, fmt.Errorf("bailiff: roster: threshold %d exceeds %d bailiffs", r.Threshold, n)
	}
	for i := 0; i < n; i++ {
		fpr, err := rd.Field("bailiff")
		if err != nil {
			return nil, err
		}
		if err := checkFingerprint(fpr); err != nil {
			return nil, wrap("bailiff", err)
		}
		if i > 0 && fpr <= r.Bailiffs[i-1].Fingerprint {
			return nil, fmt.Errorf("bailiff: roster: bailiff %s out of order or repeated (sorted by fingerprint)", fpr)
		}
		name, err := rd.Text("name", MaxNameLen)
		if err != nil {
			return nil, err
		}
		kv, err := rd.Field("key")
		if err != nil {
			return nil, err
		}
		kb, err := canon.B64(kv, MaxPublicKeyLenPQ)
		if err != nil {
			return nil, wrap("key", err)
		}
		e, err := parseBailiffKey(kb, now)
		if err != nil {
			return nil, fmt.Errorf("bailiff: roster: key of %s: %w", fpr, err)
		}
		if max := maxBailiffKeyLen(e.PrimaryKey.Version); len(kb) > max {
			return nil, fmt.Errorf("bailiff: roster: key of %s is %d bytes, more than %d for a v%d key", fpr, len(kb), max, e.PrimaryKey.Version)
		}
		if Fingerprint(e) != fpr {
			return nil, fmt.Errorf("bailiff: roster: key listed as %s has fingerprint %s", fpr, Fingerprint(e))
		}
		r.Bailiffs = append(r.Bailiffs, &BailiffKey{Name: name, Fingerprint: fpr, Public: kb, entity: e})
	}
	if v, err = rd.Field("signatures"); err != nil {
		return nil, err
	}
	m, err := canon.Uint(v, 0, n)
	if err != nil {
		return nil, wrap("signatures", err)
	}
	prev := ""
	for i := 0; i < m; i++ {
		f, err := rd.Fields("signature", 2)
		if err != nil {
			return nil, err
		}
		if r.Bailiff(f[0]) == nil {
			return nil, fmt.Errorf("bailiff: roster: signature by %s who is not on the roster", f[0])
		}
		if f[0] <= prev {
			return nil, fmt.Errorf("bailiff: roster: signature by %s out of order or repeated", f[0])
		}
		prev = f[0]
		sig, err := canon.B64(f[1], MaxSignatureLen)
		if err != nil {
			return nil, wrap("signature", err)
		}
		r.Signatures[f[0]] = sig
	}
	if err := rd.End(); err != nil {
		return nil, err
	}
	return r, nil
}
