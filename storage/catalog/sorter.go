package catalog

import (
	"bufio"
	"bytes"
	"container/heap"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
)

// sorter takes keys in any order and gives them back sorted, without
// duplicates, while holding at most limit bytes of them in memory (keys
// plus 8 bytes of bookkeeping each). Beyond the limit it sorts what it holds
// and spills it as a run to a file in dir; the runs are merged at the end.
// The keys are user, item and upload ids, so a run is sealed with
// AES-256-GCM under a key that exists only in this process's memory: a run
// left behind by a crash is unreadable, and a damaged one fails to open.
type sorter struct {
	dir   string
	limit int
	arena []byte
	keys  []uint64 // offset in arena << 16 | length
	runs  []run    // spilled runs, each sorted
	next  uint32   // number of the next run
	aead  cipher.AEAD
}

type run struct {
	name string
	id   uint32 // in every chunk's nonce
}

const (
	// sorterChunk is the plaintext size of one sealed chunk of a run.
	sorterChunk = 64 << 10
	// sorterFanIn bounds the runs merged at once (each holds two chunk
	// buffers and a file); more are merged in passes.
	sorterFanIn = 32
)

func newSorter(dir string, limit int) *sorter {
	return &sorter{dir: dir, limit: limit}
}

func (s *sorter) add(k []byte) error {
	if len(k) > 0xffff {
		return fmt.Errorf("catalog: rebuild: index key of %d bytes", len(k))
	}
	if len(s.arena)+len(k)+8*(len(s.keys)+1) > s.limit && len(s.keys) > 0 {
		if err := s.spill(); err != nil {
			return err
		}
	}
	if s.arena == nil {
		// One allocation up to the limit: the pages are only touched as
		// keys fill them, and appending never copies the arena.
		s.arena = make([]byte, 0, s.limit)
	}
	s.keys = append(s.keys, uint64(len(s.arena))<<16|uint64(len(k)))
	s.arena = append(s.arena, k...)
	return nil
}

func (s *sorter) key(h uint64) []byte {
	off := h >> 16
	return s.arena[off : off+h&0xffff]
}

// sortMem sorts the keys in memory and drops duplicates.
func (s *sorter) sortMem() {
	slices.SortFunc(s.keys, func(a, b uint64) int { return bytes.Compare(s.key(a), s.key(b)) })
	s.keys = slices.CompactFunc(s.keys, func(a, b uint64) bool { return bytes.Equal(s.key(a), s.key(b)) })
}

func (s *sorter) spill() error {
	if s.aead == nil {
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return err
		}
		b, err := aes.NewCipher(k)
		clear(k)
		if err != nil {
			return err
		}
		if s.aead, err = cipher.NewGCM(b); err != nil {
			return err
		}
	}
	s.sortMem()
	err := s.writeRun(func(add func([]byte) error) error {
		for _, h := range s.keys {
			if err := add(s.key(h)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.arena, s.keys = s.arena[:0], s.keys[:0]
	if len(s.runs) >= 2*sorterFanIn {
		return s.mergeRuns(sorterFanIn)
	}
	return nil
}

// writeRun writes the keys that fill gives as a new run.
func (s *sorter) writeRun(fill func(add func([]byte) error) error) error {
	f, err := os.CreateTemp(s.dir, "sort-*.run")
	if err != nil {
		return fmt.Errorf("catalog: rebuild: spilling sorted keys: %w", err)
	}
	r := run{f.Name(), s.next}
	s.next++
	w := &runWriter{w: bufio.NewWriterSize(f, 256<<10), aead: s.aead, run: r.id}
	err = fill(w.add)
	if err == nil {
		err = w.close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(r.name)
		if errors.Is(err, errRun) {
			return err
		}
		return fmt.Errorf("catalog: rebuild: spilling sorted keys: %w", err)
	}
	s.runs = append(s.runs, r)
	return nil
}

// mergeRuns merges the oldest n runs into one.
func (s *sorter) mergeRuns(n int) error {
	old := slices.Clone(s.runs[:n])
	s.runs = slices.Delete(s.runs, 0, n)
	err := s.writeRun(func(add func([]byte) error) error {
		return s.merge(old, false, add)
	})
	for _, r := range old {
		os.Remove(r.name)
	}
	return err
}

// merge calls fn with every key of the runs, and of memory when mem is
// set, in order and once each.
func (s *sorter) merge(runs []run, mem bool, fn func(k []byte) error) error {
	var m merger
	for _, r := range runs {
		f, err := os.Open(r.name)
		if err != nil {
			return fmt.Errorf("catalog: rebuild: %w", err)
		}
		defer f.Close()
		if err := m.push(&runReader{r: bufio.NewReaderSize(f, 32<<10), aead: s.aead, run: r.id}); err != nil {
			return err
		}
	}
	if mem {
		if err := m.push(&memCursor{s: s}); err != nil {
			return err
		}
	}
	var last []byte
	first := true
	for m.Len() > 0 {
		c := m.cs[0]
		k := c.key()
		if first || !bytes.Equal(k, last) {
			if err := fn(k); err != nil {
				return err
			}
			last, first = append(last[:0], k...), false
		}
		ok, err := c.next()
		if err != nil {
			return err
		}
		if ok {
			heap.Fix(&m, 0)
		} else {
			heap.Pop(&m)
		}
	}
	return nil
}

// each calls fn with every key in order, once. fn must not keep k.
func (s *sorter) each(fn func(k []byte) error) error {
	s.sortMem()
	if len(s.runs) == 0 {
		for _, h := range s.keys {
			if err := fn(s.key(h)); err != nil {
				return err
			}
		}
		return nil
	}
	for len(s.runs) >= sorterFanIn {
		if err := s.mergeRuns(sorterFanIn); err != nil {
			return err
		}
	}
	return s.merge(s.runs, true, fn)
}

// close removes the spilled runs and forgets the keys.
func (s *sorter) close() {
	for _, r := range s.runs {
		os.Remove(r.name)
	}
	s.runs, s.arena, s.keys = nil, nil, nil
}

// A run is a sequence of chunks, each a 4-byte big-endian length and an
// AES-GCM sealed plaintext: a flag byte (1 on the last chunk, else 0), then
// keys, each a 2-byte length and the key. The nonce is the run number and
// the chunk number, so chunks cannot be reordered, moved between runs or
// cut off unnoticed.
type runWriter struct {
	w     *bufio.Writer
	aead  cipher.AEAD
	run   uint32
	chunk uint64
	buf   []byte
}

func runNonce(run uint32, chunk uint64) []byte {
	n := make([]byte, 12)
	binary.BigEndian.PutUint32(n, run)
	binary.BigEndian.PutUint64(n[4:], chunk)
	return n
}

func (w *runWriter) add(k []byte) error {
	if len(w.buf) == 0 {
		w.buf = append(w.buf, 0)
	}
	if len(w.buf)+2+len(k) > sorterChunk {
		if err := w.flush(false); err != nil {
			return err
		}
	}
	w.buf = binary.BigEndian.AppendUint16(w.buf, uint16(len(k)))
	w.buf = append(w.buf, k...)
	return nil
}

func (w *runWriter) flush(last bool) error {
	if len(w.buf) == 0 {
		w.buf = append(w.buf, 0)
	}
	if last {
		w.buf[0] = 1
	}
	sealed := w.aead.Seal(w.buf[:0], runNonce(w.run, w.chunk), w.buf, nil)
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], uint32(len(sealed)))
	w.w.Write(l[:])
	_, err := w.w.Write(sealed)
	w.chunk++
	w.buf = append(sealed[:0], 0)
	return err
}

func (w *runWriter) close() error {
	if err := w.flush(true); err != nil {
		return err
	}
	return w.w.Flush()
}

type runReader struct {
	r     *bufio.Reader
	aead  cipher.AEAD
	run   uint32
	chunk uint64
	buf   []byte // sealed chunk, then its plaintext
	plain []byte // keys not yet returned
	last  bool
	cur   []byte
}

var errRun = errors.New("catalog: rebuild: a spilled run of sorted keys is damaged")

func (r *runReader) key() []byte { return r.cur }

func (r *runReader) next() (bool, error) {
	for len(r.plain) == 0 {
		if r.last {
			return false, nil
		}
		var l [4]byte
		if _, err := io.ReadFull(r.r, l[:]); err != nil {
			return false, errRun
		}
		n := int(binary.BigEndian.Uint32(l[:]))
		if n > sorterChunk+r.aead.Overhead() || n < r.aead.Overhead() {
			return false, errRun
		}
		r.buf = slices.Grow(r.buf[:0], n)[:n]
		if _, err := io.ReadFull(r.r, r.buf); err != nil {
			return false, errRun
		}
		p, err := r.aead.Open(r.buf[:0], runNonce(r.run, r.chunk), r.buf, nil)
		if err != nil || len(p) == 0 || p[0] > 1 {
			return false, errRun
		}
		r.chunk++
		r.last, r.plain = p[0] == 1, p[1:]
	}
	if len(r.plain) < 2 {
		return false, errRun
	}
	n := int(binary.BigEndian.Uint16(r.plain))
	if len(r.plain) < 2+n {
		return false, errRun
	}
	r.cur, r.plain = r.plain[2:2+n], r.plain[2+n:]
	return true, nil
}

type memCursor struct {
	s   *sorter
	i   int
	cur []byte
}

func (c *memCursor) key() []byte { return c.cur }

func (c *memCursor) next() (bool, error) {
	if c.i >= len(c.s.keys) {
		return false, nil
	}
	c.cur = c.s.key(c.s.keys[c.i])
	c.i++
	return true, nil
}

type cursor interface {
	key() []byte
	next() (bool, error)
}

// merger is a min-heap of cursors by current key.
type merger struct{ cs []cursor }

func (m *merger) push(c cursor) error {
	ok, err := c.next()
	if err != nil || !ok {
		return err
	}
	heap.Push(m, c)
	return nil
}

func (m *merger) Len() int           { return len(m.cs) }
func (m *merger) Less(i, j int) bool { return bytes.Compare(m.cs[i].key(), m.cs[j].key()) < 0 }
func (m *merger) Swap(i, j int)      { m.cs[i], m.cs[j] = m.cs[j], m.cs[i] }
func (m *merger) Push(x any)         { m.cs = append(m.cs, x.(cursor)) }
func (m *merger) Pop() any {
	c := m.cs[len(m.cs)-1]
	m.cs = m.cs[:len(m.cs)-1]
	return c
}
