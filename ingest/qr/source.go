package qr

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg" // frames dropped by cameras
	_ "image/png"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// LumaFrame is one captured picture as a luminance plane.
type LumaFrame struct {
	Y      []byte
	W, H   int
	Stride int
	Name   string // file name or "frame N", for messages
}

// Source yields captured pictures; Next returns io.EOF when it has no more.
type Source interface {
	Next() (LumaFrame, error)
	Close() error
}

// Consume reads pictures from src until it ends, ctx is done, or stopAfter
// messages (0: no limit) were rebuilt, feeding every QR code found to d and
// calling progress (if not nil) after each accepted frame. Pictures without
// a code and rejected frames are counted in d.Stats and skipped. It returns
// the messages rebuilt.
func Consume(ctx context.Context, src Source, d *Decoder, progress func(Progress), stopAfter int) ([]Message, error) {
	var out []Message
	for {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		f, err := src.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		texts, err := DecodeLuma(f.Y, f.W, f.H, f.Stride)
		if err != nil {
			continue
		}
		for _, text := range texts {
			p, err := d.AddFrame(text)
			if err == nil && progress != nil {
				progress(p)
			}
		}
		out = append(out, d.Completed()...)
		if stopAfter > 0 && len(out) >= stopAfter {
			return out, nil
		}
	}
}

func isImageName(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".png", ".jpg", ".jpeg":
		return true
	}
	return false
}

func readImageFile(path string) (LumaFrame, error) {
	f, err := os.Open(path)
	if err != nil {
		return LumaFrame{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return LumaFrame{}, err
	}
	if !st.Mode().IsRegular() || st.Size() > MaxImageFileBytes {
		return LumaFrame{}, fmt.Errorf("qr: %s: not a regular file of at most %d bytes", path, MaxImageFileBytes)
	}
	br := bufio.NewReader(f)
	cfg, _, err := image.DecodeConfig(br)
	if err != nil {
		return LumaFrame{}, fmt.Errorf("qr: %s: %w", path, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width*cfg.Height > MaxImagePixels {
		return LumaFrame{}, fmt.Errorf("qr: %s: image %dx%d out of range", path, cfg.Width, cfg.Height)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return LumaFrame{}, err
	}
	img, _, err := image.Decode(bufio.NewReader(f))
	if err != nil {
		return LumaFrame{}, fmt.Errorf("qr: %s: %w", path, err)
	}
	y, w, h, stride, err := Luma(img)
	if err != nil {
		return LumaFrame{}, fmt.Errorf("qr: %s: %w", path, err)
	}
	return LumaFrame{Y: y, W: w, H: h, Stride: stride, Name: filepath.Base(path)}, nil
}

func listImages(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("qr: frames directory %s: %w", dir, err)
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && isImageName(e.Name()) {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names, nil
}

// ReadDir decodes every PNG/JPEG image in dir, in name order, and returns
// the messages rebuilt. It fails, naming the directory and the progress
// made, when no message could be rebuilt.
func ReadDir(dir string, l Limits, progress func(Progress)) ([][]byte, error) {
	names, err := listImages(dir)
	if err != nil {
		return nil, err
	}
	d := NewDecoder(l)
	var out [][]byte
	for _, n := range names {
		f, err := readImageFile(filepath.Join(dir, n))
		if err != nil {
			continue
		}
		texts, err := DecodeLuma(f.Y, f.W, f.H, f.Stride)
		if err != nil {
			continue
		}
		for _, t := range texts {
			if p, err := d.AddFrame(t); err == nil && progress != nil {
				progress(p)
			}
		}
		for _, m := range d.Completed() {
			out = append(out, m.Data)
		}
	}
	if len(out) == 0 {
		return nil, incompleteError(dir, len(names), d)
	}
	return out, nil
}

func incompleteError(what string, pictures int, d *Decoder) error {
	st := d.Stats()
	best := Progress{}
	for _, p := range d.InFlight() {
		if p.Percent > best.Percent {
			best = p
		}
	}
	if best.Needed == 0 {
		return fmt.Errorf("qr: %s: no coffre frame in %d pictures (%d rejected); check the capture", what, pictures, st.NotFrame+st.Corrupt+st.OverLimit+st.Foreign)
	}
	return fmt.Errorf("qr: %s: transfer %s incomplete: %d of %d fragments from %d pictures; capture more frames", what, best.Transfer, best.Received, best.Needed, pictures)
}

// DirWatcher follows a directory into which a camera drops pictures.
type DirWatcher struct {
	dir  string
	d    *Decoder
	seen map[string]fileStamp
}

type fileStamp struct {
	size int64
	mod  time.Time
}

// NewDirWatcher returns a watcher feeding d from the pictures in dir.
func NewDirWatcher(dir string, d *Decoder) *DirWatcher {
	return &DirWatcher{dir: dir, d: d, seen: map[string]fileStamp{}}
}

// Poll processes, in name order, the pictures that appeared or changed
// since the last call and returns the messages rebuilt. A picture that
// cannot be read yet (still being written) is retried on the next poll.
func (w *DirWatcher) Poll(progress func(Progress)) ([]Message, error) {
	names, err := listImages(w.dir)
	if err != nil {
		return nil, err
	}
	// Forget files that were removed, so that the map stays as small as
	// the directory.
	present := make(map[string]bool, len(names))
	for _, n := range names {
		present[n] = true
	}
	for n := range w.seen {
		if !present[n] {
			delete(w.seen, n)
		}
	}
	for _, n := range names {
		path := filepath.Join(w.dir, n)
		st, err := os.Stat(path)
		if err != nil {
			continue
		}
		stamp := fileStamp{st.Size(), st.ModTime()}
		if old, ok := w.seen[n]; ok && old == stamp {
			continue
		}
		f, err := readImageFile(path)
		if err != nil {
			continue // probably half written: try again next time
		}
		w.seen[n] = stamp
		texts, err := DecodeLuma(f.Y, f.W, f.H, f.Stride)
		if err != nil {
			continue
		}
		for _, t := range texts {
			if p, err := w.d.AddFrame(t); err == nil && progress != nil {
				progress(p)
			}
		}
	}
	return w.d.Completed(), nil
}

// Watch polls dir every interval until ctx is done, calling onMessage for
// every message rebuilt.
func Watch(ctx context.Context, dir string, d *Decoder, interval time.Duration, progress func(Progress), onMessage func(Message)) error {
	if interval <= 0 {
		interval = time.Second
	}
	w := NewDirWatcher(dir, d)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		msgs, err := w.Poll(progress)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if onMessage != nil {
				onMessage(m)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// YUYVToY extracts the Y plane of a packed YUYV 4:2:2 picture (Y0 U Y1 V
// per two pixels, rows stride bytes apart) into dst (len >= w*h), which it
// returns.
func YUYVToY(dst, src []byte, w, h, stride int) ([]byte, error) {
	if w <= 0 || h <= 0 || w%2 != 0 || stride < 2*w || w*h > MaxImagePixels {
		return nil, fmt.Errorf("qr: YUYV picture %dx%d (stride %d) out of range", w, h, stride)
	}
	if len(src) < stride*(h-1)+2*w {
		return nil, fmt.Errorf("qr: YUYV buffer of %d bytes is too short for %dx%d", len(src), w, h)
	}
	if len(dst) < w*h {
		dst = make([]byte, w*h)
	}
	for r := 0; r < h; r++ {
		row := src[r*stride : r*stride+2*w]
		out := dst[r*w : r*w+w]
		for x := range out {
			out[x] = row[2*x]
		}
	}
	return dst[:w*h], nil
}

// YUYVSource reads raw YUYV pictures of w×h from a stream (a file, a pipe,
// or a V4L2 device that supports read()).
type YUYVSource struct {
	r      io.Reader
	c      io.Closer
	w, h   int
	buf, y []byte
	n      int
}

// NewYUYVSource reads w×h YUYV pictures back to back from r.
func NewYUYVSource(r io.Reader, w, h int) (*YUYVSource, error) {
	if w <= 0 || h <= 0 || w%2 != 0 || w*h > MaxImagePixels {
		return nil, fmt.Errorf("qr: YUYV picture %dx%d out of range", w, h)
	}
	s := &YUYVSource{r: r, w: w, h: h, buf: make([]byte, 2*w*h), y: make([]byte, w*h)}
	if c, ok := r.(io.Closer); ok {
		s.c = c
	}
	return s, nil
}

// Next returns the next picture's Y plane (valid until the next call).
func (s *YUYVSource) Next() (LumaFrame, error) {
	if _, err := io.ReadFull(s.r, s.buf); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF
		}
		return LumaFrame{}, err
	}
	s.n++
	y, err := YUYVToY(s.y, s.buf, s.w, s.h, 2*s.w)
	if err != nil {
		return LumaFrame{}, err
	}
	return LumaFrame{Y: y, W: s.w, H: s.h, Stride: s.w, Name: fmt.Sprintf("frame %d", s.n)}, nil
}

// Close closes the underlying reader if it is a Closer.
func (s *YUYVSource) Close() error {
	if s.c != nil {
		return s.c.Close()
	}
	return nil
}
