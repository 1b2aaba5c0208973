package usb

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
)

// fatImage is a whole FAT32 image in memory, for crafting damage.
type fatImage struct {
	t *testing.T
	b []byte
	v volume
}

func loadImage(t *testing.T, path string) *fatImage {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := checkVolume(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return &fatImage{t: t, b: b, v: v}
}

func (im *fatImage) save(path string) {
	im.t.Helper()
	if err := os.WriteFile(path, im.b, 0o644); err != nil {
		im.t.Fatal(err)
	}
}

func (im *fatImage) fatOff(c uint32, copyN int64) int64 {
	return im.v.Start + (im.v.ReservedSectors+copyN*im.v.SectorsPerFAT)*im.v.BytesPerSector + int64(c)*4
}

func (im *fatImage) fat(c uint32) uint32 {
	return binary.LittleEndian.Uint32(im.b[im.fatOff(c, 0):]) & 0x0FFFFFFF
}

func (im *fatImage) setFAT(c, val uint32) {
	for n := int64(0); n < 2; n++ {
		binary.LittleEndian.PutUint32(im.b[im.fatOff(c, n):], val)
	}
}

func (im *fatImage) clusterOff(c uint32) int64 {
	cb := im.v.SectorsPerCluster * im.v.BytesPerSector
	data := im.v.Start + (im.v.ReservedSectors+2*im.v.SectorsPerFAT)*im.v.BytesPerSector
	return data + int64(c-2)*cb
}

// lfn returns the offset of the long-name slot holding the first five
// characters of name (which must be unique in the image as UTF-16).
func (im *fatImage) lfn(first5 string) int64 {
	im.t.Helper()
	var pat []byte
	for _, r := range utf16.Encode([]rune(first5)) {
		pat = binary.LittleEndian.AppendUint16(pat, r)
	}
	i := bytes.Index(im.b, pat)
	if i < 1 || bytes.Contains(im.b[i+1:], pat) {
		im.t.Fatalf("long name %q not found exactly once", first5)
	}
	return int64(i - 1)
}

// shortEntry is the 8.3 entry that follows a one-slot long name.
func (im *fatImage) shortEntry(first5 string) int64 { return im.lfn(first5) + 32 }

func (im *fatImage) firstCluster(entry int64) uint32 {
	return uint32(binary.LittleEndian.Uint16(im.b[entry+20:]))<<16 | uint32(binary.LittleEndian.Uint16(im.b[entry+26:]))
}

func (im *fatImage) putLE32(off int64, v uint32) { binary.LittleEndian.PutUint32(im.b[off:], v) }

// hostileBase writes an image made by us with files that the cases damage.
func hostileBase(t *testing.T) string {
	files := []File{
		BytesFile("zzqab", []byte("short")),
		BytesFile("chain.env", bytes.Repeat([]byte("chain"), 20000)),
		BytesFile("sizel.env", bytes.Repeat([]byte("s"), 3000)),
	}
	img := tempPath(t, "base.img")
	if _, err := WriteImage(img, files, 0); err != nil {
		t.Fatal(err)
	}
	return img
}

func TestHostileImages(t *testing.T) {
	base := hostileBase(t)
	type outcome struct {
		open, walk error // sentinel expected from Open, else from Walk
		limit      bool  // the child must have been stopped by a limit
	}
	cases := []struct {
		name   string
		damage func(im *fatImage) []byte // returns the new image bytes
		want   outcome
	}{
		{"root directory cluster cycle", func(im *fatImage) []byte {
			im.setFAT(2, 2)
			return im.b
		}, outcome{open: ErrChildFailed, limit: true}},
		{"file cluster cycle", func(im *fatImage) []byte {
			first := im.firstCluster(im.shortEntry("chain"))
			c := first
			for !(im.fat(c) >= 0x0FFFFFF8) {
				c = im.fat(c)
			}
			im.setFAT(c, first)
			return im.b
		}, outcome{walk: ErrChildFailed, limit: true}},
		{"forged sectors per FAT", func(im *fatImage) []byte {
			im.putLE32(36, uint32(im.v.TotalSectors/3))
			return im.b
		}, outcome{open: ErrBootSector}},
		{"more sectors than the image", func(im *fatImage) []byte {
			im.putLE32(32, uint32(im.v.TotalSectors+1))
			return im.b
		}, outcome{open: ErrBootSector}},
		{"truncated image", func(im *fatImage) []byte {
			return im.b[:len(im.b)/2]
		}, outcome{open: ErrBootSector}},
		{"truncated to a few bytes", func(im *fatImage) []byte {
			return im.b[:1000]
		}, outcome{open: ErrNotFAT32}},
		{"garbage", func(im *fatImage) []byte {
			g := make([]byte, 1<<20)
			rand.Read(g)
			return g
		}, outcome{open: ErrNotFAT32}},
		{"zero sectors per cluster", func(im *fatImage) []byte {
			im.b[13] = 0
			return im.b
		}, outcome{open: ErrBootSector}},
		{"size field larger than the manifest", func(im *fatImage) []byte {
			im.putLE32(im.shortEntry("sizel")+28, 9000)
			return im.b
		}, outcome{open: ErrSizeMismatch}},
		{"size field of 4 GiB", func(im *fatImage) []byte {
			im.putLE32(im.shortEntry("sizel")+28, 0xFFFFFFFF)
			return im.b
		}, outcome{open: ErrLimit}},
		{"name with a slash", func(im *fatImage) []byte {
			binary.LittleEndian.PutUint16(im.b[im.lfn("zzqab")+5:], '/')
			return im.b
		}, outcome{open: ErrBadName}},
		{"name dot dot", func(im *fatImage) []byte {
			o := im.lfn("zzqab")
			copy(im.b[o+1:], []byte{'.', 0, '.', 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF})
			return im.b
		}, outcome{open: ErrBadName}},
		{"name with a control character", func(im *fatImage) []byte {
			binary.LittleEndian.PutUint16(im.b[im.lfn("zzqab")+3:], 0x01)
			return im.b
		}, outcome{open: ErrBadName}},
		{"contents changed", func(im *fatImage) []byte {
			off := im.clusterOff(im.firstCluster(im.shortEntry("chain")))
			im.b[off+10] ^= 1
			return im.b
		}, outcome{walk: ErrHashMismatch}},
		{"huge directory", func(im *fatImage) []byte {
			growRoot(im, MaxFiles+200)
			return im.b
		}, outcome{open: ErrLimit}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			im := loadImage(t, base)
			bad := tempPath(t, "bad.img")
			if err := os.WriteFile(bad, c.damage(im), 0o644); err != nil {
				t.Fatal(err)
			}
			b, err := Open(bad, Limits{ChildMemory: 256 << 20, ChildCPU: 10e9, ChildTimeout: 30e9})
			if c.want.open != nil {
				if b != nil {
					b.Close()
				}
				checkHostile(t, err, c.want.open, c.want.limit)
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer b.Close()
			_, err = readAll(t, b)
			checkHostile(t, err, c.want.walk, c.want.limit)
		})
	}
}

func checkHostile(t *testing.T, err, want error, limit bool) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
	var ce *ChildError
	if limit && (!errors.As(err, &ce) || !ce.Limit) {
		t.Fatalf("the child was not stopped by a limit: %v", err)
	}
	t.Logf("%v", err)
}

// growRoot appends n short entries of one-byte files to the root
// directory, chaining free clusters to it as it fills.
func growRoot(im *fatImage, n int) {
	cb := im.v.SectorsPerCluster * im.v.BytesPerSector
	c := uint32(2)
	slot := int64(0) // byte offset of the next slot in cluster c
	// Find the end-of-directory entry.
	for {
		off := im.clusterOff(c)
		for slot < cb && im.b[off+slot] != 0 {
			slot += 32
		}
		if slot < cb || im.fat(c) >= 0x0FFFFFF8 {
			break
		}
		c, slot = im.fat(c), 0
	}
	free := uint32(im.v.Clusters + 1) // allocate downwards from the last cluster
	for i := 0; i < n; i++ {
		if slot == cb {
			for im.fat(free) != 0 {
				free--
			}
			im.setFAT(c, free)
			im.setFAT(free, 0x0FFFFFFF)
			c, slot = free, 0
			off := im.clusterOff(c)
			clear(im.b[off : off+cb])
		}
		e := im.b[im.clusterOff(c)+slot:]
		copy(e, fmt.Sprintf("H%07dENV", i))
		e[11] = 0x20
		binary.LittleEndian.PutUint32(e[28:], 1)
		slot += 32
	}
}

// The parent's boot-sector check stops a forged sectors-per-FAT value; if it
// did not, the child's memory limit would: start the child unchecked.
func TestChildLimitContainsForgedFAT(t *testing.T) {
	im := loadImage(t, hostileBase(t))
	im.putLE32(36, 4<<20) // a 2 GiB FAT
	bad := tempPath(t, "forged.img")
	im.save(bad)
	f, err := os.Open(bad)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l := Limits{ChildMemory: 256 << 20}.withDefaults()
	c, err := startChild(f, bad, im.v, childListUnchecked, nil, l, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = parseListing(c.out, maxListEntries)
	err = c.finish(err)
	checkHostile(t, err, ErrChildFailed, true)
}

// The parent names a child stopped by the wall clock or by its CPU limit.
func TestChildStoppedByLimits(t *testing.T) {
	for _, c := range []struct {
		mode, reason string
		wall         time.Duration
	}{
		{"sleep", "timed out", 1500 * time.Millisecond},
		{"spin", "cpu limit", 20 * time.Second},
	} {
		t.Run(c.mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), c.wall)
			cmd := exec.CommandContext(ctx, os.Args[0])
			cmd.Env = []string{"COFFRE_USB_TEST_HANG=" + c.mode}
			ch := &child{cmd: cmd, stderr: &headBuffer{max: 4096}, ctx: ctx, cancel: cancel,
				source: "hang.img", cpu: time.Second, wall: c.wall}
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			ch.out = out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			_, err = parseListing(out, maxListEntries)
			err = ch.finish(err)
			var ce *ChildError
			if !errors.As(err, &ce) || !ce.Limit || !strings.HasPrefix(ce.Reason, c.reason) {
				t.Fatalf("got %v, want a %q ChildError", err, c.reason)
			}
			t.Logf("%v", err)
			if !strings.Contains(err.Error(), "hang.img") {
				t.Fatalf("error does not name the image: %v", err)
			}
		})
	}
}
