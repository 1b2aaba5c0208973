package appliance

import (
	"io"
	"sync"
)

// aheadPipe carries a large upload's re-encrypted item from the goroutine
// sealing it to the append, like io.Pipe but with room: the sealer runs up
// to aheadChunks*aheadChunk bytes ahead of the drives. An io.Pipe hands
// each write over synchronously, so the sealer would stop whenever the
// append does (the previous upload's commit, the escrow record being made).
// It carries ciphertext only.
type aheadPipe struct {
	full chan []byte   // filled chunks, in order; closed by CloseWithError
	free chan []byte   // chunks the reader is done with
	quit chan struct{} // closed by Close: the reader gave up
	once sync.Once

	// writer side
	w     []byte // chunk being filled
	alloc int    // chunks allocated (at most aheadChunks)
	err   error  // the writer's result (io.EOF at a clean end), set before full is closed

	// reader side
	cur, base []byte // unread part of the chunk base
}

const (
	aheadChunk  = 256 << 10
	aheadChunks = 16 // 4 MiB per large upload in flight
)

func newAheadPipe() *aheadPipe {
	return &aheadPipe{
		full: make(chan []byte, aheadChunks),
		free: make(chan []byte, aheadChunks),
		quit: make(chan struct{}),
	}
}

// Write copies p into the pipe, waiting for room when the reader is
// aheadChunks behind. It fails with io.ErrClosedPipe once the reader has
// closed the pipe.
func (p *aheadPipe) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		select {
		case <-p.quit:
			return n, io.ErrClosedPipe
		default:
		}
		if p.w == nil {
			select {
			case p.w = <-p.free:
			default:
				if p.alloc < aheadChunks {
					p.alloc++
					p.w = getAheadChunk()
				} else {
					select {
					case p.w = <-p.free:
					case <-p.quit:
						return n, io.ErrClosedPipe
					}
				}
			}
		}
		c := copy(p.w[len(p.w):cap(p.w)], b)
		p.w = p.w[:len(p.w)+c]
		b = b[c:]
		n += c
		if len(p.w) == cap(p.w) {
			select {
			case p.full <- p.w:
			case <-p.quit:
				return n, io.ErrClosedPipe
			}
			p.w = nil
		}
	}
	return n, nil
}

// CloseWithError ends the writer's side: the reader gets what was written,
// then err (io.EOF when err is nil). The writer calls it exactly once.
func (p *aheadPipe) CloseWithError(err error) {
	if len(p.w) > 0 {
		p.full <- p.w // never blocks: full has room for every chunk but the writer's
		p.w = nil
	}
	if err == nil {
		err = io.EOF
	}
	p.err = err
	close(p.full)
}

func (p *aheadPipe) Read(b []byte) (int, error) {
	for len(p.cur) == 0 {
		if p.base != nil {
			p.free <- p.base[:0] // never blocks: free has room for every chunk
			p.base = nil
		}
		c, ok := <-p.full
		if !ok {
			p.recycle()
			return 0, p.err
		}
		p.cur, p.base = c, c
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}

// recycle pools the chunks once the writer is done (full is closed): they
// are all in free then. Chunks of a pipe the reader gave up on are left to
// the garbage collector, as the writer may still hold one.
func (p *aheadPipe) recycle() {
	for {
		select {
		case b := <-p.free:
			putAheadChunk(b)
		default:
			return
		}
	}
}

// aheadFree keeps chunks from one large upload to the next: enough for
// the two a bundle has in flight. (A sync.Pool would keep some per
// scheduler P, and coffred runs more Ps than cores.)
var aheadFree = make(chan []byte, 2*aheadChunks)

func getAheadChunk() []byte {
	select {
	case b := <-aheadFree:
		return b[:0]
	default:
		return make([]byte, 0, aheadChunk)
	}
}

func putAheadChunk(b []byte) {
	select {
	case aheadFree <- b:
	default:
	}
}

// Close ends the reader's side: the writer's next Write fails.
func (p *aheadPipe) Close() error {
	p.once.Do(func() { close(p.quit) })
	return nil
}
