package storage

import (
	"bytes"
	"context"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// countingDev counts what is read from a real device.
type countingDev struct {
	device
	reads, bytes atomic.Int64
}

func (c *countingDev) ReadAt(p []byte, off int64) (int, error) {
	c.reads.Add(1)
	c.bytes.Add(int64(len(p)))
	return c.device.ReadAt(p, off)
}

// counters opens devices through countingDevs it remembers by path.
type counters struct {
	mu   sync.Mutex
	devs map[string]*countingDev
}

func (c *counters) open(path string, write bool) (device, error) {
	d, err := openDevice(path, write)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cd := &countingDev{device: d}
	if c.devs == nil {
		c.devs = map[string]*countingDev{}
	}
	c.devs[path] = cd
	return cd, nil
}

// bytesRead is what was read from path since it was opened.
func (c *counters) bytesRead(path string) (reads, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.devs[path]
	return d.reads.Load(), d.bytes.Load()
}

func openCounted(t *testing.T, k *testKeys, paths []string, quorum int) (*Vault, *counters) {
	t.Helper()
	c := &counters{}
	o := k.opts(quorum)
	o.open = c.open
	v, err := Open(paths, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v, c
}

// fillBatches appends n batches of 5 small records and returns them.
func fillBatches(t *testing.T, v *Vault, r *mrand.Rand, n int) map[uint64]item {
	t.Helper()
	items := map[uint64]item{}
	for range n {
		for k, x := range appendItems(t, v, r, 10, 200, 3000, 5000, 1) {
			items[k] = x
		}
	}
	return items
}

// TestOpenReadsOnlyTheTail: opening a vault reads the superblocks, the
// checkpoint record they name and its batch, the same bytes whether the log
// holds 20 batches or 400; records before the last batch are not read until
// one of them is asked for.
func TestOpenReadsOnlyTheTail(t *testing.T) {
	k := newTestKeys(t)
	r := mrand.New(mrand.NewPCG(61, 62))
	var read [2]int64
	for i, batches := range []int{20, 400} {
		paths := imageDrives(t, k, 3, 64<<20)
		v := openVault(t, k, paths, 2)
		items := fillBatches(t, v, r, batches)
		size := v.Size()
		v.Close()

		v, c := openCounted(t, k, paths, 2)
		if v.Size() != size {
			t.Fatalf("%d batches: size %d after reopening, want %d", batches, v.Size(), size)
		}
		info, _ := ReadDriveInfo(paths[0])
		for _, p := range paths {
			_, b := c.bytesRead(p)
			read[i] += b
			if b > 256<<10 {
				t.Fatalf("%d batches: open read %d bytes of %s (log of %d bytes)", batches, b, p, info.Used)
			}
		}
		if v.base == 0 || v.base != size-6 {
			t.Fatalf("%d batches: open read the log from record %d, want %d (the last batch)", batches, v.base, size-6)
		}
		// The last batch and new appends need no index.
		checkItems(t, v, map[uint64]item{size - 2: items[size-2]})
		more := appendItems(t, v, r, 7, 70000)
		if v.base == 0 {
			t.Fatal("reading the last batch or appending loaded the whole index")
		}
		for _, d := range v.Drives() {
			if d.State != StateActive {
				t.Fatalf("drive %+v", d)
			}
		}
		// Older records load the index on first use.
		checkItems(t, v, items)
		checkItems(t, v, more)
		if v.base != 0 {
			t.Fatal("index not loaded after reading record 0")
		}
		v.Close()
		replicasEqual(t, paths)
		auditOK(t, k, paths)
	}
	if read[0] != read[1] {
		t.Fatalf("open read %d bytes with 20 batches and %d with 400: want the same", read[0], read[1])
	}
}

// TestOpenSkipsOldDamage: a record header damaged in the middle of the log
// of one drive, before the superblock's checkpoint, does not slow Open nor
// stop it; Audit names the record, the first read of an old record
// quarantines that drive and uses another, and Scrub repairs it.
func TestOpenSkipsOldDamage(t *testing.T) {
	k := newTestKeys(t)
	r := mrand.New(mrand.NewPCG(63, 64))
	paths := imageDrives(t, k, 3, 32<<20)
	v := openVault(t, k, paths, 2)
	items := fillBatches(t, v, r, 60)
	const victim = 37
	off := v.recs[victim].off
	v.Close()
	flipByte(t, paths[0], off+20)

	v, c := openCounted(t, k, paths, 2)
	for _, d := range v.Drives() {
		if d.State != StateActive {
			t.Fatalf("after open: %+v", d)
		}
		if _, b := c.bytesRead(d.Path); b > 256<<10 {
			t.Fatalf("open read %d bytes of %s", b, d.Path)
		}
	}
	rep, err := Audit(paths, AuditOptions{Verifier: k.verifier})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || len(rep.Problems) == 0 || rep.Problems[0].Path != paths[0] || rep.Problems[0].Index != victim {
		t.Fatalf("audit: want record %d of %s named: %s", victim, paths[0], rep)
	}
	checkItems(t, v, items)
	if st, why := stateOf(v, paths[0]); st != StateQuarantined || !strings.Contains(why, fmt.Sprintf("record %d", victim)) {
		t.Fatalf("damaged drive after reading the index: %s %q", st, why)
	}
	srep, err := v.Scrub(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(srep.Repairs) != 1 || srep.Repairs[0].Index != victim || !srep.Repairs[0].Repaired {
		t.Fatalf("scrub: %+v", srep)
	}
	for _, d := range v.Drives() {
		if d.State != StateActive {
			t.Fatalf("after scrub: %+v", d)
		}
	}
	v.Close()
	auditOK(t, k, paths)
	replicasEqual(t, paths)
}

// TestOpenCatchesUpAnOldDrive: a drive that missed more than the last
// batch is recognised as a prefix (the authority is walked again from the
// drive's own checkpoint), caught up and verified; one that took other
// writes is not.
func TestOpenCatchesUpAnOldDrive(t *testing.T) {
	k := newTestKeys(t)
	r := mrand.New(mrand.NewPCG(65, 66))
	paths := imageDrives(t, k, 3, 32<<20)
	v := openVault(t, k, paths, 2)
	items := fillBatches(t, v, r, 3)
	v.Close()
	v = openVault(t, k, paths[1:], 2) // the first drive is offsite
	for i, x := range fillBatches(t, v, r, 8) {
		items[i] = x
	}
	v.Close()
	v = openVault(t, k, paths, 2)
	for _, d := range v.Drives() {
		if d.State != StateActive || d.Lag != 0 {
			t.Fatalf("after open: %+v", d)
		}
	}
	if v.base == 0 {
		t.Fatal("open walked the whole log")
	}
	checkItems(t, v, items)
	v.Close()
	replicasEqual(t, paths)
	auditOK(t, k, paths)

	// The same drive returning to a running vault: AddDrive recognises it
	// from its last batch, without reading the vault's index.
	v = openVault(t, k, paths[1:], 2)
	for i, x := range fillBatches(t, v, r, 4) {
		items[i] = x
	}
	if v.base == 0 {
		t.Fatal("open walked the whole log")
	}
	if err := v.AddDrive(paths[0], nil); err != nil {
		t.Fatal(err)
	}
	if v.base == 0 {
		t.Fatal("AddDrive of a lagging prefix read the whole index")
	}
	if st, why := stateOf(v, paths[0]); st != StateActive {
		t.Fatalf("returned drive: %s %q", st, why)
	}
	checkItems(t, v, items)
	v.Close()
	replicasEqual(t, paths)
	auditOK(t, k, paths)
}

// TestProofsWithoutIndex: inclusion proofs of records appended after an
// O(tail) open verify against the signed checkpoint without reading the
// older records; a proof of an old record loads the index and verifies too.
func TestProofsWithoutIndex(t *testing.T) {
	k := newTestKeys(t)
	r := mrand.New(mrand.NewPCG(67, 68))
	paths := imageDrives(t, k, 2, 32<<20)
	v := openVault(t, k, paths, 2)
	// 37 batches of 6 records: the resume point sits inside a perfect
	// subtree, so proofs need nodes that span it.
	fillBatches(t, v, r, 37)
	v.Close()
	v = openVault(t, k, paths, 2)
	base := v.base
	for range 5 {
		appendItems(t, v, r, 1, 2, 3)
	}
	c, err := OpenCheckpoint(v.Checkpoint(), k.verifier, "coffre.test/vault")
	if err != nil {
		t.Fatal(err)
	}
	check := func(i uint64) {
		t.Helper()
		p, err := v.InclusionProof(i, c.Size)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		leaf, err := v.LeafHash(i)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckRecord(p, int64(c.Size), c.Hash, int64(i), leaf); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	for i := base; i < c.Size; i++ {
		check(i)
	}
	if v.base != base {
		t.Fatal("proving new records loaded the index")
	}
	check(0)
	check(base - 1)
	if v.base != 0 {
		t.Fatal("index not loaded")
	}
}

func TestParseResume(t *testing.T) {
	var fr frontier
	for i := range 6 {
		fr.add(tlog.RecordHash([]byte{byte(i)}))
	}
	good := resume{index: 6, off: DataStart + 10*BlockSize, fr: fr}
	const ck, ckOff = 9, DataStart + 20*BlockSize
	if got, err := parseResume(good.encode(), ck, ckOff); err != nil || got.index != 6 || got.off != good.off || !got.fr.equal(&fr) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	if got, err := parseResume(genesis().encode(), 0+1, DataStart+BlockSize); err != nil || got.index != 0 || got.off != DataStart {
		t.Fatalf("genesis: %+v %v", got, err)
	}
	mut := func(f func(r *resume)) []byte {
		r := good
		r.fr = good.fr.clone()
		f(&r)
		return r.encode()
	}
	for name, b := range map[string][]byte{
		"short":                  good.encode()[:15],
		"ragged":                 append(good.encode(), 0),
		"batch after checkpoint": mut(func(r *resume) { r.index = ck }),
		"too few roots":          mut(func(r *resume) { r.index = 7 }),
		"unaligned":              mut(func(r *resume) { r.off++ }),
		"before the data":        mut(func(r *resume) { r.off = 0 }),
		"first record elsewhere": mut(func(r *resume) { r.index, r.fr = 0, frontier{} }),
		"records do not fit":     mut(func(r *resume) { r.off = DataStart + 2*BlockSize }),
		"batch does not fit":     mut(func(r *resume) { r.off = ckOff - BlockSize }),
		"at the checkpoint":      mut(func(r *resume) { r.off = ckOff }),
	} {
		if _, err := parseResume(b, ck, ckOff); err == nil || !bytes.Contains([]byte(err.Error()), []byte("resume point")) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
