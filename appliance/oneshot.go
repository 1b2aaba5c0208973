package appliance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"

	"coffre/ingest/qr"
	"coffre/ingest/usb"
	"coffre/storage"
)

// Outcome is what became of one upload of a one-shot ingest.
type Outcome struct {
	Source string        `json:"source"`
	Result *IngestResult `json:"result,omitempty"`
	Error  string        `json:"error,omitempty"`
}

// IngestQRDir decodes every frame image in dir, rebuilds the transfers and
// ingests each completed one. progress is called as transfers fill.
func (a *Appliance) IngestQRDir(ctx context.Context, dir string, progress func(qr.Progress)) ([]Outcome, error) {
	msgs, err := qr.ReadDir(dir, qr.Limits{}, progress)
	if err != nil && len(msgs) == 0 {
		return nil, err
	}
	var out []Outcome
	for _, m := range msgs {
		src := fmt.Sprintf("qr %s", dir)
		res, err := a.Ingest(ctx, bytes.NewReader(m))
		out = append(out, outcome(src, res, err))
	}
	return out, err
}

// IngestBundle reads a USB bundle (directory, image or device; images and
// devices in a limited child process) and ingests every envelope in it.
func (a *Appliance) IngestBundle(ctx context.Context, path string) ([]Outcome, error) {
	b, err := usb.Open(path, usb.Limits{})
	if err != nil {
		return nil, err
	}
	defer b.Close()
	// One child process reads the whole bundle; each envelope is checked
	// against the manifest as it streams, and a bad one stores nothing.
	// Small envelopes are read into memory (verified) and stored by up to
	// bundleWorkers goroutines at once, so both cores work and group commit
	// shares the drives' flushes; a large one is streamed in place.
	//
	// The walk moves on as soon as a large upload has read its envelope to
	// the end, not when it is stored: the next envelope is opened (courier
	// signature, transport key, a new user's escrow key made) while the
	// previous one is still being committed (the drives' last writes and
	// fdatasync, checkpoint, catalog, receipt). Each large upload still
	// commits alone and in turn (commitBatch), so one bad upload cannot
	// fail another; at most largeInFlight of them hold buffers at once.
	var (
		mu    sync.Mutex
		out   []Outcome
		wg    sync.WaitGroup
		sem   = make(chan struct{}, bundleWorkers())
		large = make(chan struct{}, largeInFlight)
	)
	set := func(i int, o Outcome) { mu.Lock(); out[i] = o; mu.Unlock() }
	err = b.Walk(func(e usb.Entry, r io.Reader) error {
		src := fmt.Sprintf("usb %s %s", path, e.Name)
		mu.Lock()
		i := len(out)
		out = append(out, Outcome{Source: src})
		mu.Unlock()
		if e.Size > bundleBuffer {
			large <- struct{}{}
			er := newEntryReader(r)
			wg.Add(1)
			go func() {
				defer func() { <-large; wg.Done() }()
				res, err := a.Ingest(ctx, er)
				er.stop()
				set(i, outcome(src, res, err))
			}()
			<-er.done
			return nil
		}
		buf, err := io.ReadAll(r)
		if err != nil {
			// The child stops at a damaged entry: nothing of it is stored.
			set(i, outcome(src, nil, err))
			return nil
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			res, err := a.Ingest(ctx, bytes.NewReader(buf))
			set(i, outcome(src, res, err))
		}()
		return nil
	})
	wg.Wait()
	return out, err
}

// bundleBuffer is the largest envelope of a bundle read into memory to be
// stored concurrently with others; bundleWorkers bounds those in flight, so
// a bundle holds at most bundleWorkers+1 buffers.
const bundleBuffer = 4 << 20

func bundleWorkers() int { return 2 * runtime.NumCPU() }

// largeInFlight bounds the large uploads of a bundle in flight: one being
// committed while the next is opened and streamed.
const largeInFlight = 2

// entryReader lends a bundle entry's reader to an upload running on another
// goroutine. done is closed once the upload no longer reads it: at the
// entry's end (or first error), or when the upload returns. From then on
// its Read does not touch the entry, so the walk may go on to the next one
// (and drain what the upload left unread, checking it against the
// manifest).
type entryReader struct {
	mu   sync.Mutex
	r    io.Reader
	err  error // sticky once set
	once sync.Once
	done chan struct{}
}

// errEntryReleased is what a straggling read gets after the upload
// returned (it only happens on the upload's error paths).
var errEntryReleased = errors.New("appliance: bundle entry read after its upload ended")

func newEntryReader(r io.Reader) *entryReader {
	return &entryReader{r: r, done: make(chan struct{})}
}

func (e *entryReader) Read(p []byte) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.r.Read(p)
	if err != nil {
		e.err = err
		e.once.Do(func() { close(e.done) })
	}
	return n, err
}

// stop releases the entry: it waits for a read in progress to return.
func (e *entryReader) stop() {
	e.mu.Lock()
	if e.err == nil {
		e.err = errEntryReleased
	}
	e.mu.Unlock()
	e.once.Do(func() { close(e.done) })
}

// IngestFile ingests one envelope file.
func (a *Appliance) IngestFile(ctx context.Context, path string) (Outcome, error) {
	f, err := os.Open(path)
	if err != nil {
		return Outcome{}, err
	}
	defer f.Close()
	res, err := a.Ingest(ctx, f)
	return outcome(path, res, err), nil
}

func outcome(src string, res *IngestResult, err error) Outcome {
	o := Outcome{Source: src, Result: res}
	if err != nil {
		o.Error = err.Error()
	}
	return o
}

// Scrub checks every record on every drive and rewrites damaged ones from a
// verified copy on another drive.
func (a *Appliance) Scrub(ctx context.Context, progress func(done, total uint64)) (storage.ScrubReport, error) {
	rep, err := a.vault.Scrub(ctx, progress)
	if err != nil {
		return rep, err
	}
	// The catalog's tables are checked whole here (reads check each block).
	if a.cat != nil {
		if err := a.cat.VerifyChecksum(); err != nil {
			return rep, fmt.Errorf("%w (rebuild it from a drive: coffre catalog rebuild --state %s)", err, a.State)
		}
	}
	return rep, nil
}
