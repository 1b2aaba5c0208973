package usb

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestDirRoundTrip(t *testing.T) {
	files, want := testFiles(10)
	dir := tempPath(t, "bundle")
	m, err := WriteDir(dir, files)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(dir, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.ID != m.ID || len(b.Entries) != 10 {
		t.Fatalf("manifest: got id %s and %d entries", b.ID, len(b.Entries))
	}
	got, err := readAll(t, b)
	if err != nil {
		t.Fatal(err)
	}
	checkContents(t, got, want)
}

func TestImageRoundTrip(t *testing.T) {
	files, want := testFiles(12)
	img := tempPath(t, "bundle.img")
	m, err := WriteImage(img, files, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(img, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.ID != m.ID {
		t.Fatalf("id %s, want %s", b.ID, m.ID)
	}
	got, err := readAll(t, b)
	if err != nil {
		t.Fatal(err)
	}
	checkContents(t, got, want)

	// One file through Open.
	r, err := b.Open("env-007.coffre")
	if err != nil {
		t.Fatal(err)
	}
	d, err := io.ReadAll(r)
	r.Close()
	if err != nil || string(d) != string(want["env-007.coffre"]) {
		t.Fatalf("Open: %d bytes, %v", len(d), err)
	}
	if _, err := b.Open("nope"); !errors.Is(err, ErrMissingFile) {
		t.Fatalf("Open of a missing name: %v", err)
	}
}

// The image file is never modified by reading it.
func TestImageUnchangedByRead(t *testing.T) {
	files, _ := testFiles(3)
	img := tempPath(t, "bundle.img")
	if _, err := WriteImage(img, files, 0); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(img)
	os.Chmod(img, 0o444)
	b, err := Open(img, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readAll(t, b); err != nil {
		t.Fatal(err)
	}
	b.Close()
	after, _ := os.ReadFile(img)
	if string(before) != string(after) {
		t.Fatal("the image changed")
	}
}

func TestDirTampered(t *testing.T) {
	files, _ := testFiles(4)
	cases := []struct {
		name   string
		mutate func(dir string)
		open   error // expected from Open, or nil
		walk   error // expected from Walk
	}{
		{"flipped byte", func(d string) { flip(t, filepath.Join(d, "env-002.coffre"), 100) }, nil, ErrHashMismatch},
		{"longer file", func(d string) { appendTo(t, filepath.Join(d, "env-001.coffre"), "x") }, ErrSizeMismatch, nil},
		{"missing file", func(d string) { os.Remove(filepath.Join(d, "env-003.coffre")) }, ErrMissingFile, nil},
		{"extra file", func(d string) { os.WriteFile(filepath.Join(d, "extra.env"), []byte("x"), 0o644) }, ErrExtraFile, nil},
		{"subdirectory", func(d string) { os.Mkdir(filepath.Join(d, "sub"), 0o755) }, ErrExtraFile, nil},
		{"bad name", func(d string) { os.WriteFile(filepath.Join(d, "a b"), nil, 0o644) }, ErrBadName, nil},
		{"symlink", func(d string) {
			os.Remove(filepath.Join(d, "env-002.coffre"))
			os.Symlink("/etc/passwd", filepath.Join(d, "env-002.coffre"))
		}, ErrExtraFile, nil},
		{"no manifest", func(d string) { os.Remove(filepath.Join(d, ManifestName)) }, ErrManifest, nil},
		{"bad manifest", func(d string) { appendTo(t, filepath.Join(d, ManifestName), "x\n") }, ErrManifest, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := tempPath(t, "b")
			if _, err := WriteDir(dir, files); err != nil {
				t.Fatal(err)
			}
			c.mutate(dir)
			b, err := Open(dir, Limits{})
			if c.open != nil {
				wantErr(t, err, c.open)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			_, err = readAll(t, b)
			wantErr(t, err, c.walk)
		})
	}
}

func TestLimitsTighten(t *testing.T) {
	files, _ := testFiles(8)
	dir := tempPath(t, "b")
	if _, err := WriteDir(dir, files); err != nil {
		t.Fatal(err)
	}
	for _, l := range []Limits{{MaxFiles: 7}, {MaxFileSize: 70000}, {MaxTotalSize: 1 << 20}} {
		_, err := Open(dir, l)
		wantErr(t, err, ErrLimit)
	}
}

// A consumer that stops reading early still gets the file verified.
func TestWalkUnreadFileIsVerified(t *testing.T) {
	files, _ := testFiles(3)
	img := tempPath(t, "b.img")
	if _, err := WriteImage(img, files, 0); err != nil {
		t.Fatal(err)
	}
	b, err := Open(img, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	n := 0
	if err := b.Walk(func(e Entry, r io.Reader) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("walked %d files", n)
	}
	stop := errors.New("stop")
	if err := b.Walk(func(e Entry, r io.Reader) error { return stop }); err != stop {
		t.Fatalf("Walk returned %v, want fn's error", err)
	}
}

func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	f.ReadAt(b, off)
	b[0] ^= 0xFF
	f.WriteAt(b, off)
}

func appendTo(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(s)
	f.Close()
}

func TestOpenRefusesSpecialFiles(t *testing.T) {
	fifo := tempPath(t, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(fifo, Limits{}); err == nil || !strings.Contains(err.Error(), "not a directory, image file or block device") {
		t.Fatalf("fifo: %v", err)
	}
	if _, err := Open("/dev/null", Limits{}); err == nil {
		t.Fatal("character device accepted")
	}
	if _, err := Open(tempPath(t, "absent"), Limits{}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("absent path: %v", err)
	}
}
