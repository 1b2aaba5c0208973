package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"coffre/bailiff/internal/canon"
)

// Magic is the first line's field and FormatVersion its value.
const (
	Magic         = "coffre-crypto-policy"
	FormatVersion = "v1"
	none          = "-"
)

// ErrFormat is wrapped by every Parse error.
var ErrFormat = errors.New("policy: malformed policy file")

func sortRules(rs []Rule) {
	slices.SortFunc(rs, func(a, b Rule) int { return strings.Compare(a.Algorithm, b.Algorithm) })
}

func encOpt(t time.Time) string {
	if t.IsZero() {
		return none
	}
	return canon.EncTime(t)
}

func encStr(s string) string {
	if s == "" {
		return none
	}
	return s
}

// Body returns the canonical bytes the bailiffs sign.
func (p *Policy) Body() []byte {
	var w canon.Writer
	w.Line(Magic, FormatVersion)
	w.Line("version", strconv.Itoa(p.Version))
	w.Line("vault", hex.EncodeToString(p.VaultID[:]))
	w.Line("roster", hex.EncodeToString(p.RosterDigest[:]))
	w.Line("created", canon.EncTime(p.Created))
	w.Line("min-key-epoch", strconv.FormatUint(p.MinKeyEpoch, 10))
	w.Line("rules", strconv.Itoa(len(p.Rules)))
	for _, r := range p.Rules {
		w.Line("rule", r.Algorithm, r.Class, r.Status, encOpt(r.WarnFrom), encOpt(r.Until), encStr(r.Replacement))
	}
	return w.Bytes()
}

// Digest is SHA-256 of Body().
func (p *Policy) Digest() [32]byte { return sha256.Sum256(p.Body()) }

// Marshal returns the signed policy file: Body() and the signatures
// section (signatures sorted by fingerprint).
func (p *Policy) Marshal() []byte {
	var w canon.Writer
	fprs := make([]string, 0, len(p.Signatures))
	for f := range p.Signatures {
		fprs = append(fprs, f)
	}
	slices.Sort(fprs)
	w.Line("signatures", strconv.Itoa(len(fprs)))
	for _, f := range fprs {
		w.Line("signature", f, canon.EncB64(p.Signatures[f]))
	}
	return append(p.Body(), w.Bytes()...)
}

// Parse reads a policy file strictly: canonical lines, fields in order,
// bounded by the limits in limits.go, consistent (Validate), and
// byte-identical to its re-encoding. Signatures are checked by Verify.
func Parse(b []byte) (*Policy, error) {
	p, err := parse(b)
	if err != nil {
		return nil, &formatError{err}
	}
	return p, nil
}

// formatError wraps a Parse failure so that it matches both ErrFormat and
// the underlying error (canon.ErrSyntax, …).
type formatError struct{ err error }

func (e *formatError) Error() string {
	return ErrFormat.Error() + ": " + strings.TrimPrefix(e.err.Error(), "policy: ")
}

func (e *formatError) Unwrap() []error { return []error{ErrFormat, e.err} }

func parse(b []byte) (*Policy, error) {
	rd, err := canon.NewReader("policy", b, MaxPolicyLen)
	if err != nil {
		return nil, err
	}
	wrap := func(field string, err error) error { return fmt.Errorf("policy: %s: %w", field, err) }
	v, err := rd.Field(Magic)
	if err != nil {
		return nil, err
	}
	if v != FormatVersion {
		return nil, fmt.Errorf("policy: format %q is not supported (want %s); upgrade the appliance", v, FormatVersion)
	}
	p := &Policy{Signatures: map[string][]byte{}}
	if v, err = rd.Field("version"); err != nil {
		return nil, err
	}
	if p.Version, err = canon.Uint(v, 1, MaxVersion); err != nil {
		return nil, wrap("version", err)
	}
	hexField := func(name string, dst []byte) error {
		v, err := rd.Field(name)
		if err != nil {
			return err
		}
		h, err := canon.Hex(v, len(dst))
		if err != nil {
			return wrap(name, err)
		}
		copy(dst, h)
		return nil
	}
	if err := hexField("vault", p.VaultID[:]); err != nil {
		return nil, err
	}
	if err := hexField("roster", p.RosterDigest[:]); err != nil {
		return nil, err
	}
	if v, err = rd.Field("created"); err != nil {
		return nil, err
	}
	if p.Created, err = canon.Time(v); err != nil {
		return nil, wrap("created", err)
	}
	if v, err = rd.Field("min-key-epoch"); err != nil {
		return nil, err
	}
	e, err := canon.Uint(v, 0, MaxKeyEpoch)
	if err != nil {
		return nil, wrap("min-key-epoch", err)
	}
	p.MinKeyEpoch = uint64(e)
	if v, err = rd.Field("rules"); err != nil {
		return nil, err
	}
	n, err := canon.Uint(v, 1, MaxRules)
	if err != nil {
		return nil, wrap("rules", err)
	}
	p.Rules = make([]Rule, 0, n)
	for i := 0; i < n; i++ {
		f, err := rd.Fields("rule", 6)
		if err != nil {
			return nil, err
		}
		r := Rule{Algorithm: f[0], Class: f[1], Status: f[2]}
		if r.WarnFrom, err = optTime(f[3]); err != nil {
			return nil, wrap("rule "+f[0]+": warn-from", err)
		}
		if r.Until, err = optTime(f[4]); err != nil {
			return nil, wrap("rule "+f[0]+": until", err)
		}
		if f[5] != none {
			if err := checkName(f[5]); err != nil {
				return nil, wrap("rule "+f[0]+": replacement", err)
			}
			r.Replacement = f[5]
		}
		p.Rules = append(p.Rules, r)
	}
	if v, err = rd.Field("signatures"); err != nil {
		return nil, err
	}
	m, err := canon.Uint(v, 0, MaxSignatures)
	if err != nil {
		return nil, wrap("signatures", err)
	}
	prev := ""
	for i := 0; i < m; i++ {
		f, err := rd.Fields("signature", 2)
		if err != nil {
			return nil, err
		}
		if err := canon.Fingerprint(f[0]); err != nil {
			return nil, wrap("signature", err)
		}
		if f[0] <= prev {
			return nil, fmt.Errorf("policy: signature by %s out of order or repeated", f[0])
		}
		prev = f[0]
		sig, err := canon.B64(f[1], MaxSignatureLen)
		if err != nil {
			return nil, wrap("signature", err)
		}
		p.Signatures[f[0]] = sig
	}
	if err := rd.End(); err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if !bytes.Equal(p.Marshal(), b) {
		return nil, errors.New("policy: not in canonical form (re-encoding differs)")
	}
	return p, nil
}

func optTime(v string) (time.Time, error) {
	if v == none {
		return time.Time{}, nil
	}
	return canon.Time(v)
}
