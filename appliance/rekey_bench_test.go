//go:build bench

package appliance_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"coffre/appliance"
	"coffre/internal/benchrow"
	"coffre/internal/testenv"
)

// TestBenchRekey: the record-layer rekey (re-encapsulation kind 1: every
// live record read, decrypted under the old record key, re-encrypted under
// the new one and appended to the four drives, one durable batch per
// record) vs dd reading the same bytes from one drive image and then
// writing them to the four images in parallel (direct I/O, one
// fdatasync each), in the same run. Caches are dropped before each side;
// five interleaved rounds, medians. The images are written whole first:
// otherwise dd overwrites, from its second round on, blocks it already
// wrote, while the rekey always writes into fresh (unwritten) extents,
// whose conversion a real drive never pays.
func TestBenchRekey(t *testing.T) {
	testenv.RequireTool(t, "dd", "coreutils")
	const items, size = 48, 2 << 20
	const amount = items * size
	const rounds = 7
	e := newVaultImages(t, (amount*(rounds+2))+(64<<20), true)
	contents := map[string][]byte{}
	for i := range items {
		b := make([]byte, size)
		rand.Read(b)
		contents[fmt.Sprintf("u%d-doc%02d", i%4, i)] = b
	}
	e.ingestItems(contents, func(n string) string { return "user" + n[1:2] })

	runOurs := func() float64 {
		a := e.open()
		defer a.Close()
		dropCaches()
		t0 := time.Now()
		job, err := a.Rekey(context.Background(), appliance.RekeyOptions{NewEpoch: true, Max: -1})
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(t0)
		if job.Status != "done" || job.Done < items {
			t.Fatalf("rekey job %+v", job)
		}
		return float64(amount) / (1 << 20) / took.Seconds()
	}
	drives := e.drives()
	runDD := func() float64 {
		dropCaches()
		t0 := time.Now()
		// Read: the log region of one drive, where the records are.
		if out, err := exec.Command("dd", "if="+drives[0], "of=/dev/null", "bs=4M", fmt.Sprintf("count=%d", amount/(4<<20)),
			"skip=1", "status=none").CombinedOutput(); err != nil {
			t.Fatalf("dd read: %v %s", err, out)
		}
		// Write: past everything the vault will use, on all four drives.
		var wg sync.WaitGroup
		for _, p := range drives {
			wg.Go(func() {
				fi, err := os.Stat(p)
				if err != nil {
					t.Error(err)
					return
				}
				seek := fi.Size()/(4<<20) - amount/(4<<20) - 1
				out, err := exec.Command("dd", "if=/dev/zero", "of="+p, "bs=4M", fmt.Sprintf("count=%d", amount/(4<<20)),
					fmt.Sprintf("seek=%d", seek), "oflag=direct", "conv=fdatasync,notrunc", "status=none").CombinedOutput()
				if err != nil {
					t.Errorf("dd write: %v %s", err, out)
				}
			})
		}
		wg.Wait()
		return float64(amount) / (1 << 20) / time.Since(t0).Seconds()
	}
	var ours, peer []float64
	var ratios []string
	for r := range rounds {
		var o, p float64
		if r%2 == 0 {
			o, p = runOurs(), runDD()
		} else {
			p = runDD()
			o = runOurs()
		}
		ours, peer = append(ours, o), append(peer, p)
		ratios = append(ratios, fmt.Sprintf("%.2f", o/p))
	}
	benchrow.Record(t, benchrow.Row{Name: "reencap: record-layer rekey (kind 1) vs dd read + write of the same drives", Ours: medianOf(ours),
		Peer: "dd read of one drive, then dd oflag=direct write to 4 in parallel", PeerValue: medianOf(peer), Unit: "MB/s", Goal: 0.7, HigherIsBetter: true,
		Note: fmt.Sprintf("%d items of %d MiB, 4 drive images, batches of up to 32 MiB read ahead, each written while the one before it syncs; medians of %d interleaved rounds (round ratios %s)",
			items, size>>20, rounds, strings.Join(ratios, ", "))})
}

// dropCaches asks the kernel to drop clean page-cache pages (as root; a
// no-op otherwise), so each side of a bench reads from the disk.
func dropCaches() {
	exec.Command("sync").Run()
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200)
}

func medianOf(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
