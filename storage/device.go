package storage

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// device is the raw I/O a drive needs. The OS implementation opens image
// files and block devices; tests wrap it to inject faults.
type device interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Sync() error // fdatasync
	Size() int64
	ReadOnly() bool
	Close() error
	// ReadCached reads as ReadAt does, possibly through the page cache:
	// for records already durable, which are never written again but by
	// Scrub (and a stale copy fails authentication like a bad one).
	ReadCached(p []byte, off int64) (int, error)
}

// opener opens a device; write asks for exclusive read-write access.
type opener func(path string, write bool) (device, error)

type osDevice struct {
	// *os.File rather than a bare descriptor: its Close may run while a
	// reader that took the device without the vault lock is reading, and
	// the descriptor is released only when that read returns (never
	// reused under it).
	f        *os.File
	cached   *os.File // writers: a second, page-cache handle for ReadCached
	size     int64
	ro       bool
	direct   bool
	path     string
	isDevice bool

	// syncMu makes one fdatasync at a time, and syncErr remembers the
	// first that failed: Linux reports a writeback error to one fsync of
	// an open file, and a later one succeeds although the pages were
	// lost. Two batches may sync the same drive at once (a write-behind
	// flush of one, the commit of the one before, see Vault.AppendEach):
	// whichever sees the error, both must.
	syncMu  sync.Mutex
	syncErr error
}

// openDevice opens path. For a writer it takes O_EXCL on block devices (the
// kernel refuses a second exclusive opener and any mount) and an exclusive
// flock on image files. It asks for O_DIRECT and falls back to buffered I/O
// (still fdatasync'd) when the filesystem refuses it. A read-only device
// (BLKROGET, EROFS, EACCES) opens read-only and says so.
func openDevice(path string, write bool) (device, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, fmt.Errorf("storage: %s: %w", path, err)
	}
	isDev := st.Mode&unix.S_IFMT == unix.S_IFBLK
	if !isDev && st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("storage: %s: not an image file or block device", path)
	}
	d := &osDevice{path: path, isDevice: isDev}
	fd, err := d.open(write)
	if err != nil {
		if err == unix.EBUSY {
			return nil, fmt.Errorf("storage: %s is in use by another writer or mounted (close it first): %w", path, err)
		}
		return nil, fmt.Errorf("storage: opening %s: %w", path, err)
	}
	if err := d.probe(fd, write); err != nil {
		unix.Close(fd)
		return nil, err
	}
	d.f = os.NewFile(uintptr(fd), path)
	if d.direct {
		// Records read back (Get) go through the page cache, as every
		// read-only opener's reads do: the kernel reads ahead and serves
		// them at several times the speed of direct reads on some drives.
		// Direct writes invalidate the cached pages they cover.
		cfd, err := unix.Open(path, unix.O_CLOEXEC|unix.O_RDONLY, 0)
		if err != nil {
			d.f.Close()
			return nil, fmt.Errorf("storage: opening %s for reading: %w", path, err)
		}
		d.cached = os.NewFile(uintptr(cfd), path)
	}
	return d, nil
}

// open opens the descriptor: direct I/O for writers, the page cache for
// readers (audit, scan: the kernel reads ahead).
func (d *osDevice) open(write bool) (int, error) {
	base := unix.O_CLOEXEC
	mode := unix.O_RDONLY
	if write {
		mode = unix.O_RDWR
		if d.isDevice {
			base |= unix.O_EXCL
		}
	}
	direct := 0
	if write {
		direct = unix.O_DIRECT
	}
	try := func(mode int) (int, error) {
		fd, err := unix.Open(d.path, base|mode|direct, 0)
		if err == unix.EINVAL {
			fd, err = unix.Open(d.path, base|mode, 0)
		} else if err == nil {
			d.direct = direct != 0
			if !write {
				unix.Fadvise(fd, 0, 0, unix.FADV_SEQUENTIAL)
			}
		}
		return fd, err
	}
	fd, err := try(mode)
	if write && (err == unix.EROFS || err == unix.EACCES) {
		d.ro = true
		fd, err = try(unix.O_RDONLY)
	}
	return fd, err
}

// probe finds the size and read-only state, and locks an image file for
// a writer.
func (d *osDevice) probe(fd int, write bool) error {
	if d.isDevice {
		var sz uint64
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&sz))); e != 0 {
			return fmt.Errorf("storage: %s: BLKGETSIZE64: %w", d.path, e)
		}
		d.size = int64(sz)
		ro, err := unix.IoctlGetInt(fd, unix.BLKROGET)
		if err != nil {
			return fmt.Errorf("storage: %s: BLKROGET: %w", d.path, err)
		}
		if ro != 0 {
			d.ro = true
		}
		return nil
	}
	if write && !d.ro {
		if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			return fmt.Errorf("storage: %s is in use by another writer (close it first): %w", d.path, err)
		}
	}
	var fst unix.Stat_t
	if err := unix.Fstat(fd, &fst); err != nil {
		return fmt.Errorf("storage: %s: %w", d.path, err)
	}
	d.size = fst.Size
	return nil
}

func (d *osDevice) ReadAt(p []byte, off int64) (int, error) { return readFull(d.f, d.path, p, off) }

// ReadCached reads through the page cache (see openDevice).
func (d *osDevice) ReadCached(p []byte, off int64) (int, error) {
	if d.cached == nil {
		return d.ReadAt(p, off)
	}
	return readFull(d.cached, d.path, p, off)
}

func readFull(f *os.File, path string, p []byte, off int64) (int, error) {
	n, err := f.ReadAt(p, off)
	switch {
	case err == io.EOF:
		return n, fmt.Errorf("storage: reading %s at %d: unexpected end of drive: %w", path, off+int64(n), errShort)
	case err != nil:
		return n, fmt.Errorf("storage: reading %s at %d: %w", path, off+int64(n), unwrapPath(err))
	}
	return n, nil
}

// unwrapPath drops the *PathError the os package adds (our message names
// the path and offset already).
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

var errShort = errors.New("short read")

func (d *osDevice) WriteAt(p []byte, off int64) (int, error) {
	if d.ro {
		return 0, fmt.Errorf("storage: %s: %w", d.path, ErrReadOnly)
	}
	n, err := d.f.WriteAt(p, off)
	if err != nil {
		err = unwrapPath(err)
		if errors.Is(err, unix.ENOSPC) {
			return n, fmt.Errorf("storage: writing %s at %d: %w: %w", d.path, off+int64(n), ErrNoSpace, err)
		}
		return n, fmt.Errorf("storage: writing %s at %d: %w", d.path, off+int64(n), err)
	}
	return n, nil
}

func (d *osDevice) Sync() error {
	d.syncMu.Lock()
	defer d.syncMu.Unlock()
	if d.syncErr != nil {
		return d.syncErr
	}
	rc, err := d.f.SyscallConn()
	if err == nil {
		cerr := rc.Control(func(fd uintptr) {
			for {
				if err = unix.Fdatasync(int(fd)); err != unix.EINTR {
					return
				}
			}
		})
		if err == nil {
			err = cerr
		}
	}
	if err != nil {
		d.syncErr = fmt.Errorf("storage: fdatasync %s: %w", d.path, err)
		return d.syncErr
	}
	return nil
}

func (d *osDevice) Size() int64    { return d.size }
func (d *osDevice) ReadOnly() bool { return d.ro }

// Close closes the device; it is safe while another goroutine reads (that
// read fails, and the descriptor is freed once it returns) and more than
// once.
func (d *osDevice) Close() error {
	if d.cached != nil {
		d.cached.Close()
	}
	err := d.f.Close()
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}

// alignedBuf returns a zeroed n-byte buffer aligned to BlockSize, as
// O_DIRECT needs.
func alignedBuf(n int) []byte {
	b := make([]byte, n+BlockSize)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (BlockSize - 1))
	if off != 0 {
		off = BlockSize - off
	}
	return b[off : off+n : off+n]
}

// ensureImage creates or extends an image file to size bytes.
func ensureImage(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("storage: creating image %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("storage: %s is not a regular file; give Size 0 for block devices", path)
	}
	if st.Size() < size {
		// Allocate the blocks now: writes into holes make every fdatasync
		// commit filesystem metadata. Fall back to a sparse file.
		if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err == nil {
			return f.Sync()
		}
		if err := f.Truncate(size); err != nil {
			return fmt.Errorf("storage: sizing image %s: %w", path, err)
		}
	}
	return f.Sync()
}
