package storage

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"sync"
	"sync/atomic"

	"coffre/internal/crashpoint"
)

const (
	// batchBufSize is the size of one ring buffer and so of most writes a
	// drive sees (a multiple of BlockSize, as O_DIRECT needs).
	batchBufSize = 4 << 20
	// ringSize buffers: one being filled, the others being written (and
	// hashed) while it fills.
	ringSize = 4
)

// target is one drive a batch goes to. It keeps the device and the
// superblock the drive had when the batch began: the batch before it may
// install a new superblock, or fail the drive, while this one is written
// (see Vault.AppendEach).
type target struct {
	d   *drive
	dev device
	sb  *superblock
	mu  sync.Mutex
	err error

	dirty   atomic.Int64 // bytes written since the last write-behind flush began
	syncing atomic.Bool
}

func (t *target) failed() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

func (t *target) errf(err error) error {
	return &DriveError{UUID: t.sb.UUID, Slot: t.sb.Slot, Path: t.d.path, Index: -1, Err: err}
}

func (t *target) fail(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err == nil {
		t.err = err
	}
}

type seg struct {
	p   []byte
	off int64
}

// batchWriter lays records out contiguously from a start offset and writes
// them to every target drive through a ring of aligned buffers, so
// encryption of the next buffer overlaps the writes of the previous ones
// (each drive proceeds at its own pace). Ciphertext is sealed straight into
// the ring and hashed from there by a second goroutine, so each payload
// byte is written to memory once. A record's first block (its header) is
// only known when the record is complete: if its buffer has to go out
// before that, the block is held back and goes out with the next buffer.
// Nothing is durable, or acknowledged, before commit's fdatasync.
type batchWriter struct {
	quorum  int
	ts      []*target
	bufs    [ringSize][]byte
	wgs     [ringSize]sync.WaitGroup // writes and hashing in flight from each buffer
	cur     int
	base    int64 // drive offset of buf[0]
	n       int
	pending []seg // held-back header blocks, written with the next buffer

	recStart  int64
	headInBuf bool
	head      []byte

	// Payload hashing of the current record (see hashPayload).
	sum     hash.Hash
	async   bool // hashing on the hasher goroutine
	hashing bool
	hq      chan hashJob
	hdone   chan struct{}

	syncs sync.WaitGroup // write-behind flushes in flight

	chunks [3][]byte // plaintext chunk, read-ahead chunk, sealing scratch
}

type hashJob struct {
	h    hash.Hash
	p    []byte
	wg   *sync.WaitGroup // Done once p is hashed
	done chan struct{}   // closed when every earlier job is done
}

// newBatchWriter starts a batch at start on the drives ds; the caller
// holds mu (it reads their device and superblock).
func newBatchWriter(ds []*drive, start int64, quorum int) *batchWriter {
	w := &batchWriter{base: start, quorum: quorum}
	for _, d := range ds {
		w.ts = append(w.ts, &target{d: d, dev: d.dev, sb: d.sb})
	}
	// The other buffers of the ring are taken when the first fills: most
	// batches (small records, group commits) never need them.
	w.bufs[0] = getBuf()
	return w
}

// freeBufs keeps ring buffers from one batch to the next. Appends hold the
// vault's lock and at most two batches are in flight (see AppendEach), so
// two rings' worth is all that is ever reused; a sync.Pool would keep
// buffers per P (4 MiB each, per scheduler P).
var freeBufs = make(chan []byte, 2*ringSize)

func getBuf() []byte {
	select {
	case b := <-freeBufs:
		return b
	default:
		return alignedBuf(batchBufSize)
	}
}

func putBuf(b []byte) {
	select {
	case freeBufs <- b:
	default:
	}
}

// release returns the buffers and stops the hasher; the writer must not be
// used afterwards.
func (w *batchWriter) release() {
	w.wait()
	if w.hq != nil {
		close(w.hq)
		<-w.hdone
		w.hq = nil
	}
	for i := range w.bufs {
		if w.bufs[i] != nil {
			putBuf(w.bufs[i])
			w.bufs[i] = nil
		}
	}
}

func (w *batchWriter) buf() []byte { return w.bufs[w.cur] }

func (w *batchWriter) pos() int64 { return w.base + int64(w.n) }

func (w *batchWriter) live() int {
	n := 0
	for _, t := range w.ts {
		if t.failed() == nil {
			n++
		}
	}
	return n
}

func (w *batchWriter) errs() error {
	var errs []error
	for _, t := range w.ts {
		if err := t.failed(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// begin starts a record at the current (block-aligned) position and
// reserves its header.
func (w *batchWriter) begin(h *Header) error {
	if w.n == len(w.buf()) {
		if err := w.flush(); err != nil {
			return err
		}
	}
	w.recStart = w.pos()
	h.Offset = w.recStart
	w.headInBuf = true
	b := w.buf()
	clear(b[w.n : w.n+HeaderSize])
	w.n += HeaderSize
	return nil
}

// chunkBufs returns the plaintext and scratch buffers writeEncrypted uses,
// allocated once per batch.
func (w *batchWriter) chunkBufs() (cur, next, scratch []byte) {
	if w.chunks[0] == nil {
		w.chunks = [3][]byte{make([]byte, ChunkSize), make([]byte, ChunkSize), make([]byte, 0, ChunkSize+16)}
	}
	return w.chunks[0], w.chunks[1], w.chunks[2]
}

// hashPayload starts hashing what is written from now on. inline hashes on
// the caller's goroutine (cheaper for a payload of one chunk); otherwise a
// second goroutine hashes while the caller seals the next chunk.
func (w *batchWriter) hashPayload(inline bool) {
	w.sum, w.async, w.hashing = sha256.New(), !inline, true
	if w.async && w.hq == nil {
		w.hq, w.hdone = make(chan hashJob, 2*ringSize*(batchBufSize/ChunkSize)), make(chan struct{})
		go func() {
			defer close(w.hdone)
			for j := range w.hq {
				if j.done != nil {
					close(j.done)
					continue
				}
				j.h.Write(j.p)
				j.wg.Done()
			}
		}()
	}
}

// payloadSum stops hashing and returns the SHA-256 of what was written
// since hashPayload.
func (w *batchWriter) payloadSum() [32]byte {
	if w.async {
		done := make(chan struct{})
		w.hq <- hashJob{done: done}
		<-done
	}
	var s [32]byte
	w.sum.Sum(s[:0])
	w.sum, w.async, w.hashing = nil, false, false
	return s
}

// hash feeds p, which lies in the current buffer, to the payload hash.
func (w *batchWriter) hash(p []byte) {
	if !w.hashing || len(p) == 0 {
		return
	}
	if !w.async {
		w.sum.Write(p)
		return
	}
	wg := &w.wgs[w.cur]
	wg.Add(1) // the buffer is not reused before p is hashed
	w.hq <- hashJob{h: w.sum, p: p, wg: wg}
}

// room returns the next n bytes of the current buffer to fill in place
// (then call advance), or nil when fewer than n bytes are left in it.
func (w *batchWriter) room(n int) ([]byte, error) {
	if w.n == len(w.buf()) {
		if err := w.flush(); err != nil {
			return nil, err
		}
	}
	b := w.buf()
	if len(b)-w.n < n {
		return nil, nil
	}
	return b[w.n : w.n+n], nil
}

// advance takes n bytes filled in place after room.
func (w *batchWriter) advance(n int) {
	w.hash(w.buf()[w.n : w.n+n])
	w.n += n
}

func (w *batchWriter) write(p []byte) error {
	for len(p) > 0 {
		if w.n == len(w.buf()) {
			if err := w.flush(); err != nil {
				return err
			}
		}
		b := w.buf()
		c := copy(b[w.n:], p)
		w.hash(b[w.n : w.n+c])
		w.n += c
		p = p[c:]
	}
	return nil
}

// zero writes n zero bytes.
func (w *batchWriter) zero(n int) error {
	for n > 0 {
		if w.n == len(w.buf()) {
			if err := w.flush(); err != nil {
				return err
			}
		}
		c := min(n, len(w.buf())-w.n)
		clear(w.buf()[w.n : w.n+c])
		w.n += c
		n -= c
	}
	return nil
}

// finish pads the record to a block boundary and fills in its header.
func (w *batchWriter) finish(h *Header) error {
	if pad := int(roundUp(w.pos()) - w.pos()); pad > 0 {
		if err := w.zero(pad); err != nil {
			return err
		}
	}
	if w.headInBuf {
		h.put(w.buf()[w.recStart-w.base:])
		w.headInBuf = false
		return nil
	}
	h.put(w.head)
	w.pending = append(w.pending, seg{w.head, w.recStart})
	w.head = nil
	return nil
}

// flush writes the current buffer (minus a held-back header block, plus
// the held-back headers of finished records) asynchronously and switches
// buffers. It fails when fewer than the quorum of drives are still taking
// writes.
func (w *batchWriter) flush() error {
	if w.live() < w.quorum {
		return fmt.Errorf("%w: %d drives left: %w", ErrNoQuorum, w.live(), w.errs())
	}
	b := w.buf()[:w.n]
	segs := w.pending
	w.pending = nil
	if w.headInBuf && w.recStart >= w.base {
		hp := int(w.recStart - w.base)
		w.head = alignedBuf(BlockSize)
		copy(w.head, b[hp:hp+BlockSize])
		w.headInBuf = false
		if hp > 0 {
			segs = append(segs, seg{b[:hp], w.base})
		}
		if hp+BlockSize < len(b) {
			segs = append(segs, seg{b[hp+BlockSize:], w.base + int64(hp+BlockSize)})
		}
	} else if len(b) > 0 {
		segs = append(segs, seg{b, w.base})
	}
	w.fanout(&w.wgs[w.cur], segs)
	w.base += int64(w.n)
	w.n = 0
	w.cur = (w.cur + 1) % ringSize
	w.wgs[w.cur].Wait() // the next buffer must be written out (and hashed) before reuse
	if w.bufs[w.cur] == nil {
		w.bufs[w.cur] = getBuf()
	}
	return nil
}

func (w *batchWriter) fanout(wg *sync.WaitGroup, segs []seg) {
	if len(segs) == 0 {
		return
	}
	for _, t := range w.ts {
		if t.failed() != nil {
			continue
		}
		wg.Go(func() {
			for _, s := range segs {
				if t.failed() != nil {
					return
				}
				if s.off+int64(len(s.p)) > t.sb.DataEnd {
					t.fail(t.errf(fmt.Errorf("%w: record would pass the end of the data area at %d", ErrNoSpace, t.sb.DataEnd)))
					return
				}
				if _, err := t.dev.WriteAt(s.p, s.off); err != nil {
					t.fail(t.errf(err))
					return
				}
				crashpoint.Hit("storage.write")
				w.writeBehind(t, len(s.p))
			}
		})
	}
}

// writeBehindBytes: each time this much more of a batch is written to a
// drive, a flush (fdatasync) of that drive starts in the background, unless
// one is still running. The device (or a loop device's backing file, whose
// dirty pages would otherwise all wait for commit) writes out while the
// rest of the batch is sealed, and commit's fdatasync finds little left to
// do: 0.68 → 0.83–0.87 of dd's rate on four loop devices (make bench). Batches
// smaller than this, the common case, pay no extra flush. A failed flush
// fails the drive as commit's would. (RocksDB's bytes_per_sync is the same
// idea.)
const writeBehindBytes = 16 << 20

func (w *batchWriter) writeBehind(t *target, n int) {
	if t.dirty.Add(int64(n)) < writeBehindBytes || !t.syncing.CompareAndSwap(false, true) {
		return
	}
	t.dirty.Store(0)
	w.syncs.Go(func() {
		defer t.syncing.Store(false)
		if err := t.dev.Sync(); err != nil {
			t.fail(t.errf(err))
		}
	})
}

// wait waits for the writes, hashing and write-behind flushes in flight.
func (w *batchWriter) wait() {
	for i := range w.wgs {
		w.wgs[i].Wait()
	}
	w.syncs.Wait()
}

// commit writes what is buffered and fdatasyncs every live target. The
// caller then counts live targets against the quorum.
func (w *batchWriter) commit() {
	w.flush()
	w.wait()
	var wg sync.WaitGroup
	for _, t := range w.ts {
		if t.failed() != nil {
			continue
		}
		wg.Go(func() {
			if err := t.dev.Sync(); err != nil {
				t.fail(t.errf(err))
			}
		})
	}
	wg.Wait()
}
