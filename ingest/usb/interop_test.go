package usb

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"coffre/internal/testenv"
)

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// mkfsBundle makes a FAT32 image of kib KiB with mkfs.vfat at the given
// sector offset and copies a bundle written by WriteDir into its root with
// mcopy. It returns the image path and the contents.
func mkfsBundle(t *testing.T, files []File, kib int64, offsetSectors int64) string {
	t.Helper()
	testenv.RequireTool(t, "mkfs.vfat", "dosfstools")
	testenv.RequireTool(t, "mcopy", "mtools")
	dir := tempPath(t, "src")
	if _, err := WriteDir(dir, files); err != nil {
		t.Fatal(err)
	}
	img := tempPath(t, "mkfs.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, kib*1024); err != nil {
		t.Fatal(err)
	}
	args := []string{"-F", "32", "-n", "COURIER"}
	target := img
	if offsetSectors > 0 {
		writeMBR(t, img, offsetSectors, kib*2-offsetSectors)
		args = append(args, "--offset="+strconv.FormatInt(offsetSectors, 10))
		target = img + "@@" + strconv.FormatInt(offsetSectors*512, 10)
		args = append(args, img, strconv.FormatInt(kib-offsetSectors/2, 10))
	} else {
		args = append(args, img)
	}
	run(t, "mkfs.vfat", args...)
	des, _ := os.ReadDir(dir)
	mc := []string{"-i", target}
	for _, de := range des {
		mc = append(mc, filepath.Join(dir, de.Name()))
	}
	run(t, "mcopy", append(mc, "::/")...)
	return img
}

// writeMBR writes a partition table with one FAT32 (LBA, 0x0c) partition.
func writeMBR(t *testing.T, img string, lba, sectors int64) {
	mbr := make([]byte, 512)
	p := mbr[446:]
	p[0] = 0x80
	p[4] = 0x0C
	binary.LittleEndian.PutUint32(p[8:], uint32(lba))
	binary.LittleEndian.PutUint32(p[12:], uint32(sectors))
	mbr[510], mbr[511] = 0x55, 0xAA
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteAt(mbr, 0)
}

func TestReadMkfsImage(t *testing.T) {
	files, want := testFiles(9)
	for _, c := range []struct {
		name   string
		kib    int64
		offset int64
	}{
		{"superfloppy", 40 << 10, 0},
		{"mbr partition", 48 << 10, 2048},
		{"4k clusters", 300 << 10, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := mkfsBundle(t, files, c.kib, c.offset)
			b, err := Open(img, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if c.offset > 0 && b.vol.Partition != 1 {
				t.Fatalf("volume found in partition %d", b.vol.Partition)
			}
			got, err := readAll(t, b)
			if err != nil {
				t.Fatal(err)
			}
			checkContents(t, got, want)
		})
	}
}

func TestOurImageForPeers(t *testing.T) {
	testenv.RequireTool(t, "fsck.vfat", "dosfstools")
	testenv.RequireTool(t, "mdir", "mtools")
	files, want := testFiles(9)
	files = append(files, BytesFile("Mixed-Case.Envelope_1", []byte("mixed")))
	want["Mixed-Case.Envelope_1"] = []byte("mixed")
	img := tempPath(t, "ours.img")
	m, err := WriteImage(img, files, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := run(t, "fsck.vfat", "-n", "-v", img)
	if bytes.Contains(bytes.ToLower(out), []byte("warning")) {
		t.Fatalf("fsck.vfat warns:\n%s", out)
	}
	listing := string(run(t, "mdir", "-i", img, "::/"))
	for name := range want {
		if !strings.Contains(listing, name) && !strings.Contains(listing, strings.ToUpper(name)) {
			t.Errorf("mdir does not list %s:\n%s", name, listing)
		}
	}
	for name, data := range want {
		got := run(t, "mtype", "-i", img, "::/"+name)
		if !bytes.Equal(got, data) {
			t.Errorf("mtype %s: %d bytes, want %d", name, len(got), len(data))
		}
	}
	mb, _ := m.Encode()
	if got := run(t, "mtype", "-i", img, "::/"+ManifestName); !bytes.Equal(got, mb) {
		t.Errorf("mtype MANIFEST differs")
	}
}

// A raw block device (a read-only loop device over our image) is read with
// its size from BLKGETSIZE64.
func TestBlockDevice(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "losetup", "mount")
	files, want := testFiles(5)
	img := tempPath(t, "dev.img")
	if _, err := WriteImage(img, files, 0); err != nil {
		t.Fatal(err)
	}
	dev := strings.TrimSpace(string(run(t, "losetup", "-f", "--show", "-r", img)))
	defer exec.Command("losetup", "-d", dev).Run()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	size, err := deviceSize(f)
	f.Close()
	if fi, _ := os.Stat(img); err != nil || size != fi.Size() {
		t.Fatalf("device size %d (%v), image %d", size, err, fi.Size())
	}
	b, err := Open(dev, Limits{})
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
