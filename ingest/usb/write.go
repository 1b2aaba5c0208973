package usb

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

// File is one envelope handed to the writing (courier) side.
type File struct {
	Name string
	Size int64
	// Open returns the contents; it is called twice (hash, then copy) and
	// must return the same bytes each time.
	Open func() (io.ReadCloser, error)
}

// BytesFile is a File held in memory.
func BytesFile(name string, data []byte) File {
	return File{Name: name, Size: int64(len(data)), Open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}}
}

// PathFile is a File read from path.
func PathFile(name, path string) (File, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return File{}, fmt.Errorf("usb: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return File{}, fmt.Errorf("usb: %s is not a regular file", path)
	}
	return File{Name: name, Size: fi.Size(), Open: func() (io.ReadCloser, error) { return os.Open(path) }}, nil
}

// NewManifest hashes files and returns their manifest with a fresh random id
// and the current time.
func NewManifest(files []File) (Manifest, error) {
	var id [16]byte
	rand.Read(id[:])
	m := Manifest{ID: hex.EncodeToString(id[:]), Created: time.Now().UTC().Truncate(time.Second)}
	for _, f := range files {
		if err := CheckName(f.Name); err != nil {
			return Manifest{}, err
		}
		e := Entry{Name: f.Name, Size: f.Size}
		if err := copyChecked(io.Discard, f, &e, true); err != nil {
			return Manifest{}, err
		}
		m.Entries = append(m.Entries, e)
	}
	sortEntries(m.Entries)
	if _, err := m.Encode(); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// copyChecked copies f to w. With fill it records f's SHA-256 in e;
// otherwise the contents must match e.
func copyChecked(w io.Writer, f File, e *Entry, fill bool) error {
	r, err := f.Open()
	if err != nil {
		return fmt.Errorf("usb: file %q: %w", f.Name, err)
	}
	defer r.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return fmt.Errorf("usb: file %q: %w", f.Name, err)
	}
	if n > MaxFileSize {
		return fmt.Errorf("usb: file %q: %w: more than %d bytes", f.Name, ErrLimit, MaxFileSize)
	}
	if n != e.Size {
		return fmt.Errorf("usb: file %q: %w: read %d bytes, expected %d", f.Name, ErrSizeMismatch, n, e.Size)
	}
	sum := h.Sum(nil)
	if fill {
		copy(e.SHA256[:], sum)
	} else if subtle.ConstantTimeCompare(sum, e.SHA256[:]) != 1 {
		return fmt.Errorf("usb: file %q: %w: its contents changed while the bundle was written", f.Name, ErrHashMismatch)
	}
	return nil
}

func entryFor(m *Manifest, name string) *Entry {
	for i := range m.Entries {
		if m.Entries[i].Name == name {
			return &m.Entries[i]
		}
	}
	return nil
}

// WriteDir writes a bundle into dir, which must not exist or be empty: the
// files, then the MANIFEST, each synced, then the directory.
func WriteDir(dir string, files []File) (Manifest, error) {
	m, err := NewManifest(files)
	if err != nil {
		return Manifest{}, err
	}
	return m, writeDirWith(dir, m, files)
}

func writeDirWith(dir string, m Manifest, files []File) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("usb: %w", err)
	}
	if des, err := os.ReadDir(dir); err != nil || len(des) > 0 {
		return fmt.Errorf("usb: %s: the bundle directory must be empty", dir)
	}
	put := func(name string, write func(io.Writer) error) error {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return fmt.Errorf("usb: %w", err)
		}
		if err := write(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("usb: %s: %w", name, err)
		}
		return f.Close()
	}
	for _, f := range files {
		e := entryFor(&m, f.Name)
		if e == nil {
			return fmt.Errorf("usb: file %q: %w", f.Name, ErrExtraFile)
		}
		if err := put(f.Name, func(w io.Writer) error { return copyChecked(w, f, e, false) }); err != nil {
			return err
		}
	}
	mb, err := m.Encode()
	if err != nil {
		return err
	}
	if err := put(ManifestName, func(w io.Writer) error { _, err := w.Write(mb); return err }); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("usb: %w", err)
	}
	defer d.Close()
	return d.Sync()
}

// ImageSize is the size WriteImage picks for files of total bytes: room for
// the files and the FAT32 structures, and enough clusters (≥ 65525) for
// FAT32 to be valid for dosfstools, mtools and the kernel.
func ImageSize(files []File) int64 {
	var total int64
	for _, f := range files {
		total += (f.Size + 4095) / 4096 * 4096
	}
	size := total + total/64 + 8<<20
	if size <= smallClusterLimit {
		size = max(size, minWriteImageSize)
	} else {
		size = max(size, minBigImageSize)
	}
	return (size + 1<<20 - 1) / (1 << 20) * (1 << 20)
}

// WriteImage writes a bundle as a new FAT32 image file at path (created
// O_EXCL), made with go-diskfs: the files and the MANIFEST in the root
// directory. size 0 means ImageSize(files).
func WriteImage(path string, files []File, size int64) (Manifest, error) {
	m, err := NewManifest(files)
	if err != nil {
		return Manifest{}, err
	}
	return m, writeImageWith(path, m, files, size)
}

func writeImageWith(path string, m Manifest, files []File, size int64) (err error) {
	if size == 0 {
		size = ImageSize(files)
	}
	if size < minWriteImageSize || (size > smallClusterLimit && size < minBigImageSize) || size%512 != 0 {
		return fmt.Errorf("usb: %s: image size %d gives too few FAT32 clusters (use at least %d, or %d above %d)", path, size, minWriteImageSize, minBigImageSize, smallClusterLimit)
	}
	st, err := file.CreateFromPath(path, size)
	if err != nil {
		return fmt.Errorf("usb: %w", err)
	}
	defer func() {
		if cerr := st.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("usb: %s: %w", path, cerr)
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	fs, err := fat32.Create(st, size, 0, 512, "COFFRE", false)
	if err != nil {
		return fmt.Errorf("usb: %s: %w", path, err)
	}
	put := func(name string, write func(io.Writer) error) error {
		f, err := fs.OpenFile("/"+name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("usb: %s: %s: %w", path, name, err)
		}
		// go-diskfs allocates per Write: write in large pieces.
		bw := &chunkWriter{w: f, buf: make([]byte, 0, 4<<20)}
		if err := write(bw); err != nil {
			f.Close()
			return err
		}
		if err := bw.flush(); err != nil {
			f.Close()
			return fmt.Errorf("usb: %s: %s: %w", path, name, err)
		}
		return f.Close()
	}
	for _, f := range files {
		e := entryFor(&m, f.Name)
		if e == nil {
			return fmt.Errorf("usb: file %q: %w", f.Name, ErrExtraFile)
		}
		if err := put(f.Name, func(w io.Writer) error { return copyChecked(w, f, e, false) }); err != nil {
			return err
		}
	}
	mb, err := m.Encode()
	if err != nil {
		return err
	}
	if err := put(ManifestName, func(w io.Writer) error { _, err := w.Write(mb); return err }); err != nil {
		return err
	}
	wf, err := st.Writable()
	if err != nil {
		return fmt.Errorf("usb: %s: %w", path, err)
	}
	if err := fixFSInfo(wf, size); err != nil {
		return fmt.Errorf("usb: %s: %w", path, err)
	}
	if sf, err := st.Sys(); err == nil {
		if err := sf.Sync(); err != nil {
			return fmt.Errorf("usb: %s: %w", path, err)
		}
	}
	return nil
}

type chunkWriter struct {
	w   io.Writer
	buf []byte
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), cap(c.buf)-len(c.buf))
		c.buf = append(c.buf, p[:k]...)
		p = p[k:]
		if len(c.buf) == cap(c.buf) {
			if err := c.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (c *chunkWriter) flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.w.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

// fixFSInfo records the free-cluster count and next free cluster in both
// FSInfo sectors (go-diskfs leaves them "unknown", which fsck.vfat reports).
func fixFSInfo(f interface {
	io.ReaderAt
	io.WriterAt
}, size int64) error {
	v, err := checkVolume(f, size)
	if err != nil {
		return fmt.Errorf("our own image fails its check: %w", err)
	}
	fat := make([]byte, v.SectorsPerFAT*v.BytesPerSector)
	if _, err := f.ReadAt(fat, v.ReservedSectors*v.BytesPerSector); err != nil {
		return err
	}
	free, next := uint32(0), uint32(0xFFFFFFFF)
	for c := int64(2); c < v.Clusters+2; c++ {
		if binary.LittleEndian.Uint32(fat[4*c:])&0x0FFFFFFF == 0 {
			free++
			if next == 0xFFFFFFFF {
				next = uint32(c)
			}
		}
	}
	bs := make([]byte, 512)
	if _, err := f.ReadAt(bs, 0); err != nil {
		return err
	}
	var rec [8]byte
	binary.LittleEndian.PutUint32(rec[0:], free)
	binary.LittleEndian.PutUint32(rec[4:], next)
	for _, sector := range []int64{int64(binary.LittleEndian.Uint16(bs[48:])), int64(binary.LittleEndian.Uint16(bs[50:])) + 1} {
		if sector <= 0 || sector >= v.ReservedSectors {
			continue
		}
		fsinfo := make([]byte, 512)
		if _, err := f.ReadAt(fsinfo, sector*v.BytesPerSector); err != nil {
			return err
		}
		if !strings.HasPrefix(string(fsinfo), "RRaA") {
			continue
		}
		if _, err := f.WriteAt(rec[:], sector*v.BytesPerSector+488); err != nil {
			return err
		}
	}
	return nil
}
