package appliance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"coffre/bailiff"
	"coffre/internal/crashpoint"
	"coffre/storage"
	"coffre/storage/catalog"
)

// Escrow key rotation (re-encapsulation kind 3, quorum): a recipient
// change. Each user the order names gets a new escrow key (sealed under a
// fresh K split to the roster in force); each live item version of the
// user gets a new PKESK to the new key, with the session key and the
// encrypted data packet unchanged. A user's new escrow and all their
// re-wrapped items are appended in one batch, each superseding its old
// record: at every instant all of a user's live items open with the user's
// live escrow, so restitution works before, during (between users) and
// after the job, and a crash leaves each user either untouched or done.
//
// Re-wrapping keeps the old session key (docs/formats/policy.md): it does
// not retire an ageing cipher or public key; that is the algorithm upgrade
// (kind 4).

// RotationOptions are the inputs of an escrow rotation job.
type RotationOptions struct {
	// Users are the users whose escrow key is rotated. Needed to start a
	// job; on resume they come from the order on the drives.
	Users  []string
	Reason string // why (printed in the order); a default is used when empty
	// Unlock is the quorum of the roster in force.
	Unlock   QuorumUnlock
	Max      int // rotate at most this many users in this run; <0: all
	Progress func(done, total int)
	Say      func(format string, a ...any)
}

// Limits of one user's rotation batch (the user's new escrow and every
// live item version are appended at once, all or nothing).
const (
	// maxRotateItems is the most item versions one user may have.
	maxRotateItems = storage.MaxBatch - 1
	// maxRotateBuffered bounds the re-wrapped small items held in memory
	// for one user's batch; larger items stream from the drives.
	maxRotateBuffered = 256 << 20
	// maxRotateStreams bounds the large items of one user's batch (each
	// open stream holds a read buffer).
	maxRotateStreams = 256
	// rotateAhead is how many users are read and prepared ahead of the
	// commits, so that the cores work while a batch is being synced.
	rotateAhead = 4
)

// RotateEscrows runs (or resumes) an escrow rotation.
func (a *Appliance) RotateEscrows(ctx context.Context, o RotationOptions) (*ReencapJob, error) {
	if o.Say == nil {
		o.Say = func(string, ...any) {}
	}
	defer o.Unlock.wipe()
	// The bailiffs' keys open (slow S2K) while the job is planned and the
	// first users are read.
	ko := startOpenKeys(o.Unlock.Bailiffs)
	defer ko.wipe()
	if rc, rec, err := a.inFlight(bailiff.ReencapRosterChange); err != nil {
		return nil, err
	} else if rc != nil {
		return nil, fmt.Errorf("appliance: a roster change (record %d) is in flight; finish it first (coffre reencap run --kind roster)", rec)
	}
	r, err := a.Roster()
	if err != nil {
		return nil, err
	}
	order, orderRec, err := a.inFlight(bailiff.ReencapEscrowRotation)
	if err != nil {
		return nil, err
	}
	fresh := order == nil
	if !fresh {
		if len(o.Users) > 0 {
			want := slices.Clone(o.Users)
			slices.Sort(want)
			if !slices.Equal(slices.Compact(want), order.Users) {
				return nil, fmt.Errorf("appliance: an escrow rotation of %s (record %d) is in flight; finish it (run without --user) before another", strings.Join(order.Users, ", "), orderRec)
			}
		}
		if order.RosterDigest != r.Digest() {
			return nil, fmt.Errorf("appliance: the escrow rotation approved in record %d is bound to another roster than the one in force", orderRec)
		}
		o.Say("resuming the escrow rotation approved in record %d", orderRec)
	} else if order, err = a.draftRotation(r, o); err != nil {
		return nil, err
	}
	return a.rotateAll(ctx, ko, o, r, order, orderRec, fresh)
}

// draftRotation makes (or takes) the order of a new rotation and checks
// it can run; nothing is written.
func (a *Appliance) draftRotation(r *bailiff.Roster, o RotationOptions) (*bailiff.QuorumOrder, error) {
	var order *bailiff.QuorumOrder
	var err error
	if len(o.Unlock.Order) > 0 {
		if order, err = bailiff.ParseQuorumOrder(o.Unlock.Order); err != nil {
			return nil, err
		}
		if order.Kind != bailiff.ReencapEscrowRotation {
			return nil, fmt.Errorf("appliance: the order given is a %s, not an escrow rotation", order.Kind)
		}
	} else {
		if len(o.Users) == 0 {
			return nil, errors.New("appliance: no escrow rotation in flight: name the users whose escrow key is rotated (--user)")
		}
		reason := o.Reason
		if reason == "" {
			reason = "recipient change"
		}
		if order, err = a.freshOrder(func(at time.Time) (*bailiff.QuorumOrder, error) {
			return bailiff.NewRotationOrder(r, o.Users, reason, at)
		}); err != nil {
			return nil, err
		}
	}
	if err := a.unusedOrder(order); err != nil {
		return nil, err
	}
	live, err := a.liveEscrows()
	if err != nil {
		return nil, err
	}
	for _, u := range order.Users {
		if strings.HasPrefix(u, bailiff.ReservedPrefix) {
			return nil, fmt.Errorf("appliance: %s is reserved; the verify-shares escrow is remade by a roster change", u)
		}
		e, ok := live[u]
		if !ok {
			return nil, fmt.Errorf("appliance: user %s has nothing in this vault", u)
		}
		esc, err := a.escrowAt(e.Record, u)
		if err != nil {
			return nil, err
		}
		if err := esc.Rewrappable(); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// commitApprove appends the approve record of a new order.
func (a *Appliance) commitApprove(ctx context.Context, order *bailiff.QuorumOrder) (uint64, error) {
	idx, err := a.commitBatch(ctx, []pending{stepRecord(order, "approve", order.Marshal())})
	if err != nil {
		return 0, fmt.Errorf("appliance: recording the %s order: %w", order.Kind, err)
	}
	return idx[0], nil
}

// rotateAll rotates each user of the order not yet done, one batch per
// user (users ready together share a batch). A fresh order is signed,
// verified and appended before the first user's batch, once the keys are
// open; the first users are read meanwhile.
func (a *Appliance) rotateAll(ctx context.Context, ko *keyOpener, o RotationOptions, r *bailiff.Roster, order *bailiff.QuorumOrder, orderRec uint64, fresh bool) (*ReencapJob, error) {
	live, err := a.liveEscrows()
	if err != nil {
		return nil, err
	}
	job := a.newJob(rotationJobID, order, orderRec)
	var work []rotationWork
	for _, u := range order.Users {
		e, ok := live[u]
		if !ok {
			return nil, fmt.Errorf("appliance: user %s of the rotation has no live escrow", u)
		}
		items, err := a.liveItems(u)
		if err != nil {
			return nil, err
		}
		job.Total += len(items)
		if e.Meta.Attrs[attrReencap] == order.ID() {
			job.Done += len(items) // rotated by an earlier run of this job
			continue
		}
		if len(items) > maxRotateItems {
			return nil, fmt.Errorf("appliance: user %s has %d live item versions, more than one batch holds (%d); nothing was changed", u, len(items), maxRotateItems)
		}
		work = append(work, rotationWork{u, e, items})
	}
	if o.Max >= 0 && len(work) > o.Max {
		work = work[:o.Max]
	}

	// The public-key work runs on reencapWorkers workers, in user order:
	// the new escrow of user u+1 is made while the items of user u are
	// re-wrapped, so users complete one after the other and this
	// goroutine commits each (with any others ready) while the workers go
	// on. This goroutine also reads the users' records, rotateAhead users
	// ahead, never while it commits (reads would wait for the syncs).
	wctx, cancel := context.WithCancel(ctx)
	reads := make([]chan *rotationBatch, len(work))
	results := make([]chan *rotationBatch, len(work))
	for i := range work {
		reads[i] = make(chan *rotationBatch, 1)
		results[i] = make(chan *rotationBatch, 1)
	}
	var q *bailiff.EscrowQuorum
	var wg sync.WaitGroup
	defer func() {
		// No preparation outlives the quorum; drop what was not committed.
		cancel()
		wg.Wait()
		for i := range work {
			for _, c := range []chan *rotationBatch{reads[i], results[i]} {
				select {
				case b := <-c:
					b.release()
				default:
				}
			}
		}
		if q != nil {
			q.Close()
		}
	}()
	read := 0
	launch := func(committed int) {
		for read < len(work) && read < committed+rotateAhead {
			reads[read] <- a.readRotation(order.ID(), work[read])
			read++
		}
	}
	launch(0)
	keys, err := ko.wait()
	if err != nil {
		return nil, err
	}
	if fresh {
		// Signed and checked before anything runs under the quorum.
		if err := signOrder(order, r, o.Unlock.OrderSigs, keys, o.Say); err != nil {
			return nil, err
		}
		if err := order.Verify(r); err != nil {
			return nil, err
		}
	}
	if q, err = openQuorum(r, order, keys, o.Unlock.ShareCards, o.Say); err != nil {
		return nil, err
	}
	tasks := make(chan func(), 64) // queued: a worker never waits for the feeder to be scheduled
	for range reencapWorkers {
		wg.Go(func() {
			for f := range tasks {
				f()
			}
		})
	}
	wg.Go(func() { a.feedRotation(wctx, q, r, work, reads, results, tasks) })
	if fresh {
		// The order goes to the drives while the first users are prepared,
		// and before any of them is committed.
		if job.Record, err = a.commitApprove(ctx, order); err != nil {
			return nil, err
		}
		o.Say("escrow rotation of %d user(s) approved (order record %d)", len(order.Users), job.Record)
	}
	save := a.jobSaver(rotationJobID, job)
	save(true)
	a.Log.Info("escrow rotation: re-wrapping items", "order", order.ID(), "users", len(work), "done", job.Done, "total", job.Total)
	progress := o.Progress
	for i := 0; i < len(work); {
		launch(i)
		// Commit user i with the users after it that are already prepared,
		// in one batch (one sync per drive for all of them), each user
		// still all or nothing.
		var group []*rotationBatch
		var ps []pending
		for j := i; j < len(work); j++ {
			if j > i && len(ps)+1+len(work[j].items) > storage.MaxBatch {
				break
			}
			var b *rotationBatch
			if j == i {
				select {
				case b = <-results[j]:
				case <-wctx.Done(): // the feeder may stop before it has user j
					return job, ctx.Err()
				}
			} else {
				select {
				case b = <-results[j]:
				default:
				}
			}
			if b == nil {
				break
			}
			if wctx.Err() != nil {
				// Interrupted: a feeder that stops hands over what it
				// holds, which a worker may still be filling. Leave it
				// all to the deferred clean-up, which waits for the
				// workers before it releases anything.
				results[j] <- b
				for k, g := range group {
					results[i+k] <- g
				}
				return job, ctx.Err()
			}
			group = append(group, b)
			if b.err != nil {
				for _, g := range group {
					g.release()
				}
				return job, b.err
			}
			ps = append(ps, b.ps...)
		}
		closing := i+len(group) == len(work) && job.Done+countItems(work[i:]) == job.Total
		if closing {
			ps = append(ps, doneRecord(order, job.Total)) // the job ends with its last users
		}
		_, err := a.commitBatch(ctx, ps)
		for _, b := range group {
			b.release()
		}
		if err != nil {
			return job, fmt.Errorf("appliance: escrow rotation of %s: %w", work[i].user, err)
		}
		if closing {
			job.Status = "done"
		} else {
			crashpoint.Hit("reencap.batch")
		}
		for k, b := range group {
			t := work[i+k]
			a.mu.Lock()
			a.escrows[t.user] = b.rot.New
			a.mu.Unlock()
			a.Log.Info("escrow rotated", "user", t.user, "new", b.rot.New.Fingerprint, "items", len(t.items))
			job.Done += len(t.items)
			job.Bytes += b.bytes
		}
		i += len(group)
		save(false)
		if progress != nil {
			progress(job.Done, job.Total)
		}
	}
	save(true)
	if job.Done < job.Total {
		return job, nil // bounded run (--max): resume later
	}
	if job.Status != "done" {
		if err := a.closeJob(ctx, order, job, rotationJobID); err != nil {
			return job, err
		}
	}
	a.Log.Info("escrow rotation done", "order", order.ID(), "items", job.Total)
	return job, nil
}

// countItems counts the items of the users in w.
func countItems(w []rotationWork) int {
	n := 0
	for _, t := range w {
		n += len(t.items)
	}
	return n
}

// rotationWork is one user to rotate.
type rotationWork struct {
	user  string
	esc   catalog.Entry
	items []catalog.Entry
}

// rotationBatch is one user's prepared batch: the new escrow and the
// re-wrapped items, superseding the old records.
type rotationBatch struct {
	order   string
	escrow  []byte // the old escrow bundle
	items   []readItem
	ps      []pending
	rot     *bailiff.Rotation
	closers []io.Closer // streams of large items, ended after the commit
	bytes   int64
	err     error
}

func (b *rotationBatch) release() {
	for _, c := range b.closers {
		c.Close()
	}
	b.closers = nil
	if b.rot != nil {
		b.rot.Close()
	}
}

// liveItems lists a user's live item versions.
func (a *Appliance) liveItems(user string) ([]catalog.Entry, error) {
	es, err := a.cat.Live(user)
	if err != nil {
		return nil, err
	}
	out := es[:0]
	for _, e := range es {
		if e.Meta.Kind == catalog.KindItem {
			out = append(out, e)
		}
	}
	return out, nil
}

// readRotation reads one user's escrow bundle and live item records: small
// items whole, large ones as open streams (ended by release, after the
// commit). It leaves b.err set on failure.
func (a *Appliance) readRotation(order string, w rotationWork) *rotationBatch {
	b := &rotationBatch{order: order, items: make([]readItem, len(w.items))}
	var err error
	if b.escrow, err = a.readRecord(w.esc.Record); err != nil {
		b.err = fmt.Errorf("appliance: escrow rotation: escrow of %s (record %d): %w", w.user, w.esc.Record, err)
		return b
	}
	var buffered int64
	for i, e := range w.items {
		h, mb, body, err := a.vault.Get(e.Record)
		if err != nil {
			b.err = fmt.Errorf("appliance: escrow rotation: reading record %d: %w", e.Record, err)
			return b
		}
		m, err := catalog.ParseMeta(mb)
		if err != nil {
			body.Close()
			b.err = fmt.Errorf("appliance: escrow rotation: record %d meta: %w", e.Record, err)
			return b
		}
		it := readItem{record: e.Record, meta: m, size: int64(h.BodyLen)}
		if it.size > bufferLimit {
			it.stream = body
			b.closers = append(b.closers, body)
		} else {
			it.body, err = io.ReadAll(body)
			body.Close()
			if err != nil {
				b.err = fmt.Errorf("appliance: escrow rotation: reading record %d: %w", e.Record, err)
				return b
			}
			buffered += it.size
		}
		b.items[i] = it
		if buffered > maxRotateBuffered || len(b.closers) > maxRotateStreams {
			b.err = fmt.Errorf("appliance: user %s: the items exceed one batch's memory (%d MiB buffered, %d large items streaming); nothing was changed", w.user, buffered>>20, len(b.closers))
			return b
		}
	}
	return b
}

// readItem is one item record read for a rotation.
type readItem struct {
	record uint64
	meta   catalog.Meta
	size   int64
	body   []byte    // small items
	stream io.Reader // large items
}

// feedRotation hands the workers the public-key work of each user in
// order: the user's new escrow (Rotate), then, once the previous user's
// escrow is made, that user's items. Each user's batch goes to results
// exactly once: when all of it is done, when it failed, or when the job
// stops (rotateAll drops it after the workers have finished). It closes
// tasks when it returns.
func (a *Appliance) feedRotation(ctx context.Context, q *bailiff.EscrowQuorum, r *bailiff.Roster, work []rotationWork, reads, results []chan *rotationBatch, tasks chan<- func()) {
	batches := make([]*rotationBatch, len(work))
	handed := make([]bool, len(work)) // batch u is delivered, or its items will deliver it
	deliver := func(u int) {
		if !handed[u] {
			handed[u] = true
			results[u] <- batches[u]
		}
	}
	defer func() {
		for u := range batches {
			if batches[u] != nil {
				deliver(u)
			}
		}
		close(tasks)
	}()
	submit := func(f func()) bool {
		select {
		case tasks <- f:
			return true
		case <-ctx.Done():
			return false
		}
	}
	made := make([]chan struct{}, len(work)) // closed when the user's escrow is made (or failed)
	for u := 0; u <= len(work); u++ {
		if u < len(work) {
			select {
			case batches[u] = <-reads[u]:
			case <-ctx.Done():
				return
			}
			b, w := batches[u], work[u]
			made[u] = make(chan struct{})
			if b.err != nil {
				close(made[u])
			} else if !submit(func() {
				defer close(made[u])
				esc, err := bailiff.ParseStoredEscrow(b.escrow)
				if err == nil && esc.UserID != w.user {
					err = fmt.Errorf("record %d holds the escrow of %q", w.esc.Record, esc.UserID)
				}
				if err == nil {
					b.rot, err = q.Rotate(esc, r)
				}
				if err != nil {
					b.err = fmt.Errorf("appliance: escrow rotation of %s: %w", w.user, err)
					return
				}
				b.ps = make([]pending, 1+len(b.items))
				b.ps[0] = pending{storage.TypeEscrow, catalog.Meta{Kind: catalog.KindEscrow, UserID: w.user, Supersedes: w.esc.Record, Algorithms: escrowAlgorithmsFor(b.rot.New), Attrs: map[string]string{attrReencap: b.order}}, bytes.NewReader(b.rot.New.Marshal())}
			}) {
				return
			}
		}
		if u == 0 {
			continue
		}
		p := u - 1
		select {
		case <-made[p]:
		case <-ctx.Done():
			return
		}
		b := batches[p]
		if b.err != nil || len(b.items) == 0 {
			deliver(p)
			continue
		}
		var mu sync.Mutex
		left := len(b.items)
		done := func(n int) { // under mu
			if left -= n; left == 0 {
				results[p] <- b
			}
		}
		handed[p] = true
		for i := range b.items {
			if !submit(func() {
				pend, err := rewrapItem(b.rot, &b.items[i], b.order)
				mu.Lock()
				defer mu.Unlock()
				if err != nil && b.err == nil {
					b.err = err
				}
				b.ps[1+i] = pend
				b.bytes += b.items[i].size
				done(1)
			}) {
				mu.Lock()
				if b.err == nil {
					b.err = ctx.Err()
				}
				done(len(b.items) - i) // the items not handed out
				mu.Unlock()
				return
			}
		}
	}
}

// rewrapItem returns the record that replaces an item: the same meta
// (superseding the old record, naming the order) and the re-wrapped body
// (the new key packet, then the data packet from memory for small items,
// streaming from the drives during the commit for large ones).
func rewrapItem(rot *bailiff.Rotation, it *readItem, order string) (pending, error) {
	m := it.meta
	m.Supersedes = it.record
	m.Attrs = withAttr(m.Attrs, attrReencap, order)
	src := it.stream
	if src == nil {
		src = bytes.NewReader(it.body)
	}
	rw, err := rot.Rewrap(src)
	if err != nil {
		return pending{}, fmt.Errorf("appliance: escrow rotation: record %d (item %s version %d): %w", it.record, m.ItemID, m.Version, err)
	}
	return pending{storage.TypeItem, m, rw}, nil
}
