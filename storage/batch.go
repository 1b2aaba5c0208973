package storage

import (
	"errors"
	"fmt"
	"sync"
)

const (
	batchBufSize = 4 << 20
	ringSize     = 3
)

type target struct {
	d   *drive
	mu  sync.Mutex
	err error
}

func (t *target) failed() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
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
// (each drive proceeds at its own pace). A record's first
// block (its header) is held back until the record is complete.
type batchWriter struct {
	quorum int
	ts     []*target
	bufs   [ringSize][]byte
	wgs    [ringSize]sync.WaitGroup // writes in flight from each buffer
	cur    int
	base   int64 // drive offset of buf[0]
	n      int

	recStart  int64
	headInBuf bool
	head      []byte
}

func newBatchWriter(ds []*drive, start int64, quorum int) *batchWriter {
	w := &batchWriter{base: start, quorum: quorum}
	for _, d := range ds {
		w.ts = append(w.ts, &target{d: d})
	}
	for i := range w.bufs {
		w.bufs[i] = bufPool.Get().([]byte)
	}
	return w
}

var bufPool = sync.Pool{New: func() any { return alignedBuf(batchBufSize) }}

// release returns the buffers; the writer must be idle.
func (w *batchWriter) release() {
	w.wait()
	for i := range w.bufs {
		bufPool.Put(w.bufs[i])
		w.bufs[i] = nil
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

func (w *batchWriter) liveDrives() []*drive {
	var out []*drive
	for _, t := range w.ts {
		if t.failed() == nil {
			out = append(out, t.d)
		}
	}
	return out
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
func (w *batchWriter) begin(h *Header) {
	if w.n == len(w.buf()) {
		w.flush() // errors surface at the next write or commit
	}
	w.recStart = w.pos()
	h.Offset = w.recStart
	w.headInBuf = true
	b := w.buf()
	clear(b[w.n : w.n+HeaderSize])
	w.n += HeaderSize
}

func (w *batchWriter) write(p []byte) error {
	for len(p) > 0 {
		if w.n == len(w.buf()) {
			if err := w.flush(); err != nil {
				return err
			}
		}
		c := copy(w.buf()[w.n:], p)
		w.n += c
		p = p[c:]
	}
	return nil
}

// finish pads the record to a block boundary and fills in its header.
func (w *batchWriter) finish(h *Header) error {
	if pad := int(roundUp(w.pos()) - w.pos()); pad > 0 {
		if err := w.write(make([]byte, pad)); err != nil {
			return err
		}
	}
	if w.headInBuf {
		h.put(w.buf()[w.recStart-w.base:])
		w.headInBuf = false
		return nil
	}
	h.put(w.head)
	var wg sync.WaitGroup
	w.fanout(&wg, []seg{{w.head, w.recStart}})
	wg.Wait()
	w.head = nil
	return nil
}

// flush writes the current buffer (minus a held-back header block)
// asynchronously and switches buffers. It fails when fewer than the quorum
// of drives are still taking writes.
func (w *batchWriter) flush() error {
	if w.live() < w.quorum {
		return fmt.Errorf("%w: %d drives left: %w", ErrNoQuorum, w.live(), w.errs())
	}
	b := w.buf()[:w.n]
	var segs []seg
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
	w.wgs[w.cur].Wait() // the next buffer must be written out before reuse
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
				if s.off+int64(len(s.p)) > t.d.sb.DataEnd {
					t.fail(t.d.errf(-1, fmt.Errorf("%w: record would pass the end of the data area at %d", ErrNoSpace, t.d.sb.DataEnd)))
					return
				}
				if _, err := t.d.dev.WriteAt(s.p, s.off); err != nil {
					t.fail(t.d.errf(-1, err))
					return
				}
			}
		})
	}
}

func (w *batchWriter) wait() {
	for i := range w.wgs {
		w.wgs[i].Wait()
	}
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
			if err := t.d.dev.Sync(); err != nil {
				t.fail(t.d.errf(-1, err))
			}
		})
	}
	wg.Wait()
}
