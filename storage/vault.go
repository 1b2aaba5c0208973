package storage

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"coffre/internal/crashpoint"
)

// Options configure an open vault.
type Options struct {
	// RecordKey returns the vault record key of an epoch (unwrapped by the
	// appliance keystore).
	RecordKey func(epoch uint32) ([]byte, error)
	// KeyEpoch is the epoch new records are written under.
	KeyEpoch uint32
	Signer   note.Signer   // signs checkpoints
	Verifier note.Verifier // verifies them (the audit key)
	Origin   string        // checkpoint origin line, e.g. "coffre.example/vault/<id>"
	// WriteQuorum is how many drives must hold an append durably before it
	// is acknowledged (DefaultWriteQuorum when 0).
	WriteQuorum int
	Logger      *slog.Logger

	open opener // tests inject faults here
}

// Record is one record to append.
type Record struct {
	Type RecordType
	Meta []byte    // small, encrypted, at most MaxMetaSize
	Body io.Reader // streamed and encrypted; nil is empty. If it returns an error nothing of the append is committed.
}

// Vault is an open set of replicas.
//
// Two locks: wmu serializes the writers (Append, AddDrive, Sync, Retire,
// Scrub, Close, and loading the record index) for their whole run; mu
// guards the vault's state for short moments. Every change of state is
// made holding both; a reader holds mu alone, so it does not wait for an
// Append while that one writes and syncs the drives (holding wmu alone).
// Order: wmu before mu.
type Vault struct {
	wmu     sync.Mutex
	mu      sync.Mutex
	o       Options
	open    opener
	log     *slog.Logger
	vaultID [16]byte
	keys    []WrappedKey
	drives  []*drive
	roster  [MaxSlots]*Member
	// The log: records base.. are in recs; those below base (Open reads
	// only the last batch) are known through the tree until loadIndex
	// reads their headers.
	base   uint64
	recs   []recInfo
	tree   *treeHashes
	end    int64
	ckpt   []byte
	closed bool

	// amu guards aeads alone, so that readers need not wait for an
	// Append (which holds mu while it writes and syncs).
	amu   sync.Mutex
	aeads map[uint32]cipher.AEAD
}

// Open opens the drives at paths as one vault: it reads every superblock,
// walks every log from the batch of the checkpoint its superblock names
// (truncating torn tails and unacknowledged batches), chooses the longest
// verified log, and catches up lagging drives from it. It reads O(last
// batch + unsynced tail) of each drive, not the whole log: records older
// than the last batch are verified by Audit and Scrub, and their headers
// are read on first use (see loadIndex).
// Drives that fail, disagree or belong nowhere are kept with a state and a
// reason (see Drives) rather than failing Open; Open fails when no drive can
// serve the vault or drives of different vaults are mixed.
func Open(paths []string, o Options) (*Vault, error) {
	if o.RecordKey == nil || o.Signer == nil || o.Verifier == nil {
		return nil, errors.New("storage: open: RecordKey, Signer and Verifier are required")
	}
	if err := checkOrigin(o.Origin); err != nil {
		return nil, err
	}
	if o.Signer.Name() != o.Verifier.Name() || o.Signer.KeyHash() != o.Verifier.KeyHash() {
		return nil, errors.New("storage: open: the checkpoint signer and verifier keys do not match")
	}
	if o.WriteQuorum == 0 {
		o.WriteQuorum = DefaultWriteQuorum
	}
	if o.WriteQuorum < 1 || o.WriteQuorum > MaxSlots {
		return nil, fmt.Errorf("storage: open: write quorum %d not in 1..%d", o.WriteQuorum, MaxSlots)
	}
	if len(paths) == 0 || len(paths) > 2*MaxSlots {
		return nil, fmt.Errorf("storage: open: %d drives given, want 1..%d", len(paths), 2*MaxSlots)
	}
	v := &Vault{o: o, open: o.open, log: o.Logger, aeads: map[uint32]cipher.AEAD{}}
	if v.open == nil {
		v.open = openDevice
	}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	if _, err := v.aead(o.KeyEpoch); err != nil {
		return nil, err
	}
	// Open the drives and read their superblocks in parallel (cold reads of
	// different devices).
	openErrs := make([]error, len(paths))
	var wg sync.WaitGroup
	for i, p := range paths {
		d := &drive{path: p}
		v.drives = append(v.drives, d)
		wg.Go(func() {
			if d.dev, openErrs[i] = v.open(p, true); openErrs[i] == nil {
				d.sb, d.sbErr = readSuperblock(d.dev)
			}
		})
	}
	wg.Wait()
	for i, d := range v.drives {
		if openErrs[i] != nil {
			d.dev = nil
			v.fail(d, openErrs[i])
			continue
		}
		dev := d.dev
		if d.sb == nil {
			v.fail(d, fmt.Errorf("no valid superblock (primary: %v; backup: %v)", d.sbErr[0], d.sbErr[1]))
			continue
		}
		if dev.ReadOnly() {
			v.fail(d, fmt.Errorf("%w (write-protected or losetup -r)", ErrReadOnly))
		}
	}
	var first *drive
	for _, d := range v.drives {
		if d.sb == nil {
			continue
		}
		if first == nil {
			first = d
			v.vaultID = d.sb.VaultID
		} else if d.sb.VaultID != v.vaultID {
			v.closeAll()
			return nil, fmt.Errorf("storage: open: drive %s belongs to vault %s but %s belongs to vault %s: give the drives of one vault",
				d.path, UUIDString(d.sb.VaultID), first.path, UUIDString(v.vaultID))
		}
	}
	if first == nil {
		v.closeAll()
		return nil, fmt.Errorf("storage: open: no usable drive among %v: %w", paths, v.driveErrs())
	}
	seen := map[[16]byte]*drive{}
	for _, d := range v.drives {
		if d.sb == nil {
			continue
		}
		if o, ok := seen[d.sb.UUID]; ok {
			v.quarantine(d, fmt.Errorf("same drive uuid as %s (given twice, or a clone)", o.path))
			continue
		}
		seen[d.sb.UUID] = d
	}
	if err := v.recover(); err != nil {
		v.closeAll()
		return nil, err
	}
	return v, nil
}

func (v *Vault) driveErrs() error {
	var errs []error
	for _, d := range v.drives {
		if d.reason != "" {
			errs = append(errs, fmt.Errorf("%s: %s", d.path, d.reason))
		}
	}
	return errors.Join(errs...)
}

func (v *Vault) closeAll() {
	for _, d := range v.drives {
		if d.dev != nil {
			d.dev.Close()
			d.dev = nil
		}
	}
}

func (v *Vault) fail(d *drive, err error) {
	d.state, d.reason = StateFailed, trimPrefix(err.Error())
	v.log.Warn("storage: drive failed", "uuid", UUIDString(d.uuid()), "slot", d.slot(), "path", d.path, "err", d.reason)
	if d.dev != nil {
		d.dev.Close()
		d.dev = nil
	}
}

func (v *Vault) quarantine(d *drive, err error) {
	d.state, d.reason = StateQuarantined, trimPrefix(err.Error())
	v.log.Warn("storage: drive quarantined", "uuid", UUIDString(d.uuid()), "slot", d.slot(), "path", d.path, "err", d.reason)
}

type driveScan struct {
	s   *logScan
	err error
}

// scanDrive walks d's log from the resume point its superblock names, or
// from record 0 when that does not check out.
func (v *Vault) scanDrive(d *drive) (*logScan, error) {
	o := scanOpts{verifier: v.o.Verifier, origin: v.o.Origin, trusted: d.sb.TreeSize}
	r := newBlockReader(d.dev, d.sb.DataEnd, 1<<20)
	rp, err := resumePoint(r, d.sb, o)
	if err != nil {
		v.log.Warn("storage: superblock does not match the log; walking it from the start", "uuid", UUIDString(d.uuid()), "slot", d.slot(), "path", d.path, "err", trimPrefix(err.Error()))
		rp = genesis()
	}
	return scanFrom(r, d.sb, rp, o)
}

// recover walks the logs and settles the vault state (see Open).
func (v *Vault) recover() error {
	results := make([]driveScan, len(v.drives))
	var wg sync.WaitGroup
	for i, d := range v.drives {
		if d.sb == nil || d.state != "" {
			continue
		}
		wg.Go(func() {
			s, err := v.scanDrive(d)
			results[i] = driveScan{s, err}
		})
	}
	wg.Wait()
	var auth *drive
	var authScan *logScan
	maxClaim, claimBy := uint64(0), ""
	for _, d := range v.drives {
		// A read-only drive still says how far the log went.
		if d.sb != nil && d.state == StateFailed && d.sb.TreeSize > maxClaim {
			maxClaim, claimBy = d.sb.TreeSize, d.path
		}
	}
	for i, d := range v.drives {
		if d.sb == nil || d.state != "" {
			continue
		}
		r := results[i]
		if r.err != nil {
			v.fail(d, r.err)
			continue
		}
		if r.s.stopErr != nil && r.s.stopIndex < d.sb.TreeSize {
			v.quarantine(d, fmt.Errorf("record %d: %w (run scrub)", r.s.stopIndex, r.s.stopErr))
			d.repairable = true
			if d.sb.TreeSize > maxClaim {
				maxClaim, claimBy = d.sb.TreeSize, d.path
			}
			continue
		}
		if auth == nil || r.s.cut > authScan.cut {
			auth, authScan = d, r.s
		}
	}
	if auth == nil {
		return fmt.Errorf("storage: open: no drive holds a verifiable log: %w", v.driveErrs())
	}
	if maxClaim > uint64(authScan.cut) {
		return fmt.Errorf("storage: open: drive %s held %d records but the best intact replica (%s) has %d: bring the other drives or restore that drive before writing",
			claimBy, maxClaim, auth.path, authScan.cut)
	}
	if authScan.cut > 0 {
		if _, err := OpenCheckpoint(authScan.lastCkpt, v.o.Verifier, v.o.Origin); err != nil {
			return fmt.Errorf("storage: open: drive %s: latest checkpoint: %w", auth.path, err)
		}
	}
	// Every other drive must hold a prefix of the authority's log.
	for i, d := range v.drives {
		if d.sb == nil || d.state != "" {
			continue
		}
		s := results[i].s
		if d != auth {
			ok, at, err := v.agrees(auth, &authScan, s)
			if err != nil {
				v.fail(d, err)
				continue
			}
			if !ok {
				v.quarantine(d, fmt.Errorf("record %d: disagrees with %s (run sync)", at, auth.path))
				d.repairable = true
				continue
			}
		}
		d.n, d.end = uint64(s.cut), s.end()
		if s.zeroStop && s.stopOff == d.end {
			d.zeroAt = d.end
		}
		d.state = StateSyncing
	}
	if err := v.install(authScan); err != nil {
		return fmt.Errorf("storage: open: %w", err)
	}
	// Roster: the authority's, plus present drives in empty slots.
	v.keys = auth.sb.Keys
	v.roster = auth.sb.Roster
	for _, d := range v.drives {
		if d.state != StateSyncing {
			continue
		}
		if err := v.admit(d); err != nil {
			v.quarantine(d, err)
		}
	}
	order := []*drive{auth}
	for _, d := range v.drives {
		if d != auth {
			order = append(order, d)
		}
	}
	for _, d := range order {
		if d.state != StateSyncing {
			continue
		}
		if err := v.catchUp(context.Background(), d, nil); err != nil {
			v.fail(d, err)
		}
	}
	return nil
}

// agrees reports whether the committed log s found on a drive is a prefix
// of the authority's (*as, found on auth): same leaf and offset at its last
// checkpoint record, whose leaf commits to everything before it. When that
// record lies before the authority's walk began, the authority is walked
// again from the drive's own starting point, and *as replaced with that
// longer walk. When they disagree it returns where, as far as it knows.
func (v *Vault) agrees(auth *drive, as **logScan, s *logScan) (bool, int64, error) {
	n := uint64(s.cut)
	if n == 0 {
		return true, 0, nil
	}
	if n > uint64((*as).cut) {
		return false, int64((*as).cut), nil
	}
	if n-1 < (*as).base {
		s2, err := scanFrom(newBlockReader(auth.dev, auth.sb.DataEnd, 1<<20), auth.sb, s.start, scanOpts{verifier: v.o.Verifier, origin: v.o.Origin, trusted: auth.sb.TreeSize})
		if err != nil {
			return false, -1, auth.errf(-1, err)
		}
		if s2.cut != (*as).cut || s2.rec(uint64(s2.cut-1)) != (*as).rec(uint64(s2.cut-1)) {
			// The authority's log does not go on from this drive's batch: they
			// parted before it.
			return false, int64(s.start.index), nil
		}
		s2.lastCkpt = (*as).lastCkpt
		*as = s2
	}
	a, b := (*as).rec(n-1), s.rec(n-1)
	if a != b {
		return false, int64(n - 1), nil
	}
	return true, 0, nil
}

// install makes the committed part of s the vault's log.
func (v *Vault) install(s *logScan) error {
	v.base = s.base
	v.recs = append([]recInfo(nil), s.committed()...)
	v.end = s.end()
	v.ckpt = s.lastCkpt
	v.tree = newTreeHashes(&s.start.fr)
	for i, r := range v.recs {
		if err := v.tree.add(v.base+uint64(i), r.leaf); err != nil {
			return fmt.Errorf("building tree: %w", err)
		}
	}
	return nil
}

func (v *Vault) size() uint64 { return v.base + uint64(len(v.recs)) }

// rec returns record i < size, loading the index when i is below base
// (the caller then holds wmu as well as mu: see indexed).
func (v *Vault) rec(i uint64) (recInfo, error) {
	if i < v.base {
		if err := v.loadIndex(); err != nil {
			return recInfo{}, err
		}
	}
	return v.recs[i-v.base], nil
}

// lockWrite takes both locks, as every change of the vault's state
// outside Append does, and returns what releases them.
func (v *Vault) lockWrite() (unlock func()) {
	v.wmu.Lock()
	v.mu.Lock()
	return func() {
		v.mu.Unlock()
		v.wmu.Unlock()
	}
}

// indexed loads the record index if it is not yet (a writer's work: it
// may fail or quarantine drives). The caller holds neither lock.
func (v *Vault) indexed() error {
	defer v.lockWrite()()
	if v.closed {
		return ErrClosed
	}
	return v.loadIndex()
}

// loadIndex reads the headers of the records below base (Open did not) from
// an active drive and checks them against the tree: their leaves must give
// the subtree roots the tree holds for them, and they must end where record
// base begins. A drive whose walk fails there is quarantined (Scrub repairs
// it) and the next one is tried. It costs one header read per record, once.
func (v *Vault) loadIndex() error {
	if v.base == 0 {
		return nil
	}
	want, err := v.tree.frontierAt(v.base)
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range v.active() {
		s, err := scanLog(d.dev, d.sb, scanOpts{trusted: v.base, limit: v.base})
		if err != nil {
			v.fail(d, err)
			errs = append(errs, d.errf(-1, err))
			continue
		}
		if s.stopErr != nil || uint64(len(s.recs)) != v.base || uint64(s.cut) != v.base {
			err := s.stopErr
			if err == nil {
				err = fmt.Errorf("storage: the log ends at record %d, before record %d: %w", len(s.recs), v.base, ErrCorrupt)
			}
			v.quarantine(d, fmt.Errorf("record %d: %w (run scrub)", s.stopIndex, err))
			d.repairable = true
			errs = append(errs, d.errf(int64(s.stopIndex), err))
			continue
		}
		var fr frontier
		for _, r := range s.recs {
			fr.add(r.leaf)
		}
		last := s.recs[len(s.recs)-1]
		if !fr.equal(&want) || last.off+last.len != v.recs[0].off {
			err := fmt.Errorf("storage: records 0..%d do not match the signed tree: %w", v.base-1, ErrCorrupt)
			v.quarantine(d, fmt.Errorf("%w (run scrub)", err))
			d.repairable = true
			errs = append(errs, d.errf(-1, err))
			continue
		}
		t := newTreeHashes(&frontier{})
		for i, r := range s.recs {
			if err := t.add(uint64(i), r.leaf); err != nil {
				return err
			}
		}
		t.hashes = append(t.hashes, v.tree.hashes...)
		v.tree = t
		v.recs = append(s.recs, v.recs...)
		v.base = 0
		return nil
	}
	if len(errs) == 0 {
		return fmt.Errorf("storage: reading the record index: no active drive")
	}
	return fmt.Errorf("storage: reading the record index: %w", errors.Join(errs...))
}

// admit places d in the roster, or says why it cannot be.
func (v *Vault) admit(d *drive) error {
	if m := d.sb.Roster[d.sb.Slot-1]; m != nil && m.UUID == d.sb.UUID && m.Retired {
		d.state, d.reason = StateRetired, "retired from this vault"
		if d.dev != nil {
			d.dev.Close()
			d.dev = nil
		}
		return nil
	}
	for _, m := range v.roster {
		if m != nil && m.UUID == d.sb.UUID {
			if m.Retired {
				d.state, d.reason = StateRetired, "retired from this vault"
				if d.dev != nil {
					d.dev.Close()
					d.dev = nil
				}
			}
			return nil
		}
	}
	if m := v.roster[d.sb.Slot-1]; m != nil && !m.Retired {
		return fmt.Errorf("slot %d belongs to drive %s: retire it first or format this drive for another slot", d.sb.Slot, UUIDString(m.UUID))
	}
	v.roster[d.sb.Slot-1] = &Member{UUID: d.sb.UUID}
	return nil
}

func (v *Vault) aead(epoch uint32) (cipher.AEAD, error) {
	v.amu.Lock()
	defer v.amu.Unlock()
	if a, ok := v.aeads[epoch]; ok {
		return a, nil
	}
	k, err := v.o.RecordKey(epoch)
	if err != nil {
		return nil, fmt.Errorf("storage: record key of epoch %d: %w", epoch, err)
	}
	a, err := newAEAD(k)
	if err != nil {
		return nil, err
	}
	v.aeads[epoch] = a
	return a, nil
}

func (v *Vault) active() []*drive {
	var out []*drive
	for _, d := range v.drives {
		if d.state == StateActive && d.dev != nil {
			out = append(out, d)
		}
	}
	return out
}

// Append writes recs and a checkpoint to every active drive and returns the
// record indexes once the batch is durable (fdatasync'd) on at least the
// write quorum. A drive that fails is marked failed and the vault carries on
// while the quorum holds; below it Append returns ErrNoQuorum and nothing of
// the batch is acknowledged.
func (v *Vault) Append(ctx context.Context, recs ...Record) ([]uint64, error) {
	var idx []uint64
	next := func() ([]Record, error) {
		if idx != nil {
			return nil, io.EOF
		}
		idx = []uint64{}
		return recs, nil
	}
	if err := v.AppendEach(ctx, next, func(i []uint64) error { idx = i; return nil }); err != nil {
		return nil, err
	}
	return idx, nil
}

// AppendEach appends a run of batches, each as Append appends one: next
// gives the records of the next batch (io.EOF when there are no more) and
// done gets each batch's record indexes, in order, once that batch is
// durable on the write quorum. Each batch is written to the drives while
// the one before it is synced and published, so the drives do not idle
// through every fdatasync (a long rekey writes ~1.2× faster).
//
// A batch chains to the one before it (its first record's Prev, its
// checkpoint's tree): when a batch fails, the one written after it fails
// with it and nothing of either is acknowledged. An error from next or
// done ends the run the same way once the batch in flight is settled.
// Every batch given to done is durable. AppendEach holds the writers'
// lock for its whole run: next and done must not call the vault's
// writers, nor wait for a goroutine that does (a first read of a record
// below those Open indexed is one: it loads the index).
func (v *Vault) AppendEach(ctx context.Context, next func() ([]Record, error), done func(idx []uint64) error) error {
	v.wmu.Lock()
	defer v.wmu.Unlock()
	// Holding wmu, this goroutine and the batch it has in flight are the
	// only ones to change the vault: the flight publishes under mu, and
	// this goroutine reads what the flight changes (drive states, devices,
	// superblocks) under mu.
	if v.closed {
		return ErrClosed
	}
	v.mu.Lock()
	at := tip{n: v.size(), end: v.end}
	var err error
	if at.n > 0 {
		var last recInfo
		last, err = v.rec(at.n - 1)
		at.leaf = last.leaf
	}
	v.mu.Unlock()
	if err != nil {
		return err
	}
	var flight *staged // written, being made durable by durable
	var landed chan error
	// settle waits for the batch in flight, and hands it to done or
	// drops it (and s, written after it, if any).
	settle := func(s *staged) error {
		var err error
		if flight != nil {
			f := flight
			flight = nil
			if err = <-landed; err != nil {
				if s != nil {
					v.drop(s)
				}
				v.drop(f)
				return err
			}
			f.w.release()
			err = done(f.idx)
		}
		if err != nil && s != nil {
			v.drop(s)
		}
		return err
	}
	for {
		recs, err := next()
		if err != nil {
			if serr := settle(nil); serr != nil {
				return serr
			}
			if err == io.EOF {
				return nil
			}
			return err
		}
		s, err := v.stage(ctx, recs, at)
		if serr := settle(s); serr != nil {
			return serr // s is dropped
		}
		if err != nil {
			if s != nil {
				v.drop(s)
			}
			return err
		}
		// A drive that failed with the batch before fails this one too:
		// failing closed its device, and every batch writes its last
		// buffer (its checkpoint) when it commits.
		flight, landed, at = s, make(chan error, 1), s.next
		go func() { landed <- v.durable(s) }()
	}
}

// tip is where a batch goes: its first record index, its offset, and the
// leaf hash of the record before it.
type tip struct {
	n    uint64
	end  int64
	leaf tlog.Hash
}

// staged is a batch written to the drives (not yet durable).
type staged struct {
	w    *batchWriter
	at   tip // where it begins
	next tip // where the batch after it begins
	idx  []uint64
	recs []recInfo
	ckpt []byte
}

func checkRecords(recs []Record) error {
	if len(recs) == 0 || len(recs) > MaxBatch {
		return fmt.Errorf("storage: append: %d records, want 1..%d", len(recs), MaxBatch)
	}
	for i, r := range recs {
		if r.Type == 0 || r.Type == TypeCheckpoint {
			return fmt.Errorf("storage: append: record %d: type %v is not for callers", i, r.Type)
		}
		if len(r.Meta) > MaxMetaSize {
			return fmt.Errorf("storage: append: record %d: meta of %d bytes exceeds %d", i, len(r.Meta), MaxMetaSize)
		}
	}
	return nil
}

// stage writes recs and their checkpoint at at. The caller holds wmu. On
// failure, a batch it returns has writes in flight: the caller drops it.
func (v *Vault) stage(ctx context.Context, recs []Record, at tip) (*staged, error) {
	if err := checkRecords(recs); err != nil {
		return nil, err
	}
	aead, err := v.aead(v.o.KeyEpoch)
	if err != nil {
		return nil, err
	}
	// The batch's resume point, which its checkpoint record carries.
	fr0, err := v.tree.frontierAt(at.n)
	if err != nil {
		return nil, err
	}
	rp := resume{index: at.n, off: at.end, fr: fr0}
	v.mu.Lock()
	act := v.active()
	var w *batchWriter
	if len(act) >= v.o.WriteQuorum {
		w = newBatchWriter(act, at.end, v.o.WriteQuorum)
	}
	v.mu.Unlock()
	if w == nil {
		return nil, fmt.Errorf("%w: %d of %d needed", ErrNoQuorum, len(act), v.o.WriteQuorum)
	}
	s := &staged{w: w, at: at, idx: make([]uint64, len(recs))}
	prev := at.leaf
	// The tree takes the batch's leaves as they come (readers never look
	// past size, which moves only when the batch is durable).
	add := func(h *Header) error {
		leaf := h.leafHash()
		v.mu.Lock()
		err := v.tree.add(h.Index, leaf)
		v.mu.Unlock()
		if err != nil {
			return err
		}
		s.recs = append(s.recs, recInfo{off: h.Offset, len: h.RecordLen(), leaf: leaf, typ: h.Type, epoch: h.KeyEpoch})
		prev = leaf
		return nil
	}
	for i, r := range recs {
		h := &Header{Type: r.Type, Index: at.n + uint64(i), KeyEpoch: v.o.KeyEpoch, MetaLen: uint32(len(r.Meta)), Prev: prev}
		if _, err := rand.Read(h.Nonce[:]); err != nil {
			return s, err
		}
		body := r.Body
		if body == nil {
			body = bytes.NewReader(nil)
		}
		if err := writeEncrypted(ctx, w, h, aead, v.vaultID, r.Meta, body); err != nil {
			return s, fmt.Errorf("storage: append: record %d: %w", i, err)
		}
		if err := add(h); err != nil {
			return s, err
		}
		s.idx[i] = h.Index
	}
	size := at.n + uint64(len(recs))
	root, err := tlog.TreeHash(int64(size), v.tree)
	if err != nil {
		return s, err
	}
	msg, err := signCheckpoint(Checkpoint{Origin: v.o.Origin, Size: size, Hash: root}, v.o.Signer)
	if err != nil {
		return s, err
	}
	ch := &Header{Type: TypeCheckpoint, Flags: FlagClear, Index: size, Prev: prev}
	if err := writeClear(w, ch, rp.encode(), msg); err != nil {
		return s, err
	}
	if err := add(ch); err != nil {
		return s, err
	}
	s.ckpt = msg
	s.next = tip{n: size + 1, end: w.pos(), leaf: prev}
	return s, nil
}

// durable syncs a staged batch and, once it is on the write quorum,
// publishes it and writes the superblocks that name it. It changes
// nothing when the batch fails.
func (v *Vault) durable(s *staged) error {
	w := s.w
	w.commit()
	if w.live() < v.o.WriteQuorum {
		return fmt.Errorf("%w: %d of %d drives hold the batch: %w", ErrNoQuorum, w.live(), v.o.WriteQuorum, w.errs())
	}
	crashpoint.Hit("storage.append")
	// Durable on the quorum: publish, then acknowledge.
	v.mu.Lock()
	v.recs = append(v.recs, s.recs...)
	v.end = s.next.end
	v.ckpt = s.ckpt
	v.markFailed(w)
	var held []*drive
	for _, t := range w.ts {
		if t.failed() == nil && t.d.state == StateActive {
			t.d.n, t.d.end = v.size(), v.end
			held = append(held, t.d)
		}
	}
	v.mu.Unlock()
	sbs := v.putSuperblocks(held)
	v.mu.Lock()
	v.installSuperblocks(held, sbs)
	v.mu.Unlock()
	return nil
}

// drop abandons a batch that did not become durable: it waits for its
// writes, takes its leaves out of the tree and fails the drives that
// failed it. Batches are dropped newest first.
func (v *Vault) drop(s *staged) {
	s.w.wait()
	v.mu.Lock()
	v.tree.truncate(s.at.n)
	v.markFailed(s.w)
	v.mu.Unlock()
	s.w.release()
}

func (v *Vault) markFailed(w *batchWriter) {
	for _, t := range w.ts {
		if err := t.failed(); err != nil && t.d.state == StateActive {
			v.fail(t.d, err)
		}
	}
}

// writeSuperblocks records the vault state on each drive (a hint for the
// next open and for auditors; the log is the truth). The caller holds wmu
// and mu.
func (v *Vault) writeSuperblocks(ds []*drive) {
	v.installSuperblocks(ds, v.putSuperblocks(ds))
}

// putSuperblocks writes and syncs the next superblock of each drive, in
// parallel, and returns them (or the error of each drive). The caller
// holds wmu (the state it writes changes only under wmu), and need not
// hold mu: readers go on meanwhile.
func (v *Vault) putSuperblocks(ds []*drive) []sbResult {
	var wg sync.WaitGroup
	out := make([]sbResult, len(ds))
	for i, d := range ds {
		wg.Go(func() { out[i].sb, out[i].err = d.putSuperblock(v.sbUpdate(d)) })
	}
	wg.Wait()
	return out
}

type sbResult struct {
	sb  *superblock
	err error
}

// installSuperblocks makes the written superblocks current and fails the
// drives that could not take theirs. The caller holds wmu and mu.
func (v *Vault) installSuperblocks(ds []*drive, rs []sbResult) {
	for i, d := range ds {
		if rs[i].err != nil {
			v.fail(d, rs[i].err)
		} else {
			d.sb = rs[i].sb
		}
	}
}

// writeSuperblock writes d's superblock; the caller holds wmu and mu.
func (v *Vault) writeSuperblock(d *drive) error {
	return d.writeSuperblock(v.sbUpdate(d))
}

func (v *Vault) sbUpdate(d *drive) func(s *superblock) {
	return func(s *superblock) {
		s.TreeSize, s.LogEnd, s.Checkpoint = d.n, d.end, v.ckpt
		s.Roster = v.roster
		s.Keys = v.keys
	}
}

func readChunk(r io.Reader, p []byte) (int, error) {
	n, err := io.ReadFull(r, p)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		err = nil
	}
	return n, err
}

// writeEncrypted streams meta||body through STREAM into w and completes h.
// Each chunk is sealed in place in w's ring buffer and hashed from there
// (see batchWriter); reading the next plaintext chunk ahead tells whether
// the current one is the last.
func writeEncrypted(ctx context.Context, w *batchWriter, h *Header, aead cipher.AEAD, vault [16]byte, meta []byte, body io.Reader) error {
	if err := w.begin(h); err != nil {
		return err
	}
	aad := h.aad(vault)
	src := io.MultiReader(bytes.NewReader(meta), body)
	cur, nxt, scratch := w.chunkBufs()
	n1, err := readChunk(src, cur)
	if err != nil {
		return err
	}
	var nonce [chacha20poly1305.NonceSizeX]byte
	copy(nonce[:], h.Nonce[:])
	var total, i uint64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n2, err := readChunk(src, nxt)
		if err != nil {
			return err
		}
		last := n2 == 0
		if i == 0 {
			w.hashPayload(last)
		}
		setChunkCounter(&nonce, i, last)
		dst, err := w.room(n1 + 16)
		if err != nil {
			return err
		}
		if dst != nil {
			aead.Seal(dst[:0], nonce[:], cur[:n1], aad)
			cleanVector()
			w.advance(len(dst))
		} else {
			ct := aead.Seal(scratch[:0], nonce[:], cur[:n1], aad)
			cleanVector()
			if err := w.write(ct); err != nil {
				return err
			}
		}
		total += uint64(n1)
		i++
		if total > MaxBodySize {
			return fmt.Errorf("body exceeds %d bytes", uint64(MaxBodySize))
		}
		if last {
			break
		}
		cur, nxt, n1 = nxt, cur, n2
	}
	h.BodyLen = total - uint64(len(meta))
	h.PayloadLen = total + 16*i
	h.PayloadSum = w.payloadSum()
	return w.finish(h)
}

func writeClear(w *batchWriter, h *Header, meta, body []byte) error {
	if err := w.begin(h); err != nil {
		return err
	}
	h.MetaLen, h.BodyLen, h.PayloadLen = uint32(len(meta)), uint64(len(body)), uint64(len(meta)+len(body))
	sum := sha256.New()
	sum.Write(meta)
	sum.Write(body)
	sum.Sum(h.PayloadSum[:0])
	if err := w.write(meta); err != nil {
		return err
	}
	if err := w.write(body); err != nil {
		return err
	}
	return w.finish(h)
}

// Size is the number of records in the log (checkpoint records included).
func (v *Vault) Size() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.size()
}

// Checkpoint returns the latest signed checkpoint note (nil before the
// first append). It covers every record before the last checkpoint record.
func (v *Vault) Checkpoint() []byte {
	v.mu.Lock()
	defer v.mu.Unlock()
	return bytes.Clone(v.ckpt)
}

// VaultID returns the vault id.
func (v *Vault) VaultID() [16]byte { return v.vaultID }

// InclusionProof proves record index is in the tree of treeSize records.
// Proving a record older than the last batch at Open loads the record
// index first (see loadIndex).
func (v *Vault) InclusionProof(index, treeSize uint64) (tlog.RecordProof, error) {
	prove := func() (tlog.RecordProof, error) {
		v.mu.Lock()
		defer v.mu.Unlock()
		if treeSize > v.size() || index >= treeSize {
			return nil, fmt.Errorf("storage: inclusion proof of record %d in a tree of %d: %w", index, treeSize, ErrNotFound)
		}
		if index < v.base {
			return nil, errNotIndexed
		}
		return tlog.ProveRecord(int64(treeSize), int64(index), v.tree)
	}
	p, err := prove()
	if errors.Is(err, errNotIndexed) {
		if err := v.indexed(); err != nil {
			return nil, err
		}
		p, err = prove()
	}
	return p, err
}

// LeafHash returns the RFC 6962 leaf hash of record index.
func (v *Vault) LeafHash(index uint64) (tlog.Hash, error) {
	ri, err := v.recInfo(index)
	return ri.leaf, err
}

// recInfo returns record index's place in the log, loading the record
// index first when index is below base.
func (v *Vault) recInfo(index uint64) (recInfo, error) {
	ri, _, err := v.sources(index)
	return ri, err
}

// Close closes every drive (after an Append in flight).
func (v *Vault) Close() error {
	defer v.lockWrite()()
	if v.closed {
		return nil
	}
	v.closed = true
	v.closeAll()
	return nil
}
