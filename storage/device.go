package storage

import (
	"errors"
	"fmt"
	"os"
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
}

// opener opens a device; write asks for exclusive read-write access.
type opener func(path string, write bool) (device, error)

type osDevice struct {
	fd       int
	size     int64
	ro       bool
	direct   bool
	path     string
	isDevice bool
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
	d := &osDevice{path: path, isDevice: isDev, fd: -1}
	base := unix.O_CLOEXEC
	mode := unix.O_RDONLY
	if write {
		mode = unix.O_RDWR
		if isDev {
			base |= unix.O_EXCL
		}
	}
	// Readers (audit, scan) use the page cache so the kernel reads ahead;
	// writers bypass it.
	direct := 0
	if write {
		direct = unix.O_DIRECT
	}
	open := func(mode int) error {
		fd, err := unix.Open(path, base|mode|direct, 0)
		if err == unix.EINVAL {
			fd, err = unix.Open(path, base|mode, 0)
		} else if err == nil {
			d.direct = direct != 0
			if !write {
				unix.Fadvise(fd, 0, 0, unix.FADV_SEQUENTIAL)
			}
		}
		d.fd = fd
		return err
	}
	err := open(mode)
	if write && (err == unix.EROFS || err == unix.EACCES) {
		d.ro = true
		err = open(unix.O_RDONLY)
	}
	if err != nil {
		if err == unix.EBUSY {
			return nil, fmt.Errorf("storage: %s is in use by another writer or mounted (close it first): %w", path, err)
		}
		return nil, fmt.Errorf("storage: opening %s: %w", path, err)
	}
	if isDev {
		var sz uint64
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(d.fd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&sz))); e != 0 {
			unix.Close(d.fd)
			return nil, fmt.Errorf("storage: %s: BLKGETSIZE64: %w", path, e)
		}
		d.size = int64(sz)
		ro, err := unix.IoctlGetInt(d.fd, unix.BLKROGET)
		if err != nil {
			unix.Close(d.fd)
			return nil, fmt.Errorf("storage: %s: BLKROGET: %w", path, err)
		}
		if ro != 0 {
			d.ro = true
		}
	} else {
		if write && !d.ro {
			if err := unix.Flock(d.fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
				unix.Close(d.fd)
				return nil, fmt.Errorf("storage: %s is in use by another writer (close it first): %w", path, err)
			}
		}
		var fst unix.Stat_t
		if err := unix.Fstat(d.fd, &fst); err != nil {
			unix.Close(d.fd)
			return nil, fmt.Errorf("storage: %s: %w", path, err)
		}
		d.size = fst.Size
	}
	return d, nil
}

func (d *osDevice) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Pread(d.fd, p[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("storage: reading %s at %d: %w", d.path, off+int64(n), err)
		}
		if m == 0 {
			return n, fmt.Errorf("storage: reading %s at %d: unexpected end of drive: %w", d.path, off+int64(n), errShort)
		}
		n += m
	}
	return n, nil
}

var errShort = errors.New("short read")

func (d *osDevice) WriteAt(p []byte, off int64) (int, error) {
	if d.ro {
		return 0, fmt.Errorf("storage: %s: %w", d.path, ErrReadOnly)
	}
	n := 0
	for n < len(p) {
		m, err := unix.Pwrite(d.fd, p[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if err == unix.ENOSPC {
				return n, fmt.Errorf("storage: writing %s at %d: %w: %w", d.path, off+int64(n), ErrNoSpace, err)
			}
			return n, fmt.Errorf("storage: writing %s at %d: %w", d.path, off+int64(n), err)
		}
		if m == 0 {
			return n, fmt.Errorf("storage: writing %s at %d: %w", d.path, off+int64(n), unix.EIO)
		}
		n += m
	}
	return n, nil
}

func (d *osDevice) Sync() error {
	if err := unix.Fdatasync(d.fd); err != nil {
		return fmt.Errorf("storage: fdatasync %s: %w", d.path, err)
	}
	return nil
}

func (d *osDevice) Size() int64    { return d.size }
func (d *osDevice) ReadOnly() bool { return d.ro }
func (d *osDevice) Close() error {
	if d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
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
