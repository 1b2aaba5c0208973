package appliance

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"testing"
)

// The ahead pipe delivers what was written, in order, then the writer's
// result; a writer failing after some data fails the reader after that
// data (so an append never takes a cut item for a whole one); a reader
// that gives up releases a writer waiting for room.
func TestAheadPipe(t *testing.T) {
	data := make([]byte, 3*aheadChunks*aheadChunk+12345) // more than the pipe holds
	rand.Read(data)
	for _, tc := range []struct {
		name string
		err  error
	}{{"clean end", nil}, {"writer fails", errors.New("mdc mismatch")}} {
		t.Run(tc.name, func(t *testing.T) {
			p := newAheadPipe()
			go func() {
				for b := data; len(b) > 0; {
					n := min(len(b), 1000+len(b)%70000) // odd write sizes
					if _, err := p.Write(b[:n]); err != nil {
						p.CloseWithError(err)
						return
					}
					b = b[n:]
				}
				p.CloseWithError(tc.err)
			}()
			got, err := io.ReadAll(p)
			if !bytes.Equal(got, data) {
				t.Fatalf("read %d bytes, not the %d written", len(got), len(data))
			}
			if tc.err == nil && err != nil || tc.err != nil && err != tc.err {
				t.Fatalf("read error %v, want %v", err, tc.err)
			}
			if _, err := p.Read(make([]byte, 1)); tc.err == nil && err != io.EOF || tc.err != nil && err != tc.err {
				t.Fatalf("read after the end: %v", err)
			}
		})
	}
	t.Run("reader gives up", func(t *testing.T) {
		p := newAheadPipe()
		done := make(chan error, 1)
		go func() {
			_, err := p.Write(data) // more than the room: waits for the reader
			done <- err
		}()
		if _, err := io.ReadFull(p, make([]byte, aheadChunk)); err != nil {
			t.Fatal(err)
		}
		p.Close()
		if err := <-done; err != io.ErrClosedPipe {
			t.Fatalf("write after the reader closed: %v, want %v", err, io.ErrClosedPipe)
		}
		if _, err := p.Write([]byte("x")); err != io.ErrClosedPipe {
			t.Fatalf("second write: %v", err)
		}
	})
}
