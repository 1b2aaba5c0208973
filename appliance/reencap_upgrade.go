package appliance

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"coffre/bailiff"
	"coffre/bailiff/policy"
	"coffre/internal/crashpoint"
	"coffre/storage"
	"coffre/storage/catalog"
)

// Algorithm upgrade (re-encapsulation kind 4, quorum): for each user whose
// items or escrow fall below the crypto policy at the plan date, a new
// post-quantum escrow key is made (K split to the roster as at a first
// upload), and every live item is decrypted with the old escrow key and
// encrypted afresh to the new one — a new session key, a new key packet, a
// new encrypted data packet — and appended as a record that supersedes the
// old one. The old records stay on the drives until a separate,
// quorum-approved retirement (reencap_retire.go).
//
// Crash safety comes from the drive format: a batch of records is atomic
// (everything after the last checkpoint is dropped on recovery), and each
// upgraded item record supersedes its old record in the same batch, so an
// item version never has two live records. A user is upgraded in one batch,
// or for a large user in several: the first carries the new escrow, the last
// supersedes the old one; in between both escrows are live and the job
// resumes from the drives (live items still in the old profile are what is
// left). Every batch carries a signed step record; every run starts with the
// signed order the bailiffs present approved.

// UpgradeOptions are the inputs of an algorithm upgrade run.
type UpgradeOptions struct {
	// Policy is a crypto policy signed by the roster's quorum, or nil for
	// the default policy.
	Policy []byte
	// At is the plan date: what falls below the policy then is upgraded
	// (zero: now). A move ahead of the policy's dates gives a later date.
	At time.Time
	// Users restricts the run to these users (among those the plan
	// lists); empty means all.
	Users []string
	// Bailiffs present (at least k): they sign the order and open their
	// shares of each user's old escrow.
	Bailiffs []BailiffSecret
	// MaxUsers bounds the users done in this run (a maintenance window;
	// the rest resumes later); 0 means all.
	MaxUsers int
	// BatchItems bounds the items of one batch (0: DefaultUpgradeBatch).
	BatchItems int
	// Progress is called after each batch with items done and total.
	Progress func(done, total int)
	Say      func(format string, a ...any)
}

// DefaultUpgradeBatch is the largest number of items upgraded in one
// atomic batch of records.
const DefaultUpgradeBatch = 1000

// upgradeBufferBytes bounds the re-encrypted items a batch holds in memory;
// larger items are streamed into the batch (at most upgradeStreamed each).
const (
	upgradeBufferBytes = 32 << 20
	upgradeStreamed    = 4
)

// UpgradeJob is the job state kept in the catalog (for `coffre reencap
// status`). The drives are the truth; this is progress.
type UpgradeJob struct {
	Target    string `json:"target"`
	At        string `json:"at"`
	Order     string `json:"order,omitempty"` // digest of the order of the last run
	Users     int    `json:"users"`
	UsersDone int    `json:"users_done"`
	Total     int    `json:"total"` // items
	Done      int    `json:"done"`
	Bytes     int64  `json:"bytes"`
	Started   string `json:"started,omitempty"`
	Status    string `json:"status"` // running, done
}

const upgradeJobID = "reencap-algorithm-upgrade"

func (a *Appliance) putUpgradeJob(j *UpgradeJob) {
	b, _ := json.Marshal(j)
	if err := a.cat.PutJob(upgradeJobID, b); err != nil {
		a.Log.Warn("upgrade: saving job state", "err", err)
	}
}

// UpgradeStatus returns the algorithm upgrade job's state, if any. A
// running job's item count is recounted from the drives: the saved state
// is written after each batch is durable, so a crash between the two
// leaves it behind (the resume itself always works from the drives). The
// state names its order before the order is recorded, so the users of the
// run are those of that order on the drives, or nobody yet.
func (a *Appliance) UpgradeStatus() (*UpgradeJob, bool, error) {
	b, ok, err := a.cat.Job(upgradeJobID)
	if err != nil || !ok {
		return nil, ok, err
	}
	var j UpgradeJob
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, true, fmt.Errorf("appliance: upgrade job state: %w", err)
	}
	if j.Status != "running" || j.Order == "" {
		return &j, true, nil
	}
	users, err := a.upgradeOrderUsers(j.Order)
	if err != nil || users == nil {
		return &j, true, err
	}
	left, err := a.countUpgradeItems(users)
	if err != nil {
		return nil, true, err
	}
	j.Done = min(max(j.Total-left, j.Done), j.Total)
	return &j, true, nil
}

// upgradeOrderUsers returns the users of the upgrade order with this
// digest (hex) if it is on the drives, else nil.
func (a *Appliance) upgradeOrderUsers(digest string) ([]string, error) {
	es, err := a.cat.ByKind(catalog.KindReencap)
	if err != nil {
		return nil, err
	}
	for _, e := range es {
		if e.Meta.Attrs["step"] != "order" || e.Meta.Attrs["action"] != bailiff.ActionUpgrade || e.Meta.Attrs["order"] != digest {
			continue
		}
		o, err := a.reencapOrderAt(e.Record, "upgrade order record")
		if err != nil {
			return nil, err
		}
		if d := o.Digest(); hex.EncodeToString(d[:]) != digest {
			return nil, fmt.Errorf("appliance: record %d does not hold the upgrade order its meta names", e.Record)
		}
		return o.Users, nil
	}
	return nil, nil
}

// escrowAlgorithmsFor names what protects an escrow bundle, as its catalog
// meta records it for the plan: the escrow key (P-521 or post-quantum), the
// AEAD sealing its private part, the secret sharing, and the key packets of
// the share messages as they are (to P-521 or post-quantum bailiff keys).
func escrowAlgorithmsFor(e *bailiff.Escrow) []string {
	return append([]string{e.KeyAlgorithm(), bailiff.AlgEscrowAEAD, policy.AlgShamir}, e.ShareAlgorithms()...)
}

// pqItem reports whether an item record is already in the PQ profile.
func pqItem(m catalog.Meta) bool {
	return slices.Equal(m.Algorithms, algorithmList(bailiff.ItemAlgorithmsPQ))
}

// loadPolicy returns the policy in force for a run: a signed policy
// verified against the roster, or the default one (zero digest).
func (a *Appliance) loadPolicy(signed []byte, r *bailiff.Roster) (*policy.Policy, [32]byte, error) {
	if signed == nil {
		return policy.Default(), [32]byte{}, nil
	}
	p, err := policy.Parse(signed)
	if err != nil {
		return nil, [32]byte{}, err
	}
	if err := p.Verify(r); err != nil {
		return nil, [32]byte{}, err
	}
	return p, p.Digest(), nil
}

// UpgradeCandidates lists the users the algorithm upgrade would work on at
// date at under the policy (signed, or nil for the default): those with an
// item or escrow object in kind 4, and those left half-way by an
// interrupted run.
func (a *Appliance) UpgradeCandidates(signed []byte, at time.Time) ([]string, error) {
	r, err := a.Roster()
	if err != nil {
		return nil, err
	}
	p, _, err := a.loadPolicy(signed, r)
	if err != nil {
		return nil, err
	}
	return a.upgradeUsers(p, at)
}

func (a *Appliance) upgradeUsers(p *policy.Policy, at time.Time) ([]string, error) {
	objs, err := a.reencapObjects()
	if err != nil {
		return nil, err
	}
	users := map[string]bool{}
	byRecord := map[uint64]policy.Object{}
	for _, o := range objs {
		if o.Kind == policy.KindItem || o.Kind == policy.KindEscrow {
			byRecord[o.Record] = o
		}
	}
	if g := policy.Plan(p, objs, at).Group(policy.AlgorithmUpgrade); g != nil {
		for _, rec := range g.Records {
			if o, ok := byRecord[rec]; ok && o.UserID != "" {
				users[o.UserID] = true
			}
		}
	}
	// Users left half-way (two live escrows) finish whatever the plan says.
	live, err := a.liveEscrowRecords()
	if err != nil {
		return nil, err
	}
	for u, recs := range live {
		if len(recs) > 1 {
			users[u] = true
		}
	}
	out := make([]string, 0, len(users))
	for u := range users {
		out = append(out, u)
	}
	slices.Sort(out)
	return out, nil
}

// liveEscrowRecords maps each user to the records of their live escrows,
// ascending (one, or two while an upgrade of the user is under way).
func (a *Appliance) liveEscrowRecords() (map[string][]uint64, error) {
	all, err := a.cat.ByKind(catalog.KindEscrow)
	if err != nil {
		return nil, err
	}
	out := map[string][]uint64{}
	for _, e := range all {
		if e.Live() {
			out[e.Meta.UserID] = append(out[e.Meta.UserID], e.Record)
		}
	}
	return out, nil
}

// Upgrade runs (or resumes) the algorithm upgrade under a bailiff quorum.
func (a *Appliance) Upgrade(ctx context.Context, o UpgradeOptions) (*UpgradeJob, error) {
	defer func() {
		for _, b := range o.Bailiffs {
			clear(b.Passphrase)
		}
	}()
	say := o.Say
	if say == nil {
		say = func(string, ...any) {}
	}
	if o.BatchItems <= 0 {
		o.BatchItems = DefaultUpgradeBatch
	}
	o.BatchItems = min(o.BatchItems, storage.MaxBatch-3)
	now := time.Now()
	at := o.At
	if at.IsZero() {
		at = now
	}
	r, err := a.Roster()
	if err != nil {
		return nil, err
	}
	p, pdigest, err := a.loadPolicy(o.Policy, r)
	if err != nil {
		return nil, err
	}
	users, err := a.upgradeUsers(p, at)
	if err != nil {
		return nil, err
	}
	if len(o.Users) > 0 {
		users = slices.DeleteFunc(users, func(u string) bool { return !slices.Contains(o.Users, u) })
	}
	job := &UpgradeJob{Target: bailiff.AlgKeyPQ, At: at.UTC().Format(time.RFC3339), Status: "running", Started: now.UTC().Format(time.RFC3339)}
	if prev, ok, _ := a.UpgradeStatus(); ok && prev.Status == "running" && prev.Target == job.Target {
		job.Started, job.Done, job.UsersDone, job.Bytes = prev.Started, prev.Done, prev.UsersDone, prev.Bytes
	}
	if len(users) == 0 {
		job.Status = "done"
		a.putUpgradeJob(job)
		return job, nil
	}
	if len(users) > bailiff.MaxReencapEntries {
		users = users[:bailiff.MaxReencapEntries] // the rest in the next run
	}
	todo, err := a.countUpgradeItems(users)
	if err != nil {
		return nil, err
	}
	job.Users = job.UsersDone + len(users)
	job.Total = job.Done + todo

	// The bailiffs present sign the order; their opened keys then form the
	// quorum session that opens each listed user's escrow.
	order, err := bailiff.NewReencapOrder(r, bailiff.ActionUpgrade, pdigest, at, bailiff.AlgKeyPQ, users, nil, now)
	if err != nil {
		return nil, err
	}
	keys, err := signEach(o.Bailiffs, "upgrade order", true, say, func(k *openpgp.Entity) error { return order.Sign(r, k, now) })
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, k := range keys {
			bailiff.WipeKey(k)
		}
	}()
	if err := order.Verify(r); err != nil {
		return nil, err
	}
	q, err := bailiff.NewQuorum(r, order, bailiff.UnlockOptions{TTL: 12 * time.Hour})
	if err != nil {
		return nil, err
	}
	defer q.Close()
	for _, k := range keys {
		if _, err := q.AddKey(k); err != nil {
			return nil, err
		}
	}
	keys = nil // the session owns them now
	od := order.Digest()
	job.Order = hex.EncodeToString(od[:])
	live, err := a.liveEscrowRecords()
	if err != nil {
		return nil, err
	}
	if o.MaxUsers > 0 && len(users) > o.MaxUsers {
		users = users[:o.MaxUsers]
	}
	// Two stages: one goroutine prepares each user's batches (new escrow,
	// old escrow opened by the quorum, items re-encrypted on every core),
	// this one appends them in order; so re-encryption of the next batch
	// overlaps the drives' writes and syncs of the last. Preparing writes
	// nothing: the first user is prepared while the order is recorded, and
	// no batch is appended before the order is on the drives.
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan *upgradeBatch, 1)
	perr := make(chan error, 1)
	go func() {
		defer close(ch)
		perr <- a.produceUpgrade(pctx, q, r, od, users, live, o.BatchItems, ch)
	}()
	a.putUpgradeJob(job) // names the order before it can be on the drives (see UpgradeStatus)
	if _, err := a.commit(ctx, storage.TypeReencap, catalog.Meta{Kind: catalog.KindReencap,
		Attrs: map[string]string{"step": "order", "action": bailiff.ActionUpgrade, "order": job.Order}}, bytes.NewReader(order.Marshal())); err != nil {
		cancel()
		for b := range ch {
			b.release()
		}
		<-perr
		return nil, fmt.Errorf("appliance: recording the upgrade order: %w", err)
	}
	a.Log.Info("algorithm upgrade", "users", len(users), "items", todo, "target", bailiff.AlgKeyPQ, "order", job.Order)
	finished := 0
	var cerr error
	for b := range ch {
		if cerr != nil {
			b.release() // after a failed append: drop what is queued
			continue
		}
		if err := a.commitUpgradeBatch(ctx, b, job, o.Progress); err != nil {
			cerr = err
			cancel()
			continue
		}
		if b.last {
			finished++
			job.UsersDone++
			a.putUpgradeJob(job)
			say("user %s: post-quantum escrow key, %d of %d items done", b.user, job.Done, job.Total)
		}
	}
	if err := <-perr; cerr == nil && err != nil {
		cerr = err
	}
	if cerr != nil {
		a.putUpgradeJob(job)
		return job, cerr
	}
	if finished == len(users) {
		job.Status = "done"
	}
	a.putUpgradeJob(job)
	return job, nil
}

// upgradeBatch is one atomic batch of an upgrade, prepared and waiting to
// be appended. The user's lock and the old escrow key are held until the
// user's last batch is appended (streamed items still read through the key
// during the append).
type upgradeBatch struct {
	user      string
	recs      []pending // nil: the user needed nothing
	cleanup   func()
	items     int
	bytes     int64
	newEscrow *bailiff.Escrow // this batch carries the new escrow record
	last      bool            // the user's last batch
	done      []func()        // on the last batch: close the key, unlock the user
}

// release frees what the batch holds, once it is appended or dropped.
func (b *upgradeBatch) release() {
	if b.cleanup != nil {
		b.cleanup()
		b.cleanup = nil
	}
	for _, f := range b.done {
		f()
	}
	b.done = nil
}

func (a *Appliance) commitUpgradeBatch(ctx context.Context, b *upgradeBatch, job *UpgradeJob, progress func(done, total int)) error {
	defer b.release()
	if len(b.recs) == 0 {
		return nil
	}
	if _, err := a.commitBatch(ctx, b.recs); err != nil {
		return fmt.Errorf("appliance: upgrade of %s: %w", b.user, err)
	}
	if b.newEscrow != nil {
		a.mu.Lock()
		a.escrows[b.user] = b.newEscrow // new uploads of this user are sealed post-quantum from now on
		a.mu.Unlock()
	}
	job.Done += b.items
	job.Bytes += b.bytes
	if job.Done < job.Total {
		crashpoint.Hit("reencap.batch")
	}
	a.putUpgradeJob(job)
	if progress != nil {
		progress(job.Done, job.Total)
	}
	return nil
}

// produceUpgrade prepares the batches of each user in turn. The setup of
// the next user (reading its escrows, opening the old one with the quorum,
// generating the new one: single-threaded public-key work) runs while the
// items of the current user are re-encrypted, so no core idles between
// users.
func (a *Appliance) produceUpgrade(ctx context.Context, q *bailiff.Quorum, r *bailiff.Roster, order [32]byte, users []string, live map[string][]uint64,
	batchItems int, out chan<- *upgradeBatch) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	send := func(b *upgradeBatch) error {
		select {
		case out <- b:
			return nil
		case <-ctx.Done():
			b.release()
			return ctx.Err()
		}
	}
	setups := make(chan *userSetup, 1)
	serr := make(chan error, 1)
	go func() {
		defer close(setups)
		for _, u := range users {
			s, err := a.setupUser(ctx, q, r, u, live[u])
			if err != nil {
				serr <- err
				return
			}
			select {
			case setups <- s:
			case <-ctx.Done():
				s.release()
				serr <- ctx.Err()
				return
			}
		}
		serr <- nil
	}()
	var perr error
	for s := range setups {
		if perr != nil {
			s.release()
			continue
		}
		if perr = a.produceBatches(ctx, r, order, s, batchItems, send); perr != nil {
			cancel()
		}
	}
	if err := <-serr; perr == nil {
		perr = err
	}
	return perr
}

// userSetup is what the upgrade of one user starts from, read from the
// drives (so a resumed job starts where the last one stopped): the live
// escrows — the old one, and the new one when an earlier run got that far —
// and the live items not yet in the post-quantum profile. It holds the
// user's lock and the opened old escrow key until its last batch is
// appended.
type userSetup struct {
	user           string
	oldE, newE     *bailiff.Escrow
	oldIdx, newIdx uint64
	todo           []catalog.Entry
	prefetched     map[uint64][]byte // old ciphertexts read ahead (record -> bytes)
	key            *bailiff.EscrowKey
	done           []func() // close the key, unlock the user
	nothing        bool     // already upgraded
}

func (s *userSetup) release() {
	for _, f := range s.done {
		f()
	}
	s.done = nil
}

func (a *Appliance) setupUser(ctx context.Context, q *bailiff.Quorum, r *bailiff.Roster, user string, escrowRecs []uint64) (s *userSetup, err error) {
	s = &userSetup{user: user, done: []func(){a.lockUser(user)}}
	defer func() {
		if err != nil {
			s.release()
		}
	}()
	for _, idx := range escrowRecs {
		b, err := a.readRecord(idx)
		if err != nil {
			return nil, fmt.Errorf("appliance: upgrade: escrow of %s (record %d): %w", user, idx, err)
		}
		e, err := bailiff.ParseEscrow(b, time.Now())
		if err != nil {
			return nil, fmt.Errorf("appliance: upgrade: escrow of %s (record %d): %w", user, idx, err)
		}
		switch {
		case e.PQ() && s.newE == nil:
			s.newE, s.newIdx = e, idx
		case !e.PQ() && s.oldE == nil:
			s.oldE, s.oldIdx = e, idx
		default:
			return nil, fmt.Errorf("appliance: upgrade: user %s has two live escrows of the same kind (records %v): run `coffre catalog rebuild`, then `coffre audit`", user, escrowRecs)
		}
	}
	if user != checkUser {
		items, err := a.cat.Live(user)
		if err != nil {
			return nil, err
		}
		for _, e := range items {
			if e.Meta.Kind == catalog.KindItem && !pqItem(e.Meta) {
				s.todo = append(s.todo, e)
			}
		}
	}
	slices.SortFunc(s.todo, func(x, y catalog.Entry) int { return cmpU64(x.Record, y.Record) })
	if s.oldE == nil {
		if len(s.todo) > 0 {
			return nil, fmt.Errorf("appliance: upgrade: user %s has %d items outside the post-quantum profile but no live classical escrow to open them", user, len(s.todo))
		}
		s.nothing = true
		return s, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Read the user's small items ahead, here, off the re-encryption
	// workers: the drives are locked while a batch is appended, and a
	// worker waiting on that lock leaves its core idle.
	if err := a.prefetch(s); err != nil {
		return nil, err
	}
	// The new escrow is generated while the quorum opens the old one.
	gen := make(chan error, 1)
	if s.newE == nil {
		go func() {
			var err error
			if user == checkUser {
				s.newE, err = bailiff.NewVaultCheckPQ(r, time.Now())
			} else {
				s.newE, err = bailiff.NewEscrowPQ(user, r)
			}
			gen <- err
		}()
	} else {
		gen <- nil
	}
	var openErr error
	if len(s.todo) > 0 {
		if s.key, openErr = q.OpenEscrow(s.oldE); openErr == nil {
			s.done = append([]func(){s.key.Close}, s.done...)
		}
	}
	if err := <-gen; err != nil {
		return nil, err
	}
	if openErr != nil {
		return nil, openErr
	}
	return s, nil
}

// upgradePrefetch bounds the old ciphertexts read ahead for one user.
const upgradePrefetch = 16 << 20

// prefetch reads the old ciphertexts of a user's small items into memory,
// in record order, up to upgradePrefetch bytes.
func (a *Appliance) prefetch(s *userSetup) error {
	var total int64
	for _, e := range s.todo {
		if e.Meta.Size > bufferLimit {
			continue
		}
		if total+e.Meta.Size > upgradePrefetch {
			break
		}
		_, _, body, err := a.vault.Get(e.Record)
		if err != nil {
			return fmt.Errorf("appliance: upgrade: reading record %d: %w", e.Record, err)
		}
		b, err := io.ReadAll(io.LimitReader(body, bufferLimit+64<<10))
		body.Close()
		if err != nil {
			return fmt.Errorf("appliance: upgrade: reading record %d: %w", e.Record, err)
		}
		if s.prefetched == nil {
			s.prefetched = map[uint64][]byte{}
		}
		s.prefetched[e.Record] = b
		total += int64(len(b))
	}
	return nil
}

// produceBatches cuts a user's items into batches and prepares each.
func (a *Appliance) produceBatches(ctx context.Context, r *bailiff.Roster, order [32]byte, s *userSetup, batchItems int, send func(*upgradeBatch) error) error {
	if s.nothing {
		b := &upgradeBatch{user: s.user, last: true, done: s.done}
		s.done = nil
		return send(b)
	}
	defer s.release() // unless handed to the last batch
	chunks := chunkItems(s.todo, batchItems)
	for ci, chunk := range chunks {
		last := ci == len(chunks)-1
		b := &upgradeBatch{user: s.user, last: last, items: len(chunk)}
		newInBatch := s.newIdx == 0 && ci == 0
		if newInBatch {
			m := catalog.Meta{Kind: catalog.KindEscrow, UserID: s.user, Algorithms: escrowAlgorithmsFor(s.newE), Attrs: map[string]string{"reencap": bailiff.ActionUpgrade}}
			if last {
				m.Supersedes = s.oldIdx
			}
			b.recs = append(b.recs, pending{storage.TypeEscrow, m, bytes.NewReader(s.newE.Marshal())})
			b.newEscrow = s.newE
		}
		items, cleanup, err := a.prepareUpgrade(ctx, s.key, s.newE, chunk, s.prefetched)
		if err != nil {
			return err
		}
		b.cleanup = cleanup
		b.recs = append(b.recs, items...)
		if last && !newInBatch {
			b.recs = append(b.recs, pending{storage.TypeSupersede, catalog.Meta{Kind: catalog.KindSupersede, UserID: s.user, Supersedes: s.oldIdx,
				Attrs: map[string]string{"reencap": bailiff.ActionUpgrade}}, nil})
		}
		step := &bailiff.ReencapStep{VaultID: r.VaultID, Order: order, Action: bailiff.ActionUpgrade, Created: time.Now().UTC().Truncate(time.Second),
			UserID: s.user, OldEscrow: s.oldIdx, OldEscrowKey: s.oldE.Fingerprint, NewEscrowKey: s.newE.Fingerprint, EscrowDone: last}
		for _, e := range chunk {
			step.Items = append(step.Items, bailiff.StepItem{Record: e.Record, Digest: e.Meta.Digest})
			b.bytes += e.Meta.Size
		}
		if err := step.Sign(a.ingest[0], time.Now()); err != nil {
			cleanup()
			return err
		}
		b.recs = append(b.recs, pending{storage.TypeReencap, catalog.Meta{Kind: catalog.KindReencap, UserID: s.user,
			Attrs: map[string]string{"step": "upgrade", "action": bailiff.ActionUpgrade, "order": hex.EncodeToString(order[:])}}, bytes.NewReader(step.Marshal())})
		if last {
			b.done, s.done = s.done, nil // the consumer closes the key and unlocks the user after this append
		}
		if err := send(b); err != nil {
			return err
		}
	}
	return nil
}

func cmpU64(x, y uint64) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// chunkItems splits a user's items into batches: at most n items, at most
// upgradeBufferBytes of items re-encrypted in memory and at most
// upgradeStreamed streamed ones each. There is always at least one batch.
func chunkItems(items []catalog.Entry, n int) [][]catalog.Entry {
	var out [][]catalog.Entry
	var cur []catalog.Entry
	var buffered int64
	streamed := 0
	for _, e := range items {
		big := e.Meta.Size > bufferLimit
		if len(cur) > 0 && (len(cur) >= n || (!big && buffered+e.Meta.Size > upgradeBufferBytes) || (big && streamed >= upgradeStreamed)) {
			out = append(out, cur)
			cur, buffered, streamed = nil, 0, 0
		}
		cur = append(cur, e)
		if big {
			streamed++
		} else {
			buffered += e.Meta.Size
		}
	}
	if len(cur) > 0 || len(out) == 0 {
		out = append(out, cur)
	}
	return out
}

// prepareUpgrade makes the records of one batch of items: small items are
// re-encrypted now, on every core, into memory; large ones are streamed into
// the batch as the drives take it. cleanup releases what a failed or
// finished batch left open.
func (a *Appliance) prepareUpgrade(ctx context.Context, key *bailiff.EscrowKey, newE *bailiff.Escrow, chunk []catalog.Entry, pre map[uint64][]byte) ([]pending, func(), error) {
	out := make([]pending, len(chunk))
	var closers []func()
	cleanup := func() {
		for _, c := range closers {
			c()
		}
	}
	var small []int
	for i, e := range chunk {
		m := e.Meta
		m.Supersedes = e.Record
		m.Algorithms = algorithmList(bailiff.ItemAlgorithmsPQ)
		if m.Attrs != nil {
			m.Attrs = maps.Clone(m.Attrs)
		}
		out[i] = pending{storage.TypeItem, m, nil}
		if e.Meta.Size <= bufferLimit {
			small = append(small, i)
			continue
		}
		// Open the old record now: the drives are locked while the batch
		// is appended, and the body is read from inside the append.
		_, _, body, err := a.vault.Get(e.Record)
		if err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("appliance: upgrade: reading record %d: %w", e.Record, err)
		}
		pr, pw := io.Pipe()
		digest := digestOrNil(e.Meta.Digest)
		lb := &lazyReader{start: func() {
			go func() {
				defer body.Close()
				_, _, err := bailiff.UpgradeItem(pw, body, key, newE, digest)
				pw.CloseWithError(err)
			}()
		}, r: pr}
		closers = append(closers, func() {
			pr.CloseWithError(errors.New("appliance: upgrade batch ended"))
			if !lb.started() {
				body.Close()
			}
		})
		out[i].body = lb
	}
	// Small items on every core, each into its own buffer.
	var next int
	var nmu sync.Mutex
	errs := make([]error, len(small))
	var wg sync.WaitGroup
	for w := 0; w < min(runtime.GOMAXPROCS(0), len(small)); w++ {
		wg.Go(func() {
			for {
				nmu.Lock()
				j := next
				next++
				nmu.Unlock()
				if j >= len(small) || ctx.Err() != nil {
					return
				}
				i := small[j]
				e := chunk[i]
				var body io.ReadCloser
				var err error
				if ct, ok := pre[e.Record]; ok {
					body = io.NopCloser(bytes.NewReader(ct))
				} else {
					if _, _, body, err = a.vault.Get(e.Record); err != nil {
						errs[j] = fmt.Errorf("appliance: upgrade: reading record %d: %w", e.Record, err)
						continue
					}
				}
				var buf bytes.Buffer
				buf.Grow(int(e.Meta.Size) + 2048)
				_, _, err = bailiff.UpgradeItem(&buf, body, key, newE, digestOrNil(e.Meta.Digest))
				body.Close()
				if err != nil {
					errs[j] = fmt.Errorf("appliance: upgrade of item %s version %d of %s (record %d): %w", e.Meta.ItemID, e.Meta.Version, e.Meta.UserID, e.Record, err)
					continue
				}
				out[i].body = bytes.NewReader(buf.Bytes())
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		cleanup()
		return nil, nil, err
	}
	if err := errors.Join(errs...); err != nil {
		cleanup()
		return nil, nil, err
	}
	return out, cleanup, nil
}

func digestOrNil(d [32]byte) []byte {
	if d == ([32]byte{}) {
		return nil
	}
	return d[:]
}

// lazyReader starts the producer of r on the first Read.
type lazyReader struct {
	start func()
	r     io.Reader
	once  sync.Once
	mu    sync.Mutex
	began bool
}

func (l *lazyReader) Read(p []byte) (int, error) {
	l.once.Do(func() {
		l.mu.Lock()
		l.began = true
		l.mu.Unlock()
		l.start()
	})
	return l.r.Read(p)
}

func (l *lazyReader) started() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.began
}

// checkNotMidUpgrade refuses to open a user whose algorithm upgrade was
// interrupted between batches: their items are then split between two
// escrow keys, and a restitution with one of them would miss the others.
func (a *Appliance) checkNotMidUpgrade(user string) error {
	live, err := a.liveEscrowRecords()
	if err != nil {
		return err
	}
	if n := len(live[user]); n > 1 {
		return fmt.Errorf("appliance: the algorithm upgrade of %s was interrupted (%d live escrows): finish it with `coffre reencap run --kind upgrade` first", user, n)
	}
	return nil
}

// countUpgradeItems counts the live items of users not yet in the PQ
// profile.
func (a *Appliance) countUpgradeItems(users []string) (int, error) {
	n := 0
	for _, u := range users {
		if u == checkUser {
			continue
		}
		items, err := a.cat.Live(u)
		if err != nil {
			return 0, err
		}
		for _, e := range items {
			if e.Meta.Kind == catalog.KindItem && !pqItem(e.Meta) {
				n++
			}
		}
	}
	return n, nil
}

// newUserEscrow makes the escrow of a user's first upload. Once the vault
// has been moved to post-quantum escrow keys — its verify-shares check
// escrow is post-quantum, which the algorithm upgrade does for every vault
// it runs on — new users get a post-quantum escrow too, so nothing new is
// made that the next plan would list for kind 4.
func (a *Appliance) newUserEscrow(user string, r *bailiff.Roster) (*bailiff.Escrow, error) {
	pq, err := a.checkEscrowPQ()
	if err != nil {
		return nil, err
	}
	if pq {
		return bailiff.NewEscrowPQ(user, r)
	}
	return bailiff.NewEscrow(user, r)
}

// checkEscrowPQ reports whether the vault's verify-shares escrow is
// post-quantum. The answer is remembered with the record it was read from:
// a new check escrow (roster change, algorithm upgrade) is a new record,
// read again. So a new user's first upload does not read the drives, which
// would wait for an append in progress (another upload's commit).
func (a *Appliance) checkEscrowPQ() (bool, error) {
	idx, ok, err := a.escrowRecord(checkUser)
	if err != nil || !ok {
		return false, err
	}
	a.mu.Lock()
	c := a.checkPQ
	a.mu.Unlock()
	if c.known && c.record == idx {
		return c.pq, nil
	}
	check, err := a.loadEscrow(checkUser)
	if err != nil || check == nil {
		return false, err
	}
	a.mu.Lock()
	// Remember it only if the record read is still the live one.
	if cur, ok := a.escrowIdx[checkUser]; ok && cur == idx {
		a.checkPQ = checkPQ{known: true, record: idx, pq: check.PQ()}
	}
	a.mu.Unlock()
	return check.PQ(), nil
}

// checkPQ caches checkEscrowPQ's answer for one record (guarded by mu).
type checkPQ struct {
	known  bool
	record uint64
	pq     bool
}
