package envelope

import (
	"crypto/sha256"
	"hash"
	"sync"
)

// asyncHash computes a hash (SHA-256, or SHA-1 for the MDC) on another goroutine so that hashing the
// ciphertext and the content runs beside decryption (the appliance has
// several cores; the transport must stream at least as fast as gpg). Write
// copies into one of asyncBuffers batches, so memory stays bounded.
//
// A direct asyncHash (for uploads of at most directHashMax bytes) hashes on
// the caller's goroutine instead: for a small upload a helper goroutine and
// its batches cost more than the hashing, and allocating them per upload
// keeps the garbage collector busy when thousands of small items arrive.
type asyncHash struct {
	direct bool
	h      hash.Hash // owned by run until done is closed
	cur    []byte
	free   chan []byte
	work   chan []byte
	done   chan struct{}
	quit   *stopper
	sum    []byte
	ok     bool
	fin    bool
}

const (
	asyncBuffers  = 3
	asyncBatch    = 128 << 10
	directHashMax = 256 << 10
)

// stopper ends the hashing goroutines of one upload, once.
type stopper struct {
	once sync.Once
	c    chan struct{}
}

func newStopper() *stopper { return &stopper{c: make(chan struct{})} }

func (s *stopper) stop() { s.once.Do(func() { close(s.c) }) }

func newAsyncHash(quit *stopper, size int64) *asyncHash { return newAsync(sha256.New(), quit, size) }

// newAsync returns a hash of about size bytes (an upper bound), computed
// on a helper goroutine unless size is at most directHashMax.
func newAsync(h hash.Hash, quit *stopper, size int64) *asyncHash {
	if size <= directHashMax {
		return &asyncHash{direct: true, h: h, quit: quit}
	}
	a := &asyncHash{
		h:    h,
		free: make(chan []byte, asyncBuffers),
		work: make(chan []byte, asyncBuffers),
		done: make(chan struct{}),
		quit: quit,
	}
	for i := 0; i < asyncBuffers; i++ {
		a.free <- make([]byte, 0, asyncBatch)
	}
	go run(a.h, a.work, a.free, a.done, quit.c)
	return a
}

// run does not reference the asyncHash, so an abandoned upload can be
// collected and its cleanup can stop this goroutine.
func run(h hash.Hash, work <-chan []byte, free chan<- []byte, done chan<- struct{}, quit <-chan struct{}) {
	defer close(done)
	for {
		select {
		case b, ok := <-work:
			if !ok {
				return
			}
			h.Write(b)
			free <- b[:0]
		case <-quit:
			return
		}
	}
}

// Write queues p for hashing. After the upload is stopped it drops p; Sum
// then reports failure.
func (a *asyncHash) Write(p []byte) {
	if a.direct {
		a.h.Write(p)
		return
	}
	for len(p) > 0 {
		if a.cur == nil {
			select {
			case a.cur = <-a.free:
			case <-a.quit.c:
				return
			}
		}
		n := copy(a.cur[len(a.cur):cap(a.cur)], p)
		a.cur = a.cur[:len(a.cur)+n]
		p = p[n:]
		if len(a.cur) == cap(a.cur) {
			select {
			case a.work <- a.cur:
			case <-a.quit.c:
				return
			}
			a.cur = nil
		}
	}
}

// Sum waits for the queued data and returns the digest; ok is false when
// the upload was stopped before hashing finished. Later calls return the
// same result.
func (a *asyncHash) Sum() (sum []byte, ok bool) {
	if a.fin {
		return a.sum, a.ok
	}
	a.fin = true
	if a.direct {
		select {
		case <-a.quit.c:
			return nil, false
		default:
		}
		a.sum, a.ok = a.h.Sum(nil), true
		return a.sum, a.ok
	}
	if len(a.cur) > 0 {
		select {
		case a.work <- a.cur:
		case <-a.quit.c:
			return nil, false
		}
		a.cur = nil
	}
	close(a.work)
	<-a.done
	select {
	case <-a.quit.c:
		return nil, false
	default:
	}
	a.sum, a.ok = a.h.Sum(nil), true
	return a.sum, a.ok
}
