//go:build bench

package storage

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"coffre/internal/benchrow"
	"coffre/internal/testenv"
)

func dropCaches(t *testing.T) {
	exec.Command("sync").Run()
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0)
}

// zeroReader yields n pseudo-random-ish bytes without holding them.
type patternReader struct {
	left int64
	buf  []byte
}

func newPattern(n int64) *patternReader {
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return &patternReader{left: n, buf: b}
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	n := copy(b, p.buf)
	if int64(n) > p.left {
		n = int(p.left)
	}
	p.left -= int64(n)
	return n, nil
}

// TestBenchReplicationWrite: Append to four loop devices vs dd
// oflag=direct writing the same amount to the same region of the same
// devices in parallel, in 4 MiB writes (the size of our ring buffers),
// with one fdatasync per device at the end (we also write and sync each
// superblock). The images are written once beforehand so neither side
// pays for converting fallocated (unwritten) extents, which made whoever
// ran first ~1.4x slower. Three interleaved rounds (alternating which
// side goes first, caches dropped before each); the row has the medians.
func TestBenchReplicationWrite(t *testing.T) {
	testenv.RequireTool(t, "dd", "coreutils")
	const amount = 512 << 20
	const rounds = 5
	k := newTestKeys(t)
	var paths []string
	for range 4 {
		img := filepath.Join(t.TempDir(), "drive.img")
		if err := ensureImage(img, amount+(64<<20)); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("dd", "if=/dev/zero", "of="+img, "bs=4M", fmt.Sprintf("count=%d", (amount+(64<<20))/(4<<20)),
			"conv=fdatasync,notrunc", "status=none").CombinedOutput(); err != nil {
			t.Fatalf("dd: %v %s", err, out)
		}
		paths = append(paths, losetup(t, img, false))
	}
	runOurs := func() float64 {
		for i, p := range paths {
			if _, err := Format(p, FormatOptions{VaultID: k.vault, Slot: i + 1, WrappedRecordKey: []byte("wrapped-key"), Force: true}); err != nil {
				t.Fatal(err)
			}
		}
		v := openVault(t, k, paths, 3)
		defer v.Close()
		var recs []Record
		for range amount / (64 << 20) {
			recs = append(recs, Record{Type: TypeItem, Meta: []byte("bench"), Body: newPattern(64 << 20)})
		}
		dropCaches(t)
		start := time.Now()
		// One batch, one fdatasync per drive, as dd conv=fdatasync.
		if _, err := v.Append(context.Background(), recs...); err != nil {
			t.Fatal(err)
		}
		return float64(amount) / (1 << 20) / time.Since(start).Seconds()
	}
	runDD := func() float64 {
		dropCaches(t)
		start := time.Now()
		var wg sync.WaitGroup
		for _, p := range paths {
			wg.Go(func() {
				out, err := exec.Command("dd", "if=/dev/zero", "of="+p, "bs=4M", fmt.Sprintf("count=%d", amount/(4<<20)),
					fmt.Sprintf("seek=%dB", DataStart), "oflag=direct", "conv=fdatasync,notrunc", "status=none").CombinedOutput()
				if err != nil {
					t.Errorf("dd: %v %s", err, out)
				}
			})
		}
		wg.Wait()
		return float64(amount) / (1 << 20) / time.Since(start).Seconds()
	}
	var ours, peer []float64
	var ratios []string
	for r := range rounds {
		var o, p float64
		if r%2 == 0 {
			o = runOurs()
			p = runDD()
		} else {
			p = runDD()
			o = runOurs()
		}
		ours, peer = append(ours, o), append(peer, p)
		ratios = append(ratios, fmt.Sprintf("%.2f", o/p))
	}
	benchrow.Record(t, benchrow.Row{Name: "storage: replicated write to 4 loop devices", Ours: median(ours), Peer: "dd oflag=direct bs=4M (4 in parallel)",
		PeerValue: median(peer), Unit: "MB/s", Goal: 0.8, HigherIsBetter: true,
		Note: fmt.Sprintf("%d MiB per drive in one batch of 64 MiB records, quorum 3; medians of %d interleaved rounds (round ratios %s)",
			amount>>20, rounds, strings.Join(ratios, ", "))})
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// TestBenchAudit: Audit of four images vs sha256sum of the same images.
func TestBenchAudit(t *testing.T) {
	testenv.RequireTool(t, "sha256sum", "coreutils")
	const amount = 256 << 20
	k := newTestKeys(t)
	paths := imageDrives(t, k, 4, amount+(8<<20))
	v := openVault(t, k, paths, 3)
	for i := 0; i < amount/(16<<20); i++ {
		if _, err := v.Append(context.Background(), Record{Type: TypeItem, Body: newPattern(16<<20 - 4096)}); err != nil {
			t.Fatal(err)
		}
	}
	v.Close()
	// Ours is credited with the bytes it verifies (log and superblocks),
	// the peer with the whole images (the unused tail is 3% of them).
	var total, audited int64
	for _, p := range paths {
		st, _ := os.Stat(p)
		total += st.Size()
		info, err := ReadDriveInfo(p)
		if err != nil {
			t.Fatal(err)
		}
		audited += info.Used + 2*SuperblockSize
	}
	dropCaches(t)
	start := time.Now()
	rep, err := Audit(paths, AuditOptions{Verifier: k.verifier})
	if err != nil || !rep.OK {
		t.Fatalf("audit: %v %s", err, rep)
	}
	ours := float64(audited) / (1 << 20) / time.Since(start).Seconds()
	dropCaches(t)
	start = time.Now()
	if out, err := exec.Command("sha256sum", paths...).CombinedOutput(); err != nil {
		t.Fatalf("sha256sum: %v %s", err, out)
	}
	peer := float64(total) / (1 << 20) / time.Since(start).Seconds()
	benchrow.Record(t, benchrow.Row{Name: "storage: audit of 4 drive images", Ours: ours, Peer: "sha256sum (same images)",
		PeerValue: peer, Unit: "MB/s", Goal: 0.9, HigherIsBetter: true,
		Note: fmt.Sprintf("4 × %d MiB images, cold cache", (amount+(8<<20))>>20)})
}

// TestBenchScanDrive: ScanDrive over a drive of many small records vs
// sha256sum of that drive. COFFRE_BENCH_RECORDS sets the count (default
// 1,000,000).
func TestBenchScanDrive(t *testing.T) {
	testenv.RequireTool(t, "sha256sum", "coreutils")
	n := 1_000_000
	if s := os.Getenv("COFFRE_BENCH_RECORDS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	k := newTestKeys(t)
	size := int64(n+n/MaxBatch+64) * BlockSize
	p := filepath.Join(t.TempDir(), "many.img")
	if _, err := Format(p, FormatOptions{VaultID: k.vault, Slot: 1, WrappedRecordKey: []byte("w"), Size: size}); err != nil {
		t.Fatal(err)
	}
	v := openVault(t, k, []string{p}, 1)
	meta := bytes.Repeat([]byte("m"), 64)
	body := bytes.Repeat([]byte("b"), 512)
	for done := 0; done < n; {
		c := min(MaxBatch, n-done)
		recs := make([]Record, c)
		for i := range recs {
			recs[i] = Record{Type: TypeItem, Meta: meta, Body: bytes.NewReader(body)}
		}
		if _, err := v.Append(context.Background(), recs...); err != nil {
			t.Fatal(err)
		}
		done += c
	}
	v.Close()
	dropCaches(t)
	start := time.Now()
	count := 0
	if err := ScanDrive(p, k.recordKey, func(h Header, m []byte) error {
		if h.Type == TypeItem {
			count++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	if count != n {
		t.Fatalf("scanned %d records, want %d", count, n)
	}
	st, _ := os.Stat(p)
	ours := float64(st.Size()) / (1 << 20) / el.Seconds()
	dropCaches(t)
	start = time.Now()
	if out, err := exec.Command("sha256sum", p).CombinedOutput(); err != nil {
		t.Fatalf("sha256sum: %v %s", err, out)
	}
	peer := float64(st.Size()) / (1 << 20) / time.Since(start).Seconds()
	benchrow.Record(t, benchrow.Row{Name: "storage: ScanDrive, small records", Ours: ours, Peer: "sha256sum (same drive)",
		PeerValue: peer, Unit: "MB/s", Goal: 0.8, HigherIsBetter: true,
		Note: fmt.Sprintf("%d records in %.1fs (%.0f records/s)", n, el.Seconds(), float64(n)/el.Seconds())})
}

// TestBenchOpen: opening a vault of 4 drives holding N small records vs
// reading what Open has to read at least, with plain preads: each drive's
// two superblock copies and the checkpoint record the superblock names.
// Caches are dropped before each. COFFRE_BENCH_OPEN_RECORDS sets N
// (default 200,000).
func TestBenchOpen(t *testing.T) {
	n := 200_000
	if s := os.Getenv("COFFRE_BENCH_OPEN_RECORDS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	k := newTestKeys(t)
	size := int64(n+n/MaxBatch+64) * BlockSize
	paths := imageDrives(t, k, 4, size)
	v := openVault(t, k, paths, 3)
	meta := bytes.Repeat([]byte("m"), 64)
	body := bytes.Repeat([]byte("b"), 512)
	buildStart := time.Now()
	for done := 0; done < n; {
		c := min(MaxBatch, n-done)
		recs := make([]Record, c)
		for i := range recs {
			recs[i] = Record{Type: TypeItem, Meta: meta, Body: bytes.NewReader(body)}
		}
		if _, err := v.Append(context.Background(), recs...); err != nil {
			t.Fatal(err)
		}
		done += c
	}
	build := time.Since(buildStart)
	v.Close()
	// Open's cost grows with the last batch (it reads that batch's
	// headers): measure it after a full one, then after a one-record
	// batch as the appliance leaves at every stop (its anchor).
	dropCaches(t)
	start := time.Now()
	v = openVault(t, k, paths, 3)
	fullBatch := time.Since(start)
	if _, err := v.Append(context.Background(), Record{Type: TypeDriveEvent, Meta: meta}); err != nil {
		t.Fatal(err)
	}
	want := v.Size()
	v.Close()

	var infos []DriveInfo
	for _, p := range paths {
		info, err := ReadDriveInfo(p)
		if err != nil {
			t.Fatal(err)
		}
		infos = append(infos, info)
	}
	openOurs := func() float64 {
		dropCaches(t)
		start := time.Now()
		v, err := Open(paths, k.opts(3))
		el := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		if v.Size() != want {
			t.Fatalf("opened %d records, want %d", v.Size(), want)
		}
		for _, d := range v.Drives() {
			if d.State != StateActive {
				t.Fatalf("drive %+v", d)
			}
		}
		return el.Seconds()
	}
	preadPeer := func() float64 {
		dropCaches(t)
		start := time.Now()
		var wg sync.WaitGroup
		for i, p := range paths {
			wg.Go(func() {
				f, err := os.Open(p)
				if err != nil {
					t.Error(err)
					return
				}
				defer f.Close()
				b := make([]byte, BlockSize)
				for _, off := range []int64{0, infos[i].Size - SuperblockSize, DataStart + infos[i].Used - BlockSize} {
					if _, err := f.ReadAt(b, off); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		return time.Since(start).Seconds()
	}
	// Milliseconds on a shared machine: 7 interleaved rounds, medians.
	var ours, peer []float64
	for range 7 {
		ours = append(ours, openOurs())
		peer = append(peer, preadPeer())
	}
	// For the note: what the first use of an old record costs (Open used
	// to pay this, and more, for every drive).
	v = openVault(t, k, paths, 3)
	start = time.Now()
	if _, _, rc, err := v.Get(0); err != nil {
		t.Fatal(err)
	} else {
		rc.Close()
	}
	index := time.Since(start)
	v.Close()
	benchrow.Record(t, benchrow.Row{Name: "storage: open 4 drives with N records", Ours: median(ours),
		Peer: "pread of the 4 drives' superblocks and last checkpoint records", PeerValue: median(peer), Unit: "s",
		Goal: 0.5, HigherIsBetter: false,
		Note: fmt.Sprintf("N = %d records of 576 bytes in batches of %d, then a one-record batch, on 4 image files, cold cache; "+
			"building them took %.0fs; medians of 7 interleaved rounds; open right after a %d-record batch took %.3fs; the first read of record 0 then loaded the index of all %d in %.2fs",
			n, MaxBatch, build.Seconds(), (n-1)%MaxBatch+1, fullBatch.Seconds(), want, index.Seconds())})
}

// TestBenchPeakMemory stores, reads back and audits a 100 MiB record and
// reports the peak Go heap in use.
func TestBenchPeakMemory(t *testing.T) {
	const size = 100 << 20
	k := newTestKeys(t)
	paths := imageDrives(t, k, 4, size+(16<<20))
	v := openVault(t, k, paths, 3)
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var m runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
		}
	})
	idx, err := v.Append(context.Background(), Record{Type: TypeItem, Body: newPattern(size)})
	if err != nil {
		t.Fatal(err)
	}
	_, _, rc, err := v.Get(idx[0])
	if err != nil {
		t.Fatal(err)
	}
	if n, err := io.Copy(io.Discard, rc); err != nil || n != size {
		t.Fatalf("get: %d %v", n, err)
	}
	v.Close()
	auditOK(t, k, paths)
	close(stop)
	wg.Wait()
	ours := float64(peak.Load() - min(peak.Load(), base.HeapInuse))
	benchrow.Record(t, benchrow.Row{Name: "storage: peak heap storing+reading+auditing a 100 MiB record", Ours: ours,
		Peer: "record size", PeerValue: size, Unit: "bytes", Goal: 4, HigherIsBetter: false,
		Note: "4 drives; heap in use above the baseline, sampled every 2 ms"})
}
