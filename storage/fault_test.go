package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// faultDev wraps a real device and fails its syscalls on demand, like a
// dm-error target: writes, syncs or reads return err once armed (after
// writesLeft more successful writes when that is ≥ 0).
type faultDev struct {
	device
	mu         sync.Mutex
	err        error
	writes     bool
	syncs      bool
	reads      bool
	writesLeft int
	synced     atomic.Int64  // Sync calls, failed ones included
	wrote      atomic.Int64  // WriteAt calls, failed ones included
	gate       chan struct{} // if set, Sync waits until it is closed
	held       atomic.Bool   // a Sync is waiting for gate
}

// holdNextSync makes the next Sync wait until the device is written
// again (by someone else than the syncing batch, which has written
// everything it syncs), or until a minute has passed. The returned
// function reports whether that write came.
func (f *faultDev) holdNextSync() (wroteWhileSyncing func() bool) {
	gate := make(chan struct{})
	f.mu.Lock()
	f.gate = gate
	f.mu.Unlock()
	var came atomic.Bool
	stop := make(chan struct{})
	go func() {
		defer close(stop)
		deadline := time.Now().Add(time.Minute)
		for !f.held.Load() {
			time.Sleep(time.Millisecond)
		}
		w0 := f.wrote.Load()
		for time.Now().Before(deadline) && !came.Load() {
			came.Store(f.wrote.Load() > w0)
			time.Sleep(time.Millisecond)
		}
		f.mu.Lock()
		f.gate = nil
		f.mu.Unlock()
		close(gate)
	}()
	return func() bool {
		<-stop
		return came.Load()
	}
}

func (f *faultDev) arm(err error, writes, syncs, reads bool, after int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err, f.writes, f.syncs, f.reads, f.writesLeft = err, writes, syncs, reads, after
}

func (f *faultDev) failing(kind *bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil || !*kind {
		return nil
	}
	if kind == &f.writes && f.writesLeft > 0 {
		f.writesLeft--
		return nil
	}
	return f.err
}

func (f *faultDev) WriteAt(p []byte, off int64) (int, error) {
	f.wrote.Add(1)
	if err := f.failing(&f.writes); err != nil {
		return 0, err
	}
	return f.device.WriteAt(p, off)
}

func (f *faultDev) Sync() error {
	f.mu.Lock()
	g := f.gate
	f.mu.Unlock()
	if g != nil {
		f.held.Store(true)
		<-g
	}
	f.synced.Add(1)
	if err := f.failing(&f.syncs); err != nil {
		return err
	}
	return f.device.Sync()
}

func (f *faultDev) ReadAt(p []byte, off int64) (int, error) {
	if err := f.failing(&f.reads); err != nil {
		return 0, err
	}
	return f.device.ReadAt(p, off)
}

func (f *faultDev) ReadCached(p []byte, off int64) (int, error) {
	if err := f.failing(&f.reads); err != nil {
		return 0, err
	}
	return f.device.ReadCached(p, off)
}

// faults opens devices through faultDevs it remembers by path.
type faults struct {
	mu   sync.Mutex
	devs map[string]*faultDev
}

func (fs *faults) open(path string, write bool) (device, error) {
	d, err := openDevice(path, write)
	if err != nil {
		return nil, err
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	f := &faultDev{device: d}
	if old := fs.devs[path]; old != nil && old.err != nil {
		f.arm(old.err, old.writes, old.syncs, old.reads, old.writesLeft)
	}
	if fs.devs == nil {
		fs.devs = map[string]*faultDev{}
	}
	fs.devs[path] = f
	return f, nil
}

func openFaulty(t *testing.T, k *testKeys, paths []string, quorum int) (*Vault, *faults) {
	t.Helper()
	fs := &faults{}
	o := k.opts(quorum)
	o.open = fs.open
	v, err := Open(paths, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v, fs
}

func stateOf(v *Vault, path string) (DriveState, string) {
	for _, d := range v.Drives() {
		if d.Path == path {
			return d.State, d.Reason
		}
	}
	return "", ""
}

func TestFaultEIO(t *testing.T) {
	k := newTestKeys(t)
	paths := imageDrives(t, k, 4, 32<<20)
	v, fs := openFaulty(t, k, paths, 3)
	r := mrand.New(mrand.NewPCG(11, 12))
	items := appendItems(t, v, r, 1000, 300000)

	// Drive 2 starts failing every write mid-batch: the vault carries on.
	fs.devs[paths[1]].arm(syscall.EIO, true, false, false, 1)
	for k, x := range appendItems(t, v, r, 200000, 5) {
		items[k] = x
	}
	if st, why := stateOf(v, paths[1]); st != StateFailed || !strings.Contains(why, "input/output error") {
		t.Fatalf("drive 2: %s %q, want failed with EIO", st, why)
	}
	// Drive 3's fdatasync fails: below quorum, the append is refused.
	fs.devs[paths[2]].arm(syscall.EIO, false, true, false, 0)
	_, err := v.Append(context.Background(), Record{Type: TypeItem, Body: bytes.NewReader([]byte("x"))})
	if !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("append below quorum: %v", err)
	}
	if _, err := v.Append(context.Background(), Record{Type: TypeItem}); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("second append below quorum: %v", err)
	}
	checkItems(t, v, items) // nothing acknowledged is lost
	v.Close()

	// The drives come back healthy: everything acknowledged is there and
	// every replica converges.
	v = openVault(t, k, paths, 3)
	checkItems(t, v, items)
	for _, d := range v.Drives() {
		if d.State != StateActive {
			t.Fatalf("after reopen: %+v", d)
		}
	}
	appendItems(t, v, r, 10)
	v.Close()
	replicasEqual(t, paths)
}

// A batch larger than writeBehindBytes flushes each drive while it is
// still being written (small batches do not), and a flush that fails there
// fails its drive as commit's would, the vault going on with the others.
func TestWriteBehind(t *testing.T) {
	k := newTestKeys(t)
	paths := imageDrives(t, k, 4, 64<<20)
	v, fs := openFaulty(t, k, paths, 3)
	r := mrand.New(mrand.NewPCG(21, 22))
	syncs := func() []int64 {
		var n []int64
		for _, p := range paths {
			n = append(n, fs.devs[p].synced.Load())
		}
		return n
	}
	before := syncs()
	items := appendItems(t, v, r, 1000, 300000)
	small := syncs() // the batch's and its superblock's
	for i := range small {
		small[i] -= before[i]
	}
	fs.devs[paths[1]].arm(syscall.EIO, false, true, false, 0)
	before = syncs()
	big := randBytes(r, 3*writeBehindBytes+12345)
	idx, err := v.Append(context.Background(), Record{Type: TypeItem, Meta: []byte("big"), Body: bytes.NewReader(big)})
	if err != nil {
		t.Fatal(err)
	}
	items[idx[0]] = item{meta: []byte("big"), sum: sha256.Sum256(big), size: int64(len(big))}
	for i, n := range syncs() {
		if i == 1 {
			continue
		}
		if n-before[i] <= small[i] {
			t.Fatalf("drive %d: a %d MiB batch flushed %d times, as a small one (%d): no write-behind", i+1, len(big)>>20, n-before[i], small[i])
		}
	}
	if st, why := stateOf(v, paths[1]); st != StateFailed || !strings.Contains(why, "input/output error") {
		t.Fatalf("drive 2: %s %q, want failed by its write-behind flush", st, why)
	}
	checkItems(t, v, items)
	v.Close()
	fs.devs[paths[1]].arm(nil, false, false, false, 0)
	v = openVault(t, k, paths, 3)
	checkItems(t, v, items)
	v.Close()
	replicasEqual(t, paths)
}

func TestFaultReadErrorFallsBack(t *testing.T) {
	k := newTestKeys(t)
	paths := imageDrives(t, k, 3, 32<<20)
	v, fs := openFaulty(t, k, paths, 2)
	r := mrand.New(mrand.NewPCG(13, 14))
	items := appendItems(t, v, r, 1000, 100000)
	fs.devs[paths[0]].arm(syscall.EIO, false, false, true, 0)
	checkItems(t, v, items) // read from the next replica
}

func TestFaultDriveRemovedMidWrite(t *testing.T) {
	k := newTestKeys(t)
	paths := formatDrives(t, k, backends[1], 4, 32<<20)
	v, fs := openFaulty(t, k, paths, 3)
	r := mrand.New(mrand.NewPCG(15, 16))
	items := appendItems(t, v, r, 1000)
	// Drive 4 vanishes (ENXIO/ENODEV, as an unplugged disk) in the middle of
	// a 9 MiB record.
	body := &triggerReader{r: bytes.NewReader(randBytes(r, 9<<20)), at: 4 << 20, fire: func() {
		fs.devs[paths[3]].arm(syscall.ENODEV, true, true, true, 0)
	}}
	idx, err := v.Append(context.Background(), Record{Type: TypeItem, Meta: []byte("big"), Body: body})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := stateOf(v, paths[3]); st != StateFailed {
		t.Fatalf("removed drive is %s", st)
	}
	_, _, rc, err := v.Get(idx[0])
	if err != nil {
		t.Fatal(err)
	}
	if n, err := io.Copy(io.Discard, rc); err != nil || n != 9<<20 {
		t.Fatalf("big record: %d %v", n, err)
	}
	checkItems(t, v, items)
	// It comes back: Sync reopens it by path and catches it up.
	fs.devs[paths[3]].arm(nil, false, false, false, 0)
	fs.mu.Lock()
	delete(fs.devs, paths[3])
	fs.mu.Unlock()
	info, err := ReadDriveInfo(paths[3])
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Sync(context.Background(), info.UUID, nil); err != nil {
		t.Fatal(err)
	}
	if st, why := stateOf(v, paths[3]); st != StateActive {
		t.Fatalf("after sync: %s %s", st, why)
	}
	v.Close()
	replicasEqual(t, paths)
}

type triggerReader struct {
	r    io.Reader
	n    int
	at   int
	fire func()
	done bool
}

func (t *triggerReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.n += n
	if !t.done && t.n >= t.at {
		t.done = true
		t.fire()
	}
	return n, err
}

func TestFaultReadOnlyLoop(t *testing.T) {
	k := newTestKeys(t)
	imgs := imageDrives(t, k, 3, 16<<20)
	v := openVault(t, k, imgs, 3)
	r := mrand.New(mrand.NewPCG(17, 18))
	items := appendItems(t, v, r, 5000)
	v.Close()
	ro := losetup(t, imgs[2], true)
	// The read-only loop device accepts an open but must not be written:
	// it is detected (BLKROGET) and marked failed before any write.
	v = openVault(t, k, []string{imgs[0], imgs[1], ro}, 2)
	if st, why := stateOf(v, ro); st != StateFailed || !strings.Contains(why, "read-only") {
		t.Fatalf("read-only loop: %s %q", st, why)
	}
	for k, x := range appendItems(t, v, r, 100) {
		items[k] = x
	}
	checkItems(t, v, items)
	v.Close()
	// Audit works on it (read-only) and sees it lag.
	rep, err := Audit([]string{imgs[0], ro}, AuditOptions{Verifier: k.verifier})
	if err != nil || !rep.OK || rep.Drives[1].LagsBehindBy != 2 {
		t.Fatalf("audit with a read-only loop device: %v %s", err, rep)
	}
	if _, err := Format(ro, FormatOptions{VaultID: k.vault, Slot: 1, WrappedRecordKey: []byte("w"), Force: true}); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("format of a read-only device: %v", err)
	}
}

func TestFaultFullDrive(t *testing.T) {
	k := newTestKeys(t)
	paths := imageDrives(t, k, 3, 32<<20)
	// A small drive fills first; the vault carries on with the others.
	small := filepath.Join(t.TempDir(), "small.img")
	if _, err := Format(small, FormatOptions{VaultID: k.vault, Slot: 4, WrappedRecordKey: []byte("w"), Size: MinDriveSize}); err != nil {
		t.Fatal(err)
	}
	// And a drive on a filesystem that runs out of room (real ENOSPC).
	checkRealENOSPC(t)
	all := append(paths, small)
	v := openVault(t, k, all, 3)
	r := mrand.New(mrand.NewPCG(19, 20))
	items := map[uint64]item{}
	for i := 0; i < 6; i++ {
		for k, x := range appendItems(t, v, r, 100000) {
			items[k] = x
		}
	}
	st, why := stateOf(v, small)
	if st != StateFailed || !strings.Contains(why, "full") {
		t.Fatalf("small drive: %s %q, want failed: full", st, why)
	}
	checkItems(t, v, items)
}

// checkRealENOSPC checks a real ENOSPC: an image on a 1 MiB tmpfs that
// claims 8 MiB.
func checkRealENOSPC(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	img := filepath.Join(dir, "d.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(8 << 20)
	f.Close()
	k := newTestKeys(t)
	if _, err := Format(img, FormatOptions{VaultID: k.vault, Slot: 1, WrappedRecordKey: []byte("w")}); err != nil {
		t.Fatal(err)
	}
	v := openVault(t, k, []string{img}, 1)
	_, err = v.Append(context.Background(), Record{Type: TypeItem, Body: bytes.NewReader(make([]byte, 3<<20))})
	if !errors.Is(err, ErrNoQuorum) || !strings.Contains(err.Error(), "no space") {
		t.Fatalf("append to a full filesystem: %v", err)
	}
	if st, _ := stateOf(v, img); st != StateFailed {
		t.Fatalf("full drive state %s", st)
	}
}
