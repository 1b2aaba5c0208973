package storage

import (
	"bytes"
	"context"
	"fmt"
	"time"
)

// DriveStatus is one line of `coffre drive list`.
type DriveStatus struct {
	UUID    [16]byte   `json:"-"`
	ID      string     `json:"uuid"`
	Slot    int        `json:"slot"`
	Path    string     `json:"path,omitempty"`
	State   DriveState `json:"state"`
	Reason  string     `json:"reason,omitempty"`
	Size    int64      `json:"size"`
	Used    int64      `json:"used"`
	Records uint64     `json:"records"`
	// LastCheckpoint is the signed checkpoint in the drive's superblock.
	LastCheckpoint []byte `json:"last_checkpoint,omitempty"`
	Lag            uint64 `json:"lag"` // records behind the vault
}

// Drives lists the present drives and the roster members that are not
// present (state missing).
func (v *Vault) Drives() []DriveStatus {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []DriveStatus
	present := map[[16]byte]bool{}
	n := v.size()
	for _, d := range v.drives {
		s := DriveStatus{Path: d.path, State: d.state, Reason: d.reason}
		if d.sb != nil {
			s.UUID, s.Slot, s.Size = d.sb.UUID, d.sb.Slot, d.sb.Size
			s.LastCheckpoint = bytes.Clone(d.sb.Checkpoint)
			present[d.sb.UUID] = true
		}
		s.Records, s.Used = d.n, d.end-DataStart
		if d.end == 0 {
			s.Used = 0
		}
		if d.n < n {
			s.Lag = n - d.n
		}
		s.ID = UUIDString(s.UUID)
		out = append(out, s)
	}
	for i, m := range v.roster {
		if m == nil || present[m.UUID] {
			continue
		}
		s := DriveStatus{UUID: m.UUID, ID: UUIDString(m.UUID), Slot: i + 1, State: StateMissing}
		if m.Retired {
			s.State = StateRetired
		}
		out = append(out, s)
	}
	return out
}

func (v *Vault) find(uuid [16]byte) *drive {
	for _, d := range v.drives {
		if d.sb != nil && d.sb.UUID == uuid {
			return d
		}
	}
	return nil
}

// AddDrive brings a drive into the vault: a new drive (formatted for this
// vault with a free slot) or a returning one. It catches up from a healthy
// replica and is verified against the tree before it counts. progress gets
// bytes copied and bytes to copy.
func (v *Vault) AddDrive(path string, progress func(done, total uint64)) error {
	defer v.lockWrite()()
	if v.closed {
		return ErrClosed
	}
	dev, err := v.open(path, true)
	if err != nil {
		return err
	}
	sb, errs := readSuperblock(dev)
	if sb == nil {
		dev.Close()
		return fmt.Errorf("storage: add %s: no valid superblock (primary: %v; backup: %v): format it first", path, errs[0], errs[1])
	}
	if sb.VaultID != v.vaultID {
		dev.Close()
		return fmt.Errorf("storage: add %s: drive belongs to vault %s, not %s", path, UUIDString(sb.VaultID), UUIDString(v.vaultID))
	}
	if dev.ReadOnly() {
		dev.Close()
		return fmt.Errorf("storage: add %s: %w", path, ErrReadOnly)
	}
	d := v.find(sb.UUID)
	if d != nil {
		if d.state == StateActive {
			dev.Close()
			return fmt.Errorf("storage: add %s: drive %s is already active as %s", path, UUIDString(sb.UUID), d.path)
		}
		if d.dev != nil {
			d.dev.Close()
		}
		d.path = path
	} else {
		d = &drive{path: path}
		v.drives = append(v.drives, d)
	}
	d.dev, d.sb, d.sbErr = dev, sb, errs
	if err := v.admit(d); err != nil {
		d.dev.Close()
		d.dev = nil
		v.quarantine(d, err)
		return d.errf(-1, err)
	}
	if d.state == StateRetired {
		return fmt.Errorf("storage: add %s: drive %s was retired from this vault: format it to reuse it", path, UUIDString(sb.UUID))
	}
	if err := v.attach(context.Background(), d, progress); err != nil {
		return err
	}
	v.writeSuperblocks(v.active())
	return nil
}

// Sync catches up a present drive (failed, quarantined, syncing or lagging)
// from a healthy replica: the part of its log that disagrees with the vault
// is cut off, the rest copied and verified. A failed drive is reopened by
// path first.
func (v *Vault) Sync(ctx context.Context, uuid [16]byte, progress func(done, total uint64)) error {
	defer v.lockWrite()()
	if v.closed {
		return ErrClosed
	}
	d := v.find(uuid)
	if d == nil {
		return fmt.Errorf("storage: sync: drive %s is not present: plug it in and use AddDrive", UUIDString(uuid))
	}
	if d.state == StateRetired {
		return fmt.Errorf("storage: sync: drive %s is retired", UUIDString(uuid))
	}
	if d.dev == nil {
		dev, err := v.open(d.path, true)
		if err != nil {
			return d.errf(-1, err)
		}
		sb, errs := readSuperblock(dev)
		if sb == nil || sb.UUID != uuid {
			dev.Close()
			return d.errf(-1, fmt.Errorf("%s no longer holds this drive (primary: %v; backup: %v)", d.path, errs[0], errs[1]))
		}
		if dev.ReadOnly() {
			dev.Close()
			return d.errf(-1, ErrReadOnly)
		}
		d.dev, d.sb, d.sbErr = dev, sb, errs
	}
	return v.attach(ctx, d, progress)
}

// attach finds how much of d's log agrees with the vault and catches up the
// rest. A drive that is an intact prefix of the vault's log, as a returning
// offsite drive is, is recognised from the batch its superblock names;
// otherwise its whole log is compared with the vault's.
func (v *Vault) attach(ctx context.Context, d *drive, progress func(done, total uint64)) error {
	d.state, d.reason, d.zeroAt = StateSyncing, "", 0
	if s, err := v.scanDrive(d); err == nil && (s.stopErr == nil || s.stopIndex >= d.sb.TreeSize) {
		n := uint64(s.cut)
		prefix := n == 0
		if n > 0 && n-1 >= v.base && n <= v.size() {
			r, err := v.rec(n - 1)
			prefix = err == nil && r == s.rec(n-1)
		}
		if prefix {
			d.n, d.end = n, s.end()
			return v.finishAttach(ctx, d, progress)
		}
	}
	if err := v.loadIndex(); err != nil {
		return err
	}
	s, err := scanLog(d.dev, d.sb, scanOpts{verifier: v.o.Verifier, origin: v.o.Origin, trusted: d.sb.TreeSize})
	if err != nil {
		v.fail(d, err)
		return d.errf(-1, err)
	}
	n := 0
	for n < len(s.recs) && n < len(v.recs) && s.recs[n].leaf == v.recs[n].leaf {
		n++
	}
	// Keep only whole batches: cut back to a checkpoint boundary.
	for n > 0 && v.recs[n-1].typ != TypeCheckpoint {
		n--
	}
	d.n = uint64(n)
	d.end = DataStart
	if n > 0 {
		d.end = v.recs[n-1].off + v.recs[n-1].len
	}
	return v.finishAttach(ctx, d, progress)
}

func (v *Vault) finishAttach(ctx context.Context, d *drive, progress func(done, total uint64)) error {
	if err := v.catchUp(ctx, d, progress); err != nil {
		if d.state == StateSyncing {
			v.fail(d, err)
		}
		return err
	}
	return nil
}

// catchUp copies records d.n.. from a healthy replica, syncs, verifies the
// copy against the tree and activates d.
func (v *Vault) catchUp(ctx context.Context, d *drive, progress func(done, total uint64)) error {
	n := v.size()
	if v.end+BlockSize > d.sb.DataEnd && v.end != d.sb.DataEnd {
		return d.errf(-1, fmt.Errorf("%w: the vault log needs %d bytes", ErrNoSpace, v.end))
	}
	if d.n < n {
		var src *drive
		for _, s := range v.active() {
			if s != d {
				src = s
				break
			}
		}
		if src == nil {
			return d.errf(-1, fmt.Errorf("no healthy replica to copy from"))
		}
		start := time.Now()
		if err := copyRange(ctx, src, d, d.end, v.end, progress); err != nil {
			return err
		}
		if err := d.dev.Sync(); err != nil {
			return d.errf(-1, err)
		}
		r := newBlockReader(d.dev, d.sb.DataEnd, 1<<20)
		for i := d.n; i < n; i++ {
			ri, err := v.rec(i)
			if err != nil {
				return err
			}
			if err := checkRecord(r, ri, i); err != nil {
				// The source's copy is bad: take this record from another
				// replica whose copy verifies.
				if _, rerr := v.repairRecord(d, i, v.active(), nil); rerr != nil {
					return d.errf(int64(i), fmt.Errorf("copy from %s does not verify (%w) and %w (run scrub)", src.path, err, rerr))
				}
				r.base = -1
				if err := checkRecord(r, ri, i); err != nil {
					return d.errf(int64(i), fmt.Errorf("record does not verify after copying: %w", err))
				}
			}
		}
		v.log.Info("storage: drive caught up", "uuid", UUIDString(d.uuid()), "slot", d.slot(), "path", d.path,
			"from", UUIDString(src.uuid()), "records", n-d.n, "took", time.Since(start))
	}
	if d.zeroAt != v.end {
		if err := zeroTail(d.dev, v.end, d.sb.DataEnd); err != nil {
			return d.errf(-1, err)
		}
	}
	d.zeroAt = 0
	d.n, d.end = n, v.end
	if !v.superblockCurrent(d) {
		if err := v.writeSuperblock(d); err != nil {
			return err
		}
	}
	d.state, d.reason = StateActive, ""
	return nil
}

// superblockCurrent reports whether d's superblock already says what
// writeSuperblock would write, and both copies are valid.
func (v *Vault) superblockCurrent(d *drive) bool {
	s := d.sb
	if d.sbErr[0] != nil || d.sbErr[1] != nil || s.TreeSize != d.n || s.LogEnd != d.end || !bytes.Equal(s.Checkpoint, v.ckpt) || len(s.Keys) != len(v.keys) {
		return false
	}
	for i := range s.Keys {
		if s.Keys[i].Epoch != v.keys[i].Epoch || !bytes.Equal(s.Keys[i].Key, v.keys[i].Key) {
			return false
		}
	}
	for i := range s.Roster {
		a, b := s.Roster[i], v.roster[i]
		if (a == nil) != (b == nil) || a != nil && *a != *b {
			return false
		}
	}
	return true
}

// zeroTail clears the block after the log so no stale record follows it.
func zeroTail(dev device, end, dataEnd int64) error {
	if end+BlockSize > dataEnd {
		return nil
	}
	b := alignedBuf(BlockSize)
	if _, err := dev.ReadAt(b, end); err != nil {
		return err
	}
	if allZero(b) {
		return nil
	}
	clear(b)
	if _, err := dev.WriteAt(b, end); err != nil {
		return err
	}
	return dev.Sync()
}

// copyRange copies bytes [from, to) of src to dst.
func copyRange(ctx context.Context, src, dst *drive, from, to int64, progress func(done, total uint64)) error {
	buf := alignedBuf(4 << 20)
	total := uint64(to - from)
	for off := from; off < to; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := int64(len(buf))
		if to-off < n {
			n = to - off
		}
		if _, err := src.dev.ReadAt(buf[:n], off); err != nil {
			return src.errf(-1, err)
		}
		if _, err := dst.dev.WriteAt(buf[:n], off); err != nil {
			return dst.errf(-1, err)
		}
		off += n
		if progress != nil {
			progress(uint64(off-from), total)
		}
	}
	return nil
}

// checkRecord verifies the record r holds at ri: header, index, leaf hash
// against the tree, payload hash and zero padding.
func checkRecord(r *blockReader, ri recInfo, index uint64) error {
	hb := make([]byte, HeaderSize)
	if err := r.readAt(hb, ri.off); err != nil {
		return err
	}
	h, err := parseHeader(hb)
	if err != nil {
		return err
	}
	if h.Index != index {
		return fmt.Errorf("storage: header says record %d: %w", h.Index, ErrCorrupt)
	}
	if h.leafHash() != ri.leaf || h.RecordLen() != ri.len {
		return fmt.Errorf("storage: header does not match the signed tree: %w", ErrCorrupt)
	}
	sec := newSection(r, ri.off+HeaderSize, int64(h.PayloadLen))
	if err := drain(sec); err != nil {
		return err
	}
	if !bytes.Equal(sec.h.Sum(nil), h.PayloadSum[:]) {
		return fmt.Errorf("storage: payload hash mismatch: %w", ErrCorrupt)
	}
	pad := make([]byte, ri.len-HeaderSize-int64(h.PayloadLen))
	if err := r.readAt(pad, ri.off+HeaderSize+int64(h.PayloadLen)); err != nil {
		return err
	}
	if !allZero(pad) {
		return fmt.Errorf("storage: non-zero padding: %w", ErrCorrupt)
	}
	return nil
}

// Retire removes a drive from the vault roster for good.
func (v *Vault) Retire(uuid [16]byte) error {
	defer v.lockWrite()()
	if v.closed {
		return ErrClosed
	}
	var m *Member
	for i, x := range v.roster {
		if x != nil && x.UUID == uuid {
			m = &Member{UUID: uuid, Retired: true}
			v.roster[i] = m
		}
	}
	if m == nil {
		return fmt.Errorf("storage: retire: drive %s is not in this vault's roster", UUIDString(uuid))
	}
	if d := v.find(uuid); d != nil {
		if d.state == StateActive && len(v.active())-1 < v.o.WriteQuorum {
			for i, x := range v.roster {
				if x == m {
					v.roster[i] = &Member{UUID: uuid}
				}
			}
			return fmt.Errorf("storage: retire: drive %s is active and retiring it would leave fewer than %d drives: add a drive first", UUIDString(uuid), v.o.WriteQuorum)
		}
		if d.dev != nil {
			// Mark the drive itself, so it says so wherever it turns up.
			if err := d.writeSuperblock(func(s *superblock) {
				s.Roster[s.Slot-1] = &Member{UUID: uuid, Retired: true}
			}); err != nil {
				v.log.Warn("storage: could not mark the retired drive", "uuid", UUIDString(uuid), "err", err)
			}
			d.dev.Close()
			d.dev = nil
		}
		d.state, d.reason = StateRetired, "retired"
	}
	v.writeSuperblocks(v.active())
	v.log.Info("storage: drive retired", "uuid", UUIDString(uuid))
	return nil
}
