package bailiff

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"coffre/bailiff/internal/canon"
)

// ReencapStep is the signed statement the appliance appends with every
// batch of an algorithm upgrade (docs/formats/reencap.md): which order
// authorised it, whose escrow moved from which key to which, and which item
// records the batch supersedes with the plaintext digest each was checked
// against. It is signed by the appliance's signing key (the key that signs
// restitution manifests) and sits in the same atomic batch as the records it
// describes.
type ReencapStep struct {
	VaultID [32]byte
	Order   [32]byte // digest of the signed order in force
	Action  string   // ActionUpgrade
	Created time.Time
	UserID  string
	// OldEscrow is the record of the escrow being replaced and
	// OldEscrowKey its key fingerprint.
	OldEscrow    uint64
	OldEscrowKey string
	NewEscrowKey string
	// EscrowDone: this batch supersedes the old escrow (the user's last
	// batch); until then both escrows are live and the user's items are
	// split between them.
	EscrowDone bool
	Items      []StepItem // ascending by record
	Signer     string     // fingerprint of the signing key
	Signature  []byte     // detached signature over Body()
}

// StepItem is one item record a step supersedes.
type StepItem struct {
	Record uint64
	Digest [32]byte // plaintext SHA-256 recorded at ingest and checked
}

// Body returns the signed bytes.
func (s *ReencapStep) Body() []byte {
	var w canon.Writer
	w.Line("coffre-reencap-step", "v1")
	w.Line("vault", hex.EncodeToString(s.VaultID[:]))
	w.Line("order", hex.EncodeToString(s.Order[:]))
	w.Line("action", s.Action)
	w.Line("created", canon.EncTime(s.Created))
	w.Line("user", s.UserID)
	w.Line("old-escrow", strconv.FormatUint(s.OldEscrow, 10), s.OldEscrowKey)
	w.Line("new-escrow", s.NewEscrowKey)
	done := "pending"
	if s.EscrowDone {
		done = "done"
	}
	w.Line("escrow", done)
	w.Line("items", strconv.Itoa(len(s.Items)))
	for _, it := range s.Items {
		w.Line("item", strconv.FormatUint(it.Record, 10), hex.EncodeToString(it.Digest[:]))
	}
	return w.Bytes()
}

// Sign signs the step with the appliance's signing key.
func (s *ReencapStep) Sign(signer *openpgp.Entity, now time.Time) error {
	if signer == nil || signer.PrivateKey == nil {
		return errors.New("bailiff: reencap step: no signing key")
	}
	sig, err := detachSign(signer, s.Body(), now)
	if err != nil {
		return fmt.Errorf("bailiff: reencap step: signing: %w", err)
	}
	s.Signer, s.Signature = Fingerprint(signer), sig
	return nil
}

// Marshal returns Body() followed by the signature.
func (s *ReencapStep) Marshal() []byte {
	return append(s.Body(), marshalSignatures(map[string][]byte{s.Signer: s.Signature})...)
}

// Verify checks the signature by signer (public key).
func (s *ReencapStep) Verify(signer *openpgp.Entity) error {
	if s.Signer != Fingerprint(signer) {
		return fmt.Errorf("bailiff: reencap step signed by %s, not by %s", s.Signer, Fingerprint(signer))
	}
	if err := verifyDetached(signer, s.Body(), s.Signature); err != nil {
		return fmt.Errorf("bailiff: reencap step: signature: %s", sanitize(err))
	}
	return nil
}

// ParseReencapStep parses a step record body strictly.
func ParseReencapStep(b []byte) (*ReencapStep, error) {
	rd, err := canon.NewReader("bailiff: reencap step", b, MaxReencapOrderLen)
	if err != nil {
		return nil, err
	}
	wrap := func(field string, err error) error { return fmt.Errorf("bailiff: reencap step: %s: %w", field, err) }
	s := &ReencapStep{}
	v, err := rd.Field("coffre-reencap-step")
	if err != nil {
		return nil, err
	}
	if v != "v1" {
		return nil, fmt.Errorf("bailiff: reencap step version %q is not supported (want v1)", v)
	}
	for _, f := range []struct {
		name string
		dst  []byte
	}{{"vault", s.VaultID[:]}, {"order", s.Order[:]}} {
		v, err := rd.Field(f.name)
		if err != nil {
			return nil, err
		}
		h, err := canon.Hex(v, 32)
		if err != nil {
			return nil, wrap(f.name, err)
		}
		copy(f.dst, h)
	}
	if s.Action, err = rd.Field("action"); err != nil {
		return nil, err
	}
	if s.Action != ActionUpgrade {
		return nil, wrap("action", fmt.Errorf("%w: %q", canon.ErrSyntax, s.Action))
	}
	if v, err = rd.Field("created"); err != nil {
		return nil, err
	}
	if s.Created, err = canon.Time(v); err != nil {
		return nil, wrap("created", err)
	}
	if s.UserID, err = rd.Field("user"); err != nil {
		return nil, err
	}
	if err := canon.CheckID(s.UserID, MaxIDLen); err != nil {
		return nil, wrap("user", err)
	}
	f, err := rd.Fields("old-escrow", 2)
	if err != nil {
		return nil, err
	}
	if s.OldEscrow, err = parseRecordNumber(f[0]); err != nil {
		return nil, wrap("old-escrow", err)
	}
	if _, err := canon.Hex(f[1], len(f[1])/2); err != nil || (len(f[1]) != 40 && len(f[1]) != 64) {
		return nil, wrap("old-escrow", fmt.Errorf("%w: fingerprint", canon.ErrSyntax))
	}
	s.OldEscrowKey = f[1]
	if s.NewEscrowKey, err = rd.Field("new-escrow"); err != nil {
		return nil, err
	}
	if _, err := canon.Hex(s.NewEscrowKey, 32); err != nil {
		return nil, wrap("new-escrow", err)
	}
	if v, err = rd.Field("escrow"); err != nil {
		return nil, err
	}
	switch v {
	case "done":
		s.EscrowDone = true
	case "pending":
	default:
		return nil, wrap("escrow", fmt.Errorf("%w: %q", canon.ErrSyntax, v))
	}
	if v, err = rd.Field("items"); err != nil {
		return nil, err
	}
	n, err := canon.Uint(v, 0, MaxReencapEntries)
	if err != nil {
		return nil, wrap("items", err)
	}
	for i := 0; i < n; i++ {
		f, err := rd.Fields("item", 2)
		if err != nil {
			return nil, err
		}
		var it StepItem
		if it.Record, err = parseRecordNumber(f[0]); err != nil {
			return nil, wrap("item", err)
		}
		if i > 0 && s.Items[i-1].Record >= it.Record {
			return nil, wrap("item", fmt.Errorf("%w: records out of order", canon.ErrSyntax))
		}
		d, err := canon.Hex(f[1], 32)
		if err != nil {
			return nil, wrap("item", err)
		}
		copy(it.Digest[:], d)
		s.Items = append(s.Items, it)
	}
	if v, err = rd.Field("signatures"); err != nil {
		return nil, err
	}
	if v != "1" {
		return nil, wrap("signatures", fmt.Errorf("%w: want exactly 1", canon.ErrSyntax))
	}
	if f, err = rd.Fields("signature", 2); err != nil {
		return nil, err
	}
	if _, err := canon.Hex(f[0], 20); err != nil {
		return nil, wrap("signature", err)
	}
	s.Signer = f[0]
	if s.Signature, err = canon.B64(f[1], MaxSignatureLen); err != nil {
		return nil, wrap("signature", err)
	}
	if err := rd.End(); err != nil {
		return nil, err
	}
	return s, nil
}

func parseRecordNumber(v string) (uint64, error) {
	x, err := strconv.ParseUint(v, 10, 64)
	if err != nil || strconv.FormatUint(x, 10) != v {
		return 0, fmt.Errorf("%w: %q is not a canonical record number", canon.ErrSyntax, v)
	}
	return x, nil
}
