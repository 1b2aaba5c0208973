package loopdev

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"coffre/internal/testenv"
)

func TestAttachWriteDetach(t *testing.T) {
	testenv.RequireRoot(t)
	img := filepath.Join(t.TempDir(), "d.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := Attach(img, false)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(d.Path, os.O_RDWR, 0)
	if err != nil {
		d.Detach()
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("coffre"), 100)
	_, werr := f.WriteAt(want, 4096)
	serr := f.Sync()
	f.Close()
	if err := d.Detach(); err != nil {
		t.Fatal(err)
	}
	if werr != nil || serr != nil {
		t.Fatal(werr, serr)
	}
	b, _ := os.ReadFile(img)
	if !bytes.Equal(b[4096:4096+len(want)], want) {
		t.Fatal("write through the loop device did not reach the image")
	}
}

func TestReadOnlyRefusesWrites(t *testing.T) {
	testenv.RequireRoot(t)
	img := filepath.Join(t.TempDir(), "ro.img")
	os.WriteFile(img, make([]byte, 1<<20), 0o600)
	d, err := Attach(img, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Detach()
	f, err := os.OpenFile(d.Path, os.O_RDWR, 0)
	if err == nil {
		_, err = f.WriteAt([]byte("x"), 0)
		if err == nil {
			err = f.Sync()
		}
		f.Close()
	}
	if err == nil {
		t.Fatal("a write to a read-only loop device succeeded")
	}
}
