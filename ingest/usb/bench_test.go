//go:build bench

package usb

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"coffre/internal/benchrow"
	"coffre/internal/testenv"
)

// TestBenchBundleIngest measures Open + Walk (every file read and verified)
// of an image holding 64 MiB of envelopes, against `cat` of the same files
// from the image mounted read-only through a loop device.
func TestBenchBundleIngest(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "mount", "mount")
	const n, each = 16, 4 << 20
	files := make([]File, n)
	for i := range files {
		b := make([]byte, each)
		for j := range b {
			b[j] = byte(i ^ j ^ j>>11)
		}
		files[i] = BytesFile(fmt.Sprintf("envelope-%02d.coffre", i), b)
	}
	img := filepath.Join(t.TempDir(), "bench.img")
	if _, err := WriteImage(img, files, 0); err != nil {
		t.Fatal(err)
	}
	total := float64(n * each)

	ours := func() time.Duration {
		start := time.Now()
		b, err := Open(img, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		err = b.Walk(func(e Entry, r io.Reader) error {
			_, err := io.Copy(io.Discard, r)
			return err
		})
		b.Close()
		if err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}

	// The peer: cat from the image mounted read-only (the kernel's FAT
	// driver). Where the kernel has no vfat (containers), mtype (mtools, a
	// user-space FAT reader) reads the same files instead.
	peerName := "cat from mount -o ro,loop"
	var peerCmd []string
	mnt := t.TempDir()
	exec.Command("modprobe", "vfat").Run()
	if out, err := exec.Command("mount", "-o", "ro,loop", img, mnt).CombinedOutput(); err == nil {
		defer exec.Command("umount", mnt).Run()
		peerCmd = []string{"cat"}
		for _, f := range files {
			peerCmd = append(peerCmd, filepath.Join(mnt, f.Name))
		}
	} else {
		t.Logf("mount -o ro,loop failed (%v: %s); measuring mtype instead", err, out)
		testenv.RequireTool(t, "mtype", "mtools")
		peerName = "mtype (mtools; no vfat in this kernel)"
		// mtype takes one file per run.
		peerCmd = []string{"sh", "-c", `img=$1; shift; for f; do mtype -i "$img" "::/$f" || exit 1; done`, "sh", img}
		for _, f := range files {
			peerCmd = append(peerCmd, f.Name)
		}
	}
	peer := func() time.Duration {
		start := time.Now()
		cmd := exec.Command(peerCmd[0], peerCmd[1:]...)
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
		cmd.Stdout = io.Discard
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	best := func(f func() time.Duration) time.Duration {
		f() // warm the page cache
		d := f()
		for i := 0; i < 3; i++ {
			d = min(d, f())
		}
		return d
	}
	o, p := best(ours), best(peer)
	mbs := func(d time.Duration) float64 { return total / (1 << 20) / d.Seconds() }
	benchrow.Record(t, benchrow.Row{
		Name: "usb bundle ingest (64 MiB image, verified)", Ours: mbs(o),
		Peer: peerName, PeerValue: mbs(p), Unit: "MB/s",
		Goal: 0.25, HigherIsBetter: true,
		Note: "ours parses FAT32 in a sandboxed child and checks SHA-256; the peer checks nothing",
	})
	_ = os.Remove(img)
}
