package appliance

import (
	"fmt"
	"time"

	"coffre/bailiff/policy"
	"coffre/storage"
	"coffre/storage/catalog"
)

// ReencapPlan lists what falls below the crypto policy at a date, grouped by
// the kind of work, with counts, bytes and whether a bailiff quorum is
// needed. signed is a policy signed by the roster's quorum, or nil for the
// default policy (NIST IR 8547 dates).
func (a *Appliance) ReencapPlan(signed []byte, at time.Time) (*policy.PlanResult, error) {
	p := policy.Default()
	if signed != nil {
		var err error
		if p, err = policy.Parse(signed); err != nil {
			return nil, err
		}
		r, err := a.Roster()
		if err != nil {
			return nil, err
		}
		if err := r.Verify(); err != nil {
			return nil, err
		}
		if err := p.Verify(r); err != nil {
			return nil, err
		}
	}
	objs, err := a.reencapObjects()
	if err != nil {
		return nil, err
	}
	return a.withPendingJobs(policy.Plan(p, objs, at))
}

// reencapObjects describes every live object with the algorithms that
// protect it: the record layer of every record, and what is inside items,
// escrows and the roster.
func (a *Appliance) reencapObjects() ([]policy.Object, error) {
	var objs []policy.Object
	err := a.vault.Records(0, func(h storage.RecordInfo) error {
		if h.Type == storage.TypeCheckpoint {
			return nil
		}
		e, err := a.cat.Get(h.Index)
		if err != nil {
			return fmt.Errorf("appliance: record %d is not in the catalog: %w (run coffre catalog rebuild)", h.Index, err)
		}
		if !e.Live() || e.Meta.Kind == catalog.KindGenesis {
			return nil
		}
		objs = append(objs, policy.Object{Record: h.Index, Kind: policy.KindRecord, Size: h.Len,
			Algorithms: []string{policy.AlgRecordAEAD, policy.KeyEpoch(uint64(h.KeyEpoch))}})
		o := policy.Object{Record: h.Index, UserID: e.Meta.UserID, Size: e.Meta.Size, Algorithms: e.Meta.Algorithms}
		switch e.Meta.Kind {
		case catalog.KindItem:
			o.Kind = policy.KindItem
		case catalog.KindEscrow:
			o.Kind = policy.KindEscrow
			o.Size = h.Len
		case catalog.KindRoster:
			o.Kind = policy.KindRoster
			o.Size = h.Len
		default:
			return nil
		}
		objs = append(objs, o)
		return nil
	})
	return objs, err
}
