//go:build bench

package qr

import (
	"bytes"
	"image/jpeg"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coffre/internal/benchrow"
	"coffre/internal/testenv"
)

// QR decode time per 1080p camera-like frame (JPEG file in, frame text out),
// ours against zbarimg on the same files (one zbarimg run over all of them,
// so its start-up is amortised).
func TestBenchDecode1080p(t *testing.T) {
	zbar := testenv.RequireTool(t, "zbarimg", "zbar-tools")
	msg := testMessage(20000, 30)
	frames, err := Encode(msg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 12
	dir := t.TempDir()
	var files []string
	for i := range n {
		scene := cameraScene(t, frames[i], uint64(100+i))
		var b bytes.Buffer
		if err := jpeg.Encode(&b, scene, &jpeg.Options{Quality: 85}); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, FrameFileName(i)+".jpg")
		os.WriteFile(p, b.Bytes(), 0o644)
		files = append(files, p)
	}
	// Warm up both.
	if _, err := readImageFile(files[0]); err != nil {
		t.Fatal(err)
	}
	exec.Command(zbar, "-q", "--raw", files[0]).Run()

	start := time.Now()
	for i, p := range files {
		f, err := readImageFile(p)
		if err != nil {
			t.Fatal(err)
		}
		texts, err := DecodeLuma(f.Y, f.W, f.H, f.Stride)
		if err != nil || texts[0] != frames[i] {
			t.Fatalf("ours failed on frame %d: %v", i, err)
		}
	}
	ours := time.Since(start).Seconds() / n * 1000

	start = time.Now()
	out, err := exec.Command(zbar, append([]string{"-q", "--raw", "-Sdisable", "-Sqrcode.enable"}, files...)...).Output()
	peer := time.Since(start).Seconds() / n * 1000
	if err != nil {
		t.Fatalf("zbarimg: %v", err)
	}
	if got := strings.Count(string(out), "\n"); got != n {
		t.Fatalf("zbarimg read %d of %d frames", got, n)
	}
	benchrow.Record(t, benchrow.Row{
		Name: "qr decode 1080p camera frame", Ours: ours, Peer: "zbarimg", PeerValue: peer,
		Unit: "ms/frame", Goal: 1.0, HigherIsBetter: false,
		Note: "JPEG 1920x1080, V20-M code at ~1.4 px/px, rotated, uneven light, noise",
	})
}

// Goodput of an animated transfer: message bytes over the bytes of the
// frames a receiver needed, against the raw capacity of those frames (no
// loss) and against an ideal erasure code (20% loss).
func TestBenchGoodput(t *testing.T) {
	msg := testMessage(256<<10, 31)
	e, err := NewEncoder(msg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	frameBytes := float64(HeaderLen + e.FragmentSize() + ChecksumLen)
	run := func(loss float64, seed uint64) float64 {
		d := NewDecoder(Limits{})
		r := rand.New(rand.NewPCG(seed, 1))
		received := 0
		for seq := 0; seq < 10*e.Count(); seq++ {
			if r.Float64() < loss {
				continue
			}
			text, _ := e.Frame(seq)
			received++
			if p, err := d.AddFrame(text); err != nil {
				t.Fatal(err)
			} else if p.Done {
				return float64(len(msg)) / (float64(received) * frameBytes)
			}
		}
		t.Fatal("transfer did not complete")
		return 0
	}
	benchrow.Record(t, benchrow.Row{
		Name: "qr goodput, no loss", Ours: run(0, 1), Peer: "raw frame capacity", PeerValue: 1,
		Unit: "fraction", Goal: 0.9, HigherIsBetter: true,
		Note: "256 KiB message, V20-M frames",
	})
	sum := 0.0
	for s := range 5 {
		sum += run(0.2, uint64(s))
	}
	benchrow.Record(t, benchrow.Row{
		Name: "qr goodput per frame received, 20% loss", Ours: sum / 5, Peer: "ideal erasure code", PeerValue: float64(len(msg)) / (float64(e.Count()) * frameBytes),
		Unit: "fraction", Goal: 0.9, HigherIsBetter: true,
		Note: "frames in display order, 20% dropped at random; mean of 5 runs",
	})
}
