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
type Vault struct {
	mu      sync.Mutex
	o       Options
	open    opener
	log     *slog.Logger
	vaultID [16]byte
	keys    []WrappedKey
	drives  []*drive
	roster  [MaxSlots]*Member
	hashes  []tlog.Hash
	recs    []recInfo
	end     int64
	ckpt    []byte
	aeads   map[uint32]cipher.AEAD
	closed  bool
}

// Open opens the drives at paths as one vault: it reads every superblock,
// walks every log (truncating torn tails and unacknowledged batches),
// chooses the longest verified log, and catches up lagging drives from it.
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
	for _, p := range paths {
		d := &drive{path: p}
		v.drives = append(v.drives, d)
		dev, err := v.open(p, true)
		if err != nil {
			v.fail(d, err)
			continue
		}
		d.dev = dev
		d.sb, d.sbErr = readSuperblock(dev)
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

// recover walks the logs and settles the vault state (see Open).
func (v *Vault) recover() error {
	type res struct {
		s   *logScan
		err error
	}
	results := make([]res, len(v.drives))
	var wg sync.WaitGroup
	for i, d := range v.drives {
		if d.sb == nil || d.state != "" {
			continue
		}
		wg.Go(func() {
			s, err := scanLog(d.dev, d.sb, scanOpts{verifier: v.o.Verifier, origin: v.o.Origin, trusted: d.sb.TreeSize})
			results[i] = res{s, err}
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
	v.recs = append([]recInfo(nil), authScan.recs[:authScan.cut]...)
	v.end = authScan.end()
	v.ckpt = authScan.lastCkpt
	v.keys = auth.sb.Keys
	v.roster = auth.sb.Roster
	for i, r := range v.recs {
		hs, err := tlog.StoredHashesForRecordHash(int64(i), r.leaf, v.hashReader())
		if err != nil {
			return fmt.Errorf("storage: open: building tree: %w", err)
		}
		v.hashes = append(v.hashes, hs...)
	}
	for i, d := range v.drives {
		if d.sb == nil || d.state != "" {
			continue
		}
		s := results[i].s
		n := s.cut
		if n > len(v.recs) {
			n = len(v.recs)
		}
		diverged := -1
		for j := 0; j < n; j++ {
			if s.recs[j].leaf != v.recs[j].leaf {
				diverged = j
				break
			}
		}
		if diverged >= 0 || s.cut > len(v.recs) {
			v.quarantine(d, fmt.Errorf("record %d: disagrees with %s (run sync)", diverged, auth.path))
			d.repairable = true
			continue
		}
		d.n, d.end = uint64(s.cut), s.end()
		d.state = StateSyncing
	}
	// Roster: the authority's, plus present drives in empty slots.
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

func (v *Vault) hashReader() tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			if x < 0 || x >= int64(len(v.hashes)) {
				return nil, fmt.Errorf("storage: tree hash %d not stored", x)
			}
			out[i] = v.hashes[x]
		}
		return out, nil
	})
}

func (v *Vault) aead(epoch uint32) (cipher.AEAD, error) {
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
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil, ErrClosed
	}
	if len(recs) == 0 || len(recs) > MaxBatch {
		return nil, fmt.Errorf("storage: append: %d records, want 1..%d", len(recs), MaxBatch)
	}
	for i, r := range recs {
		if r.Type == 0 || r.Type == TypeCheckpoint {
			return nil, fmt.Errorf("storage: append: record %d: type %v is not for callers", i, r.Type)
		}
		if len(r.Meta) > MaxMetaSize {
			return nil, fmt.Errorf("storage: append: record %d: meta of %d bytes exceeds %d", i, len(r.Meta), MaxMetaSize)
		}
	}
	act := v.active()
	if len(act) < v.o.WriteQuorum {
		return nil, fmt.Errorf("%w: %d of %d needed", ErrNoQuorum, len(act), v.o.WriteQuorum)
	}
	aead, err := v.aead(v.o.KeyEpoch)
	if err != nil {
		return nil, err
	}
	w := newBatchWriter(act, v.end, v.o.WriteQuorum)
	defer w.release()
	oldHashes := len(v.hashes)
	n0 := uint64(len(v.recs))
	var newRecs []recInfo
	prev := tlog.Hash{}
	if n0 > 0 {
		prev = v.recs[n0-1].leaf
	}
	abort := func(err error) ([]uint64, error) {
		w.wait()
		v.hashes = v.hashes[:oldHashes]
		v.markFailed(w)
		return nil, err
	}
	add := func(h *Header) error {
		leaf := h.leafHash()
		hs, err := tlog.StoredHashesForRecordHash(int64(h.Index), leaf, v.hashReader())
		if err != nil {
			return err
		}
		v.hashes = append(v.hashes, hs...)
		newRecs = append(newRecs, recInfo{off: h.Offset, len: h.RecordLen(), leaf: leaf, typ: h.Type})
		prev = leaf
		return nil
	}
	idx := make([]uint64, len(recs))
	for i, r := range recs {
		h := &Header{Type: r.Type, Index: n0 + uint64(i), KeyEpoch: v.o.KeyEpoch, MetaLen: uint32(len(r.Meta)), Prev: prev}
		if _, err := rand.Read(h.Nonce[:]); err != nil {
			return abort(err)
		}
		body := r.Body
		if body == nil {
			body = bytes.NewReader(nil)
		}
		if err := writeEncrypted(ctx, w, h, aead, v.vaultID, r.Meta, body); err != nil {
			return abort(fmt.Errorf("storage: append: record %d: %w", i, err))
		}
		if err := add(h); err != nil {
			return abort(err)
		}
		idx[i] = h.Index
	}
	size := n0 + uint64(len(recs))
	root, err := tlog.TreeHash(int64(size), v.hashReader())
	if err != nil {
		return abort(err)
	}
	msg, err := signCheckpoint(Checkpoint{Origin: v.o.Origin, Size: size, Hash: root}, v.o.Signer)
	if err != nil {
		return abort(err)
	}
	ch := &Header{Type: TypeCheckpoint, Flags: FlagClear, Index: size, Prev: prev}
	if err := writeClear(w, ch, msg); err != nil {
		return abort(err)
	}
	if err := add(ch); err != nil {
		return abort(err)
	}
	w.commit()
	if w.live() < v.o.WriteQuorum {
		return abort(fmt.Errorf("%w: %d of %d drives hold the batch: %w", ErrNoQuorum, w.live(), v.o.WriteQuorum, w.errs()))
	}
	// Durable on the quorum: acknowledge.
	v.recs = append(v.recs, newRecs...)
	v.end = w.pos()
	v.ckpt = msg
	v.markFailed(w)
	for _, t := range w.ts {
		if t.failed() == nil {
			t.d.n, t.d.end = uint64(len(v.recs)), v.end
		}
	}
	v.writeSuperblocks(w.liveDrives())
	return idx, nil
}

func (v *Vault) markFailed(w *batchWriter) {
	for _, t := range w.ts {
		if err := t.failed(); err != nil && t.d.state == StateActive {
			v.fail(t.d, err)
		}
	}
}

// writeSuperblocks records the vault state on each drive (a hint for the
// next open and for auditors; the log is the truth).
func (v *Vault) writeSuperblocks(ds []*drive) {
	var wg sync.WaitGroup
	errs := make([]error, len(ds))
	for i, d := range ds {
		wg.Go(func() { errs[i] = v.writeSuperblock(d) })
	}
	wg.Wait()
	for i, d := range ds {
		if errs[i] != nil {
			v.fail(d, errs[i])
		}
	}
}

func (v *Vault) writeSuperblock(d *drive) error {
	return d.writeSuperblock(func(s *superblock) {
		s.TreeSize, s.LogEnd, s.Checkpoint = d.n, d.end, v.ckpt
		s.Roster = v.roster
		s.Keys = v.keys
	})
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

func writeClear(w *batchWriter, h *Header, body []byte) error {
	if err := w.begin(h); err != nil {
		return err
	}
	h.BodyLen, h.PayloadLen = uint64(len(body)), uint64(len(body))
	h.PayloadSum = sha256.Sum256(body)
	if err := w.write(body); err != nil {
		return err
	}
	return w.finish(h)
}

// Size is the number of records in the log (checkpoint records included).
func (v *Vault) Size() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return uint64(len(v.recs))
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
func (v *Vault) InclusionProof(index, treeSize uint64) (tlog.RecordProof, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if treeSize > uint64(len(v.recs)) || index >= treeSize {
		return nil, fmt.Errorf("storage: inclusion proof of record %d in a tree of %d: %w", index, treeSize, ErrNotFound)
	}
	return tlog.ProveRecord(int64(treeSize), int64(index), v.hashReader())
}

// LeafHash returns the RFC 6962 leaf hash of record index.
func (v *Vault) LeafHash(index uint64) (tlog.Hash, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if index >= uint64(len(v.recs)) {
		return tlog.Hash{}, ErrNotFound
	}
	return v.recs[index].leaf, nil
}

// Close closes every drive.
func (v *Vault) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil
	}
	v.closed = true
	v.closeAll()
	return nil
}
