package storage

import (
	"bytes"
	"crypto/cipher"
	"fmt"
	"hash"
	"io"

	"golang.org/x/mod/sumdb/tlog"
)

// Get returns record index: its header, its decrypted meta and a stream of
// its decrypted body. Every chunk is authenticated as it is read; the
// header is checked against the tree before anything is returned. A copy
// that fails is skipped for the next healthy replica. Reading a record older
// than the last batch at Open loads the record index first (see loadIndex).
func (v *Vault) Get(index uint64) (Header, []byte, io.ReadCloser, error) {
	// The record is durable and never rewritten in place but by Scrub
	// (which readers survive: a copy that fails is skipped), so it is read
	// without the vault lock: an Append in flight does not hold it up.
	ri, srcs, err := v.sources(index)
	if err != nil {
		return Header{}, nil, nil, err
	}
	var errs []error
	// Records are read from the replicas in turn (record i first from
	// active drive i mod n), so that readers of many records, such as a
	// rekey's, spread over the drives.
	for k := range srcs {
		s := srcs[(int(index%uint64(len(srcs)))+k)%len(srcs)]
		h, meta, body, err := v.getFrom(s, ri, index)
		if err == nil {
			return *h, meta, body, nil
		}
		errs = append(errs, s.errf(int64(index), err))
		v.log.Warn("storage: record unreadable on one replica", "uuid", UUIDString(s.uuid), "slot", s.slot, "index", index, "err", err)
	}
	if len(errs) == 0 {
		return Header{}, nil, nil, fmt.Errorf("storage: record %d: no active drive to read from", index)
	}
	return Header{}, nil, nil, fmt.Errorf("storage: record %d unreadable on every drive: %w", index, joinErrs(errs))
}

// source is an active drive as a reader sees it: what it needs, copied
// under the vault lock, so that it can read without the lock (a drive
// failed meanwhile has its device closed: the read fails and the next
// source serves).
type source struct {
	dev     device
	dataEnd int64
	path    string
	uuid    [16]byte
	slot    int
}

func (s source) errf(index int64, err error) error {
	return &DriveError{UUID: s.uuid, Slot: s.slot, Path: s.path, Index: index, Err: err}
}

// sources returns record index's place and the active drives to read it
// from.
func (v *Vault) sources(index uint64) (recInfo, []source, error) {
	recs, base, act, err := v.view(index)
	if err != nil {
		return recInfo{}, nil, err
	}
	if n := base + uint64(len(recs)); index >= n {
		return recInfo{}, nil, fmt.Errorf("storage: record %d of %d: %w", index, n, ErrNotFound)
	}
	return recs[index-base], act, nil
}

// view returns the record index (recs, from record base on) and the active
// drives as they are now, loading the records below what Open read first
// when from is among them. A batch in flight is not in it.
func (v *Vault) view(from uint64) (recs []recInfo, base uint64, act []source, err error) {
	v.mu.Lock()
	below := from < v.base
	v.mu.Unlock()
	if below {
		if err := v.indexed(); err != nil {
			return nil, 0, nil, err
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil, 0, nil, ErrClosed
	}
	return v.recs, v.base, v.activeSources(), nil
}

// activeSources snapshots the active drives; the caller holds mu.
func (v *Vault) activeSources() []source {
	var out []source
	for _, d := range v.active() {
		out = append(out, source{dev: d.dev, dataEnd: d.sb.DataEnd, path: d.path, uuid: d.uuid(), slot: d.slot()})
	}
	return out
}

func joinErrs(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return fmt.Errorf("%w (and %d more)", errs[0], len(errs)-1)
}

const getWhole = 4 << 20

func (v *Vault) getFrom(s source, ri recInfo, index uint64) (*Header, []byte, io.ReadCloser, error) {
	// A record up to getWhole bytes is read in one request, a larger one
	// in windows of up to 256 KiB (the index knows its length).
	win := 256 << 10
	if ri.len <= getWhole {
		win = int(ri.len)
	}
	r := newBlockReader(s.dev, s.dataEnd, win)
	r.cached = true
	if err := r.fill(ri.off, min(win, int(ri.len))); err != nil {
		return nil, nil, nil, err
	}
	hb := make([]byte, HeaderSize)
	if err := r.readAt(hb, ri.off); err != nil {
		return nil, nil, nil, err
	}
	h, err := parseHeader(hb)
	if err != nil {
		return nil, nil, nil, err
	}
	if h.Index != index || h.leafHash() != ri.leaf {
		return nil, nil, nil, fmt.Errorf("storage: header does not match the signed tree: %w", ErrCorrupt)
	}
	h.Offset = ri.off
	sec := newSection(r, ri.off+HeaderSize, int64(h.PayloadLen))
	var aead cipher.AEAD
	if !h.Clear() {
		if aead, err = v.aead(h.KeyEpoch); err != nil {
			return nil, nil, nil, err
		}
	}
	meta, body, err := openPayload(h, aead, v.vaultID, sec)
	if err != nil {
		return nil, nil, nil, err
	}
	return h, meta, body, nil
}

// openPayload reads the meta and returns a body stream that checks the
// payload hash at its end.
func openPayload(h *Header, aead cipher.AEAD, vault [16]byte, sec *sectionReader) ([]byte, io.ReadCloser, error) {
	var plain io.Reader = sec
	if !h.Clear() {
		plain = newStreamReader(aead, h, vault, sec)
	}
	meta := make([]byte, h.MetaLen)
	if _, err := io.ReadFull(plain, meta); err != nil {
		return nil, nil, fmt.Errorf("storage: record %d meta: %w", h.Index, err)
	}
	return meta, &bodyReader{r: plain, left: h.BodyLen, h: sec.h, want: h.PayloadSum, sec: sec}, nil
}

type bodyReader struct {
	r    io.Reader
	left uint64
	h    hash.Hash
	want [32]byte
	sec  *sectionReader
	err  error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.left == 0 {
		// Drain the final tag / make the stream see its end, then check the
		// payload hash.
		var one [1]byte
		if n, err := b.r.Read(one[:]); n != 0 || (err != nil && err != io.EOF) {
			if err == nil {
				err = fmt.Errorf("storage: record body longer than its header says: %w", ErrCorrupt)
			}
			b.err = err
			return 0, err
		}
		if b.sec.off != b.sec.end || !bytes.Equal(b.h.Sum(nil), b.want[:]) {
			b.err = fmt.Errorf("storage: record payload hash mismatch: %w", ErrCorrupt)
			return 0, b.err
		}
		b.err = io.EOF
		return 0, io.EOF
	}
	if uint64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= uint64(n)
	if err == io.EOF && b.left > 0 {
		err = fmt.Errorf("storage: record body truncated: %w", ErrCorrupt)
	}
	if err == io.EOF {
		err = nil
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

func (b *bodyReader) Close() error { return nil }

// RecordInfo is what the vault's record index holds of a record: enough
// to choose records without reading them.
type RecordInfo struct {
	Index    uint64
	Type     RecordType
	KeyEpoch uint32
	Len      int64 // on the drive: header, payload and padding
}

// Records calls fn for every record from index from on (checkpoints
// included) from the record index in memory, loading it first if Open did
// not (see loadIndex, which checks every header against the signed tree).
// It reads nothing else from the drives: a fraction of Scan's work for
// whoever needs no meta.
func (v *Vault) Records(from uint64, fn func(RecordInfo) error) error {
	recs, base, _, err := v.view(from)
	if err != nil {
		return err
	}
	for i := max(from, base); i < base+uint64(len(recs)); i++ {
		ri := recs[i-base]
		if err := fn(RecordInfo{Index: i, Type: ri.typ, KeyEpoch: ri.epoch, Len: ri.len}); err != nil {
			return err
		}
	}
	return nil
}

// Scan calls fn for every record from index from on, with its header and
// decrypted meta (checkpoint records included, with empty meta).
func (v *Vault) Scan(from uint64, fn func(h Header, meta []byte) error) error {
	recs, base, act, err := v.view(from)
	if err != nil {
		return err
	}
	if len(act) == 0 {
		return fmt.Errorf("storage: scan: no active drive")
	}
	d := act[0]
	r := newBlockReader(d.dev, d.dataEnd, 1<<20)
	for i := max(from, base); i < base+uint64(len(recs)); i++ {
		ri := recs[i-base]
		hb := make([]byte, HeaderSize)
		if err := r.readAt(hb, ri.off); err != nil {
			return d.errf(int64(i), err)
		}
		h, err := parseHeader(hb)
		if err != nil {
			return d.errf(int64(i), err)
		}
		if h.Index != i || h.leafHash() != ri.leaf {
			return d.errf(int64(i), fmt.Errorf("header does not match the signed tree: %w (run scrub)", ErrCorrupt))
		}
		h.Offset = ri.off
		meta, err := v.readMeta(r, h)
		if err != nil {
			return d.errf(int64(i), err)
		}
		if err := fn(*h, meta); err != nil {
			return err
		}
	}
	return nil
}

func (v *Vault) readMeta(r *blockReader, h *Header) ([]byte, error) {
	if h.MetaLen == 0 || h.Type == TypeCheckpoint {
		return nil, nil
	}
	aead, err := v.aead(h.KeyEpoch)
	if err != nil {
		return nil, err
	}
	return readMeta(r, h, aead, v.vaultID)
}

// readMeta decrypts only the chunk(s) holding the meta.
func readMeta(r *blockReader, h *Header, aead cipher.AEAD, vault [16]byte) ([]byte, error) {
	sec := newSection(r, h.Offset+HeaderSize, int64(h.PayloadLen))
	var plain io.Reader = sec
	if !h.Clear() {
		plain = newStreamReader(aead, h, vault, sec)
	}
	meta := make([]byte, h.MetaLen)
	if _, err := io.ReadFull(plain, meta); err != nil {
		return nil, fmt.Errorf("storage: record %d meta: %w", h.Index, err)
	}
	return meta, nil
}

// ScanDrive reads one replica read-only and calls fn for every record
// covered by a checkpoint, with its header and decrypted meta. It checks
// the header chain and checkpoint roots (not signatures: it has no
// verifier) and authenticates each meta; it does not hash bodies. It is
// the fast path for rebuilding the catalog.
//
// Each batch is walked twice: headers first (hashing), then the metas
// (decryption). Grouping the two kinds of work avoids switching between
// SHA and AVX instructions per record, which costs dearly on some CPUs.
func ScanDrive(path string, key func(epoch uint32) ([]byte, error), fn func(h Header, meta []byte) error) error {
	dev, err := openDevice(path, false)
	if err != nil {
		return err
	}
	defer dev.Close()
	sb, errs := readSuperblock(dev)
	if sb == nil {
		return fmt.Errorf("storage: scan %s: no valid superblock (primary: %v; backup: %v)", path, errs[0], errs[1])
	}
	aeads := map[uint32]cipher.AEAD{}
	r := newBlockReader(dev, sb.DataEnd, 4<<20)
	type pending struct {
		h   Header
		aad [hdrAADEnd]byte
	}
	var batch []pending
	var fr frontier
	var prev [32]byte
	hb := make([]byte, HeaderSize)
	ct := make([]byte, ChunkSize+16)
	off := int64(DataStart)
	flush := func() error {
		for i := range batch {
			p := &batch[i]
			var meta []byte
			if p.h.Type != TypeCheckpoint && p.h.MetaLen > 0 {
				a, ok := aeads[p.h.KeyEpoch]
				if !ok {
					k, err := key(p.h.KeyEpoch)
					if err != nil {
						return fmt.Errorf("storage: scan %s: record key of epoch %d: %w", path, p.h.KeyEpoch, err)
					}
					if a, err = newAEAD(k); err != nil {
						return err
					}
					aeads[p.h.KeyEpoch] = a
				}
				if meta, err = openMeta(r, p.aad[:], &p.h, a, sb.VaultID, ct); err != nil {
					return fmt.Errorf("storage: scan %s: record %d: %w", path, p.h.Index, err)
				}
			}
			if err := fn(p.h, meta); err != nil {
				return err
			}
		}
		batch = batch[:0]
		return nil
	}
	for i := uint64(0); off+BlockSize <= sb.DataEnd; i++ {
		if err := r.readAt(hb, off); err != nil {
			return err
		}
		if allZero(hb) {
			break
		}
		h, err := parseHeader(hb)
		if err != nil || h.Index != i || h.Prev != prev || off+h.RecordLen() > sb.DataEnd {
			break // end of the readable log
		}
		h.Offset = off
		if h.Type == TypeCheckpoint {
			body := make([]byte, h.PayloadLen)
			if err := r.readAt(body, off+HeaderSize); err != nil {
				return err
			}
			if err := checkCheckpointRecord(body[h.MetaLen:], i, fr.root(), scanOpts{}); err != nil {
				break
			}
		}
		leaf := tlog.RecordHash(hb)
		fr.add(leaf)
		prev = leaf
		off += h.RecordLen()
		p := pending{h: *h}
		copy(p.aad[:], hb)
		batch = append(batch, p)
		if h.Type == TypeCheckpoint {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// openMeta authenticates and decrypts the first chunk of an encrypted
// payload (the meta always lies within it) into a reused buffer.
func openMeta(r *blockReader, hdr72 []byte, h *Header, aead cipher.AEAD, vault [16]byte, ct []byte) ([]byte, error) {
	n := int(min(h.PayloadLen, ChunkSize+16))
	if err := r.readAt(ct[:n], h.Offset+HeaderSize); err != nil {
		return nil, err
	}
	aad := make([]byte, 0, 16+hdrAADEnd)
	aad = append(append(aad, vault[:]...), hdr72[:hdrAADEnd]...)
	pt, err := aead.Open(ct[:0], chunkNonce(h.Nonce, 0, uint64(n) == h.PayloadLen), ct[:n], aad)
	cleanVector()
	if err != nil || len(pt) < int(h.MetaLen) {
		return nil, errAuth
	}
	return bytes.Clone(pt[:h.MetaLen]), nil
}
