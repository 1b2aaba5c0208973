package storage

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"sync"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// DriveState is where a drive stands in the vault.
type DriveState string

// Drive states.
const (
	StateActive      DriveState = "active"      // takes writes, counts for the quorum
	StateSyncing     DriveState = "syncing"     // catching up from a healthy replica
	StateMissing     DriveState = "missing"     // in the roster, not plugged in
	StateFailed      DriveState = "failed"      // I/O error, full, read-only or gone; run Sync when it is back
	StateQuarantined DriveState = "quarantined" // content disagrees with the signed tree; Sync or Scrub repairs it
	StateRetired     DriveState = "retired"     // removed from the vault
)

// drive is one present replica.
type drive struct {
	path   string
	dev    device
	sb     *superblock
	sbErr  [2]error
	state  DriveState
	reason string
	// repairable: quarantined for damaged or disagreeing records, which
	// Scrub may rewrite (not for a clone or a slot conflict).
	repairable bool
	n          uint64 // records on the drive that agree with the vault
	end        int64  // byte offset after them
	zeroAt     int64  // an offset whose block Open saw was zero (0: none)
}

func (d *drive) uuid() [16]byte {
	if d.sb == nil {
		return [16]byte{}
	}
	return d.sb.UUID
}

func (d *drive) slot() int {
	if d.sb == nil {
		return 0
	}
	return d.sb.Slot
}

func (d *drive) errf(index int64, err error) error {
	return &DriveError{UUID: d.uuid(), Slot: d.slot(), Path: d.path, Index: index, Err: err}
}

// readSuperblock reads both copies and returns the newer valid one, with
// the error of each copy (nil when valid). Both are read at once, the
// backup where the device size puts it; it is read again when the primary
// names another drive size.
func readSuperblock(dev device) (*superblock, [2]error) {
	var errs [2]error
	pbuf, bbuf := alignedBuf(SuperblockSize), alignedBuf(SuperblockSize)
	guess := backupOffset(dev.Size() &^ (BlockSize - 1))
	var perr, berr error
	var wg sync.WaitGroup
	wg.Go(func() { _, perr = dev.ReadAt(pbuf, 0) })
	if guess >= DataStart {
		wg.Go(func() { _, berr = dev.ReadAt(bbuf, guess) })
	}
	wg.Wait()
	var p, b *superblock
	if perr != nil {
		errs[0] = perr
	} else {
		p, errs[0] = parseSuperblock(pbuf)
	}
	boff := guess
	if p != nil {
		boff = backupOffset(p.Size)
	}
	switch {
	case boff < DataStart || boff+SuperblockSize > dev.Size():
		errs[1] = fmt.Errorf("storage: backup superblock: drive too small: %w", ErrCorrupt)
	case boff != guess:
		if _, err := dev.ReadAt(bbuf, boff); err != nil {
			errs[1] = err
		} else {
			b, errs[1] = parseSuperblock(bbuf)
		}
	case berr != nil:
		errs[1] = berr
	default:
		b, errs[1] = parseSuperblock(bbuf)
	}
	if b != nil && p != nil && (b.VaultID != p.VaultID || b.UUID != p.UUID || b.Size != p.Size) {
		errs[1] = fmt.Errorf("storage: backup superblock names another drive: %w", ErrCorrupt)
		b = nil
	}
	switch {
	case p == nil:
		return b, errs
	case b == nil || p.Seq >= b.Seq:
		return p, errs
	default:
		return b, errs
	}
}

// writeSuperblock writes the next superblock copy (alternating between the
// primary and the backup by sequence number) and syncs it.
func (d *drive) writeSuperblock(update func(s *superblock)) error {
	s, err := d.putSuperblock(update)
	if err != nil {
		return err
	}
	d.sb = s
	return nil
}

// putSuperblock writes and syncs d's next superblock and returns it; the
// caller installs it as d.sb.
func (d *drive) putSuperblock(update func(s *superblock)) (*superblock, error) {
	s := *d.sb
	s.Seq++
	update(&s)
	b, err := encodeSuperblock(&s)
	if err != nil {
		return nil, d.errf(-1, err)
	}
	buf := alignedBuf(SuperblockSize)
	copy(buf, b)
	off := int64(0)
	if s.Seq%2 == 0 {
		off = backupOffset(s.Size)
	}
	if _, err := d.dev.WriteAt(buf, off); err != nil {
		return nil, d.errf(-1, err)
	}
	if err := d.dev.Sync(); err != nil {
		return nil, d.errf(-1, err)
	}
	return &s, nil
}

type recInfo struct {
	off   int64
	len   int64
	leaf  tlog.Hash
	typ   RecordType
	epoch uint32
}

// logScan is what a walk of a drive's log found.
type logScan struct {
	start     resume    // where the walk started
	base      uint64    // index of recs[0] (start.index)
	recs      []recInfo // chained, valid records from base on
	cut       int       // records (counted from 0) up to and including the last valid checkpoint; base when none
	stopIndex uint64    // index where the walk stopped
	stopOff   int64
	stopErr   error  // why it stopped; nil at a clean end (a zero block, the end of the area, or the limit)
	zeroStop  bool   // the whole block at stopOff is zero
	lastCkpt  []byte // signed note of the last valid checkpoint record
}

// end is the offset just after record cut-1.
func (s *logScan) end() int64 {
	if s.cut == int(s.base) {
		return s.start.off
	}
	r := s.recs[s.cut-1-int(s.base)]
	return r.off + r.len
}

// rec returns record i (base ≤ i < base+len(recs)).
func (s *logScan) rec(i uint64) recInfo { return s.recs[i-s.base] }

// committed returns the records base..cut-1.
func (s *logScan) committed() []recInfo { return s.recs[:s.cut-int(s.base)] }

type scanOpts struct {
	verifier note.Verifier // nil: checkpoint signatures not checked
	origin   string
	trusted  uint64 // records below this index get header checks only
	full     bool   // verify every payload hash
	limit    uint64 // stop before this index (0: no limit)
}

// scanLog walks the record log of dev from the start.
func scanLog(dev device, sb *superblock, o scanOpts) (*logScan, error) {
	return scanFrom(newBlockReader(dev, sb.DataEnd, 1<<20), sb, genesis(), o)
}

// resumePoint is where Open's walk of a drive starts: the batch of the
// checkpoint record the superblock names (index tree size − 1, in the last
// block before log end), once that record's header, payload hash, resume
// point and signature check out. The walk from there recomputes the tree
// from the resume point's subtree roots and checks the checkpoint's root.
// An error means the superblock and the log disagree (or that block is
// damaged); the caller then walks from record 0.
//
// It reads through r one window that ends with the block after log end, so
// that for a small last batch the walk that follows needs no other read.
func resumePoint(r *blockReader, sb *superblock, o scanOpts) (resume, error) {
	if sb.TreeSize == 0 {
		return genesis(), nil
	}
	off := sb.LogEnd - BlockSize
	if off < DataStart {
		return resume{}, fmt.Errorf("storage: superblock: log end %d holds no checkpoint record: %w", sb.LogEnd, ErrCorrupt)
	}
	if err := r.fill(max(DataStart, sb.LogEnd+BlockSize-resumeWindow), resumeWindow); err != nil {
		return resume{}, err
	}
	b := make([]byte, BlockSize)
	if err := r.readAt(b, off); err != nil {
		return resume{}, err
	}
	h, err := parseHeader(b)
	if err != nil {
		return resume{}, err
	}
	if h.Type != TypeCheckpoint || h.Index != sb.TreeSize-1 || h.RecordLen() != BlockSize {
		return resume{}, fmt.Errorf("storage: the block before log end %d is record %d of type %v, not checkpoint record %d: %w",
			sb.LogEnd, h.Index, h.Type, sb.TreeSize-1, ErrCorrupt)
	}
	p := b[HeaderSize : HeaderSize+h.PayloadLen]
	if sha256.Sum256(p) != h.PayloadSum {
		return resume{}, fmt.Errorf("storage: checkpoint record %d: payload hash mismatch: %w", h.Index, ErrCorrupt)
	}
	rp, err := parseResume(p[:h.MetaLen], h.Index, off)
	if err != nil {
		return resume{}, err
	}
	c, err := OpenCheckpoint(p[h.MetaLen:], o.verifier, o.origin)
	if err != nil {
		return resume{}, err
	}
	if c.Size != h.Index {
		return resume{}, fmt.Errorf("storage: checkpoint record %d claims tree size %d: %w", h.Index, c.Size, ErrCorrupt)
	}
	return rp, nil
}

// resumeWindow is what resumePoint reads: the checkpoint record, the block
// after it, and the records before it.
const resumeWindow = 64 << 10

// scanFrom walks the record log from rp, reading through r. The first
// record's previous hash is not checked when rp is not record 0: it is
// covered by the next checkpoint's root, which is.
func scanFrom(r *blockReader, sb *superblock, rp resume, o scanOpts) (*logScan, error) {
	res := &logScan{start: rp, base: rp.index, cut: int(rp.index)}
	fr := rp.fr.clone()
	batch := rp // resume point of the batch being walked
	var prev tlog.Hash
	off := rp.off
	hb := make([]byte, HeaderSize)
	stop := func(i uint64, err error) {
		res.stopIndex, res.stopOff, res.stopErr = i, off, err
	}
	for i := rp.index; ; i++ {
		if o.limit > 0 && i == o.limit {
			stop(i, nil)
			break
		}
		if off+BlockSize > sb.DataEnd {
			stop(i, nil)
			break
		}
		if err := r.readAt(hb, off); err != nil {
			return nil, err
		}
		if allZero(hb) {
			stop(i, nil)
			blk := make([]byte, BlockSize)
			if err := r.readAt(blk, off); err != nil {
				return nil, err
			}
			res.zeroStop = allZero(blk)
			break
		}
		h, err := parseHeader(hb)
		if err != nil {
			stop(i, err)
			break
		}
		if h.Index != i {
			stop(i, fmt.Errorf("storage: record header: index %d, want %d: %w", h.Index, i, ErrCorrupt))
			break
		}
		if h.Prev != prev && (i > rp.index || i == 0) {
			stop(i, fmt.Errorf("storage: record header: chain broken (previous hash mismatch): %w", ErrCorrupt))
			break
		}
		rl := h.RecordLen()
		if off+rl > sb.DataEnd {
			stop(i, fmt.Errorf("storage: record runs past the data area: %w", ErrCorrupt))
			break
		}
		var body []byte
		if o.full || i >= o.trusted || h.Type == TypeCheckpoint {
			sec := newSection(r, off+HeaderSize, int64(h.PayloadLen))
			if h.Type == TypeCheckpoint {
				body = make([]byte, h.PayloadLen)
				if _, err := sec.Read(body); err != nil && h.PayloadLen > 0 {
					return nil, err
				}
			} else if err := drain(sec); err != nil {
				return nil, err
			}
			if !bytes.Equal(sec.h.Sum(nil), h.PayloadSum[:]) {
				stop(i, fmt.Errorf("storage: record payload hash mismatch: %w", ErrCorrupt))
				break
			}
		}
		if o.full {
			pad := make([]byte, rl-HeaderSize-int64(h.PayloadLen))
			if err := r.readAt(pad, off+HeaderSize+int64(h.PayloadLen)); err != nil {
				return nil, err
			}
			if !allZero(pad) {
				stop(i, fmt.Errorf("storage: non-zero padding after the payload: %w", ErrCorrupt))
				break
			}
		}
		leaf := h.leafHash()
		if h.Type == TypeCheckpoint {
			co := o
			if !o.full && i < o.trusted {
				co.verifier = nil // below the synced superblock: roots only; the last one is verified by the caller
			}
			got, err := parseResume(body[:h.MetaLen], i, off)
			if err == nil && (got.index != batch.index || got.off != batch.off || !got.fr.equal(&batch.fr)) {
				err = fmt.Errorf("storage: checkpoint record %d: resume point does not match the log: %w", i, ErrCorrupt)
			}
			if err == nil {
				err = checkCheckpointRecord(body[h.MetaLen:], i, fr.root(), co)
			}
			if err != nil {
				stop(i, err)
				break
			}
			res.lastCkpt = body[h.MetaLen:]
			res.cut = int(i) + 1
		}
		fr.add(leaf)
		res.recs = append(res.recs, recInfo{off: off, len: rl, leaf: leaf, typ: h.Type, epoch: h.KeyEpoch})
		prev = leaf
		off += rl
		if h.Type == TypeCheckpoint {
			batch = resume{index: i + 1, off: off, fr: fr.clone()}
		}
	}
	return res, nil
}

func checkCheckpointRecord(body []byte, i uint64, root tlog.Hash, o scanOpts) error {
	var c Checkpoint
	var err error
	if o.verifier != nil {
		c, err = OpenCheckpoint(body, o.verifier, o.origin)
	} else {
		c, err = parseUnverified(body)
	}
	if err != nil {
		return err
	}
	if c.Size != i {
		return fmt.Errorf("storage: checkpoint record %d claims tree size %d: %w", i, c.Size, ErrCorrupt)
	}
	if c.Hash != root {
		return fmt.Errorf("storage: checkpoint record %d: root hash does not match the records: %w", i, ErrCorrupt)
	}
	return nil
}

// parseUnverified parses a signed note's text without checking signatures.
func parseUnverified(msg []byte) (Checkpoint, error) {
	i := bytes.Index(msg, []byte("\n\n"))
	if i < 0 {
		return Checkpoint{}, fmt.Errorf("storage: checkpoint: not a signed note: %w", ErrCorrupt)
	}
	return ParseCheckpointText(string(msg[:i+1]))
}

func drain(s *sectionReader) error {
	buf := make([]byte, 256<<10)
	for {
		_, err := s.Read(buf)
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
