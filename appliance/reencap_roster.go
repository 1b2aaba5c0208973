package appliance

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"coffre/bailiff"
	"coffre/internal/crashpoint"
	"coffre/storage"
	"coffre/storage/catalog"
)

// Roster change (re-encapsulation kind 2, quorum): a bailiff leaves or
// joins, or a bailiff key ages. The new roster is signed by every one of its
// bailiffs, and the quorum of the old roster approves it by signing an order
// that names its digest. The order, the new roster (superseding the old) and
// a new verify-shares escrow go to the drives in one batch before any
// escrow is touched. Then, under the old quorum, each user's K is rebuilt
// and the escrow key sealed again under a fresh K' split to the new roster;
// the new bundle supersedes the old one. Escrow keys and items do not
// change.

// RosterChangeOptions are the inputs of a roster change job.
type RosterChangeOptions struct {
	// NewRoster is the new roster file (from `coffre reencap draft-roster`),
	// with the signatures its bailiffs made so far. Needed to start a job;
	// on resume it may be left out (it is on the drives).
	NewRoster []byte
	// RosterSigs are detached signatures of new bailiffs over the new
	// roster's body (`gpg --detach-sign roster.body`).
	RosterSigs [][]byte
	// NewBailiffs are bailiffs joining, present with their key and
	// passphrase: they sign the new roster on the appliance. Bailiffs of
	// the old roster in Unlock who stay sign it too.
	NewBailiffs []BailiffSecret
	Reason      string // why (printed in the order); a default is used when empty
	// Unlock is the old roster's quorum.
	Unlock QuorumUnlock
	Max    int // re-split at most this many escrows in this run; <0: all
	// Batch bounds the escrows of one atomic batch (default and most:
	// 64). Smaller batches redo less after a power cut, at one sync per
	// drive each.
	Batch    int
	Progress func(done, total int)
	Say      func(format string, a ...any)
}

// rosterRecord finds the live roster's record index.
func (a *Appliance) rosterRecord() (uint64, error) {
	rs, err := a.cat.ByKind(catalog.KindRoster)
	if err != nil {
		return 0, err
	}
	var idx uint64
	found := false
	for _, e := range rs {
		if e.Live() && (!found || e.Record > idx) {
			idx, found = e.Record, true
		}
	}
	if !found {
		return 0, ErrNoRoster
	}
	return idx, nil
}

// rosterAt is a roster read off the drives and its record.
type rosterAt struct {
	r      *bailiff.Roster
	record uint64
}

// rosterByDigest finds a roster on the drives (live or superseded) by its
// digest; it is signed by all its bailiffs.
func (a *Appliance) rosterByDigest(d [32]byte) (*bailiff.Roster, uint64, error) {
	// Parsing a roster verifies every bailiff key's self-signatures, and
	// a job needs its rosters at each step: keep what was read.
	a.mu.Lock()
	c, ok := a.rosters[d]
	a.mu.Unlock()
	if ok {
		return c.r, c.record, nil
	}
	rs, err := a.cat.ByKind(catalog.KindRoster)
	if err != nil {
		return nil, 0, err
	}
	for i := len(rs) - 1; i >= 0; i-- {
		b, err := a.readRecord(rs[i].Record)
		if err != nil {
			return nil, 0, fmt.Errorf("appliance: reading roster record %d: %w", rs[i].Record, err)
		}
		// The digest is SHA-256 of the body, the bytes before the
		// signatures line: skip the rosters that cannot match without
		// parsing their keys.
		if j := bytes.LastIndex(b, []byte("\nsignatures ")); j >= 0 && sha256.Sum256(b[:j+1]) != d {
			continue
		}
		r, err := bailiff.ParseRoster(b, time.Now())
		if err != nil {
			return nil, 0, fmt.Errorf("appliance: roster record %d: %w", rs[i].Record, err)
		}
		if r.Digest() == d {
			if err := r.Verify(); err != nil {
				return nil, 0, fmt.Errorf("appliance: roster record %d: %w", rs[i].Record, err)
			}
			a.mu.Lock()
			a.keepRoster(r, rs[i].Record)
			a.mu.Unlock()
			return r, rs[i].Record, nil
		}
	}
	return nil, 0, fmt.Errorf("appliance: no roster %x… on the drives", d[:6])
}

// DraftRoster drafts the next roster from the one in force: bailiffs removed
// (by fingerprint, or by their name on the roster when exactly one bears
// it), keys added (a bailiff joining, or a bailiff's new key
// when theirs ages: remove the old one, add the new one), threshold k. The
// draft is unsigned: every bailiff on it signs its Body().
func (a *Appliance) DraftRoster(threshold int, remove []string, add []ImportedBailiff) (*bailiff.Roster, error) {
	r, err := a.Roster()
	if err != nil {
		return nil, err
	}
	gone := map[string]bool{}
	for _, f := range remove {
		if b := r.Bailiff(f); b != nil {
			gone[b.Fingerprint] = true
			continue
		}
		var named []*bailiff.BailiffKey
		for _, b := range r.Bailiffs {
			if b.Name == f {
				named = append(named, b)
			}
		}
		switch len(named) {
		case 0:
			return nil, fmt.Errorf("appliance: no bailiff %q (fingerprint or name) on the roster in force", f)
		case 1:
			gone[named[0].Fingerprint] = true
		default:
			return nil, fmt.Errorf("appliance: %d bailiffs are named %q on the roster in force; remove them by fingerprint", len(named), f)
		}
	}
	var keys []*bailiff.BailiffKey
	for _, b := range r.Bailiffs {
		if !gone[b.Fingerprint] {
			keys = append(keys, b)
		}
	}
	now := time.Now()
	for _, ib := range add {
		k, err := bailiff.ImportBailiffKey(ib.Name, ib.Public, now)
		if err != nil {
			return nil, fmt.Errorf("appliance: %s's key: %w", ib.Name, err)
		}
		keys = append(keys, k)
	}
	if threshold == 0 {
		threshold = r.Threshold
	}
	// Created strictly after the roster in force, so the new roster's
	// digest is new even with the same members.
	created := now
	if !created.After(r.Created.Add(time.Second)) {
		created = r.Created.Add(time.Second)
	}
	return bailiff.NewRoster(r.VaultID, threshold, keys, created)
}

// RosterChange runs (or resumes) a roster change.
func (a *Appliance) RosterChange(ctx context.Context, o RosterChangeOptions) (job *ReencapJob, err error) {
	say := o.Say
	if say == nil {
		say = func(string, ...any) {}
	}
	defer o.Unlock.wipe()
	defer func() {
		for _, b := range o.NewBailiffs {
			clear(b.Passphrase)
		}
	}()
	// The keys open in the background (the S2K is slow on purpose) while
	// the new roster and the escrows are checked.
	ko := startOpenKeys(append(append([]BailiffSecret(nil), o.Unlock.Bailiffs...), o.NewBailiffs...))
	defer ko.wipe()
	order, orderRec, err := a.inFlight(bailiff.ReencapRosterChange)
	if err != nil {
		return nil, err
	}
	var next *bailiff.Roster
	if order != nil {
		if next, err = a.Roster(); err != nil {
			return nil, err
		}
		if next.Digest() != order.NewRoster {
			return nil, fmt.Errorf("appliance: the roster change approved in record %d is not to the roster in force: run `coffre audit` and `coffre catalog rebuild`", orderRec)
		}
		if len(o.NewRoster) > 0 {
			given, err := bailiff.ParseRoster(o.NewRoster, time.Now())
			if err != nil {
				return nil, fmt.Errorf("appliance: new roster: %w", err)
			}
			if given.Digest() != order.NewRoster {
				return nil, fmt.Errorf("appliance: a roster change to roster %x… is in flight (record %d); finish it (run without --new-roster) before another", order.NewRoster[:6], orderRec)
			}
		}
		say("resuming the roster change approved in record %d", orderRec)
	} else {
		if len(o.NewRoster) == 0 {
			return nil, errors.New("appliance: no roster change in flight: give the new roster (coffre reencap draft-roster, signed by its bailiffs)")
		}
		if order, orderRec, next, err = a.approveRosterChange(ctx, o, ko, say); err != nil {
			return nil, err
		}
	}
	keys, err := ko.wait()
	if err != nil {
		return nil, err
	}
	old, _, err := a.rosterByDigest(order.RosterDigest)
	if err != nil {
		return nil, err
	}
	if err := order.VerifyChange(old, next); err != nil {
		return nil, err
	}
	q, err := openQuorum(old, order, keys, o.Unlock.ShareCards, say)
	if err != nil {
		return nil, err
	}
	defer q.Close()
	return a.resplitAll(ctx, q, order, orderRec, old, next, o.Max, o.Batch, o.Progress)
}

// approveRosterChange checks the new roster and the order and appends them
// (order, new roster, new verify-shares escrow) in one batch.
func (a *Appliance) approveRosterChange(ctx context.Context, o RosterChangeOptions, ko *keyOpener, say func(string, ...any)) (*bailiff.QuorumOrder, uint64, *bailiff.Roster, error) {
	fail := func(err error) (*bailiff.QuorumOrder, uint64, *bailiff.Roster, error) { return nil, 0, nil, err }
	if rot, rec, err := a.inFlight(bailiff.ReencapEscrowRotation); err != nil {
		return fail(err)
	} else if rot != nil {
		return fail(fmt.Errorf("appliance: an escrow rotation (record %d) is in flight; finish it first (coffre reencap run --kind escrow)", rec))
	}
	old, err := a.Roster()
	if err != nil {
		return fail(err)
	}
	oldRec, err := a.rosterRecord()
	if err != nil {
		return fail(err)
	}
	now := time.Now()
	next, err := bailiff.ParseRoster(o.NewRoster, now)
	if err != nil {
		return fail(fmt.Errorf("appliance: new roster: %w", err))
	}
	if next.VaultID != old.VaultID {
		return fail(errors.New("appliance: the new roster is for another vault"))
	}
	if !next.Created.After(old.Created) {
		return fail(errors.New("appliance: the new roster is not newer than the roster in force; draft it again with `coffre reencap draft-roster`"))
	}
	if _, _, err := a.rosterByDigest(next.Digest()); err == nil {
		return fail(errors.New("appliance: the new roster is already on the drives (a roster never comes back); draft a new one"))
	}
	// Every escrow must be under the roster in force: a change never
	// starts on top of an unfinished one.
	live, err := a.liveEscrows()
	if err != nil {
		return fail(err)
	}
	for u, e := range live {
		b, err := a.readRecord(e.Record)
		if err != nil {
			return fail(fmt.Errorf("appliance: escrow of %s (record %d): %w", u, e.Record, err))
		}
		esc, err := bailiff.ParseStoredEscrow(b)
		if err != nil {
			return fail(fmt.Errorf("appliance: escrow of %s (record %d): %w", u, e.Record, err))
		}
		if esc.RosterDigest != old.Digest() {
			return fail(fmt.Errorf("appliance: the escrow of %s (record %d) is not under the roster in force; finish the earlier roster change first", u, e.Record))
		}
	}
	keys, err := ko.wait()
	if err != nil {
		return fail(err)
	}
	for i, s := range o.RosterSigs {
		b, err := next.AddSignature(s)
		if err != nil {
			return fail(fmt.Errorf("appliance: new roster signature %d: %w", i+1, err))
		}
		say("new roster signed by %s (detached signature verified)", b.Name)
	}
	for _, k := range keys {
		if next.Bailiff(bailiff.Fingerprint(k.key)) == nil {
			continue
		}
		bk, err := next.Sign(k.key, now)
		if err != nil {
			return fail(err)
		}
		say("new roster signed by %s", bk.Name)
	}
	if err := next.Verify(); err != nil {
		return fail(fmt.Errorf("appliance: new roster: %w", err))
	}
	var order *bailiff.QuorumOrder
	if len(o.Unlock.Order) > 0 {
		if order, err = bailiff.ParseQuorumOrder(o.Unlock.Order); err != nil {
			return fail(err)
		}
	} else {
		reason := o.Reason
		if reason == "" {
			reason = fmt.Sprintf("roster change to %d of %d", next.Threshold, len(next.Bailiffs))
		}
		if order, err = a.freshOrder(func(at time.Time) (*bailiff.QuorumOrder, error) {
			return bailiff.NewRosterChangeOrder(old, next, reason, at)
		}); err != nil {
			return fail(err)
		}
	}
	if err := a.unusedOrder(order); err != nil {
		return fail(err)
	}
	if err := signOrder(order, old, o.Unlock.OrderSigs, keys, say); err != nil {
		return fail(err)
	}
	if err := order.VerifyChange(old, next); err != nil {
		return fail(err)
	}
	// The new verify-shares escrow keeps the profile of the one it
	// replaces: post-quantum once the vault is (an upgraded vault's check
	// escrow is what makes new users' escrows post-quantum).
	newCheck := bailiff.NewVaultCheck
	if c, ok := live[checkUser]; ok {
		b, err := a.readRecord(c.Record)
		if err != nil {
			return fail(fmt.Errorf("appliance: verify-shares escrow (record %d): %w", c.Record, err))
		}
		old, err := bailiff.ParseStoredEscrow(b)
		if err != nil {
			return fail(fmt.Errorf("appliance: verify-shares escrow (record %d): %w", c.Record, err))
		}
		if old.PQ() {
			newCheck = bailiff.NewVaultCheckPQ
		}
	}
	check, err := newCheck(next, now)
	if err != nil {
		return fail(err)
	}
	batch := []pending{
		stepRecord(order, "approve", order.Marshal()),
		{storage.TypeRoster, catalog.Meta{Kind: catalog.KindRoster, Supersedes: oldRec, Algorithms: next.Algorithms(), Attrs: map[string]string{attrReencap: order.ID()}}, bytes.NewReader(next.Marshal())},
	}
	if c, ok := live[checkUser]; ok {
		batch = append(batch, pending{storage.TypeEscrow, catalog.Meta{Kind: catalog.KindEscrow, UserID: checkUser, Supersedes: c.Record, Algorithms: escrowAlgorithmsFor(check), Attrs: map[string]string{attrReencap: order.ID()}}, bytes.NewReader(check.Marshal())})
	}
	idx, err := a.commitBatch(ctx, batch)
	if err != nil {
		return fail(fmt.Errorf("appliance: recording the roster change: %w", err))
	}
	a.mu.Lock()
	a.roster = next
	a.keepRoster(next, idx[1])
	a.escrows = map[string]*bailiff.Escrow{}
	a.mu.Unlock()
	say("roster change approved (order record %d); new roster %d of %d is record %d and in force for new escrows", idx[0], next.Threshold, len(next.Bailiffs), idx[1])
	return order, idx[0], next, nil
}

// resplitAll re-splits every live escrow still under the old roster, in
// record order: this goroutine reads the bundles (a little ahead, and never
// while it commits, so reads do not wait for the drives' fsyncs), two
// workers do the public-key work, and what is ready is committed in order,
// a few escrows per batch, each superseding its old bundle.
func (a *Appliance) resplitAll(ctx context.Context, q *bailiff.EscrowQuorum, order *bailiff.QuorumOrder, orderRec uint64, old, next *bailiff.Roster, max, batchSize int, progress func(done, total int)) (*ReencapJob, error) {
	live, err := a.liveEscrows()
	if err != nil {
		return nil, err
	}
	type todo struct {
		user string
		rec  uint64
	}
	var work []todo
	job := a.newJob(rosterJobID, order, orderRec)
	for u, e := range live {
		if e.Meta.Attrs[attrReencap] == order.ID() {
			if u != checkUser { // remade in the approve batch, not counted
				job.Done++
			}
			continue
		}
		work = append(work, todo{u, e.Record})
	}
	job.Total = job.Done + len(work)
	save := a.jobSaver(rosterJobID, job)
	save(true)
	sort.Slice(work, func(i, j int) bool { return work[i].rec < work[j].rec })
	if max >= 0 && len(work) > max {
		work = work[:max]
	}
	a.Log.Info("roster change: re-splitting escrows", "order", order.ID(), "todo", len(work), "done", job.Done)
	type result struct {
		esc *bailiff.Escrow
		err error
	}
	results := make([]chan result, len(work))
	for i := range results {
		results[i] = make(chan result, 1)
	}
	bundles := make([][]byte, len(work))
	ready := make(chan int, resplitAhead) // indexes whose bundle is read
	var wg sync.WaitGroup
	defer func() { close(ready); wg.Wait() }() // no worker outlives the quorum
	for range reencapWorkers {
		wg.Go(func() {
			for i := range ready {
				if ctx.Err() != nil {
					results[i] <- result{nil, ctx.Err()}
					continue
				}
				esc, err := bailiff.ParseStoredEscrow(bundles[i])
				bundles[i] = nil
				if err == nil && (esc.UserID != work[i].user || esc.RosterDigest != old.Digest()) {
					err = fmt.Errorf("the escrow (record %d) is not the old roster's escrow of this user", work[i].rec)
				}
				var ne *bailiff.Escrow
				if err == nil {
					ne, err = q.Resplit(esc, next)
				}
				results[i] <- result{ne, err}
			}
		})
	}
	read := 0
	fill := func(consumed int) error {
		for read < len(work) && read < consumed+resplitAhead {
			b, err := a.readRecord(work[read].rec)
			if err != nil {
				return fmt.Errorf("appliance: roster change: escrow of %s (record %d): %w", work[read].user, work[read].rec, err)
			}
			bundles[read] = b
			ready <- read
			read++
		}
		return nil
	}
	var batch []pending
	var users []string
	flush := func(last bool) error {
		if len(batch) == 0 {
			return nil
		}
		n := len(batch)
		closing := last && job.Done+n == job.Total
		if closing {
			batch = append(batch, doneRecord(order, job.Total)) // the job ends with its last escrows
		}
		if _, err := a.commitBatch(ctx, batch); err != nil {
			return fmt.Errorf("appliance: roster change: %w", err)
		}
		if closing {
			job.Status = "done"
		} else {
			crashpoint.Hit("reencap.batch")
		}
		a.mu.Lock()
		for _, u := range users {
			delete(a.escrows, u) // reloaded (and its key checked) when next needed
		}
		a.mu.Unlock()
		job.Done += n
		save(false)
		if progress != nil {
			progress(job.Done, job.Total)
		}
		batch, users = batch[:0], users[:0]
		return nil
	}
	batchMax := maxResplitBatch
	if batchSize > 0 {
		batchMax = min(batchSize, maxResplitBatch)
	}
	for i, t := range work {
		if err := fill(i); err != nil {
			return job, err
		}
		r := <-results[i]
		if r.err != nil {
			return job, fmt.Errorf("appliance: roster change: escrow of %s: %w", t.user, r.err)
		}
		body := r.esc.Marshal()
		job.Bytes += int64(len(body))
		batch = append(batch, pending{storage.TypeEscrow, catalog.Meta{Kind: catalog.KindEscrow, UserID: t.user, Supersedes: t.rec, Algorithms: escrowAlgorithmsFor(r.esc), Attrs: map[string]string{attrReencap: order.ID()}}, bytes.NewReader(body)})
		users = append(users, t.user)
		// Commit what is ready, once there is enough of it: a batch costs
		// an fsync of every drive and CPU the workers would use (committing
		// each escrow as it came cost ~100 commits per 256 escrows).
		if len(batch) >= batchMax || i+1 == len(work) || (len(results[i+1]) == 0 && len(batch) >= min(minResplitBatch, batchMax)) {
			if err := flush(i+1 == len(work)); err != nil {
				return job, err
			}
		}
	}
	save(true)
	if job.Done < job.Total {
		return job, nil // bounded run (--max): resume later
	}
	if job.Status != "done" {
		if err := a.closeJob(ctx, order, job, rosterJobID); err != nil {
			return job, err
		}
	}
	a.Log.Info("roster change done", "order", order.ID(), "escrows", job.Total)
	return job, nil
}

const (
	// reencapWorkers is how many objects are rebuilt at once (the
	// appliance has two cores).
	reencapWorkers = 2
	// maxResplitBatch bounds the escrows committed in one batch, and
	// minResplitBatch is how many wait for the next commit once it could
	// start (--batch lowers both).
	maxResplitBatch = 64
	minResplitBatch = 16
	// resplitAhead bounds the bundles read ahead of the commits.
	resplitAhead = 2 * maxResplitBatch
)
