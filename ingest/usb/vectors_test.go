package usb

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const vectorDir = "../../testdata/usb"

var sentinelByName = map[string]error{
	"ErrNotFAT32": ErrNotFAT32, "ErrBootSector": ErrBootSector, "ErrChildFailed": ErrChildFailed,
	"ErrStream": ErrStream, "ErrLimit": ErrLimit, "ErrManifest": ErrManifest,
	"ErrHashMismatch": ErrHashMismatch, "ErrSizeMismatch": ErrSizeMismatch, "ErrBadName": ErrBadName,
	"ErrMissingFile": ErrMissingFile, "ErrExtraFile": ErrExtraFile,
}

// TestVectors replays testdata/usb/VECTORS (docs/formats/usb.md section 7).
func TestVectors(t *testing.T) {
	decl, err := os.ReadFile(filepath.Join(vectorDir, "VECTORS"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(decl), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 {
			t.Fatalf("bad VECTORS line %q", line)
		}
		kind, file, outcome := f[0], f[1], f[2]
		var want error
		if outcome != "ok" {
			if want = sentinelByName[outcome]; want == nil {
				t.Fatalf("unknown outcome %q", outcome)
			}
		}
		data, err := os.ReadFile(filepath.Join(vectorDir, file))
		if err != nil {
			t.Fatal(err)
		}
		n++
		t.Run(file, func(t *testing.T) {
			var err error
			switch kind {
			case "manifest":
				var m Manifest
				m, err = ParseManifest(data)
				if err == nil {
					if again, _ := m.Encode(); !bytes.Equal(again, data) {
						t.Fatal("accepted manifest does not re-encode to the same bytes")
					}
				}
			case "bootsector":
				if len(f) != 4 {
					t.Fatalf("bootsector vector without a device size")
				}
				size, perr := strconv.ParseInt(f[3], 10, 64)
				if perr != nil {
					t.Fatal(perr)
				}
				_, err = checkVolume(&sizedReader{b: data, size: size}, size)
			case "stream-list":
				_, err = parseListing(bytes.NewReader(data), maxListEntries)
			case "stream-read":
				var got bytes.Buffer
				err = streamFiles(newFrameReader(bytes.NewReader(data)), streamEntries, func(e Entry, r io.Reader) error {
					_, err := io.Copy(&got, r)
					return err
				})
				if err == nil && got.String() != "hellohi" {
					t.Fatalf("read %q", got.String())
				}
			default:
				t.Fatalf("unknown kind %q", kind)
			}
			if want == nil && err != nil {
				t.Fatalf("want ok, got %v", err)
			}
			if want != nil {
				wantErr(t, err, want)
			}
		})
	}
	if n < 40 {
		t.Fatalf("only %d vectors", n)
	}
}
