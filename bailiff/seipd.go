package bailiff

import (
	"crypto/rand"
	"crypto/sha1"
	"errors"
	"hash"
	"io"
	"sync"

	"coffre/internal/cfb"
)

// The writer side of the GnuPG 2.2 profile, written here rather than
// through go-crypto's packet writers for throughput on the appliance's hot
// path (every item is re-encrypted once). It produces exactly RFC 4880
// packets: a SEIPD v1 packet (tag 18) whose CFB stream (AES-256, zero IV,
// no resync) holds the 18-byte prefix, a literal data packet (tag 11,
// format 'b', no name, time 0) and the MDC packet (tag 19: SHA-1 over
// prefix, plaintext packets and the 0xD3 0x14 header). Readers are
// go-crypto, GnuPG, Sequoia and RNP (tested).
//
// Two halves, which sealStream runs on two goroutines for items larger
// than one chunk so that reading the plaintext (for the appliance: the
// transport decryption) and hashing overlap with encryption:
//
//   - the framer reads the plaintext into literal-packet chunks (2^17-byte
//     partial lengths; a chunk's header is known once the next read shows
//     whether more follows) and runs the MDC's SHA-1 over them;
//   - the sealer CFB-encrypts the framed chunks (internal/cfb) straight
//     into the outer packet's partial-length slots and writes them out in
//     large writes.
//
// Memory per item is bounded: aheadChunks+3 literal chunks and one output
// buffer, from pools; plaintext buffers are cleared before they go back to
// the pool.

const (
	litChunkLog = 17 // literal data partial length 2^17
	litChunk    = 1 << litChunkLog
	litHdrRoom  = 6  // tag + 5-byte length, before a chunk's body
	outChunkLog = 16 // SEIPD partial length 2^16
	outChunk    = 1 << outChunkLog
	outSlots    = 4 // output buffered before a write: 4 × 64 KiB
	aheadChunks = 3 // literal chunks in flight between the two goroutines
	prefixLen   = 18
	mdcLen      = 22 // 0xD3 0x14 + SHA-1
)

// litBuf is one literal-data chunk: header and body, contiguous.
type litBuf struct {
	buf  [litHdrRoom + litChunk]byte
	used int    // bytes of buf that may hold plaintext
	data []byte // the framed bytes (header + body) to encrypt
	mdc  [mdcLen]byte
	last bool
	err  error
}

var litPool = sync.Pool{New: func() any { return new(litBuf) }}

func getLit() *litBuf { return litPool.Get().(*litBuf) }

// putLit clears the plaintext a chunk held and pools it.
func putLit(b *litBuf) {
	clear(b.buf[:b.used])
	clear(b.mdc[:])
	b.used, b.data, b.last, b.err = 0, nil, false, nil
	litPool.Put(b)
}

// appendLength appends a new-format definite body length.
func appendLength(b []byte, l int) []byte {
	switch {
	case l < 192:
		return append(b, byte(l))
	case l < 8384:
		return append(b, byte((l-192)>>8)+192, byte(l-192))
	default:
		return append(b, 255, byte(l>>24), byte(l>>16), byte(l>>8), byte(l))
	}
}

// framer builds the literal data packet and hashes the SEIPD plaintext.
type framer struct {
	h       hash.Hash
	started bool // the first chunk's body (with the 'b' fields) is begun
	tagged  bool // the first chunk (with the packet tag) is framed
}

func newFramer(prefix []byte) *framer {
	f := &framer{h: sha1.New()}
	f.h.Write(prefix)
	return f
}

// bodyStart begins chunk c's body: the literal packet's fields (format
// 'b', no file name, time 0) in the first chunk. It returns how many body
// bytes it wrote.
func (f *framer) bodyStart(c *litBuf) int {
	if f.started {
		return 0
	}
	f.started = true
	copy(c.buf[litHdrRoom:], []byte{'b', 0, 0, 0, 0, 0})
	c.used = litHdrRoom + 6
	return 6
}

// frame finishes chunk c holding n body bytes: partial when more follows,
// else the last, with a definite length and the MDC.
func (f *framer) frame(c *litBuf, n int, last bool) {
	var hdr [litHdrRoom]byte
	h := hdr[:0]
	if !f.tagged {
		h = append(h, 0xC0|11)
		f.tagged = true
	}
	if last {
		h = appendLength(h, n)
	} else {
		h = append(h, 0xE0|litChunkLog)
	}
	off := litHdrRoom - len(h)
	copy(c.buf[off:], h)
	c.data = c.buf[off : litHdrRoom+n]
	c.last = last
	f.h.Write(c.data)
	if last {
		c.mdc[0], c.mdc[1] = 0xD3, 0x14
		f.h.Write(c.mdc[:2])
		f.h.Sum(c.mdc[:2])
	}
}

// readChunk fills c's body from r: a full chunk, or less at EOF.
func (f *framer) readChunk(r io.Reader, c *litBuf) (n int, eof bool, err error) {
	k := f.bodyStart(c)
	m, err := io.ReadFull(r, c.buf[litHdrRoom+k:])
	c.used = max(c.used, litHdrRoom+k+m)
	switch err {
	case nil:
		return k + m, false, nil
	case io.EOF, io.ErrUnexpectedEOF:
		return k + m, true, nil
	default:
		return 0, false, err
	}
}

// outBuf is the sealer's output: outSlots partial-length slots, each one
// header byte then outChunk bytes of SEIPD body.
type outBuf [outSlots * (1 + outChunk)]byte

var outPool = sync.Pool{New: func() any { return new(outBuf) }}

// sealer encrypts into the SEIPD packet and writes it.
type sealer struct {
	w    io.Writer
	enc  *cfb.Stream
	head []byte // PKESK and the SEIPD tag, written with the first output
	out  *outBuf
	slot int // current slot
	n    int // body bytes in the current slot
}

func newSealer(w io.Writer, head []byte, key []byte) (*sealer, error) {
	enc, err := cfb.NewEncrypter(key, make([]byte, cfb.BlockSize))
	if err != nil {
		return nil, err
	}
	s := &sealer{w: w, enc: enc, head: append(head, 0xC0|18), out: outPool.Get().(*outBuf)}
	s.out[1] = 1 // SEIPD version, in clear
	s.n = 1
	return s, nil
}

// space returns room in the current slot, making some when it is full
// (more data is coming, so a full slot is a partial one).
func (s *sealer) space() ([]byte, error) {
	if s.n == outChunk {
		s.out[s.slot*(1+outChunk)] = 0xE0 | outChunkLog
		s.slot++
		s.n = 0
		if s.slot == outSlots {
			if err := s.flush(s.out[:]); err != nil {
				return nil, err
			}
			s.slot = 0
		}
	}
	base := s.slot*(1+outChunk) + 1
	return s.out[base+s.n : base+outChunk], nil
}

func (s *sealer) flush(b []byte) error {
	if s.head != nil {
		if _, err := s.w.Write(s.head); err != nil {
			return err
		}
		s.head = nil
	}
	_, err := s.w.Write(b)
	return err
}

// encrypt appends the encryption of p to the packet.
func (s *sealer) encrypt(p []byte) error {
	for len(p) > 0 {
		dst, err := s.space()
		if err != nil {
			return err
		}
		k := min(len(dst), len(p))
		s.enc.XORKeyStream(dst[:k], p[:k])
		s.n += k
		p = p[k:]
	}
	return nil
}

// close writes the partial slots, then the current one with a definite
// length (never empty: the MDC is last).
func (s *sealer) close() error {
	end := s.slot * (1 + outChunk)
	body := s.out[end+1 : end+1+s.n]
	var hdr [5]byte
	h := appendLength(hdr[:0], s.n)
	if len(h) == 1 {
		// the length fits the slot's header byte: one write
		s.out[end] = h[0]
		return s.flush(s.out[:end+1+s.n])
	}
	if end > 0 {
		if err := s.flush(s.out[:end]); err != nil {
			return err
		}
	}
	if err := s.flush(h); err != nil {
		return err
	}
	_, err := s.w.Write(body)
	return err
}

// release wipes the key and returns the buffer.
func (s *sealer) release() {
	s.enc.Wipe()
	if s.out != nil {
		outPool.Put(s.out)
		s.out = nil
	}
}

// newSEIPD draws the session key's prefix, and returns the two halves with
// the prefix already encrypted and hashed.
func newSEIPD(w io.Writer, head, key []byte) (*sealer, *framer, error) {
	if len(key) != 32 {
		return nil, nil, errors.New("seipd: want an AES-256 key")
	}
	var prefix [prefixLen]byte
	if _, err := io.ReadFull(rand.Reader, prefix[:16]); err != nil {
		return nil, nil, err
	}
	prefix[16], prefix[17] = prefix[14], prefix[15]
	s, err := newSealer(w, head, key)
	if err != nil {
		return nil, nil, err
	}
	if err := s.encrypt(prefix[:]); err != nil {
		s.release()
		return nil, nil, err
	}
	return s, newFramer(prefix[:]), nil
}

// sealStream writes the SEIPD packet of plaintext after head (the key
// packet). Items of more than one chunk are read ahead on a second
// goroutine, which has stopped reading plaintext when sealStream returns.
func sealStream(w io.Writer, head, key []byte, plaintext io.Reader) error {
	s, f, err := newSEIPD(w, head, key)
	if err != nil {
		return err
	}
	defer s.release()
	c := getLit()
	n, eof, err := f.readChunk(plaintext, c)
	if err != nil {
		putLit(c)
		return err
	}
	if eof {
		defer putLit(c)
		f.frame(c, n, true)
		return s.finish(c)
	}
	// More than one chunk: read ahead.
	ring := newLitRing(c)
	defer ring.release()
	chunks := make(chan *litBuf, aheadChunks)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(chunks)
		send := func(b *litBuf) bool {
			select {
			case chunks <- b:
				return true
			case <-stop:
				return false
			}
		}
		cur, curN := c, n
		for {
			var next *litBuf
			select {
			case next = <-ring.free:
			case <-stop:
				return
			}
			m, eof, err := f.readChunk(plaintext, next)
			if err != nil {
				next.err = err
				send(next)
				return
			}
			last := eof && m == 0
			f.frame(cur, curN, last)
			if !send(cur) || last {
				return
			}
			if eof {
				f.frame(next, m, true)
				send(next)
				return
			}
			cur, curN = next, m
		}
	}()
	err = s.consume(chunks, ring)
	close(stop)
	for range chunks {
	}
	<-done
	return err
}

// litRing holds the chunks of one stream: they go round between the two
// goroutines without being cleared (the plaintext they hold is the same
// item's) and are cleared once, by release, when the stream is over.
type litRing struct {
	all  []*litBuf
	free chan *litBuf
}

func newLitRing(first *litBuf) *litRing {
	// in use at most: two by the reader, aheadChunks queued, one by the
	// encrypter
	const n = aheadChunks + 3
	r := &litRing{all: []*litBuf{first}, free: make(chan *litBuf, n)}
	for len(r.all) < n {
		b := getLit()
		r.all = append(r.all, b)
		r.free <- b
	}
	return r
}

func (r *litRing) recycle(b *litBuf) {
	b.data, b.last, b.err = nil, false, nil
	r.free <- b
}

func (r *litRing) release() {
	for _, b := range r.all {
		putLit(b)
	}
}

// consume encrypts chunks until the last one.
func (s *sealer) consume(chunks <-chan *litBuf, ring *litRing) error {
	for c := range chunks {
		if c.err != nil {
			return c.err
		}
		if c.last {
			return s.finish(c)
		}
		err := s.encrypt(c.data)
		ring.recycle(c)
		if err != nil {
			return err
		}
	}
	return errors.New("seipd: plaintext reader stopped early")
}

// finish encrypts the last chunk and the MDC and ends the packet.
func (s *sealer) finish(c *litBuf) error {
	if err := s.encrypt(c.data); err != nil {
		return err
	}
	if err := s.encrypt(c.mdc[:]); err != nil {
		return err
	}
	return s.close()
}

// literalWriter is the same message as an io.WriteCloser, for callers that
// write small messages (share cards, pair-wise checks): it frames and
// encrypts on the caller's goroutine.
type literalWriter struct {
	s   *sealer
	f   *framer
	c   *litBuf
	n   int // body bytes in c (including the 'b' header in the first chunk)
	err error
}

func newLiteralWriter(w io.Writer, head, key []byte) (*literalWriter, error) {
	s, f, err := newSEIPD(w, head, key)
	if err != nil {
		return nil, err
	}
	l := &literalWriter{s: s, f: f, c: getLit()}
	l.n = f.bodyStart(l.c)
	return l, nil
}

func (l *literalWriter) Write(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	if l.c == nil {
		return 0, errors.New("seipd: write after close")
	}
	total := len(p)
	for len(p) > 0 {
		if l.n == litChunk {
			// full, and more is coming: a partial chunk
			l.f.frame(l.c, l.n, false)
			if l.err = l.s.encrypt(l.c.data); l.err != nil {
				return 0, l.err
			}
			clear(l.c.data)
			l.n = 0
		}
		k := copy(l.c.buf[litHdrRoom+l.n:], p)
		l.n += k
		l.c.used = max(l.c.used, litHdrRoom+l.n)
		p = p[k:]
	}
	return total, nil
}

func (l *literalWriter) Close() error {
	if l.c == nil {
		return l.err
	}
	defer func() { putLit(l.c); l.s.release(); l.c = nil }()
	if l.err != nil {
		return l.err
	}
	l.f.frame(l.c, l.n, true)
	l.err = l.s.finish(l.c)
	return l.err
}
