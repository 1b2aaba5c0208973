package bailiff

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"coffre/bailiff/internal/canon"
)

// Re-encapsulation kinds that need the quorum and this order
// (docs/formats/quorum-order.md). They match policy.RosterChange and
// policy.EscrowRotation.
const (
	// ReencapRosterChange: every escrow's K is rebuilt by the old roster's
	// quorum and re-split to a new roster (a bailiff leaves or joins, a
	// bailiff key ages). The escrow keys and the items stay.
	ReencapRosterChange = "roster-change"
	// ReencapEscrowRotation: the listed users get a new escrow key; each of
	// their items keeps its encrypted data packet and gets a new PKESK to the
	// new key (a recipient change).
	ReencapEscrowRotation = "escrow-rotation"
)

// Limits of a quorum order.
const (
	// MaxQuorumOrderUsers bounds the users one escrow-rotation order names.
	MaxQuorumOrderUsers = 1024
	// MaxQuorumOrderLen bounds a signed order file.
	MaxQuorumOrderLen = 512 << 10
)

// QuorumOrder is the bailiffs' approval of a re-encapsulation job that
// needs the quorum (docs/formats/quorum-order.md): which kind, under which
// roster, to which new roster or for which users, signed by at least k
// bailiffs of the roster in force. For a roster change that is the old
// roster: its quorum approves the new one by signing this order, which
// binds the new roster's digest.
type QuorumOrder struct {
	VaultID      [32]byte
	RosterDigest [32]byte // the roster in force when the job starts
	Kind         string   // ReencapRosterChange or ReencapEscrowRotation
	Created      time.Time
	Reason       string
	NewRoster    [32]byte // roster change: digest of the new roster; zero otherwise
	Users        []string // escrow rotation: the users, ascending; empty for a roster change (every escrow)
	Signatures   map[string][]byte
}

// NewRosterChangeOrder drafts the order that moves the vault from roster
// old to roster next. next must be fully signed before the job runs; the
// bailiffs of old sign this order.
func NewRosterChangeOrder(old, next *Roster, reason string, created time.Time) (*QuorumOrder, error) {
	if next.VaultID != old.VaultID {
		return nil, fmt.Errorf("%w: the new roster is for another vault", ErrWrongEscrow)
	}
	if next.Digest() == old.Digest() {
		return nil, errors.New("bailiff: quorum order: the new roster is the roster in force")
	}
	o := &QuorumOrder{VaultID: old.VaultID, RosterDigest: old.Digest(), Kind: ReencapRosterChange, Created: created.UTC().Truncate(time.Second),
		Reason: reason, NewRoster: next.Digest(), Signatures: map[string][]byte{}}
	return o, o.check()
}

// NewRotationOrder drafts the order that gives each of users a new escrow
// key under roster r (a recipient change).
func NewRotationOrder(r *Roster, users []string, reason string, created time.Time) (*QuorumOrder, error) {
	us := slices.Clone(users)
	slices.Sort(us)
	us = slices.Compact(us)
	o := &QuorumOrder{VaultID: r.VaultID, RosterDigest: r.Digest(), Kind: ReencapEscrowRotation, Created: created.UTC().Truncate(time.Second),
		Reason: reason, Users: us, Signatures: map[string][]byte{}}
	return o, o.check()
}

// check enforces the rules ParseQuorumOrder enforces.
func (o *QuorumOrder) check() error {
	if err := canon.CheckText(o.Reason, MaxReferenceLen); err != nil {
		return fmt.Errorf("bailiff: quorum order: reason: %v", err)
	}
	switch o.Kind {
	case ReencapRosterChange:
		if o.NewRoster == ([32]byte{}) || len(o.Users) != 0 {
			return errors.New("bailiff: quorum order: a roster change names a new roster and no users")
		}
	case ReencapEscrowRotation:
		if o.NewRoster != ([32]byte{}) {
			return errors.New("bailiff: quorum order: an escrow rotation names no new roster")
		}
		if len(o.Users) == 0 || len(o.Users) > MaxQuorumOrderUsers {
			return fmt.Errorf("bailiff: quorum order: an escrow rotation names 1..%d users, not %d", MaxQuorumOrderUsers, len(o.Users))
		}
		for i, u := range o.Users {
			if err := canon.CheckID(u, MaxIDLen); err != nil {
				return fmt.Errorf("bailiff: quorum order: user %q: %v", u, err)
			}
			if i > 0 && u <= o.Users[i-1] {
				return fmt.Errorf("bailiff: quorum order: user %s out of order or repeated", u)
			}
		}
	default:
		return fmt.Errorf("bailiff: quorum order: kind %q is not %s or %s", o.Kind, ReencapRosterChange, ReencapEscrowRotation)
	}
	return nil
}

// Body returns the canonical bytes the bailiffs sign.
func (o *QuorumOrder) Body() []byte {
	var w canon.Writer
	w.Line("coffre-quorum-order", "v1")
	w.Line("vault", hex.EncodeToString(o.VaultID[:]))
	w.Line("roster", hex.EncodeToString(o.RosterDigest[:]))
	w.Line("kind", o.Kind)
	w.Line("created", canon.EncTime(o.Created))
	w.Line("reason", o.Reason)
	if o.NewRoster == ([32]byte{}) {
		w.Line("new-roster", "-")
	} else {
		w.Line("new-roster", hex.EncodeToString(o.NewRoster[:]))
	}
	w.Line("users", fmt.Sprint(len(o.Users)))
	for _, u := range o.Users {
		w.Line("user", u)
	}
	return w.Bytes()
}

// Digest is SHA-256 of Body(): the job's identity.
func (o *QuorumOrder) Digest() [32]byte { return sha256.Sum256(o.Body()) }

// ID is the lowercase hex of Digest.
func (o *QuorumOrder) ID() string { d := o.Digest(); return hex.EncodeToString(d[:]) }

// Marshal returns the signed order file: Body() and the signatures.
func (o *QuorumOrder) Marshal() []byte {
	return append(o.Body(), marshalSignatures(o.Signatures)...)
}

// Covers reports whether the order lets the quorum open the escrow of user.
func (o *QuorumOrder) Covers(user string) bool {
	if o.Kind == ReencapRosterChange {
		return true
	}
	_, ok := slices.BinarySearch(o.Users, user)
	return ok
}

// Sign adds the signature of a bailiff of r whose key is opened on the
// appliance.
func (o *QuorumOrder) Sign(r *Roster, bailiffKey *openpgp.Entity, now time.Time) error {
	sig, err := detachSign(bailiffKey, o.Body(), now)
	if err != nil {
		return fmt.Errorf("bailiff: quorum order: signing: %w", err)
	}
	_, err = o.AddSignature(r, sig)
	return err
}

// AddSignature verifies a detached signature (binary or armored, e.g.
// `gpg --detach-sign` over Body()) against the bailiffs of r and records it.
func (o *QuorumOrder) AddSignature(r *Roster, sig []byte) (*BailiffKey, error) {
	return addBailiffSignature(o.Signatures, r, o.Body(), sig, "quorum order", "bailiff: quorum order signature does not verify against any bailiff of the roster in force")
}

// Verify checks the order is for r's vault and roster and carries valid
// signatures by at least k distinct bailiffs of r. A signature by a key not
// on r is an error.
func (o *QuorumOrder) Verify(r *Roster) error {
	if err := o.check(); err != nil {
		return err
	}
	if o.VaultID != r.VaultID {
		return fmt.Errorf("%w: reencap order is for another vault", ErrWrongEscrow)
	}
	if o.RosterDigest != r.Digest() {
		return fmt.Errorf("%w: reencap order is bound to another roster", ErrWrongEscrow)
	}
	valid, err := countBailiffSignatures(o.Signatures, r, o.Body(), "quorum order")
	if err != nil {
		return err
	}
	if valid < r.Threshold {
		return fmt.Errorf("bailiff: quorum order (%s) has %d valid bailiff signatures, needs %d; have more bailiffs of the roster in force sign it", o.Kind, valid, r.Threshold)
	}
	return nil
}

// VerifyChange checks a roster change: the order is signed by the quorum
// of old (Verify), next is signed by every one of its bailiffs, belongs to
// the same vault and is the roster the order names.
func (o *QuorumOrder) VerifyChange(old, next *Roster) error {
	if o.Kind != ReencapRosterChange {
		return fmt.Errorf("bailiff: quorum order is a %s, not a %s", o.Kind, ReencapRosterChange)
	}
	if err := o.Verify(old); err != nil {
		return err
	}
	if next.VaultID != old.VaultID {
		return fmt.Errorf("%w: the new roster is for another vault", ErrWrongEscrow)
	}
	if next.Digest() != o.NewRoster {
		return fmt.Errorf("%w: the new roster is not the one the order names", ErrWrongEscrow)
	}
	if err := next.Verify(); err != nil {
		return fmt.Errorf("bailiff: new roster: %w", err)
	}
	return nil
}

// ParseQuorumOrder parses a signed order strictly (canonical lines,
// limits). Signatures are checked by Verify.
func ParseQuorumOrder(b []byte) (*QuorumOrder, error) {
	rd, err := canon.NewReader("bailiff: quorum order", b, MaxQuorumOrderLen)
	if err != nil {
		return nil, err
	}
	wrap := func(field string, err error) error { return fmt.Errorf("bailiff: quorum order: %s: %w", field, err) }
	o := &QuorumOrder{Signatures: map[string][]byte{}}
	if err := readOrderHead(rd, "quorum order", "coffre-quorum-order", &o.VaultID, &o.RosterDigest); err != nil {
		return nil, err
	}
	var v string
	if o.Kind, err = rd.Field("kind"); err != nil {
		return nil, err
	}
	if v, err = rd.Field("created"); err != nil {
		return nil, err
	}
	if o.Created, err = canon.Time(v); err != nil {
		return nil, wrap("created", err)
	}
	if o.Reason, err = rd.Text("reason", MaxReferenceLen); err != nil {
		return nil, err
	}
	if v, err = rd.Field("new-roster"); err != nil {
		return nil, err
	}
	if v != "-" {
		h, err := canon.Hex(v, 32)
		if err != nil {
			return nil, wrap("new-roster", err)
		}
		if copy(o.NewRoster[:], h); o.NewRoster == ([32]byte{}) {
			return nil, wrap("new-roster", errors.New("all zero; write - for none"))
		}
	}
	if v, err = rd.Field("users"); err != nil {
		return nil, err
	}
	n, err := canon.Uint(v, 0, MaxQuorumOrderUsers)
	if err != nil {
		return nil, wrap("users", err)
	}
	for i := 0; i < n; i++ {
		u, err := rd.Field("user")
		if err != nil {
			return nil, err
		}
		o.Users = append(o.Users, u)
	}
	if err := o.check(); err != nil {
		return nil, err
	}
	if err := readSignatures(rd, o.Signatures, "quorum order"); err != nil {
		return nil, err
	}
	if err := rd.End(); err != nil {
		return nil, err
	}
	return o, nil
}

// Sign adds the signature of one of the roster's bailiffs whose key is
// opened on the appliance (a new roster before a roster change: each of
// its bailiffs signs it, like at genesis).
func (r *Roster) Sign(bailiffKey *openpgp.Entity, now time.Time) (*BailiffKey, error) {
	b := r.Bailiff(Fingerprint(bailiffKey))
	if b == nil {
		return nil, fmt.Errorf("bailiff: key %s is not on this roster", Fingerprint(bailiffKey))
	}
	sig, err := detachSign(bailiffKey, r.Body(), now)
	if err != nil {
		return nil, fmt.Errorf("bailiff: signing the roster for %s: %w", b.Name, err)
	}
	return r.AddSignature(sig)
}
