package usb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"
)

// sentinels are the errors a parser of outside input may return.
var sentinels = []error{ErrNotFAT32, ErrBootSector, ErrChildFailed, ErrStream, ErrLimit,
	ErrManifest, ErrHashMismatch, ErrSizeMismatch, ErrBadName, ErrMissingFile, ErrExtraFile}

func isSentinel(err error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

func FuzzManifest(f *testing.F) {
	m := Manifest{ID: "0123456789abcdef0123456789abcdef", Created: time.Date(2026, 11, 23, 11, 45, 0, 0, time.UTC),
		Entries: []Entry{{Name: "a.env", Size: 3, SHA256: [32]byte{1}}, {Name: "b.env", Size: 1 << 20}}}
	good, _ := m.Encode()
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		again, err := m.Encode()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted a non-canonical manifest: %v", err)
		}
		if len(m.Entries) > MaxFiles || m.TotalSize() > MaxTotalSize {
			t.Fatal("accepted a manifest beyond the limits")
		}
	})
}

func FuzzBootSector(f *testing.F) {
	f.Fuzz(func(t *testing.T, sector []byte, devSize int64) {
		if len(sector) > 1024 {
			return
		}
		dev := make([]byte, 64<<10)
		copy(dev, sector)
		if devSize < 0 {
			devSize = -devSize
		}
		r := &sizedReader{b: dev, size: devSize}
		v, err := checkVolume(r, devSize)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		fat := v.SectorsPerFAT * v.BytesPerSector
		if v.Start+v.Size > devSize || v.Clusters < 1 || fat > maxFATBytes ||
			fat/4 < v.Clusters+2 || v.ReservedSectors+2*v.SectorsPerFAT >= v.TotalSectors {
			t.Fatalf("accepted an insane volume %+v on %d bytes", v, devSize)
		}
	})
}

// sizedReader is a device of size bytes whose first len(b) bytes are b and
// the rest zeros.
type sizedReader struct {
	b    []byte
	size int64
}

func (s *sizedReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.size {
		return 0, io.EOF
	}
	clear(p)
	if off < int64(len(s.b)) {
		copy(p, s.b[off:])
	}
	if rem := s.size - off; int64(len(p)) > rem {
		return int(rem), io.EOF
	}
	return len(p), nil
}

var streamEntries = []Entry{{Name: "a.env", Size: 5}, {Name: "b.env", Size: 2}}

func init() {
	streamEntries[0].SHA256 = sha256Of([]byte("hello"))
	streamEntries[1].SHA256 = sha256Of([]byte("hi"))
}

func FuzzChildStream(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := parseListing(bytes.NewReader(b), maxListEntries)
		if err != nil && !isSentinel(err) {
			t.Fatalf("listing: error wraps no sentinel: %v", err)
		}
		if err == nil {
			if len(l.Entries) > maxListEntries || len(l.Manifest) > MaxManifestSize {
				t.Fatal("listing beyond its limits")
			}
			// Re-encode and parse again: the same listing.
			var buf bytes.Buffer
			fw := newFrameWriter(&buf)
			fw.frame(frameHello, []byte(streamHello))
			for _, e := range l.Entries {
				var h [9]byte
				if e.IsDir {
					h[0] = 1
				}
				binary.BigEndian.PutUint64(h[1:], uint64(e.Size))
				fw.frame(frameList, h[:], []byte(e.Name))
			}
			if l.Manifest != nil {
				fw.frame(frameFile, sizeName(int64(len(l.Manifest)), ManifestName))
				for p := l.Manifest; len(p) > 0; p = p[min(len(p), maxFramePayload):] {
					fw.frame(frameData, p[:min(len(p), maxFramePayload)])
				}
				fw.frame(frameEnd)
			}
			var c [4]byte
			binary.BigEndian.PutUint32(c[:], uint32(len(l.Entries)))
			fw.frame(frameDone, c[:])
			fw.flush()
			l2, err := parseListing(&buf, maxListEntries)
			if err != nil || len(l2.Entries) != len(l.Entries) || !bytes.Equal(l2.Manifest, l.Manifest) {
				t.Fatalf("re-encoded listing differs: %v", err)
			}
		}
		var got bytes.Buffer
		err = streamFiles(newFrameReader(bytes.NewReader(b)), streamEntries, func(e Entry, r io.Reader) error {
			_, err := io.Copy(&got, r)
			return err
		})
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("files: error wraps no sentinel: %v", err)
			}
			return
		}
		if got.String() != "hellohi" {
			t.Fatalf("accepted stream yields %q", got.String())
		}
	})
}

var fuzzBase struct {
	once sync.Once
	img  []byte
	err  error
}

// fuzzBaseImage is a small bundle image with a fixed manifest.
func fuzzBaseImage(t testing.TB) []byte {
	fuzzBase.once.Do(func() {
		files := []File{BytesFile("zzqab", []byte("short")), BytesFile("chain.env", bytes.Repeat([]byte("chain"), 400))}
		m := Manifest{ID: "00112233445566778899aabbccddeeff", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
		for _, f := range files {
			e := Entry{Name: f.Name, Size: f.Size}
			copyChecked(io.Discard, f, &e, true)
			m.Entries = append(m.Entries, e)
		}
		sortEntries(m.Entries)
		p := t.TempDir() + "/base.img"
		if fuzzBase.err = writeImageWith(p, m, files, minWriteImageSize); fuzzBase.err == nil {
			fuzzBase.img, fuzzBase.err = os.ReadFile(p)
		}
	})
	if fuzzBase.err != nil {
		t.Fatal(fuzzBase.err)
	}
	return fuzzBase.img
}

// applyPatches reads data as patches of the base image: repeated
// offset u32 little-endian (modulo the image size) | n u8 | n bytes.
// Input starting with 'R' is a whole raw image instead.
func applyPatches(base, data []byte) []byte {
	if len(data) > 0 && data[0] == 'R' {
		return data[1:]
	}
	img := bytes.Clone(base)
	for len(data) >= 5 {
		off := int(binary.LittleEndian.Uint32(data) % uint32(len(img)))
		n := min(int(data[4]), len(data)-5)
		copy(img[off:], data[5:5+n])
		data = data[5+n:]
	}
	return img
}

// FuzzReadImage runs the whole reading path — the parent's checks, the
// child under tight limits, the parent's verification — on damaged images.
func FuzzReadImage(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		img := applyPatches(fuzzBaseImage(t), data)
		path := t.TempDir() + "/fuzz.img"
		if err := os.WriteFile(path, img, 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := Open(path, Limits{ChildMemory: 128 << 20, ChildCPU: 5 * time.Second, ChildTimeout: 20 * time.Second})
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("open: error wraps no sentinel: %v", err)
			}
			return
		}
		defer b.Close()
		_, err = readAll(t, b)
		if err != nil && !isSentinel(err) {
			t.Fatalf("walk: error wraps no sentinel: %v", err)
		}
	})
}
