package appliance

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"coffre/hsm"
	"coffre/storage"
	"coffre/storage/catalog"
)

// Anti-rollback anchors. A drive set can be swapped for an older copy of
// itself: every record on it is genuine and signed, only recent ones are
// missing. The keystore's monotonic counter (an NV counter in the TPM; a file
// with the soft keystore) cannot go back, so the appliance increments it and
// appends an anchor record naming the new value — at daemon start and stop,
// after genesis, and every anchorEvery uploads. At every open, the newest
// anchor on the drives must be at least the counter minus one (one: a crash
// between the increment and the append). Drives older than that are refused.

const (
	anchorCounter = "vault.anchor"
	anchorAttr    = "anchor"
	anchorEvery   = 1000
)

// ErrRolledBack means the drives are older than what this appliance wrote.
var ErrRolledBack = errors.New("appliance: the drives are older than this appliance's last anchor (rolled back or swapped for an old copy)")

func (a *Appliance) counters() (hsm.Counters, bool) {
	c, ok := a.ks.(hsm.Counters)
	return c, ok
}

// Anchor increments the monotonic counter and appends an anchor record.
func (a *Appliance) Anchor(ctx context.Context) error {
	c, ok := a.counters()
	if !ok || a.vault == nil {
		return nil
	}
	v, err := c.Increment(anchorCounter)
	if err != nil {
		return fmt.Errorf("appliance: anchor counter: %w", err)
	}
	_, err = a.commit(ctx, storage.TypeDriveEvent, catalog.Meta{Kind: catalog.KindDriveEvent, Attrs: map[string]string{anchorAttr: strconv.FormatUint(v, 10)}}, nil)
	if err != nil {
		return fmt.Errorf("appliance: anchor %d: %w", v, err)
	}
	a.Log.Info("anchor", "counter", v)
	return nil
}

// checkAnchor refuses drives whose newest anchor is behind the counter.
func (a *Appliance) checkAnchor() error {
	c, ok := a.counters()
	if !ok {
		return nil
	}
	want, err := c.Counter(anchorCounter)
	if err != nil {
		return fmt.Errorf("appliance: anchor counter: %w", err)
	}
	if want == 0 {
		return nil
	}
	evs, err := a.cat.ByKind(catalog.KindDriveEvent)
	if err != nil {
		return err
	}
	// The catalog remembers what this appliance wrote; only anchors the
	// drives really hold count: within the drives' log, and the newest one
	// read back from the drives themselves.
	size := a.vault.Size()
	var have uint64
	var haveRec uint64
	for _, e := range evs {
		v, err := strconv.ParseUint(e.Meta.Attrs[anchorAttr], 10, 64)
		if err == nil && v > have && e.Record < size {
			have, haveRec = v, e.Record
		}
	}
	if have > 0 {
		_, mb, body, err := a.vault.Get(haveRec)
		if err != nil {
			return fmt.Errorf("appliance: reading anchor record %d: %w", haveRec, err)
		}
		body.Close()
		m, err := catalog.ParseMeta(mb)
		if err != nil || m.Kind != catalog.KindDriveEvent || m.Attrs[anchorAttr] != strconv.FormatUint(have, 10) {
			return fmt.Errorf("%w: record %d on the drives is not the anchor %d the catalog knows (a different or forked drive set)", ErrRolledBack, haveRec, have)
		}
	}
	if have+1 < want {
		return fmt.Errorf("%w: the keystore's counter is %d, the newest anchor on the drives is %d; put the current drives back, or audit these with `coffre audit --since` and a kept checkpoint", ErrRolledBack, want, have)
	}
	return nil
}
