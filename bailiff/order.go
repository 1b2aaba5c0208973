package bailiff

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"coffre/bailiff/internal/canon"
)

// Order is a restitution order (docs/formats/restitution.md): which user's
// items go to which beneficiary key, on what legal ground, signed by the
// bailiffs present (at least k of the roster).
type Order struct {
	VaultID      [32]byte
	RosterDigest [32]byte
	UserID       string
	Reference    string // legal reference (court decision, notary deed)
	Created      time.Time
	// Beneficiary is the binary v4 OpenPGP public key the items are
	// re-encrypted to; BeneficiaryFingerprint is its fingerprint.
	Beneficiary            []byte
	BeneficiaryFingerprint string
	Signatures             map[string][]byte // bailiff fingerprint -> detached signature over Body()
	beneficiary            *openpgp.Entity
}

// NewOrder drafts an order for the bailiffs to sign. beneficiary is the
// beneficiary's public key, armored or binary (any v4 key with an encryption
// key GnuPG 2.2 can use).
func NewOrder(r *Roster, userID, reference string, beneficiary []byte, created time.Time) (*Order, error) {
	if err := canon.CheckID(userID, MaxIDLen); err != nil {
		return nil, fmt.Errorf("bailiff: order: user id: %v", err)
	}
	if err := canon.CheckText(reference, MaxReferenceLen); err != nil {
		return nil, fmt.Errorf("bailiff: order: reference: %v", err)
	}
	e, err := parseBeneficiary(beneficiary, created)
	if err != nil {
		return nil, err
	}
	pub, err := publicBytes(e)
	if err != nil {
		return nil, err
	}
	return &Order{VaultID: r.VaultID, RosterDigest: r.Digest(), UserID: userID, Reference: reference, Created: created.UTC().Truncate(time.Second),
		Beneficiary: pub, BeneficiaryFingerprint: Fingerprint(e), Signatures: map[string][]byte{}, beneficiary: e}, nil
}

func parseBeneficiary(b []byte, now time.Time) (*openpgp.Entity, error) {
	el, err := readKeys(b, 4*MaxPublicKeyLen)
	if err != nil {
		return nil, fmt.Errorf("bailiff: order: beneficiary key: %w", err)
	}
	if len(el) != 1 {
		return nil, fmt.Errorf("bailiff: order: beneficiary key: %d keys, want 1", len(el))
	}
	e := el[0]
	if e.PrivateKey != nil {
		wipeEntity(e)
		return nil, errors.New("bailiff: order: beneficiary key is a secret key; give the public key only")
	}
	if e.PrimaryKey.Version != 4 {
		return nil, fmt.Errorf("bailiff: order: beneficiary key is v%d; the package must open with GnuPG 2.2, give a v4 key", e.PrimaryKey.Version)
	}
	enc, ok := e.EncryptionKey(now)
	if !ok || enc.PublicKey.Version != 4 {
		return nil, errors.New("bailiff: order: beneficiary key has no valid v4 encryption key")
	}
	switch enc.PublicKey.PubKeyAlgo {
	case packet.PubKeyAlgoECDH, packet.PubKeyAlgoRSA, packet.PubKeyAlgoRSAEncryptOnly:
	default:
		return nil, fmt.Errorf("bailiff: order: beneficiary encryption algorithm %d is not readable by GnuPG 2.2", enc.PublicKey.PubKeyAlgo)
	}
	return e, nil
}

// Body returns the canonical bytes the bailiffs sign.
func (o *Order) Body() []byte {
	var w canon.Writer
	w.Line("coffre-restitution-order", "v1")
	w.Line("vault", hex.EncodeToString(o.VaultID[:]))
	w.Line("roster", hex.EncodeToString(o.RosterDigest[:]))
	w.Line("user", o.UserID)
	w.Line("reference", o.Reference)
	w.Line("created", canon.EncTime(o.Created))
	w.Line("beneficiary", o.BeneficiaryFingerprint)
	w.Line("beneficiary-key", canon.EncB64(o.Beneficiary))
	return w.Bytes()
}

// Digest is SHA-256 of Body().
func (o *Order) Digest() [32]byte { return sha256.Sum256(o.Body()) }

// Marshal returns the signed order file: Body() and the signatures section.
func (o *Order) Marshal() []byte {
	return append(o.Body(), marshalSignatures(o.Signatures)...)
}

// Sign adds the signature of a bailiff whose key is opened on the
// appliance.
func (o *Order) Sign(r *Roster, bailiffKey *openpgp.Entity, now time.Time) error {
	sig, err := detachSign(bailiffKey, o.Body(), now)
	if err != nil {
		return fmt.Errorf("bailiff: order: signing: %w", err)
	}
	_, err = o.AddSignature(r, sig)
	return err
}

// AddSignature verifies a detached signature (binary or armored, e.g.
// `gpg --detach-sign order.txt` over Body()) against the roster and records
// it for the bailiff who made it.
func (o *Order) AddSignature(r *Roster, sig []byte) (*BailiffKey, error) {
	return addBailiffSignature(o.Signatures, r, o.Body(), sig, "order", "bailiff: order signature does not verify against any bailiff on the roster")
}

// Verify checks the order names this roster and vault and carries valid
// signatures by at least k distinct bailiffs of the roster (the bailiffs
// present; absent ones need not sign). Signatures by keys not on the roster
// are an error.
func (o *Order) Verify(r *Roster) error {
	if o.VaultID != r.VaultID {
		return fmt.Errorf("%w: order is for another vault", ErrWrongEscrow)
	}
	if o.RosterDigest != r.Digest() {
		return fmt.Errorf("%w: order is bound to another roster", ErrWrongEscrow)
	}
	valid, err := countBailiffSignatures(o.Signatures, r, o.Body(), "order")
	if err != nil {
		return err
	}
	if valid < r.Threshold {
		return fmt.Errorf("bailiff: order for %s has %d valid bailiff signatures, needs %d", o.UserID, valid, r.Threshold)
	}
	return nil
}

// ParseOrder parses a signed order file strictly. Signatures are checked by
// Verify.
func ParseOrder(b []byte, now time.Time) (*Order, error) {
	rd, err := canon.NewReader("bailiff: order", b, MaxOrderLen)
	if err != nil {
		return nil, err
	}
	wrap := func(field string, err error) error { return fmt.Errorf("bailiff: order: %s: %w", field, err) }
	o := &Order{Signatures: map[string][]byte{}}
	v, err := rd.Field("coffre-restitution-order")
	if err != nil {
		return nil, err
	}
	if v != "v1" {
		return nil, fmt.Errorf("bailiff: order version %q is not supported (want v1)", v)
	}
	hexField := func(name string, dst []byte) error { return readHex(rd, "order", name, dst) }
	if err := hexField("vault", o.VaultID[:]); err != nil {
		return nil, err
	}
	if err := hexField("roster", o.RosterDigest[:]); err != nil {
		return nil, err
	}
	if o.UserID, err = rd.Field("user"); err != nil {
		return nil, err
	}
	if err := canon.CheckID(o.UserID, MaxIDLen); err != nil {
		return nil, wrap("user", err)
	}
	if o.Reference, err = rd.Text("reference", MaxReferenceLen); err != nil {
		return nil, err
	}
	if v, err = rd.Field("created"); err != nil {
		return nil, err
	}
	if o.Created, err = canon.Time(v); err != nil {
		return nil, wrap("created", err)
	}
	var fpr [20]byte
	if err := hexField("beneficiary", fpr[:]); err != nil {
		return nil, err
	}
	o.BeneficiaryFingerprint = hex.EncodeToString(fpr[:])
	if v, err = rd.Field("beneficiary-key"); err != nil {
		return nil, err
	}
	if o.Beneficiary, err = canon.B64(v, MaxPublicKeyLen); err != nil {
		return nil, wrap("beneficiary-key", err)
	}
	if o.beneficiary, err = parseBeneficiary(o.Beneficiary, now); err != nil {
		return nil, err
	}
	if Fingerprint(o.beneficiary) != o.BeneficiaryFingerprint {
		return nil, fmt.Errorf("bailiff: order: beneficiary key fingerprint %s differs from %s", Fingerprint(o.beneficiary), o.BeneficiaryFingerprint)
	}
	if err := readSignatures(rd, o.Signatures, "order"); err != nil {
		return nil, err
	}
	if err := rd.End(); err != nil {
		return nil, err
	}
	return o, nil
}
