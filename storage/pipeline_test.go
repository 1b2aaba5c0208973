package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"slices"
	"syscall"
	"testing"
)

// appendRun drives AppendEach over batches of the given record sizes and
// logs the order of its calls ("next 1", "done 0", …). fail, if set, may
// replace batch i's records (nil: keep them).
type appendRun struct {
	batches [][]int
	r       *mrand.Rand
	items   []([]item)
	events  []string
	idx     [][]uint64
	fail    func(i int, recs []Record) []Record
	onDone  func(i int)
}

func (a *appendRun) run(v *Vault) error {
	n := 0
	next := func() ([]Record, error) {
		if n == len(a.batches) {
			return nil, io.EOF
		}
		recs, items := makeItems(a.r, a.batches[n]...)
		if a.fail != nil {
			if r := a.fail(n, recs); r != nil {
				recs = r
			}
		}
		a.items = append(a.items, items)
		a.events = append(a.events, fmt.Sprint("next ", n))
		n++
		return recs, nil
	}
	done := func(idx []uint64) error {
		i := len(a.idx)
		a.idx = append(a.idx, idx)
		a.events = append(a.events, fmt.Sprint("done ", i))
		if a.onDone != nil {
			a.onDone(i)
		}
		return nil
	}
	return v.AppendEach(context.Background(), next, done)
}

// acked is what done acknowledged, for checkItems.
func (a *appendRun) acked() map[uint64]item {
	m := map[uint64]item{}
	for i, idx := range a.idx {
		addItems(m, idx, a.items[i])
	}
	return m
}

func TestAppendEach(t *testing.T) {
	k := newTestKeys(t)
	paths := imageDrives(t, k, 4, 128<<20)
	v, fs := openFaulty(t, k, paths, 3)
	before := appendItems(t, v, nil, 100)
	a := &appendRun{r: mrand.New(mrand.NewPCG(31, 32)), batches: [][]int{{1000, 5 << 20}, {7, 9 << 20, 300}, {1}, {6 << 20}, {4096, 4097}}}
	// Batch 1 (more than one ring buffer) is written to the drives while
	// batch 0 is synced.
	overlapped := fs.devs[paths[0]].holdNextSync()
	if err := a.run(v); err != nil {
		t.Fatal(err)
	}
	if !overlapped() {
		t.Error("batch 1 was not written while batch 0 was synced")
	}
	// done follows next: batch i is done once batch i+1 is written.
	want := []string{"next 0", "next 1", "done 0", "next 2", "done 1", "next 3", "done 2", "next 4", "done 3", "done 4"}
	if !slices.Equal(a.events, want) {
		t.Fatalf("calls %q, want %q", a.events, want)
	}
	// Indexes follow on, one checkpoint after each batch.
	n := uint64(2) // the item and its checkpoint
	for i, idx := range a.idx {
		for j, x := range idx {
			if x != n+uint64(j) {
				t.Fatalf("batch %d: indexes %v, want from %d", i, idx, n)
			}
		}
		n += uint64(len(idx)) + 1
	}
	if v.Size() != n {
		t.Fatalf("size %d, want %d", v.Size(), n)
	}
	items := a.acked()
	for x, it := range before {
		items[x] = it
	}
	checkItems(t, v, items)
	if c, err := OpenCheckpoint(v.Checkpoint(), k.verifier, "coffre.test/vault"); err != nil || c.Size != n-1 {
		t.Fatalf("checkpoint %+v, %v: want one of %d records", c, err, n-1)
	}
	v.Close()
	v = openVault(t, k, paths, 3)
	if v.Size() != n {
		t.Fatalf("reopened: size %d, want %d", v.Size(), n)
	}
	checkItems(t, v, items)
	v.Close()
	auditOK(t, k, paths)
	replicasEqual(t, paths)
}

// A batch whose body fails is dropped, the one before it lands, and the
// vault goes on from there.
func TestAppendEachBadBatch(t *testing.T) {
	k := newTestKeys(t)
	paths := imageDrives(t, k, 3, 64<<20)
	v := openVault(t, k, paths, 2)
	bad := errors.New("the source went away")
	a := &appendRun{r: mrand.New(mrand.NewPCG(33, 34)), batches: [][]int{{3 << 20}, {5 << 20, 100}, {100}}}
	a.fail = func(i int, recs []Record) []Record {
		if i == 1 {
			recs[0].Body = io.MultiReader(io.LimitReader(recs[0].Body, 4<<20+17), &errReader{bad})
			return recs
		}
		return nil
	}
	if err := a.run(v); !errors.Is(err, bad) {
		t.Fatalf("AppendEach: %v, want %v", err, bad)
	}
	if !slices.Equal(a.events, []string{"next 0", "next 1", "done 0"}) {
		t.Fatalf("calls %q", a.events)
	}
	if v.Size() != 2 {
		t.Fatalf("size %d after a dropped batch, want 2", v.Size())
	}
	items := a.acked()
	more := appendItems(t, v, mrand.New(mrand.NewPCG(35, 36)), 2<<20, 10)
	for x, it := range more {
		if x < 2 {
			t.Fatalf("record %d written over the batch before", x)
		}
		items[x] = it
	}
	checkItems(t, v, items)
	v.Close()
	v = openVault(t, k, paths, 2)
	if v.Size() != 5 {
		t.Fatalf("reopened: size %d, want 5", v.Size())
	}
	checkItems(t, v, items)
	v.Close()
	replicasEqual(t, paths)
}

type errReader struct{ err error }

func (e *errReader) Read([]byte) (int, error) { return 0, e.err }

// A batch that loses the quorum takes the batch written after it down
// with it; a drive that fails in one batch is not synced by the next.
func TestAppendEachFailures(t *testing.T) {
	k := newTestKeys(t)
	paths := imageDrives(t, k, 4, 64<<20)
	v, fs := openFaulty(t, k, paths, 3)
	drive := func(i int) *faultDev { return fs.devs[paths[i]] }
	var synced int64
	a := &appendRun{r: mrand.New(mrand.NewPCG(37, 38)), batches: [][]int{{100}, {5 << 20}, {300}, {5 << 20}, {500}}}
	drive(1).arm(syscall.EIO, false, true, false, 0)
	// Batch 0's sync of drive 2 fails only once batch 1 is being
	// written there, so that batch 1 starts with drive 2 among its own.
	drive(1).holdNextSync()
	a.onDone = func(i int) {
		switch i {
		case 0: // batch 0 failed drive 2; batch 1 is written, not yet synced
			synced = drive(1).synced.Load()
		case 1: // batch 2 is written: batch 3 will lose the quorum
			if n := drive(1).synced.Load(); n != synced {
				t.Errorf("drive 2, failed in batch 0, synced %d times for batch 1", n-synced)
			}
			drive(2).arm(syscall.EIO, false, true, false, 0)
		}
	}
	err := a.run(v)
	if !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("AppendEach: %v, want ErrNoQuorum", err)
	}
	// Batch 2 lost the quorum and batch 3, written after it, went with it.
	if !slices.Equal(a.events, []string{"next 0", "next 1", "done 0", "next 2", "done 1", "next 3"}) {
		t.Fatalf("calls %q", a.events)
	}
	if v.Size() != 4 {
		t.Fatalf("size %d, want 4 (two batches)", v.Size())
	}
	for _, i := range []int{1, 2} {
		if st, _ := stateOf(v, paths[i]); st != StateFailed {
			t.Errorf("drive %d: %s, want failed", i+1, st)
		}
	}
	checkItems(t, v, a.acked())
	if _, err := v.Append(context.Background(), Record{Type: TypeItem, Meta: []byte("m")}); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("append below the quorum: %v", err)
	}
}
