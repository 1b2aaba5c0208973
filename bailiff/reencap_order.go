package bailiff

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"coffre/bailiff/internal/canon"
)

// A re-encapsulation order (docs/formats/reencap.md) is what k bailiffs sign
// to approve a quorum act of re-encapsulation: which action, under which
// crypto policy and plan date, on which users or records. The appliance
// stores the signed order as a record before it acts, and every step record
// names the order's digest.

// Re-encapsulation actions an order approves.
const (
	// ActionUpgrade is the algorithm upgrade (kind 4): the listed users'
	// escrow keys are replaced by post-quantum ones and every item is
	// re-encrypted afresh.
	ActionUpgrade = "algorithm-upgrade"
	// ActionRetire retires the listed superseded records.
	ActionRetire = "retire"
)

// ReencapOrder is a signed re-encapsulation order.
type ReencapOrder struct {
	VaultID      [32]byte
	RosterDigest [32]byte
	Action       string
	// PolicyDigest is the SHA-256 of the signed crypto policy's body, or
	// zero for the built-in default policy.
	PolicyDigest [32]byte
	At           time.Time // the plan date the work was chosen at
	Target       string    // ActionUpgrade: the target escrow key algorithm; "" otherwise
	Created      time.Time
	Users        []string // ascending, distinct (ActionUpgrade)
	Records      []uint64 // ascending, distinct (ActionRetire)
	Signatures   map[string][]byte
}

// NewReencapOrder drafts an order for the bailiffs to sign. users and
// records are sorted and must be distinct.
func NewReencapOrder(r *Roster, action string, policyDigest [32]byte, at time.Time, target string, users []string, records []uint64, created time.Time) (*ReencapOrder, error) {
	o := &ReencapOrder{VaultID: r.VaultID, RosterDigest: r.Digest(), Action: action, PolicyDigest: policyDigest,
		At: at.UTC().Truncate(time.Second), Target: target, Created: created.UTC().Truncate(time.Second),
		Users: slices.Clone(users), Records: slices.Clone(records), Signatures: map[string][]byte{}}
	slices.Sort(o.Users)
	slices.Sort(o.Records)
	if err := o.check(); err != nil {
		return nil, err
	}
	return o, nil
}

// check enforces the rules Parse enforces.
func (o *ReencapOrder) check() error {
	switch o.Action {
	case ActionUpgrade:
		if o.Target != AlgKeyPQ {
			return fmt.Errorf("bailiff: reencap order: target %q is not supported (want %s)", o.Target, AlgKeyPQ)
		}
		if len(o.Records) != 0 {
			return errors.New("bailiff: reencap order: an algorithm upgrade lists users, not records")
		}
	case ActionRetire:
		if o.Target != "" || len(o.Users) != 0 {
			return errors.New("bailiff: reencap order: a retirement lists records only")
		}
	default:
		return fmt.Errorf("bailiff: reencap order: unknown action %q", o.Action)
	}
	if len(o.Users)+len(o.Records) == 0 {
		return errors.New("bailiff: reencap order: nothing to do (no users, no records)")
	}
	if len(o.Users) > MaxReencapEntries || len(o.Records) > MaxReencapEntries {
		return fmt.Errorf("bailiff: reencap order: more than %d entries; split the work", MaxReencapEntries)
	}
	for i, u := range o.Users {
		if err := canon.CheckID(u, MaxIDLen); err != nil {
			return fmt.Errorf("bailiff: reencap order: user %q: %v", u, err)
		}
		if i > 0 && o.Users[i-1] >= u {
			return fmt.Errorf("bailiff: reencap order: user %s out of order or repeated", u)
		}
	}
	for i, n := range o.Records {
		if i > 0 && o.Records[i-1] >= n {
			return fmt.Errorf("bailiff: reencap order: record %d out of order or repeated", n)
		}
	}
	return nil
}

// Body returns the canonical bytes the bailiffs sign.
func (o *ReencapOrder) Body() []byte {
	var w canon.Writer
	w.Line("coffre-reencap-order", "v1")
	w.Line("vault", hex.EncodeToString(o.VaultID[:]))
	w.Line("roster", hex.EncodeToString(o.RosterDigest[:]))
	w.Line("action", o.Action)
	if o.PolicyDigest == ([32]byte{}) {
		w.Line("policy", "default")
	} else {
		w.Line("policy", hex.EncodeToString(o.PolicyDigest[:]))
	}
	w.Line("at", canon.EncTime(o.At))
	if o.Target == "" {
		w.Line("target", "-")
	} else {
		w.Line("target", o.Target)
	}
	w.Line("created", canon.EncTime(o.Created))
	w.Line("users", strconv.Itoa(len(o.Users)))
	for _, u := range o.Users {
		w.Line("user", u)
	}
	w.Line("records", strconv.Itoa(len(o.Records)))
	for _, n := range o.Records {
		w.Line("record", strconv.FormatUint(n, 10))
	}
	return w.Bytes()
}

// Digest is SHA-256 of Body().
func (o *ReencapOrder) Digest() [32]byte { return sha256.Sum256(o.Body()) }

// Marshal returns the signed order file: Body() and the signatures.
func (o *ReencapOrder) Marshal() []byte {
	return append(o.Body(), marshalSignatures(o.Signatures)...)
}

// Sign adds the signature of a bailiff whose key is opened on the
// appliance.
func (o *ReencapOrder) Sign(r *Roster, bailiffKey *openpgp.Entity, now time.Time) error {
	sig, err := detachSign(bailiffKey, o.Body(), now)
	if err != nil {
		return fmt.Errorf("bailiff: reencap order: signing: %w", err)
	}
	_, err = o.AddSignature(r, sig)
	return err
}

// AddSignature verifies a detached signature (binary or armored, e.g. `gpg
// --detach-sign` over Body()) against the roster and records it.
func (o *ReencapOrder) AddSignature(r *Roster, sig []byte) (*BailiffKey, error) {
	return addBailiffSignature(o.Signatures, r, o.Body(), sig, "reencap order", "bailiff: reencap order signature does not verify against any bailiff on the roster")
}

// Verify checks the order names this vault and roster, is well formed, and
// carries valid signatures by at least k distinct bailiffs of the roster.
// A signature by a key not on the roster is an error.
func (o *ReencapOrder) Verify(r *Roster) error {
	if o.VaultID != r.VaultID {
		return fmt.Errorf("%w: reencap order is for another vault", ErrWrongEscrow)
	}
	if o.RosterDigest != r.Digest() {
		return fmt.Errorf("%w: reencap order is bound to another roster", ErrWrongEscrow)
	}
	if err := o.check(); err != nil {
		return err
	}
	valid, err := countBailiffSignatures(o.Signatures, r, o.Body(), "reencap order")
	if err != nil {
		return err
	}
	if valid < r.Threshold {
		return fmt.Errorf("bailiff: reencap order (%s) has %d valid bailiff signatures, needs %d; more bailiffs must sign", o.Action, valid, r.Threshold)
	}
	return nil
}

// Signed reports whether fingerprint signed the order (signature not
// checked: see Verify).
func (o *ReencapOrder) Signed(fingerprint string) bool { _, ok := o.Signatures[fingerprint]; return ok }

// ParseReencapOrder parses a signed order file strictly; Verify checks the
// signatures.
func ParseReencapOrder(b []byte) (*ReencapOrder, error) {
	rd, err := canon.NewReader("bailiff: reencap order", b, MaxReencapOrderLen)
	if err != nil {
		return nil, err
	}
	wrap := func(field string, err error) error { return fmt.Errorf("bailiff: reencap order: %s: %w", field, err) }
	o := &ReencapOrder{Signatures: map[string][]byte{}}
	if err := readOrderHead(rd, "reencap order", "coffre-reencap-order", &o.VaultID, &o.RosterDigest); err != nil {
		return nil, err
	}
	var v string
	if o.Action, err = rd.Field("action"); err != nil {
		return nil, err
	}
	if v, err = rd.Field("policy"); err != nil {
		return nil, err
	}
	if v != "default" {
		h, err := canon.Hex(v, 32)
		if err != nil {
			return nil, wrap("policy", err)
		}
		copy(o.PolicyDigest[:], h)
		if o.PolicyDigest == ([32]byte{}) {
			return nil, wrap("policy", errors.New("not canonical: the default policy is written \"default\""))
		}
	}
	timeField := func(name string) (time.Time, error) {
		v, err := rd.Field(name)
		if err != nil {
			return time.Time{}, err
		}
		t, err := canon.Time(v)
		if err != nil {
			return time.Time{}, wrap(name, err)
		}
		return t, nil
	}
	if o.At, err = timeField("at"); err != nil {
		return nil, err
	}
	if o.Target, err = rd.Field("target"); err != nil {
		return nil, err
	}
	if o.Target == "-" {
		o.Target = ""
	}
	if o.Created, err = timeField("created"); err != nil {
		return nil, err
	}
	if v, err = rd.Field("users"); err != nil {
		return nil, err
	}
	n, err := canon.Uint(v, 0, MaxReencapEntries)
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
	if v, err = rd.Field("records"); err != nil {
		return nil, err
	}
	if n, err = canon.Uint(v, 0, MaxReencapEntries); err != nil {
		return nil, wrap("records", err)
	}
	for i := 0; i < n; i++ {
		v, err := rd.Field("record")
		if err != nil {
			return nil, err
		}
		x, err := strconv.ParseUint(v, 10, 64)
		if err != nil || strconv.FormatUint(x, 10) != v {
			return nil, wrap("record", fmt.Errorf("%w: %q is not a canonical record number", canon.ErrSyntax, v))
		}
		o.Records = append(o.Records, x)
	}
	if err := o.check(); err != nil {
		return nil, err
	}
	if err := readSignatures(rd, o.Signatures, "reencap order"); err != nil {
		return nil, err
	}
	if err := rd.End(); err != nil {
		return nil, err
	}
	return o, nil
}
