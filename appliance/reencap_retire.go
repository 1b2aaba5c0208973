package appliance

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"coffre/bailiff"
	"coffre/storage"
	"coffre/storage/catalog"
)

// Retirement of superseded records (after a re-encapsulation), approved by a
// bailiff quorum. The drives are an append-only log under a Merkle tree:
// nothing can be erased without breaking every replica's proofs and the
// auditors' checkpoints, so retirement is a signed statement, not an
// erasure. The retirement record lists the records retired and carries the
// order k bailiffs signed; from then on the appliance treats them as gone:
// never read, served, restored or re-encapsulated, never revived. Their
// ciphertext stays on every drive and every offsite copy (docs/bailiff.md,
// "What retirement means").
//
// Before the order is drafted, each candidate is checked: the record that
// supersedes it (followed to the live end of the chain) must be readable on
// the drives — its record-layer AEAD verifies over the whole body — and must
// stand for the same thing (the same item version with the same plaintext
// digest, or the same user's escrow, or a record of the same kind).

// RetireOptions are the inputs of a retirement.
type RetireOptions struct {
	// Bailiffs present (at least k) sign the retirement order.
	Bailiffs []BailiffSecret
	// Max bounds the records of one retirement (0:
	// bailiff.MaxReencapEntries); the rest in the next one.
	Max int
	Say func(format string, a ...any)
}

// RetireResult says what was retired.
type RetireResult struct {
	Records []uint64 // retired, ascending
	Record  uint64   // the retirement record
	Order   string   // digest of the signed order
	Left    int      // candidates left for another retirement
}

// Retired maps every retired record to the retirement record that retired
// it, read from the drives' retirement records.
func (a *Appliance) Retired() (map[uint64]uint64, error) {
	steps, err := a.cat.ByKind(catalog.KindReencap)
	if err != nil {
		return nil, err
	}
	out := map[uint64]uint64{}
	for _, e := range steps {
		if e.Meta.Attrs["step"] != bailiff.ActionRetire {
			continue
		}
		o, err := a.reencapOrderAt(e.Record, "retirement record")
		if err != nil {
			return nil, err
		}
		for _, r := range o.Records {
			if _, ok := out[r]; !ok {
				out[r] = e.Record
			}
		}
	}
	return out, nil
}

// RetireCandidates lists the superseded records not yet retired whose
// replacement checks out, and describes those that do not.
func (a *Appliance) RetireCandidates() (ok []uint64, refused []string, err error) {
	retired, err := a.Retired()
	if err != nil {
		return nil, nil, err
	}
	var superseded []catalog.Entry
	err = a.vault.Records(0, func(h storage.RecordInfo) error {
		if h.Type == storage.TypeCheckpoint {
			return nil
		}
		e, err := a.cat.Get(h.Index)
		if err != nil {
			return fmt.Errorf("appliance: record %d is not in the catalog: %w (run coffre catalog rebuild)", h.Index, err)
		}
		if !e.Live() && e.Meta.Kind != catalog.KindGenesis {
			if _, done := retired[h.Index]; !done {
				superseded = append(superseded, e)
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	live, err := a.liveEscrowRecords()
	if err != nil {
		return nil, nil, err
	}
	readable := map[uint64]error{}
	for _, e := range superseded {
		if err := a.checkReplacement(e, live, readable); err != nil {
			refused = append(refused, fmt.Sprintf("record %d (%s): %v", e.Record, e.Meta.Kind, err))
			continue
		}
		ok = append(ok, e.Record)
	}
	return ok, refused, nil
}

// checkReplacement checks that what supersedes e stands for it and is
// intact on the drives.
func (a *Appliance) checkReplacement(e catalog.Entry, liveEscrows map[string][]uint64, readable map[uint64]error) error {
	by, err := a.cat.Get(e.SupersededBy)
	if err != nil {
		return err
	}
	head := by
	for i := 0; !head.Live(); i++ {
		if i > 1000 {
			return errors.New("supersede chain too long")
		}
		if head, err = a.cat.Get(head.SupersededBy); err != nil {
			return err
		}
	}
	switch e.Meta.Kind {
	case catalog.KindItem:
		m, h := e.Meta, head.Meta
		if h.Kind != catalog.KindItem || h.UserID != m.UserID || h.ItemID != m.ItemID || h.Version != m.Version || h.Digest != m.Digest || h.Size != m.Size {
			return fmt.Errorf("its replacement (record %d) is not the same item version", head.Record)
		}
	case catalog.KindEscrow:
		if by.Meta.UserID != e.Meta.UserID || (by.Meta.Kind != catalog.KindEscrow && by.Meta.Kind != catalog.KindSupersede) {
			return fmt.Errorf("superseded by record %d, not by an escrow of %s", by.Record, e.Meta.UserID)
		}
		recs := liveEscrows[e.Meta.UserID]
		if len(recs) != 1 {
			return fmt.Errorf("user %s has %d live escrows (an upgrade is under way: finish it first)", e.Meta.UserID, len(recs))
		}
		head, err = a.cat.Get(recs[0])
		if err != nil {
			return err
		}
	default:
		if head.Meta.Kind != e.Meta.Kind && by.Meta.Kind != catalog.KindSupersede {
			return fmt.Errorf("its replacement (record %d) is a %s record", head.Record, head.Meta.Kind)
		}
	}
	if err, seen := readable[head.Record]; seen {
		return err
	}
	err = a.readWhole(head.Record)
	readable[head.Record] = err
	return err
}

// readWhole reads a record's body to its end (the record-layer AEAD checks
// every chunk).
func (a *Appliance) readWhole(idx uint64) error {
	_, _, body, err := a.vault.Get(idx)
	if err != nil {
		return fmt.Errorf("its replacement (record %d) is unreadable: %w", idx, err)
	}
	defer body.Close()
	if _, err := io.Copy(io.Discard, body); err != nil {
		return fmt.Errorf("its replacement (record %d) is damaged: %w (run coffre scrub)", idx, err)
	}
	return nil
}

// Retire retires the superseded records whose replacement checks out,
// under a quorum: the bailiffs present sign a retirement order listing
// them, and the signed order is appended as the retirement record.
func (a *Appliance) Retire(ctx context.Context, o RetireOptions) (*RetireResult, error) {
	defer func() {
		for _, b := range o.Bailiffs {
			clear(b.Passphrase)
		}
	}()
	say := o.Say
	if say == nil {
		say = func(string, ...any) {}
	}
	r, err := a.Roster()
	if err != nil {
		return nil, err
	}
	cands, refused, err := a.RetireCandidates()
	if err != nil {
		return nil, err
	}
	for _, s := range refused {
		say("not retired: %s", s)
	}
	if len(cands) == 0 {
		return &RetireResult{}, nil
	}
	max := o.Max
	if max <= 0 || max > bailiff.MaxReencapEntries {
		max = bailiff.MaxReencapEntries
	}
	res := &RetireResult{}
	if len(cands) > max {
		res.Left = len(cands) - max
		cands = cands[:max]
	}
	now := time.Now()
	order, err := bailiff.NewReencapOrder(r, bailiff.ActionRetire, [32]byte{}, now, "", nil, cands, now)
	if err != nil {
		return nil, err
	}
	if _, err := signEach(o.Bailiffs, "retirement order", false, say, func(k *openpgp.Entity) error { return order.Sign(r, k, now) }); err != nil {
		return nil, err
	}
	if err := order.Verify(r); err != nil {
		return nil, err
	}
	d := order.Digest()
	res.Order = hex.EncodeToString(d[:])
	idx, err := a.commit(ctx, storage.TypeReencap, catalog.Meta{Kind: catalog.KindReencap,
		Attrs: map[string]string{"step": bailiff.ActionRetire, "action": bailiff.ActionRetire, "order": res.Order}}, bytes.NewReader(order.Marshal()))
	if err != nil {
		return nil, fmt.Errorf("appliance: recording the retirement: %w", err)
	}
	res.Records, res.Record = slices.Clone(cands), idx
	a.Log.Info("superseded records retired", "records", len(cands), "record", idx, "order", res.Order)
	return res, nil
}

// reencapOrderAt reads and parses the re-encapsulation order held by
// record rec; what names the record in errors.
func (a *Appliance) reencapOrderAt(rec uint64, what string) (*bailiff.ReencapOrder, error) {
	b, err := a.readRecord(rec)
	if err == nil {
		var o *bailiff.ReencapOrder
		if o, err = bailiff.ParseReencapOrder(b); err == nil {
			return o, nil
		}
	}
	return nil, fmt.Errorf("appliance: %s %d: %w", what, rec, err)
}
