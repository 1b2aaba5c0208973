package storage

import (
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
)

// blockReader reads a device through an aligned window, so callers can read
// at any offset and length while the device only sees aligned reads (as
// O_DIRECT requires).
type blockReader struct {
	dev   device
	limit int64 // never read at or past this offset
	buf   []byte
	base  int64 // device offset of buf[0]
	n     int   // valid bytes in buf
	next  int   // size of the next read
	// cached reads through the page cache (device.ReadCached): for
	// records already durable, read back by Get.
	cached bool
}

func newBlockReader(dev device, limit int64, window int) *blockReader {
	return &blockReader{dev: dev, limit: limit, buf: alignedBuf(window), base: -1}
}

// readAt fills p from off.
func (r *blockReader) readAt(p []byte, off int64) error {
	for len(p) > 0 {
		if off < 0 || off+int64(len(p)) > r.limit {
			return fmt.Errorf("storage: read at %d+%d past the data area: %w", off, len(p), ErrCorrupt)
		}
		if r.base < 0 || off < r.base || off >= r.base+int64(r.n) {
			a := off &^ (BlockSize - 1)
			// Read ahead more while the reads are sequential, little after
			// a jump (the header of a big record).
			if r.base >= 0 && a == r.base+int64(r.n) {
				r.next = min(2*max(r.next, 64<<10), len(r.buf))
			} else {
				r.next = 64 << 10
			}
			n := int64(max(r.next, int(roundUp(int64(len(p))+off-a))))
			n = min(n, int64(len(r.buf)))
			if a+n > r.limit {
				n = roundUp(r.limit - a) // limit is block aligned
				if a+n > r.limit {
					n = r.limit - a
				}
			}
			r.base, r.n = -1, 0
			if err := r.read(r.buf[:n], a); err != nil {
				return err
			}
			r.base, r.n = a, int(n)
		}
		c := copy(p, r.buf[off-r.base:r.n])
		p = p[c:]
		off += int64(c)
	}
	return nil
}

func (r *blockReader) read(p []byte, off int64) error {
	var err error
	if r.cached {
		_, err = r.dev.ReadCached(p, off)
	} else {
		_, err = r.dev.ReadAt(p, off)
	}
	return err
}

// fill reads [off, off+n) (clipped to the limit) into the window, so that
// later reads inside it need no I/O. off must be block aligned.
func (r *blockReader) fill(off int64, n int) error {
	n = min(n, len(r.buf))
	if off+int64(n) > r.limit {
		n = int(r.limit - off)
	}
	if off < 0 || n <= 0 || off%BlockSize != 0 {
		return fmt.Errorf("storage: read at %d+%d past the data area: %w", off, n, ErrCorrupt)
	}
	r.base, r.n = -1, 0
	if err := r.read(r.buf[:n], off); err != nil {
		return err
	}
	r.base, r.n, r.next = off, n, n
	return nil
}

// sectionReader is an io.Reader over [off, end) of a blockReader that hashes
// what it returns.
type sectionReader struct {
	r   *blockReader
	off int64
	end int64
	h   hash.Hash
}

func newSection(r *blockReader, off, n int64) *sectionReader {
	return &sectionReader{r: r, off: off, end: off + n, h: sha256.New()}
}

func (s *sectionReader) Read(p []byte) (int, error) {
	if s.off >= s.end {
		return 0, io.EOF
	}
	if int64(len(p)) > s.end-s.off {
		p = p[:s.end-s.off]
	}
	if err := s.r.readAt(p, s.off); err != nil {
		return 0, err
	}
	s.off += int64(len(p))
	s.h.Write(p)
	return len(p), nil
}
