package appliance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"coffre/bailiff"
	"coffre/bailiff/policy"
	"coffre/storage"
	"coffre/storage/catalog"
)

// Quorum re-encapsulation (kinds 2 and 3, docs/formats/quorum-order.md). Both kinds run
// the same way:
//
//  1. approve: an order signed by k bailiffs of the roster in force is
//     appended as a reencap record (step "approve"), in one batch with
//     whatever must change first (a roster change also appends the new
//     roster and a new verify-shares escrow, superseding the old ones);
//  2. work: each object is rebuilt under the quorum and appended as a new
//     record that supersedes the old one, each user in one batch, so no
//     object ever has two live versions and none is half-done;
//  3. done: a reencap record (step "done") closes the job.
//
// What is done is read from the drives (the live records and their
// "reencap" attribute naming the order), so a job killed at any point
// resumes where it stopped. The catalog keeps a ReencapJob for `coffre
// reencap status`, like the record-layer rekey's RekeyJob. Old records stay
// on the drives until a separate, quorum-approved retirement.

// ReencapJob is the state of a quorum re-encapsulation job kept in the
// catalog (for `coffre reencap status`); the drives are the truth.
type ReencapJob struct {
	Kind    string `json:"kind"`   // roster-change, escrow-rotation
	Order   string `json:"order"`  // hex SHA-256 of the signed order: the job's identity
	Record  uint64 `json:"record"` // the order's record on the drives
	Total   int    `json:"total"`  // escrows (roster change) or items (escrow rotation)
	Done    int    `json:"done"`
	Bytes   int64  `json:"bytes"`
	Started string `json:"started,omitempty"`
	Status  string `json:"status"` // running, done
}

// Job ids in the catalog, one per kind (the newest job of a kind).
const (
	rosterJobID   = "reencap-roster-change"
	rotationJobID = "reencap-escrow-rotation"
)

// Meta attributes of the records a quorum job writes.
const (
	attrReencap     = "reencap"      // on every record a job writes: the order's id
	attrReencapKind = "reencap-kind" // on reencap records: roster-change, escrow-rotation
	attrStep        = "step"         // on reencap records: approve, done
)

// QuorumUnlock is how the bailiffs present unlock a quorum job, the same
// ways as a restitution: with their protected key and passphrase (they sign
// the order on the appliance and their keys open their shares), or with
// share cards they opened with their own tools (`coffre reencap shares`
// exports the messages; `gpg --decrypt` each). An order drafted elsewhere
// (`coffre reencap draft-order`) and signed with gpg may be given instead
// of signing on the appliance.
type QuorumUnlock struct {
	Bailiffs   []BailiffSecret
	ShareCards [][]byte
	Order      []byte   // a signed (or partly signed) order file
	OrderSigs  [][]byte // detached signatures over the order's body
}

func (u *QuorumUnlock) wipe() {
	for _, b := range u.Bailiffs {
		clear(b.Passphrase)
	}
	for _, c := range u.ShareCards {
		clear(c)
	}
}

// openedKey is a bailiff key opened for one job.
type openedKey struct {
	label string
	key   *openpgp.Entity
}

// openKeys opens each bailiff's key once for the whole job (the S2K is
// slow on purpose); the passphrases are wiped. The caller wipes the keys
// with wipeKeys.
func openKeys(bs []BailiffSecret) ([]openedKey, error) {
	out := make([]openedKey, len(bs))
	errs := make([]error, len(bs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, reencapWorkers)
	for i, b := range bs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			k, err := bailiff.OpenBailiffKey(b.SecretKey, b.Passphrase)
			if err != nil {
				errs[i] = fmt.Errorf("appliance: %s: %w", b.Label, err)
				return
			}
			out[i] = openedKey{b.Label, k}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		wipeKeys(out)
		return nil, err
	}
	return out, nil
}

// signEach opens the key of each bailiff in bs in turn and signs with it
// (what names the document in messages). Each key is wiped once it has
// signed, unless keep: then the opened keys are returned for the caller to
// use and wipe. On error every key opened is wiped.
func signEach(bs []BailiffSecret, what string, keep bool, say func(string, ...any), sign func(*openpgp.Entity) error) ([]*openpgp.Entity, error) {
	var kept []*openpgp.Entity
	fail := func(err error) ([]*openpgp.Entity, error) {
		for _, k := range kept {
			bailiff.WipeKey(k)
		}
		return nil, err
	}
	for _, b := range bs {
		// The library wipes the passphrase it is given: hand it a copy,
		// a caller may open a share with the same one.
		k, err := bailiff.OpenBailiffKey(b.SecretKey, bytes.Clone(b.Passphrase))
		if err != nil {
			return fail(fmt.Errorf("appliance: %s: %w", b.Label, err))
		}
		err = sign(k)
		if keep {
			kept = append(kept, k)
		} else {
			bailiff.WipeKey(k)
		}
		if err != nil {
			return fail(fmt.Errorf("appliance: %s signing the %s: %w", b.Label, what, err))
		}
		say("%s signed by %s", what, b.Label)
	}
	return kept, nil
}

// keyOpener opens the bailiffs' keys in the background (the S2K is slow
// on purpose) while a job plans and reads.
type keyOpener struct {
	done chan struct{}
	keys []openedKey
	err  error
}

func startOpenKeys(bs []BailiffSecret) *keyOpener {
	ko := &keyOpener{done: make(chan struct{})}
	go func() {
		defer close(ko.done)
		ko.keys, ko.err = openKeys(bs)
	}()
	return ko
}

// wait returns the opened keys.
func (ko *keyOpener) wait() ([]openedKey, error) {
	<-ko.done
	return ko.keys, ko.err
}

// wipe waits for the keys and wipes them.
func (ko *keyOpener) wipe() {
	<-ko.done
	wipeKeys(ko.keys)
}

func wipeKeys(ks []openedKey) {
	for _, k := range ks {
		if k.key != nil {
			bailiff.WipeKey(k.key)
		}
	}
}

// signOrder completes the order: detached signatures given, then the
// signatures of the bailiffs present who are on r.
func signOrder(o *bailiff.QuorumOrder, r *bailiff.Roster, sigs [][]byte, keys []openedKey, say func(string, ...any)) error {
	for i, s := range sigs {
		b, err := o.AddSignature(r, s)
		if err != nil {
			return fmt.Errorf("appliance: order signature %d: %w", i+1, err)
		}
		say("order signature of %s verified", b.Name)
	}
	now := time.Now()
	for _, k := range keys {
		if r.Bailiff(bailiff.Fingerprint(k.key)) == nil {
			continue
		}
		if err := o.Sign(r, k.key, now); err != nil {
			return fmt.Errorf("appliance: %s signing the order: %w", k.label, err)
		}
		say("order signed by %s", k.label)
	}
	return nil
}

// openQuorum opens the unlock of a job on roster r (the one the escrows to
// open are split under): the opened keys that are on r (the caller keeps
// and wipes them after the quorum's Close), and the share cards.
func openQuorum(r *bailiff.Roster, o *bailiff.QuorumOrder, keys []openedKey, cards [][]byte, say func(string, ...any)) (*bailiff.EscrowQuorum, error) {
	q, err := bailiff.NewEscrowQuorum(r, o)
	if err != nil {
		return nil, err
	}
	n := 0
	for _, k := range keys {
		if r.Bailiff(bailiff.Fingerprint(k.key)) == nil {
			continue // a new bailiff: holds no share yet
		}
		bk, err := q.AddOpenedKey(k.key)
		if err != nil {
			q.Close()
			return nil, fmt.Errorf("appliance: %s: %w", k.label, err)
		}
		n++
		say("key of %s opened for the job", bk.Name)
	}
	for i, c := range cards {
		if err := q.AddShareCard(bytes.Clone(c)); err != nil {
			q.Close()
			return nil, fmt.Errorf("appliance: share card %d: %w", i+1, err)
		}
	}
	if len(cards) > 0 {
		say("%d share card(s) taken", len(cards))
	}
	if n == 0 && len(cards) == 0 {
		q.Close()
		return nil, fmt.Errorf("appliance: no bailiff of the roster the escrows are split under unlocked: give --bailiff KEY:PASSFILE or share cards for %d of them", r.Threshold)
	}
	return q, nil
}

// reencapStep is a reencap record of a quorum job.
type reencapStep struct {
	record uint64
	order  string
	step   string
}

// reencapSteps lists the approve and done records of one kind, in record
// order.
func (a *Appliance) reencapSteps(kind string) ([]reencapStep, error) {
	es, err := a.cat.ByKind(catalog.KindReencap)
	if err != nil {
		return nil, err
	}
	var out []reencapStep
	for _, e := range es {
		if e.Meta.Attrs[attrReencapKind] == kind {
			out = append(out, reencapStep{record: e.Record, order: e.Meta.Attrs[attrReencap], step: e.Meta.Attrs[attrStep]})
		}
	}
	return out, nil
}

// lastApproval returns the newest approval of a job of this kind (nil if
// none) and whether a done record closed that job.
func (a *Appliance) lastApproval(kind string) (last *reencapStep, closed bool, err error) {
	steps, err := a.reencapSteps(kind)
	if err != nil {
		return nil, false, err
	}
	done := map[string]bool{}
	for i, s := range steps {
		switch s.step {
		case "approve":
			last = &steps[i]
		case "done":
			done[s.order] = true
		}
	}
	return last, last != nil && done[last.order], nil
}

// inFlight returns the order of the job of this kind that was approved and
// not closed, or nil.
func (a *Appliance) inFlight(kind string) (*bailiff.QuorumOrder, uint64, error) {
	last, closed, err := a.lastApproval(kind)
	if err != nil {
		return nil, 0, err
	}
	if last == nil || closed {
		return nil, 0, nil
	}
	b, err := a.readRecord(last.record)
	if err != nil {
		return nil, 0, fmt.Errorf("appliance: reading the %s order (record %d): %w", kind, last.record, err)
	}
	o, err := bailiff.ParseQuorumOrder(b)
	if err != nil {
		return nil, 0, fmt.Errorf("appliance: %s order (record %d): %w", kind, last.record, err)
	}
	if o.ID() != last.order || o.Kind != kind {
		return nil, 0, fmt.Errorf("appliance: record %d does not hold the %s order its meta names", last.record, kind)
	}
	return o, last.record, nil
}

// usedOrders returns the ids of the orders already approved on the drives,
// with their records.
func (a *Appliance) usedOrders() (map[string]uint64, error) {
	out := map[string]uint64{}
	for _, kind := range []string{bailiff.ReencapRosterChange, bailiff.ReencapEscrowRotation} {
		steps, err := a.reencapSteps(kind)
		if err != nil {
			return nil, err
		}
		for _, st := range steps {
			if st.step == "approve" {
				out[st.order] = st.record
			}
		}
	}
	return out, nil
}

// freshOrder drafts an order (draft(created)) whose id no earlier job used:
// two orders drafted the same second for the same work would be the same
// bytes, so the later one is dated a second after.
func (a *Appliance) freshOrder(draft func(created time.Time) (*bailiff.QuorumOrder, error)) (*bailiff.QuorumOrder, error) {
	used, err := a.usedOrders()
	if err != nil {
		return nil, err
	}
	at := time.Now()
	for {
		o, err := draft(at)
		if err != nil {
			return nil, err
		}
		if _, dup := used[o.ID()]; !dup {
			return o, nil
		}
		at = at.Add(time.Second)
	}
}

// unusedOrder refuses an order an earlier job already carried out: its
// objects are marked with its id, so it would find them done and change
// nothing.
func (a *Appliance) unusedOrder(o *bailiff.QuorumOrder) error {
	used, err := a.usedOrders()
	if err != nil {
		return err
	}
	if rec, dup := used[o.ID()]; dup {
		return fmt.Errorf("appliance: this %s order was already carried out (record %d); draft a new one", o.Kind, rec)
	}
	return nil
}

// stepRecord is a pending reencap record.
func stepRecord(o *bailiff.QuorumOrder, step string, body []byte) pending {
	return pending{storage.TypeReencap, catalog.Meta{Kind: catalog.KindReencap, Attrs: map[string]string{attrReencap: o.ID(), attrReencapKind: o.Kind, attrStep: step}}, bytes.NewReader(body)}
}

// doneRecord is the record that closes a job.
func doneRecord(o *bailiff.QuorumOrder, total int) pending {
	return stepRecord(o, "done", fmt.Appendf(nil, "coffre-reencap-done v1\norder %s\nkind %s\nobjects %d\n", o.ID(), o.Kind, total))
}

// closeJob appends the "done" record of a job (when its last objects were
// not committed with it).
func (a *Appliance) closeJob(ctx context.Context, o *bailiff.QuorumOrder, job *ReencapJob, id string) error {
	if _, err := a.commitBatch(ctx, []pending{doneRecord(o, job.Total)}); err != nil {
		return fmt.Errorf("appliance: closing the %s job: %w", o.Kind, err)
	}
	job.Status = "done"
	a.putReencapJob(id, job)
	return nil
}

// jobSaver returns a function that saves the job state, at most every
// jobSaveEvery unless forced: it is progress for `coffre reencap status`
// (each save is a synced catalog write), the drives say what is done.
func (a *Appliance) jobSaver(id string, j *ReencapJob) func(force bool) {
	var last time.Time // of the last progress save (a forced save does not delay the next one)
	return func(force bool) {
		switch {
		case force:
			a.putReencapJob(id, j)
		case time.Since(last) >= jobSaveEvery:
			a.putReencapJob(id, j)
			last = time.Now()
		}
	}
}

const jobSaveEvery = 250 * time.Millisecond

func (a *Appliance) putReencapJob(id string, j *ReencapJob) {
	b, _ := json.Marshal(j)
	if err := a.cat.PutJob(id, b); err != nil {
		a.Log.Warn("reencap: saving job state", "job", id, "err", err)
	}
}

// newJob makes the job state of an order, carrying over the start time of
// the same job's earlier runs.
func (a *Appliance) newJob(id string, o *bailiff.QuorumOrder, record uint64) *ReencapJob {
	j := &ReencapJob{Kind: o.Kind, Order: o.ID(), Record: record, Status: "running", Started: time.Now().UTC().Format(time.RFC3339)}
	if old, ok, _ := a.cat.Job(id); ok {
		var prev ReencapJob
		if json.Unmarshal(old, &prev) == nil && prev.Order == j.Order && prev.Started != "" {
			j.Started = prev.Started
		}
	}
	return j
}

// ReencapStatus returns the state of the quorum jobs (roster-change,
// escrow-rotation) that have run, by kind: the newest job of each kind, as
// the drives show it. The state saved in the catalog is a hint for what
// the drives do not carry (start time, bytes): a crash can come after an
// approval, a batch or a done record and before the save.
func (a *Appliance) ReencapStatus() (map[string]*ReencapJob, error) {
	out := map[string]*ReencapJob{}
	for _, c := range []struct{ kind, id string }{{bailiff.ReencapRosterChange, rosterJobID}, {bailiff.ReencapEscrowRotation, rotationJobID}} {
		last, closed, err := a.lastApproval(c.kind)
		if err != nil {
			return nil, err
		}
		if last == nil {
			continue
		}
		j := ReencapJob{Kind: c.kind, Order: last.order, Record: last.record}
		if b, ok, err := a.cat.Job(c.id); err != nil {
			return nil, err
		} else if ok {
			var saved ReencapJob
			if err := json.Unmarshal(b, &saved); err != nil {
				return nil, fmt.Errorf("appliance: job %s: %w", c.id, err)
			}
			if saved.Order == last.order {
				j = saved
			}
		}
		if closed && j.Status == "done" {
			out[c.kind] = &j
			continue
		}
		if j.Done, j.Total, err = a.reencapProgress(&j); err != nil {
			return nil, err
		}
		j.Status = "running"
		if closed {
			j.Status, j.Done = "done", j.Total
		}
		out[c.kind] = &j
	}
	return out, nil
}

// reencapProgress counts what a quorum job has done and has to do, as the
// catalog (caught up with the drives) shows it: live escrows re-split under
// the order out of all live escrows (the check escrow remade with the
// approval is not counted), or the live items of the users whose escrow the
// order rotated out of the items of all the order's users.
func (a *Appliance) reencapProgress(j *ReencapJob) (done, total int, err error) {
	live, err := a.liveEscrows()
	if err != nil {
		return 0, 0, err
	}
	if j.Kind != bailiff.ReencapEscrowRotation {
		for u, e := range live {
			if u == checkUser {
				continue
			}
			total++
			if e.Meta.Attrs[attrReencap] == j.Order {
				done++
			}
		}
		return done, total, nil
	}
	b, err := a.readRecord(j.Record)
	if err != nil {
		return 0, 0, fmt.Errorf("appliance: reading the escrow rotation order (record %d): %w", j.Record, err)
	}
	o, err := bailiff.ParseQuorumOrder(b)
	if err != nil {
		return 0, 0, fmt.Errorf("appliance: escrow rotation order (record %d): %w", j.Record, err)
	}
	for _, u := range o.Users {
		items, err := a.liveItems(u)
		if err != nil {
			return 0, 0, err
		}
		total += len(items)
		if e, ok := live[u]; ok && e.Meta.Attrs[attrReencap] == j.Order {
			done += len(items)
		}
	}
	return done, total, nil
}

// liveEscrows returns the live escrow records, by user.
func (a *Appliance) liveEscrows() (map[string]catalog.Entry, error) {
	all, err := a.cat.ByKind(catalog.KindEscrow)
	if err != nil {
		return nil, err
	}
	out := map[string]catalog.Entry{}
	for _, e := range all {
		if e.Live() {
			if o, dup := out[e.Meta.UserID]; dup {
				return nil, fmt.Errorf("appliance: user %s has two live escrows (records %d and %d): run `coffre catalog rebuild`, then `coffre audit`", e.Meta.UserID, o.Record, e.Record)
			}
			out[e.Meta.UserID] = e
		}
	}
	return out, nil
}

// escrowAt reads and parses the escrow bundle of record idx, as a stored
// bundle (bailiff.ParseStoredEscrow: no key to seal to, no signature
// checks, cheap enough for every escrow of the vault).
func (a *Appliance) escrowAt(idx uint64, user string) (*bailiff.Escrow, error) {
	b, err := a.readRecord(idx)
	if err != nil {
		return nil, fmt.Errorf("appliance: escrow of %s (record %d): %w", user, idx, err)
	}
	e, err := bailiff.ParseStoredEscrow(b)
	if err != nil {
		return nil, fmt.Errorf("appliance: escrow of %s (record %d): %w", user, idx, err)
	}
	if e.UserID != user {
		return nil, fmt.Errorf("appliance: record %d holds the escrow of %q, not of %q", idx, e.UserID, user)
	}
	return e, nil
}

// ShareMessages exports, for a bailiff who opens shares with their own
// tools, the share message addressed to them of each escrow a quorum job
// would open: users (all live escrows when empty) under the roster in
// force, or, while a roster change is in flight, those still under the old
// roster. It returns user → OpenPGP message.
func (a *Appliance) ShareMessages(fingerprint string, users []string) (map[string][]byte, error) {
	live, err := a.liveEscrows()
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, u := range users {
		want[u] = true
	}
	rc, _, err := a.inFlight(bailiff.ReencapRosterChange)
	if err != nil {
		return nil, err
	}
	r, err := a.Roster()
	if err == nil && rc != nil {
		r, _, err = a.rosterByDigest(rc.RosterDigest)
	}
	if err != nil {
		return nil, err
	}
	if b := r.Bailiff(fingerprint); b != nil && b.PQ() {
		return nil, fmt.Errorf("appliance: %s (%s) holds a post-quantum key: GnuPG cannot open share messages to it; bring the key to the appliance instead (--bailiff KEY.sec.asc:PASSFILE)", b.Name, fingerprint)
	}
	out := map[string][]byte{}
	for u, e := range live {
		if u == checkUser || (len(want) > 0 && !want[u]) {
			continue
		}
		esc, err := a.escrowAt(e.Record, u)
		if err != nil {
			return nil, err
		}
		if rc != nil && esc.RosterDigest != rc.RosterDigest {
			continue // already moved to the new roster
		}
		if m, _, ok := bailiff.ShareMessage(esc, fingerprint); ok {
			out[u] = m
		}
	}
	for u := range want {
		if _, ok := live[u]; !ok {
			return nil, fmt.Errorf("appliance: user %s has no escrow in this vault", u)
		}
	}
	return out, nil
}

// verifiedPolicy parses a crypto policy signed by the roster's quorum and
// verifies it, or returns the default policy for nil.
func (a *Appliance) verifiedPolicy(signed []byte) (*policy.Policy, error) {
	if signed == nil {
		return policy.Default(), nil
	}
	p, err := policy.Parse(signed)
	if err != nil {
		return nil, err
	}
	r, err := a.Roster()
	if err != nil {
		return nil, err
	}
	if err := p.Verify(r); err != nil {
		return nil, err
	}
	return p, nil
}

// ReencapPlanRotation plans an explicit recipient change for one user
// (kind 3, policy.PlanRotation) on top of what the policy asks for.
func (a *Appliance) ReencapPlanRotation(signed []byte, at time.Time, user string) (*policy.PlanResult, error) {
	p, err := a.verifiedPolicy(signed)
	if err != nil {
		return nil, err
	}
	live, err := a.liveEscrows()
	if err != nil {
		return nil, err
	}
	if _, ok := live[user]; !ok || strings.HasPrefix(user, bailiff.ReservedPrefix) {
		return nil, fmt.Errorf("appliance: user %s has nothing in this vault", user)
	}
	objs, err := a.reencapObjects()
	if err != nil {
		return nil, err
	}
	return a.withPendingJobs(policy.PlanRotation(p, objs, user, at))
}

// withPendingJobs adds to a plan the objects that quorum jobs in flight
// still have to do: escrows still under the old roster of a roster change
// (kind 2), escrows and items of the users an escrow rotation has not
// reached yet (kind 3). They pass the policy, so Plan alone does not list
// them.
func (a *Appliance) withPendingJobs(res *policy.PlanResult) (*policy.PlanResult, error) {
	if a.vault == nil {
		return res, nil
	}
	live, err := a.liveEscrows()
	if err != nil {
		return nil, err
	}
	add := func(k policy.WorkKind, reason string, rec uint64, user string, size int64) {
		g := res.Group(k)
		if g == nil {
			res.Groups = append(res.Groups, policy.Group{Kind: k, Quorum: k.Quorum(), Failing: map[string]int{}, Replacement: map[string]string{}})
			slices.SortFunc(res.Groups, func(x, y policy.Group) int { return int(x.Kind) - int(y.Kind) })
			g = res.Group(k)
		}
		if i, found := slices.BinarySearch(g.Records, rec); !found {
			g.Records = slices.Insert(g.Records, i, rec)
			g.Objects++
			g.Bytes += size
			g.Failing[reason]++
		}
	}
	users := map[policy.WorkKind]map[string]bool{policy.RosterChange: {}, policy.EscrowRotation: {}}
	if o, rec, err := a.inFlight(bailiff.ReencapRosterChange); err != nil {
		return nil, err
	} else if o != nil {
		reason := fmt.Sprintf("in flight: roster change of record %d", rec)
		for u, e := range live {
			esc, err := a.escrowAt(e.Record, u)
			if err != nil {
				return nil, err
			}
			if esc.RosterDigest == o.RosterDigest {
				add(policy.RosterChange, reason, e.Record, u, int64(len(esc.Marshal())))
				users[policy.RosterChange][u] = true
			}
		}
	}
	if o, rec, err := a.inFlight(bailiff.ReencapEscrowRotation); err != nil {
		return nil, err
	} else if o != nil {
		reason := fmt.Sprintf("in flight: escrow rotation of record %d", rec)
		for _, u := range o.Users {
			e, ok := live[u]
			if !ok || e.Meta.Attrs[attrReencap] == o.ID() {
				continue
			}
			add(policy.EscrowRotation, reason, e.Record, u, 0)
			items, err := a.liveItems(u)
			if err != nil {
				return nil, err
			}
			for _, it := range items {
				add(policy.EscrowRotation, reason, it.Record, u, it.Meta.Size)
			}
			users[policy.EscrowRotation][u] = true
		}
	}
	for k, us := range users {
		if g := res.Group(k); g != nil && len(us) > g.Users {
			g.Users = len(us)
		}
	}
	return res, nil
}

// withAttr returns a copy of attrs with k=v.
func withAttr(attrs map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(attrs)+1)
	for x, y := range attrs {
		out[x] = y
	}
	out[k] = v
	return out
}
