package policy

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"coffre/bailiff"
)

// ErrWrongVault means the policy is bound to another vault or roster.
var ErrWrongVault = errors.New("policy: bound to another vault or roster")

// Sign adds the signature of a bailiff whose key is opened on the
// appliance. The policy must be valid and bound to r (Bind).
func (p *Policy) Sign(r *bailiff.Roster, key *openpgp.Entity, now time.Time) error {
	if err := p.checkBinding(r); err != nil {
		return err
	}
	if err := p.Validate(); err != nil {
		return err
	}
	sig, err := bailiff.SignDetached(key, p.Body(), now)
	if err != nil {
		return fmt.Errorf("policy: signing version %d: %w", p.Version, err)
	}
	_, err = p.AddSignature(r, sig)
	return err
}

// AddSignature verifies a detached signature (binary or armored, e.g.
// `gpg --detach-sign policy-body.txt` over Body()) against the roster and
// records it for the bailiff who made it.
func (p *Policy) AddSignature(r *bailiff.Roster, sig []byte) (*bailiff.BailiffKey, error) {
	if err := p.checkBinding(r); err != nil {
		return nil, err
	}
	sig, err := bailiff.NormalizeSignature(sig)
	if err != nil {
		return nil, fmt.Errorf("policy: signature: %w", err)
	}
	body := p.Body()
	for _, b := range r.Bailiffs {
		if b.VerifyDetached(body, sig) == nil {
			if p.Signatures == nil {
				p.Signatures = map[string][]byte{}
			}
			p.Signatures[b.Fingerprint] = sig
			return b, nil
		}
	}
	return nil, fmt.Errorf("policy: signature on version %d does not verify against any bailiff on the roster; sign the policy body (every line before \"signatures\")", p.Version)
}

// Verify checks the policy is valid, names this roster and vault, and
// carries valid signatures by at least k distinct bailiffs of the roster.
// A signature by a key not on the roster, or an invalid one, is an error.
// The caller must also refuse a Version lower than the policy in force.
func (p *Policy) Verify(r *bailiff.Roster) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if err := p.checkBinding(r); err != nil {
		return err
	}
	body := p.Body()
	valid := 0
	for f, sig := range p.Signatures {
		b := r.Bailiff(f)
		if b == nil {
			return fmt.Errorf("policy: version %d: signature by %s who is not on the roster; remove it", p.Version, f)
		}
		if err := b.VerifyDetached(body, sig); err != nil {
			return fmt.Errorf("policy: version %d: signature of %s (%s) is invalid: %s", p.Version, b.Name, f, sanitize(err))
		}
		valid++
	}
	if valid < r.Threshold {
		return fmt.Errorf("policy: version %d has %d valid bailiff signatures, needs %d; have more bailiffs sign it", p.Version, valid, r.Threshold)
	}
	return nil
}

func (p *Policy) checkBinding(r *bailiff.Roster) error {
	if p.VaultID != r.VaultID {
		return fmt.Errorf("%w: policy version %d is for another vault", ErrWrongVault, p.Version)
	}
	if p.RosterDigest != r.Digest() {
		return fmt.Errorf("%w: policy version %d is bound to another roster; Bind it to the current roster and sign again", ErrWrongVault, p.Version)
	}
	return nil
}

// sanitize keeps error text from the OpenPGP parser short and single-line.
func sanitize(err error) string {
	s := strings.ReplaceAll(err.Error(), "\n", " ")
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// ErrRollback means a policy is not newer than the one in force.
var ErrRollback = errors.New("policy: not newer than the policy in force")

// Supersedes checks that p may replace cur, the policy in force (nil: none):
// same vault, strictly greater version. Call it after Verify.
func (p *Policy) Supersedes(cur *Policy) error {
	if cur == nil {
		return nil
	}
	if p.VaultID != cur.VaultID {
		return fmt.Errorf("%w: policy version %d is for another vault than the policy in force", ErrWrongVault, p.Version)
	}
	if p.Version <= cur.Version {
		return fmt.Errorf("%w: version %d, in force %d; number the new policy above %d", ErrRollback, p.Version, cur.Version, cur.Version)
	}
	return nil
}
