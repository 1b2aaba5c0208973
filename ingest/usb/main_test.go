package usb

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	RunChildIfRequested()
	misbehave()
	os.Exit(m.Run())
}

// misbehave turns the test binary into a child that never answers, for the
// tests of the parent's limits: COFFRE_USB_TEST_HANG=sleep sleeps,
// =spin burns CPU under a one-second RLIMIT_CPU.
func misbehave() {
	switch os.Getenv("COFFRE_USB_TEST_HANG") {
	case "sleep":
		time.Sleep(time.Hour)
	case "spin":
		unix.Setrlimit(unix.RLIMIT_CPU, &unix.Rlimit{Cur: 1, Max: 1})
		for x := 0; ; x++ {
			_ = x * x
		}
	}
}

// testFiles returns n deterministic envelopes of varied sizes.
func testFiles(n int) ([]File, map[string][]byte) {
	files := make([]File, 0, n)
	data := make(map[string][]byte, n)
	sizes := []int{1, 2, 511, 512, 513, 4096, 70000, 1<<20 + 3}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("env-%03d.coffre", i)
		b := make([]byte, sizes[i%len(sizes)])
		for j := range b {
			b[j] = byte(i*31 + j*7 + j>>9)
		}
		data[name] = b
		files = append(files, BytesFile(name, b))
	}
	return files, data
}

// readAll walks a bundle and returns its verified contents.
func readAll(t testing.TB, b *Bundle) (map[string][]byte, error) {
	t.Helper()
	got := map[string][]byte{}
	err := b.Walk(func(e Entry, r io.Reader) error {
		d, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		got[e.Name] = d
		return nil
	})
	return got, err
}

func checkContents(t *testing.T, got, want map[string][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d files, want %d", len(got), len(want))
	}
	for n, w := range want {
		if !bytes.Equal(got[n], w) {
			t.Errorf("file %s: contents differ (%d vs %d bytes)", n, len(got[n]), len(w))
		}
	}
}

func wantErr(t *testing.T, err error, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("got error %v, want %v", err, target)
	}
}

func tempPath(t *testing.T, name string) string {
	return filepath.Join(t.TempDir(), name)
}

func sha256Of(b []byte) [32]byte { return sha256.Sum256(b) }
