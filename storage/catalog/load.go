package catalog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/pb"
	"github.com/dgraph-io/ristretto/v2/z"
)

// The bulk load: Rebuild's fast path when the scan gives records in
// increasing index order, as a drive scan does. Every key the catalog
// holds is written once, straight into sorted tables at the bottom level
// of a fresh badger database (badger's StreamWriter): no memtable, no
// write-ahead log, no compaction. The record keys ('R') and the kind keys
// of items and checkpoints come out of an ordered scan sorted and are
// written as they come; the other keys (items, uploads, users,
// supersessions, kinds of the rarer records) go through a sorter bounded
// to RebuildSortMemory and are written after the scan.
//
// The scan runs on the caller's goroutine; parsing, key building and the
// writes run on another, fed batches of records through a channel, so a
// drive scan (decryption) and the indexing use two cores. Each stream of
// sorted keys holds a table builder (a few times BaseTableSize) until it
// is closed, so the loader closes each as soon as it is complete.

// errUnordered stops the bulk load when the scan is not in increasing
// index order; Rebuild then indexes through transactions instead.
var errUnordered = errors.New("catalog: rebuild: records not in increasing index order")

// Stream ids. Streams must not overlap in key range: one per key family,
// one per directly written kind, and for the sorted kind keys one below and
// one above the checkpoint kind.
const (
	streamMeta   = 1
	streamRecord = 2
	streamItem   = 3
	streamKindLo = 4 // sorted kind keys of kinds below KindCheckpoint
	streamKindHi = 5 // sorted kind keys of kinds above KindCheckpoint
	streamUpload = 6
	streamSuper  = 7
	streamUser   = 8
	streamKind   = 16 // + kind, for the directly written kinds
)

// directKind reports whether the kind keys of kind k are written as the
// scan goes (the kinds most records have); the others are sorted.
func directKind(k MetaKind) bool { return k == KindItem || k == KindCheckpoint }

// sortedStream returns the stream of a key from the sorter.
func sortedStream(k []byte) uint32 {
	switch k[0] {
	case pItem:
		return streamItem
	case pKind:
		if MetaKind(k[1]) < KindCheckpoint {
			return streamKindLo
		}
		return streamKindHi
	case pUpload:
		return streamUpload
	case pSuper:
		return streamSuper
	}
	return streamUser
}

// loadBatch is a batch of scanned records handed to the indexer.
type loadBatch struct {
	idx  []uint64
	ends []int // meta i is data[ends[i-1]:ends[i]]
	data []byte
}

func (b *loadBatch) reset() { b.idx, b.ends, b.data = b.idx[:0], b.ends[:0], b.data[:0] }

// load fills the fresh database of c from scan and returns the digest of
// what it wrote (what c.Digest returns). It returns errUnordered when the
// scan is out of order.
func load(c *Catalog, scan ScanFunc, sortDir string) (sum [32]byte, err error) {
	sw := c.db.NewStreamWriter()
	if err := sw.Prepare(); err != nil {
		return sum, fmt.Errorf("catalog: rebuild: %w", err)
	}
	l := &loader{sw: sw, buf: z.NewBuffer(1<<20, "catalog.load"), sorted: newSorter(sortDir, rebuildSortMemory), log: c.log}
	l.derivedFn = l.derived
	defer func() {
		l.buf.Release()
		l.sorted.close()
		if err != nil {
			sw.Cancel()
		}
	}()

	work := make(chan *loadBatch, 2)
	free := make(chan *loadBatch, 3)
	for range cap(free) {
		free <- &loadBatch{}
	}
	var wg sync.WaitGroup
	var ierr error // the indexer's error, read after wg.Wait or a failed send
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for b := range work {
			if ierr == nil {
				ierr = l.index(b)
				if ierr != nil {
					close(stop)
				}
			}
			b.reset()
			free <- b
		}
	}()

	cur := <-free
	var last, contig uint64
	started := false
	send := func() error {
		select {
		case work <- cur:
		case <-stop:
			return errStopped
		}
		select {
		case cur = <-free:
		case <-stop:
			return errStopped
		}
		return nil
	}
	t0 := time.Now()
	serr := scan(func(idx uint64, meta []byte) error {
		if started && idx <= last {
			return errUnordered
		}
		started, last = true, idx
		if idx == contig {
			contig++
		}
		cur.idx = append(cur.idx, idx)
		cur.data = append(cur.data, meta...)
		cur.ends = append(cur.ends, len(cur.data))
		if len(cur.idx) == loadBatchRecords {
			return send()
		}
		return nil
	})
	if serr == nil && len(cur.idx) > 0 {
		serr = send()
	}
	close(work)
	wg.Wait()
	c.log.Debug("catalog: rebuild: scanned", "took", time.Since(t0))
	if ierr != nil {
		return sum, ierr
	}
	if serr != nil {
		if errors.Is(serr, errUnordered) || strings.HasPrefix(serr.Error(), "catalog:") {
			return sum, serr
		}
		return sum, fmt.Errorf("catalog: rebuild: scan: %w", serr)
	}
	if err := l.finish(contig); err != nil {
		return sum, err
	}
	return l.digest.sum(), nil
}

// errStopped is what the scan callback returns when the indexer failed;
// load reports the indexer's error instead.
var errStopped = errors.New("catalog: rebuild: indexing stopped")

// rebuildSortMemory is RebuildSortMemory; tests lower it to exercise the
// spilling.
var rebuildSortMemory = RebuildSortMemory

// loadBatchRecords is how many records the scan hands to the indexer at
// a time.
const loadBatchRecords = 1024

type loader struct {
	sw        *badger.StreamWriter
	open      []uint32 // streams written to and not closed
	buf       *z.Buffer
	kv        pb.KV
	key       []byte
	sorted    *sorter
	users     map[string]struct{}
	digest    digester // of every key written, as Digest computes it
	derivedFn func([]byte) error
	log       *slog.Logger
}

func (l *loader) put(stream uint32, k, v []byte) {
	if len(l.open) == 0 || l.open[len(l.open)-1] != stream {
		if !slices.Contains(l.open, stream) {
			l.open = append(l.open, stream)
		}
	}
	l.digest.add(k, v)
	l.kv.Key, l.kv.Value, l.kv.Version, l.kv.StreamId = k, v, 1, stream
	badger.KVToBuffer(&l.kv, l.buf)
}

// closeStreams marks every open stream done: badger then writes their last
// tables and drops their builders.
func (l *loader) closeStreams() error {
	done := pb.KV{StreamDone: true}
	for _, s := range l.open {
		done.StreamId = s
		badger.KVToBuffer(&done, l.buf)
	}
	l.open = l.open[:0]
	return l.flush()
}

func (l *loader) flush() error {
	if l.buf.LenNoPadding() == 0 {
		return nil
	}
	err := l.sw.Write(l.buf)
	l.buf.Reset()
	if err != nil {
		return fmt.Errorf("catalog: rebuild: write: %w", err)
	}
	return nil
}

// index builds the keys of one batch of records.
func (l *loader) index(b *loadBatch) error {
	start := 0
	for i, idx := range b.idx {
		meta := b.data[start:b.ends[i]]
		start = b.ends[i]
		m, err := ParseMeta(meta)
		if err != nil {
			return withPrefix(err, "catalog: rebuild: record %d", idx)
		}
		if err := checkPlacement(idx, m); err != nil {
			return withPrefix(err, "catalog: rebuild")
		}
		l.key = binary.BigEndian.AppendUint64(append(l.key[:0], pRecord), idx)
		l.put(streamRecord, l.key, meta)
		l.key, err = eachDerivedKey(l.key, idx, &m, l.derivedFn)
		if err != nil {
			return err
		}
	}
	return l.flush()
}

// derived routes one secondary key: written now when it comes sorted from
// an ordered scan, else to the sorter.
func (l *loader) derived(k []byte) error {
	switch {
	case k[0] == pKind && directKind(MetaKind(k[1])):
		l.put(streamKind+uint32(k[1]), k, nil)
		return nil
	case k[0] == pUser:
		return l.user(k)
	}
	return l.sorted.add(k)
}

// maxLoadUsers bounds the set of user ids the loader deduplicates in
// memory; beyond it user keys go through the sorter, which deduplicates
// too.
const maxLoadUsers = 1 << 16

func (l *loader) user(k []byte) error {
	if _, ok := l.users[string(k)]; ok {
		return nil
	}
	if len(l.users) < maxLoadUsers {
		if l.users == nil {
			l.users = map[string]struct{}{}
		}
		l.users[string(k)] = struct{}{}
	}
	return l.sorted.add(k)
}

// finish writes the sorted keys and the catalog metadata, and flushes
// the stream writer.
func (l *loader) finish(contig uint64) error {
	if err := l.closeStreams(); err != nil {
		return err
	}
	if testHook != nil {
		testHook("sorting")
	}
	err := l.sorted.each(func(k []byte) error {
		st := sortedStream(k)
		if len(l.open) > 0 && l.open[0] != st {
			if err := l.closeStreams(); err != nil {
				return err
			}
		}
		l.put(st, k, nil)
		if l.buf.LenNoPadding() >= 1<<20 {
			return l.flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	if contig > 0 { // as indexTxn: the watermark is written once it moves
		l.put(streamMeta, keyContig, u64(contig))
	}
	l.put(streamMeta, keyFormat, formatTag)
	if err := l.closeStreams(); err != nil {
		return err
	}
	if err := l.sw.Flush(); err != nil {
		return fmt.Errorf("catalog: rebuild: write: %w", err)
	}
	return nil
}
