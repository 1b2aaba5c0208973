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
	upgradeBufferBytes = 64 << 20
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

// UpgradeStatus returns the algorithm upgrade job's state, if any.
func (a *Appliance) UpgradeStatus() (*UpgradeJob, bool, error) {
	b, ok, err := a.cat.Job(upgradeJobID)
	if err != nil || !ok {
		return nil, ok, err
	}
	var j UpgradeJob
	return &j, true, json.Unmarshal(b, &j)
}

// escrowAlgorithmsFor names what protects an escrow bundle of either
// version (see escrowAlgorithms).
func escrowAlgorithmsFor(e *bailiff.Escrow) []string {
	return []string{e.KeyAlgorithm(), bailiff.AlgEscrowAEAD, policy.AlgShamir, bailiff.AlgPKESKNamed}
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
	var keys []*openpgp.Entity
	defer func() {
		for _, k := range keys {
			bailiff.WipeKey(k)
		}
	}()
	for _, b := range o.Bailiffs {
		k, err := bailiff.OpenBailiffKey(b.SecretKey, bytes.Clone(b.Passphrase))
		if err != nil {
			return nil, fmt.Errorf("appliance: %s: %w", b.Label, err)
		}
		keys = append(keys, k)
		if err := order.Sign(r, k, now); err != nil {
			return nil, fmt.Errorf("appliance: %s signing the upgrade order: %w", b.Label, err)
		}
		say("upgrade order signed by %s", b.Label)
	}
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
	if _, err := a.commit(ctx, storage.TypeReencap, catalog.Meta{Kind: catalog.KindReencap,
		Attrs: map[string]string{"step": "order", "action": bailiff.ActionUpgrade, "order": job.Order}}, bytes.NewReader(order.Marshal())); err != nil {
		return nil, fmt.Errorf("appliance: recording the upgrade order: %w", err)
	}
	a.putUpgradeJob(job)
	a.Log.Info("algorithm upgrade", "users", len(users), "items", todo, "target", bailiff.AlgKeyPQ, "order", job.Order)
	live, err := a.liveEscrowRecords()
	if err != nil {
		return nil, err
	}
	finished := 0
	for _, u := range users {
		if o.MaxUsers > 0 && finished >= o.MaxUsers {
			break
		}
		if err := ctx.Err(); err != nil {
			return job, err
		}
		if err := a.upgradeUser(ctx, q, r, od, u, live[u], o.BatchItems, job, o.Progress); err != nil {
			a.putUpgradeJob(job)
			return job, err
		}
		finished++
		job.UsersDone++
		a.putUpgradeJob(job)
		say("user %s: post-quantum escrow key, %d of %d items done", u, job.Done, job.Total)
	}
	if finished == len(users) {
		job.Status = "done"
	}
	a.putUpgradeJob(job)
	return job, nil
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

// upgradeUser moves one user to a post-quantum escrow, resuming from what
// the drives hold.
func (a *Appliance) upgradeUser(ctx context.Context, q *bailiff.Quorum, r *bailiff.Roster, order [32]byte, user string, escrowRecs []uint64,
	batchItems int, job *UpgradeJob, progress func(done, total int)) error {
	unlock := a.lockUser(user)
	defer unlock()
	var oldE, newE *bailiff.Escrow
	var oldIdx, newIdx uint64
	for _, idx := range escrowRecs {
		b, err := a.readRecord(idx)
		if err != nil {
			return fmt.Errorf("appliance: upgrade: escrow of %s (record %d): %w", user, idx, err)
		}
		e, err := bailiff.ParseEscrow(b, time.Now())
		if err != nil {
			return fmt.Errorf("appliance: upgrade: escrow of %s (record %d): %w", user, idx, err)
		}
		switch {
		case e.PQ() && newE == nil:
			newE, newIdx = e, idx
		case !e.PQ() && oldE == nil:
			oldE, oldIdx = e, idx
		default:
			return fmt.Errorf("appliance: upgrade: user %s has two live escrows of the same kind (records %v): run `coffre catalog rebuild`, then `coffre audit`", user, escrowRecs)
		}
	}
	var todo []catalog.Entry
	if user != checkUser {
		items, err := a.cat.Live(user)
		if err != nil {
			return err
		}
		for _, e := range items {
			if e.Meta.Kind == catalog.KindItem && !pqItem(e.Meta) {
				todo = append(todo, e)
			}
		}
	}
	slices.SortFunc(todo, func(x, y catalog.Entry) int { return cmpU64(x.Record, y.Record) })
	if oldE == nil {
		if len(todo) > 0 {
			return fmt.Errorf("appliance: upgrade: user %s has %d items outside the post-quantum profile but no live classical escrow to open them", user, len(todo))
		}
		return nil // already upgraded
	}
	if newE == nil {
		var err error
		if user == checkUser {
			newE, err = bailiff.NewVaultCheckPQ(r, time.Now())
		} else {
			newE, err = bailiff.NewEscrowPQ(user, r)
		}
		if err != nil {
			return err
		}
	}
	var key *bailiff.EscrowKey
	if len(todo) > 0 {
		var err error
		if key, err = q.OpenEscrow(oldE); err != nil {
			return err
		}
		defer key.Close()
	}
	chunks := chunkItems(todo, batchItems)
	for ci, chunk := range chunks {
		last := ci == len(chunks)-1
		var batch []pending
		newInBatch := newIdx == 0 && ci == 0
		if newInBatch {
			m := catalog.Meta{Kind: catalog.KindEscrow, UserID: user, Algorithms: escrowAlgorithmsFor(newE), Attrs: map[string]string{"reencap": bailiff.ActionUpgrade}}
			if last {
				m.Supersedes = oldIdx
			}
			batch = append(batch, pending{storage.TypeEscrow, m, bytes.NewReader(newE.Marshal())})
		}
		items, cleanup, err := a.prepareUpgrade(ctx, key, newE, chunk)
		if err != nil {
			return err
		}
		batch = append(batch, items...)
		if last && !newInBatch {
			batch = append(batch, pending{storage.TypeSupersede, catalog.Meta{Kind: catalog.KindSupersede, UserID: user, Supersedes: oldIdx,
				Attrs: map[string]string{"reencap": bailiff.ActionUpgrade}}, nil})
		}
		step := &bailiff.ReencapStep{VaultID: r.VaultID, Order: order, Action: bailiff.ActionUpgrade, Created: time.Now().UTC().Truncate(time.Second),
			UserID: user, OldEscrow: oldIdx, OldEscrowKey: oldE.Fingerprint, NewEscrowKey: newE.Fingerprint, EscrowDone: last}
		var size int64
		for _, e := range chunk {
			step.Items = append(step.Items, bailiff.StepItem{Record: e.Record, Digest: e.Meta.Digest})
			size += e.Meta.Size
		}
		if err := step.Sign(a.ingest[0], time.Now()); err != nil {
			cleanup()
			return err
		}
		batch = append(batch, pending{storage.TypeReencap, catalog.Meta{Kind: catalog.KindReencap, UserID: user,
			Attrs: map[string]string{"step": "upgrade", "action": bailiff.ActionUpgrade, "order": hex.EncodeToString(order[:])}}, bytes.NewReader(step.Marshal())})
		idx, err := a.commitBatch(ctx, batch)
		cleanup()
		if err != nil {
			return fmt.Errorf("appliance: upgrade of %s: %w", user, err)
		}
		if newInBatch {
			newIdx = idx[0]
			a.mu.Lock()
			a.escrows[user] = newE // new uploads of this user are sealed post-quantum from now on
			a.mu.Unlock()
		}
		job.Done += len(chunk)
		job.Bytes += size
		a.putUpgradeJob(job)
		if progress != nil {
			progress(job.Done, job.Total)
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
func (a *Appliance) prepareUpgrade(ctx context.Context, key *bailiff.EscrowKey, newE *bailiff.Escrow, chunk []catalog.Entry) ([]pending, func(), error) {
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
				_, _, body, err := a.vault.Get(e.Record)
				if err != nil {
					errs[j] = fmt.Errorf("appliance: upgrade: reading record %d: %w", e.Record, err)
					continue
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
