package usb

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Bundle is an opened, structurally verified bundle. Its manifest matches
// the files present; contents are verified as they are read.
type Bundle struct {
	Manifest
	Source string // the path given to Open
	lim    Limits
	dir    string   // directory bundles
	dev    *os.File // image and device bundles
	vol    volume
}

// Open opens the bundle at path: a directory, a FAT32 image file or a block
// device holding a FAT32 volume (whole device or first FAT32 MBR partition).
// Images and devices are opened read-only and parsed in a child process (see
// RunChildIfRequested). The manifest must match the files exactly: a bad
// manifest, a missing or unexpected file, a bad name, a size different from
// the manifest or above the limits refuses the whole bundle, with an error
// listing up to eight problems (errors.Is works with each sentinel).
func Open(path string, l Limits) (*Bundle, error) {
	l = l.withDefaults()
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("usb: %s: %w", path, err)
	}
	b := &Bundle{Source: path, lim: l}
	var list *listing
	switch mode := fi.Mode(); {
	case mode.IsDir():
		b.dir = path
		list, err = listDir(path)
	case mode.IsRegular(), mode&os.ModeDevice != 0 && mode&os.ModeCharDevice == 0:
		list, err = b.openDevice(path)
	default:
		// A FIFO or character device could block the open or never end.
		return nil, fmt.Errorf("usb: %s: not a directory, image file or block device (mode %v)", path, mode)
	}
	if err != nil {
		b.Close()
		return nil, err
	}
	if err := b.reconcile(list); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func (b *Bundle) openDevice(path string) (*listing, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("usb: %s: %w", path, err)
	}
	b.dev = f
	size, err := deviceSize(f)
	if err != nil {
		return nil, fmt.Errorf("usb: %s: %w", path, err)
	}
	b.vol, err = checkVolume(f, size)
	if err != nil {
		return nil, fmt.Errorf("usb: %s: %w: check that this is the courier's stick or image", path, err)
	}
	c, err := startChild(f, path, b.vol, childList, nil, b.lim, MaxManifestSize)
	if err != nil {
		return nil, err
	}
	list, err := parseListing(c.out, maxListEntries)
	if err := c.finish(err); err != nil {
		return nil, err
	}
	return list, nil
}

// Close releases the device. It is safe to call more than once.
func (b *Bundle) Close() error {
	if b.dev == nil {
		return nil
	}
	err := b.dev.Close()
	b.dev = nil
	return err
}

// reconcile checks the listing against the manifest and the limits.
func (b *Bundle) reconcile(list *listing) error {
	var probs []error
	add := func(err error) {
		if len(probs) < 8 {
			probs = append(probs, err)
		}
	}
	if list.Manifest == nil {
		return fmt.Errorf("usb: %s: %w: no %s in the bundle's root: not a Coffre bundle", b.Source, ErrManifest, ManifestName)
	}
	m, err := ParseManifest(list.Manifest)
	if err != nil {
		return fmt.Errorf("usb: %s: %s: %w: ask the courier for a new bundle", b.Source, ManifestName, err)
	}
	if len(m.Entries) > b.lim.MaxFiles {
		add(fmt.Errorf("%w: %d files, more than %d", ErrLimit, len(m.Entries), b.lim.MaxFiles))
	}
	if t := m.TotalSize(); t > b.lim.MaxTotalSize {
		add(fmt.Errorf("%w: %d bytes in all, more than %d", ErrLimit, t, b.lim.MaxTotalSize))
	}
	want := make(map[string]Entry, len(m.Entries))
	for _, e := range m.Entries {
		want[e.Name] = e
		if e.Size > b.lim.MaxFileSize {
			add(fmt.Errorf("%w: file %q is %d bytes, more than %d", ErrLimit, e.Name, e.Size, b.lim.MaxFileSize))
		}
	}
	if len(list.Entries) > b.lim.MaxFiles+1 {
		add(fmt.Errorf("%w: the bundle holds %d entries, more than %d", ErrLimit, len(list.Entries), b.lim.MaxFiles+1))
	}
	seen := make(map[string]bool, len(list.Entries))
	manifests := 0
	for _, le := range list.Entries {
		folded := strings.ToLower(le.Name)
		switch {
		case le.IsDir:
			add(fmt.Errorf("%w: %q is a directory or special file (a bundle holds regular files only)", ErrExtraFile, le.Name))
			continue
		case strings.EqualFold(le.Name, ManifestName):
			manifests++
			if manifests > 1 {
				add(fmt.Errorf("%w: more than one %s", ErrExtraFile, ManifestName))
			}
			continue
		case seen[folded]:
			add(fmt.Errorf("%w: %q appears twice", ErrExtraFile, le.Name))
			continue
		}
		seen[folded] = true
		if err := CheckName(le.Name); err != nil {
			add(err)
			continue
		}
		if le.Size > b.lim.MaxFileSize {
			add(fmt.Errorf("%w: %q is %d bytes, more than %d", ErrLimit, le.Name, le.Size, b.lim.MaxFileSize))
			continue
		}
		e, ok := want[le.Name]
		if !ok {
			add(fmt.Errorf("%w: %q is not in the manifest", ErrExtraFile, le.Name))
			continue
		}
		if le.Size != e.Size {
			add(fmt.Errorf("%w: %q is %d bytes, the manifest says %d", ErrSizeMismatch, le.Name, le.Size, e.Size))
		}
	}
	for _, e := range m.Entries {
		if !seen[strings.ToLower(e.Name)] {
			add(fmt.Errorf("%w: %q is in the manifest but not in the bundle", ErrMissingFile, e.Name))
		}
	}
	if len(probs) > 0 {
		return fmt.Errorf("usb: %s: bundle refused, nothing ingested: %w", b.Source, errors.Join(probs...))
	}
	b.Manifest = m
	return nil
}

// Walk calls fn for each file of the bundle, in manifest order, with a
// reader of its contents. The reader returns ErrHashMismatch or
// ErrSizeMismatch instead of io.EOF when the contents differ from the
// manifest: fn must read to io.EOF before it keeps anything. Walk stops at
// the first error from fn or from verification (including a file fn did not
// read to the end) and returns it.
func (b *Bundle) Walk(fn func(e Entry, r io.Reader) error) error {
	return b.stream(b.Entries, fn)
}

// Open returns a reader of one file, verified like Walk's. Close it to stop
// early.
func (b *Bundle) Open(name string) (io.ReadCloser, error) {
	i := -1
	for j, e := range b.Entries {
		if e.Name == name {
			i = j
		}
	}
	if i < 0 {
		return nil, fmt.Errorf("usb: %s: %w: %q is not in the manifest", b.Source, ErrMissingFile, name)
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(b.stream(b.Entries[i:i+1], func(e Entry, r io.Reader) error {
			_, err := io.Copy(pw, r)
			return err
		}))
	}()
	return pr, nil
}

func (b *Bundle) stream(entries []Entry, fn func(Entry, io.Reader) error) error {
	if b.dir != "" {
		return b.streamDir(entries, fn)
	}
	if b.dev == nil {
		return fmt.Errorf("usb: %s: bundle is closed", b.Source)
	}
	names := make([]string, len(entries))
	var total int64
	for i, e := range entries {
		names[i] = e.Name
		total += e.Size
	}
	c, err := startChild(b.dev, b.Source, b.vol, childRead, names, b.lim, total)
	if err != nil {
		return err
	}
	fr := newFrameReader(c.out)
	err = streamFiles(fr, entries, fn)
	if errors.Is(err, errFn) {
		err = errors.Unwrap(err)
		c.finish(errors.New("stopped"))
		return err
	}
	return c.finish(err)
}

// errFn marks an error returned by the caller's fn.
var errFn = errors.New("fn")

type fnError struct{ err error }

func (e fnError) Error() string   { return e.err.Error() }
func (e fnError) Is(t error) bool { return t == errFn }
func (e fnError) Unwrap() error   { return e.err }

// streamFiles parses a read-mode stream H (F D* E)* Z for entries in order,
// handing each file to fn through a verifying reader.
func streamFiles(fr *frameReader, entries []Entry, fn func(Entry, io.Reader) error) error {
	if err := fr.readHello(); err != nil {
		return err
	}
	for _, e := range entries {
		typ, p, err := fr.next()
		if err != nil {
			if err == io.EOF {
				return fmt.Errorf("%w: stream ends before file %q", ErrStream, e.Name)
			}
			return err
		}
		if typ == frameFail {
			return failure(p)
		}
		if typ != frameFile || len(p) < 9 || string(p[8:]) != e.Name {
			return fmt.Errorf("%w: expected the start of file %q", ErrStream, e.Name)
		}
		if size := int64(binary.BigEndian.Uint64(p)); size != e.Size {
			return fmt.Errorf("%w: %q is %d bytes on the volume, the manifest says %d", ErrSizeMismatch, e.Name, size, e.Size)
		}
		vr := newVerifier(e, &fileFrames{fr: fr, name: e.Name})
		if err := fn(e, vr); err != nil {
			return fnError{err}
		}
		if err := vr.drain(); err != nil {
			return err
		}
	}
	typ, p, err := fr.next()
	if err != nil {
		if err == io.EOF {
			return fmt.Errorf("%w: stream ends without its end frame", ErrStream)
		}
		return err
	}
	if typ == frameFail {
		return failure(p)
	}
	if typ != frameDone || len(p) != 4 || int(binary.BigEndian.Uint32(p)) != len(entries) {
		return fmt.Errorf("%w: bad end frame", ErrStream)
	}
	if _, _, err := fr.next(); err != io.EOF {
		return fmt.Errorf("%w: data after the end frame", ErrStream)
	}
	return nil
}

// fileFrames reads one file's 'D' frames up to its 'E' frame.
type fileFrames struct {
	fr      *frameReader
	name    string
	pending []byte
	done    bool
}

func (d *fileFrames) Read(p []byte) (int, error) {
	for len(d.pending) == 0 {
		if d.done {
			return 0, io.EOF
		}
		typ, q, err := d.fr.next()
		switch {
		case err == io.EOF:
			return 0, fmt.Errorf("%w: stream ends inside file %q", ErrStream, d.name)
		case err != nil:
			return 0, err
		case typ == frameData && len(q) > 0:
			d.pending = q
		case typ == frameEnd:
			d.done = true
		case typ == frameFail:
			return 0, failure(q)
		default:
			return 0, fmt.Errorf("%w: unexpected frame %q inside file %q", ErrStream, typ, d.name)
		}
	}
	n := copy(p, d.pending)
	d.pending = d.pending[n:]
	return n, nil
}

// verifier passes a file's bytes through, counting and hashing them; at the
// end of the underlying reader it checks the size and the SHA-256.
type verifier struct {
	e    Entry
	r    io.Reader
	h    hash.Hash
	n    int64
	err  error // sticky final result (io.EOF when verified)
	seen bool  // the final result was returned to the reader
}

func newVerifier(e Entry, r io.Reader) *verifier {
	return &verifier{e: e, r: r, h: sha256.New()}
}

func (v *verifier) Read(p []byte) (int, error) {
	if v.err != nil {
		v.seen = true
		return 0, v.err
	}
	if room := v.e.Size - v.n + 1; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := v.r.Read(p)
	v.n += int64(n)
	v.h.Write(p[:n])
	if v.n > v.e.Size {
		v.err = fmt.Errorf("%w: %q is longer than the %d bytes of the manifest", ErrSizeMismatch, v.e.Name, v.e.Size)
		return 0, v.err
	}
	if err == io.EOF {
		v.err = v.final()
		if n > 0 {
			return n, nil
		}
		v.seen = true
		return 0, v.err
	}
	if err != nil {
		v.err = err
	}
	return n, err
}

func (v *verifier) final() error {
	if v.n != v.e.Size {
		return fmt.Errorf("%w: %q is %d bytes, the manifest says %d", ErrSizeMismatch, v.e.Name, v.n, v.e.Size)
	}
	sum := v.h.Sum(nil)
	if subtle.ConstantTimeCompare(sum, v.e.SHA256[:]) != 1 {
		return fmt.Errorf("%w: %q: contents differ from the manifest; discard this file", ErrHashMismatch, v.e.Name)
	}
	return io.EOF
}

// drain reads what fn left and returns the verification result.
func (v *verifier) drain() error {
	if _, err := io.Copy(io.Discard, v); err != nil {
		return err
	}
	return nil
}

// listDir lists a directory bundle without following symbolic links.
func listDir(dir string) (*listing, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("usb: %s: %w", dir, err)
	}
	defer d.Close()
	l := &listing{}
	for {
		des, err := d.ReadDir(256)
		for _, de := range des {
			if len(l.Entries) >= maxListEntries {
				return nil, fmt.Errorf("usb: %s: %w: the directory holds more than %d entries", dir, ErrLimit, maxListEntries)
			}
			info, ierr := de.Info()
			if ierr != nil {
				return nil, fmt.Errorf("usb: %s: %w", dir, ierr)
			}
			le := listEntry{Name: de.Name(), Size: info.Size(), IsDir: !info.Mode().IsRegular()}
			l.Entries = append(l.Entries, le)
			if strings.EqualFold(le.Name, ManifestName) && !le.IsDir {
				if le.Size > MaxManifestSize {
					return nil, fmt.Errorf("usb: %s: %w: %s is %d bytes, more than %d", dir, ErrLimit, ManifestName, le.Size, MaxManifestSize)
				}
				f, err := openRegular(filepath.Join(dir, le.Name))
				if err != nil {
					return nil, fmt.Errorf("usb: %s: %w", dir, err)
				}
				l.Manifest, err = io.ReadAll(io.LimitReader(f, MaxManifestSize+1))
				f.Close()
				if err != nil {
					return nil, fmt.Errorf("usb: %s: %w", dir, err)
				}
			}
		}
		if err == io.EOF {
			return l, nil
		}
		if err != nil {
			return nil, fmt.Errorf("usb: %s: %w", dir, err)
		}
	}
}

func openRegular(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	return f, nil
}

func (b *Bundle) streamDir(entries []Entry, fn func(Entry, io.Reader) error) error {
	for _, e := range entries {
		f, err := openRegular(filepath.Join(b.dir, e.Name))
		if err != nil {
			return fmt.Errorf("usb: %s: %w: %v", b.Source, ErrMissingFile, err)
		}
		vr := newVerifier(e, f)
		err = fn(e, vr)
		if err == nil {
			err = vr.drain()
			if err != nil {
				err = fmt.Errorf("usb: %s: %w", b.Source, err)
			}
		}
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}
