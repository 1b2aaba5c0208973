package usb

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// The child stream (docs/formats/usb.md, "Child stream"): frames of
//
//	type u8 | length u32 big-endian | payload | crc32c(type‖length‖payload) u32 big-endian
const (
	frameHello = 'H' // payload: streamHello
	frameList  = 'L' // kind u8 (0 file, 1 directory) | size u64 | name
	frameFile  = 'F' // size u64 | name
	frameData  = 'D' // 1..maxFramePayload bytes of the current file
	frameEnd   = 'E' // empty: the current file is complete
	frameFail  = 'X' // the child's reason, printable ASCII
	frameDone  = 'Z' // count u32 of 'L' or 'F' frames sent
)

const streamHello = "coffre-usb-child 1"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type frameWriter struct {
	w   *bufio.Writer
	hdr [5]byte
}

func newFrameWriter(w io.Writer) *frameWriter {
	return &frameWriter{w: bufio.NewWriterSize(w, 64<<10)}
}

func (fw *frameWriter) frame(typ byte, parts ...[]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	fw.hdr[0] = typ
	binary.BigEndian.PutUint32(fw.hdr[1:], uint32(n))
	crc := crc32.Update(0, castagnoli, fw.hdr[:])
	fw.w.Write(fw.hdr[:])
	for _, p := range parts {
		crc = crc32.Update(crc, castagnoli, p)
		fw.w.Write(p)
	}
	var c [4]byte
	binary.BigEndian.PutUint32(c[:], crc)
	_, err := fw.w.Write(c[:])
	return err
}

func (fw *frameWriter) flush() error { return fw.w.Flush() }

func sizeName(size int64, name string) []byte {
	b := make([]byte, 8, 8+len(name))
	binary.BigEndian.PutUint64(b, uint64(size))
	return append(b, name...)
}

// frameReader reads frames from the child's stdout. Every length is bounded
// before anything is allocated; the payload buffer is reused.
type frameReader struct {
	r   *bufio.Reader
	buf []byte
	n   int64 // frames read, for error messages
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// next returns the next frame; the payload is valid until the next call.
func (fr *frameReader) next() (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(fr.r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return 0, nil, io.EOF
		}
		return 0, nil, fmt.Errorf("%w: frame %d: truncated header", ErrStream, fr.n)
	}
	typ := hdr[0]
	n := binary.BigEndian.Uint32(hdr[1:])
	var max uint32
	switch typ {
	case frameHello:
		max = uint32(len(streamHello))
	case frameList:
		max = 9 + maxWireName
	case frameFile:
		max = 8 + maxWireName
	case frameData:
		max = maxFramePayload
	case frameEnd:
		max = 0
	case frameFail:
		max = maxFailureText
	case frameDone:
		max = 4
	default:
		return 0, nil, fmt.Errorf("%w: frame %d: unknown type %#x", ErrStream, fr.n, typ)
	}
	if n > max {
		return 0, nil, fmt.Errorf("%w: frame %d: type %q length %d exceeds %d", ErrStream, fr.n, typ, n, max)
	}
	if cap(fr.buf) < int(n)+4 {
		fr.buf = make([]byte, int(n)+4)
	}
	b := fr.buf[:n+4]
	if _, err := io.ReadFull(fr.r, b); err != nil {
		return 0, nil, fmt.Errorf("%w: frame %d: truncated payload", ErrStream, fr.n)
	}
	crc := crc32.Update(crc32.Update(0, castagnoli, hdr[:]), castagnoli, b[:n])
	if crc != binary.BigEndian.Uint32(b[n:]) {
		return 0, nil, fmt.Errorf("%w: frame %d: checksum mismatch", ErrStream, fr.n)
	}
	fr.n++
	return typ, b[:n], nil
}

// failure turns an 'X' payload into an error; the text is the child's and
// is quoted, never trusted.
func failure(p []byte) error {
	return fmt.Errorf("%w: the reader reported %q", ErrChildFailed, p)
}

// listing is what a child in list mode reports.
type listing struct {
	Entries  []listEntry
	Manifest []byte // nil when the volume root has no MANIFEST
}

type listEntry struct {
	Name  string
	Size  int64
	IsDir bool
}

// readHello consumes the 'H' frame.
func (fr *frameReader) readHello() error {
	typ, p, err := fr.next()
	if err != nil {
		if err == io.EOF {
			return fmt.Errorf("%w: empty stream", ErrStream)
		}
		return err
	}
	if typ != frameHello || string(p) != streamHello {
		return fmt.Errorf("%w: stream does not start with the hello frame", ErrStream)
	}
	return nil
}

// parseListing parses a whole list-mode stream:
// H L* [F D* E] Z, or an X anywhere after H.
func parseListing(r io.Reader, maxEntries int) (*listing, error) {
	fr := newFrameReader(r)
	if err := fr.readHello(); err != nil {
		return nil, err
	}
	l := &listing{}
	var count uint32
	inFile, haveManifest := false, false
	var want int64
	for {
		typ, p, err := fr.next()
		if err == io.EOF {
			return nil, fmt.Errorf("%w: stream ends without its end frame", ErrStream)
		}
		if err != nil {
			return nil, err
		}
		switch {
		case typ == frameFail:
			return nil, failure(p)
		case typ == frameList && !inFile && !haveManifest:
			if len(p) < 10 || p[0] > 1 {
				return nil, fmt.Errorf("%w: bad list frame", ErrStream)
			}
			if len(l.Entries) >= maxEntries {
				return nil, fmt.Errorf("%w: the volume root holds more than %d entries", ErrLimit, maxEntries)
			}
			size := binary.BigEndian.Uint64(p[1:9])
			if size > 1<<32 {
				return nil, fmt.Errorf("%w: bad list frame size", ErrStream)
			}
			l.Entries = append(l.Entries, listEntry{Name: string(p[9:]), Size: int64(size), IsDir: p[0] == 1})
			count++
		case typ == frameFile && !inFile && !haveManifest:
			if len(p) < 9 || string(p[8:]) != ManifestName {
				return nil, fmt.Errorf("%w: list stream carries a file other than the manifest", ErrStream)
			}
			want = int64(binary.BigEndian.Uint64(p[:8]))
			if want < 0 || want > MaxManifestSize {
				return nil, fmt.Errorf("%w: manifest is more than %d bytes", ErrLimit, MaxManifestSize)
			}
			l.Manifest = make([]byte, 0, want)
			inFile = true
		case typ == frameData && inFile:
			if len(p) == 0 || int64(len(l.Manifest)+len(p)) > want {
				return nil, fmt.Errorf("%w: manifest data exceeds its size", ErrStream)
			}
			l.Manifest = append(l.Manifest, p...)
		case typ == frameEnd && inFile:
			if int64(len(l.Manifest)) != want {
				return nil, fmt.Errorf("%w: manifest data shorter than its size", ErrStream)
			}
			inFile, haveManifest = false, true
		case typ == frameDone && !inFile:
			if len(p) != 4 || binary.BigEndian.Uint32(p) != count {
				return nil, fmt.Errorf("%w: end frame count does not match", ErrStream)
			}
			if _, _, err := fr.next(); err != io.EOF {
				return nil, fmt.Errorf("%w: data after the end frame", ErrStream)
			}
			return l, nil
		default:
			return nil, fmt.Errorf("%w: frame %d: unexpected type %q", ErrStream, fr.n-1, typ)
		}
	}
}
