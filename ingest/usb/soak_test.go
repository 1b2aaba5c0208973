//go:build soak

package usb

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"testing"
)

// A bundle at the file-count limit is written and read within the default
// child budgets.
func TestSoakMaxFiles(t *testing.T) {
	files := make([]File, MaxFiles)
	want := map[string][]byte{}
	for i := range files {
		name := fmt.Sprintf("envelope-%05d.coffre", i)
		want[name] = []byte(name)
		files[i] = BytesFile(name, want[name])
	}
	img := tempPath(t, "max-files.img")
	if _, err := WriteImage(img, files, 0); err != nil {
		t.Fatal(err)
	}
	b, err := Open(img, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got, err := readAll(t, b)
	if err != nil {
		t.Fatal(err)
	}
	checkContents(t, got, want)
}

// A file at the size limit is written and read, verified, through the
// child with its default memory limit.
func TestSoakMaxFileSize(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), MaxFileSize/16)
	img := tempPath(t, "max-size.img")
	if _, err := WriteImage(img, []File{BytesFile("big.env", data)}, 0); err != nil {
		t.Fatal(err)
	}
	b, err := Open(img, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	h := sha256.New()
	err = b.Walk(func(e Entry, r io.Reader) error {
		_, err := io.Copy(h, r)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("contents differ")
	}
}
