package storage

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"

	"golang.org/x/mod/sumdb/tlog"
)

// frontier computes RFC 6962 tree heads incrementally: it keeps the roots
// of the perfect subtrees of the binary decomposition of n, largest first.
type frontier struct {
	stack []tlog.Hash
	n     uint64
}

func (f *frontier) add(h tlog.Hash) {
	for s := f.n; s&1 == 1; s >>= 1 {
		h = tlog.NodeHash(f.stack[len(f.stack)-1], h)
		f.stack = f.stack[:len(f.stack)-1]
	}
	f.stack = append(f.stack, h)
	f.n++
}

func (f *frontier) root() tlog.Hash {
	if len(f.stack) == 0 {
		return sha256.Sum256(nil)
	}
	h := f.stack[len(f.stack)-1]
	for i := len(f.stack) - 2; i >= 0; i-- {
		h = tlog.NodeHash(f.stack[i], h)
	}
	return h
}

func (f *frontier) clone() frontier {
	return frontier{stack: append([]tlog.Hash(nil), f.stack...), n: f.n}
}

func (f *frontier) equal(g *frontier) bool {
	if f.n != g.n || len(f.stack) != len(g.stack) {
		return false
	}
	for i := range f.stack {
		if f.stack[i] != g.stack[i] {
			return false
		}
	}
	return true
}

// frontierNodes lists the stored-hash indexes (tlog layout) of the perfect
// subtrees of the decomposition of a tree of n records, largest first: the
// nodes a frontier of n holds.
func frontierNodes(n uint64) []int64 {
	var out []int64
	p := uint64(0)
	for l := 63; l >= 0; l-- {
		if n&(1<<l) != 0 {
			out = append(out, tlog.StoredHashIndex(l, int64(p>>l)))
			p += 1 << l
		}
	}
	return out
}

// resume is a place a walk of the log can start from instead of record 0:
// the first record of a batch, its offset, and the tree of the records
// before it. Every checkpoint record carries the resume point of its own
// batch as its meta, so Open reads only the last batch (see Open).
type resume struct {
	index uint64
	off   int64
	fr    frontier // tree of records 0..index-1
}

func genesis() resume { return resume{off: DataStart} }

const (
	// resumeMin and resumeMax bound the encoded resume point: index (8),
	// offset (8), then one 32-byte root per set bit of index.
	resumeMin = 16
	resumeMax = resumeMin + 63*sha256.Size
)

func (r resume) encode() []byte {
	b := make([]byte, resumeMin, resumeMin+sha256.Size*len(r.fr.stack))
	binary.BigEndian.PutUint64(b, r.index)
	binary.BigEndian.PutUint64(b[8:], uint64(r.off))
	for _, h := range r.fr.stack {
		b = append(b, h[:]...)
	}
	return b
}

// parseResume decodes the meta of checkpoint record ck at offset ckOff and
// checks that it can describe a batch ending there.
func parseResume(b []byte, ck uint64, ckOff int64) (resume, error) {
	bad := func(format string, args ...any) (resume, error) {
		return resume{}, fmt.Errorf("storage: checkpoint record %d: resume point: %s: %w", ck, fmt.Sprintf(format, args...), ErrCorrupt)
	}
	if len(b) < resumeMin || len(b) > resumeMax || (len(b)-resumeMin)%sha256.Size != 0 {
		return bad("%d bytes", len(b))
	}
	r := resume{index: binary.BigEndian.Uint64(b), off: int64(binary.BigEndian.Uint64(b[8:]))}
	switch {
	case r.index >= ck:
		return bad("batch starts at record %d", r.index)
	case bits.OnesCount64(r.index) != (len(b)-resumeMin)/sha256.Size:
		return bad("%d subtree roots for a tree of %d records", (len(b)-resumeMin)/sha256.Size, r.index)
	case r.off < DataStart || r.off >= ckOff || r.off%BlockSize != 0:
		return bad("batch offset %d", r.off)
	case (r.index == 0) != (r.off == DataStart),
		r.index > uint64(r.off-DataStart)/BlockSize,
		ck-r.index > uint64(ckOff-r.off)/BlockSize:
		return bad("%d records before offset %d and %d between it and %d do not fit", r.index, r.off, ck-r.index, ckOff)
	}
	r.fr.n = r.index
	for p := b[resumeMin:]; len(p) > 0; p = p[sha256.Size:] {
		r.fr.stack = append(r.fr.stack, tlog.Hash(p[:sha256.Size]))
	}
	return r, nil
}

// treeHashes is the vault's Merkle tree in tlog's stored-hash layout. It
// holds every hash from stored index hbase on (those that records base..
// created) and, below it, only the roots of the perfect subtrees of the
// first base records. That is all tlog reads to append records, compute
// tree heads of size ≥ base and prove records ≥ base: any other node it
// needs is either one of those roots or spans record base. With base 0 it
// is the whole tree.
type treeHashes struct {
	base   uint64
	hbase  int64
	low    map[int64]tlog.Hash
	hashes []tlog.Hash
}

func newTreeHashes(fr *frontier) *treeHashes {
	t := &treeHashes{base: fr.n, hbase: tlog.StoredHashCount(int64(fr.n)), low: map[int64]tlog.Hash{}}
	for i, x := range frontierNodes(fr.n) {
		t.low[x] = fr.stack[i]
	}
	return t
}

// errNotIndexed: a hash below base was asked for (load the index first).
var errNotIndexed = errors.New("record index not loaded")

func (t *treeHashes) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		switch h, ok := t.low[x]; {
		case x >= t.hbase && x-t.hbase < int64(len(t.hashes)):
			out[i] = t.hashes[x-t.hbase]
		case ok:
			out[i] = h
		default:
			return nil, fmt.Errorf("storage: tree hash %d not held: %w", x, errNotIndexed)
		}
	}
	return out, nil
}

// add appends the leaf of record i (the next record).
func (t *treeHashes) add(i uint64, leaf tlog.Hash) error {
	hs, err := tlog.StoredHashesForRecordHash(int64(i), leaf, t)
	if err != nil {
		return err
	}
	t.hashes = append(t.hashes, hs...)
	return nil
}

// truncate drops records n.. (n ≥ base), as after a failed append.
func (t *treeHashes) truncate(n uint64) {
	t.hashes = t.hashes[:tlog.StoredHashCount(int64(n))-t.hbase]
}

// frontierAt returns the frontier of the tree of n ≥ base records.
func (t *treeHashes) frontierAt(n uint64) (frontier, error) {
	hs, err := t.ReadHashes(frontierNodes(n))
	if err != nil {
		return frontier{}, err
	}
	return frontier{stack: hs, n: n}, nil
}
