package usb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat12"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"golang.org/x/sys/unix"
)

const (
	childEnv  = "COFFRE_USB_CHILD" // "1" in the child's environment
	childArg  = "coffre-usb-child" // os.Args[1] of the child
	childFD   = 3                  // the image, opened O_RDONLY by the parent
	childList = "list"
	childRead = "read"
	// childListUnchecked skips the child's own boot-sector check: tests use
	// it to show that the child's limits contain what the check prevents.
	childListUnchecked = "list-unchecked"
	// exit codes of the child
	childExitFailed = 3 // reported in an 'X' frame
	childExitUsage  = 4 // bad arguments or limits could not be set
)

// RunChildIfRequested turns the process into a filesystem-reader child when
// it was started as one by this package (environment COFFRE_USB_CHILD=1 and
// first argument "coffre-usb-child"), and exits; otherwise it returns at
// once. Call it first thing in main (and in TestMain of packages whose tests
// open images), before flags are parsed.
func RunChildIfRequested() {
	if os.Getenv(childEnv) != "1" || len(os.Args) < 2 || os.Args[1] != childArg {
		return
	}
	os.Exit(childMain(os.Args[2:], os.Stdout))
}

// childArgs are the child's arguments after childArg:
// mode start size bytesPerSector memory cpuSeconds maxEntries maxFileSize [name...]
type childArgs struct {
	mode               string
	start, size, bps   int64
	memory, cpuSeconds int64
	maxEntries         int
	maxFileSize        int64
	names              []string
}

func (a childArgs) encode() []string {
	s := []string{childArg, a.mode,
		strconv.FormatInt(a.start, 10), strconv.FormatInt(a.size, 10), strconv.FormatInt(a.bps, 10),
		strconv.FormatInt(a.memory, 10), strconv.FormatInt(a.cpuSeconds, 10),
		strconv.Itoa(a.maxEntries), strconv.FormatInt(a.maxFileSize, 10)}
	return append(s, a.names...)
}

func parseChildArgs(s []string) (childArgs, error) {
	var a childArgs
	if len(s) < 8 {
		return a, errors.New("too few arguments")
	}
	a.mode = s[0]
	var n [7]int64
	for i := range n {
		v, err := strconv.ParseInt(s[i+1], 10, 64)
		if err != nil || v < 0 {
			return a, fmt.Errorf("argument %d is not a count", i+1)
		}
		n[i] = v
	}
	a.start, a.size, a.bps, a.memory, a.cpuSeconds = n[0], n[1], n[2], n[3], n[4]
	a.maxEntries, a.maxFileSize = int(n[5]), n[6]
	a.names = s[8:]
	if a.mode != childList && a.mode != childRead && a.mode != childListUnchecked {
		return a, errors.New("unknown mode")
	}
	return a, nil
}

func childMain(args []string, stdout io.Writer) int {
	fw := newFrameWriter(stdout)
	fail := func(code int, err error) int {
		fw.frame(frameFail, []byte(sanitize(err.Error())))
		fw.flush()
		return code
	}
	fw.frame(frameHello, []byte(streamHello))
	a, err := parseChildArgs(args)
	if err != nil {
		return fail(childExitUsage, err)
	}
	if err := limitSelf(a.memory, a.cpuSeconds); err != nil {
		return fail(childExitUsage, err)
	}
	img := os.NewFile(childFD, "image")
	if img == nil {
		return fail(childExitUsage, errors.New("no image descriptor"))
	}
	if err := childRun(file.New(img, true), a, fw); err != nil {
		return fail(childExitFailed, err)
	}
	if err := fw.flush(); err != nil {
		return childExitFailed
	}
	return 0
}

// limitSelf applies the child's limits before any byte of the image is read:
// data segment (RLIMIT_DATA, which counts the Go heap's mappings), a
// backstop on the address space (the Go runtime reserves far more address
// space than it uses), Go heap target (half the data limit), CPU seconds, no file writes, few open
// files, no core dumps.
func limitSelf(memory, cpuSeconds int64) error {
	set := func(res int, v uint64) error {
		return unix.Setrlimit(res, &unix.Rlimit{Cur: v, Max: v})
	}
	if memory <= 0 || cpuSeconds <= 0 {
		return errors.New("limits must be positive")
	}
	for _, l := range []struct {
		res int
		v   uint64
	}{
		{unix.RLIMIT_DATA, uint64(memory)},
		{unix.RLIMIT_AS, uint64(memory) + childAddressSlack},
		{unix.RLIMIT_CPU, uint64(cpuSeconds)},
		{unix.RLIMIT_FSIZE, 0},
		{unix.RLIMIT_NOFILE, childNofile},
		{unix.RLIMIT_CORE, 0},
	} {
		if err := set(l.res, l.v); err != nil {
			return fmt.Errorf("cannot set resource limit %d: %v", l.res, err)
		}
	}
	debug.SetMemoryLimit(memory / 2)
	return nil
}

// childRun reads the FAT32 volume and writes the stream. It is the part of
// the child that touches the image; it runs in-process only in tests.
func childRun(st backend.Storage, a childArgs, fw *frameWriter) error {
	bs := make([]byte, 512)
	if _, err := st.ReadAt(bs, a.start); err != nil {
		return fmt.Errorf("reading the boot sector: %v", err)
	}
	v, err := checkBootSector(bs, a.start, a.size)
	if a.mode == childListUnchecked {
		v, err = volume{Start: a.start, Size: a.size, BytesPerSector: a.bps}, nil
	}
	if err != nil {
		return err
	}
	if v.BytesPerSector != a.bps || v.Size != a.size {
		return errors.New("boot sector differs from the parent's view")
	}
	fs, err := fat32.Read(st, v.Size, v.Start, v.BytesPerSector)
	if err != nil {
		return fmt.Errorf("reading the filesystem: %v", err)
	}
	des, err := fs.ReadDir(".")
	if err != nil {
		return fmt.Errorf("reading the root directory: %v", err)
	}
	if a.mode != childRead {
		return childListRoot(fs, v, des, a, fw)
	}
	byName := make(map[string]iofs.DirEntry, len(des))
	for _, de := range des {
		byName[de.Name()] = de
	}
	for _, name := range a.names {
		de, ok := byName[name]
		if !ok || de.IsDir() {
			return fmt.Errorf("file %q is not in the root directory", name)
		}
		if err := childSendFile(fs, v, name, a.maxFileSize, fw); err != nil {
			return err
		}
	}
	var c [4]byte
	binary.BigEndian.PutUint32(c[:], uint32(len(a.names)))
	return fw.frame(frameDone, c[:])
}

func childListRoot(fs *fat32.FileSystem, v volume, des []iofs.DirEntry, a childArgs, fw *frameWriter) error {
	manifest := ""
	if len(des) > a.maxEntries {
		// Enough for the parent to refuse the bundle by its limit.
		des = des[:a.maxEntries+1]
		manifest = "-"
	}
	for _, de := range des {
		info, err := de.Info()
		if err != nil {
			return fmt.Errorf("entry %q: %v", de.Name(), err)
		}
		name := de.Name()
		if len(name) > maxWireName {
			name = name[:maxWireName]
		}
		kind := byte(0)
		if de.IsDir() {
			kind = 1
		} else if manifest == "" && strings.EqualFold(name, ManifestName) {
			manifest = de.Name()
		}
		var hdr [9]byte
		hdr[0] = kind
		binary.BigEndian.PutUint64(hdr[1:], uint64(info.Size()))
		if err := fw.frame(frameList, hdr[:], []byte(name)); err != nil {
			return err
		}
	}
	if manifest != "" && manifest != "-" {
		if err := childSendFileAs(fs, v, manifest, ManifestName, MaxManifestSize, fw); err != nil {
			return err
		}
	}
	var c [4]byte
	binary.BigEndian.PutUint32(c[:], uint32(len(des)))
	return fw.frame(frameDone, c[:])
}

func childSendFile(fs *fat32.FileSystem, v volume, name string, max int64, fw *frameWriter) error {
	return childSendFileAs(fs, v, name, name, max, fw)
}

// childSendFileAs streams one file of the root directory: 'F', its clusters
// as 'D' frames read straight from the device, 'E'. The cluster chain must
// have exactly the length the file's size needs and lie inside the volume.
func childSendFileAs(fs *fat32.FileSystem, v volume, name, wire string, max int64, fw *frameWriter) error {
	f, err := fs.OpenFile("/"+name, os.O_RDONLY)
	if err != nil {
		return fmt.Errorf("file %q: %v", name, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("file %q: %v", name, err)
	}
	size := info.Size()
	if size > max {
		return fmt.Errorf("file %q is %d bytes, more than %d", name, size, max)
	}
	if err := fw.frame(frameFile, sizeName(size, wire)); err != nil {
		return err
	}
	if size > 0 {
		ff, ok := f.(*fat12.File)
		if !ok {
			return fmt.Errorf("file %q: unexpected file type", name)
		}
		ranges, err := ff.GetDiskRanges()
		if err != nil {
			return fmt.Errorf("file %q: %v", name, err)
		}
		cb := v.SectorsPerCluster * v.BytesPerSector
		var chain int64
		for _, r := range ranges {
			if int64(r.Offset)+int64(r.Length) > v.Size {
				return fmt.Errorf("file %q: cluster outside the volume", name)
			}
			chain += int64(r.Length)
		}
		if chain != (size+cb-1)/cb*cb {
			return fmt.Errorf("file %q: cluster chain of %d bytes for a size of %d bytes", name, chain, size)
		}
		buf := make([]byte, maxFramePayload)
		left := size
		for _, r := range ranges {
			off, n := int64(r.Offset), min(int64(r.Length), left)
			for n > 0 {
				k := min(n, int64(len(buf)))
				if _, err := fs.Backend().ReadAt(buf[:k], v.Start+off); err != nil {
					return fmt.Errorf("file %q: reading at byte %d: %v", name, v.Start+off, err)
				}
				if err := fw.frame(frameData, buf[:k]); err != nil {
					return err
				}
				off, n, left = off+k, n-k, left-k
			}
		}
	}
	return fw.frame(frameEnd)
}

// sanitize keeps printable ASCII of a message and bounds it.
func sanitize(s string) string {
	b := make([]byte, 0, min(len(s), maxFailureText))
	for i := 0; i < len(s) && len(b) < maxFailureText; i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			c = '?'
		}
		b = append(b, c)
	}
	if len(b) == 0 {
		b = append(b, '?')
	}
	return string(b)
}
