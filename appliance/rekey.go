package appliance

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"coffre/internal/crashpoint"
	"coffre/storage"
	"coffre/storage/catalog"
)

// Record-layer rekey (re-encapsulation kind 1, no quorum needed: the
// appliance holds the record keys): a new vault record key epoch is created
// in the keystore, and every live record still under an older epoch is read,
// re-encrypted under the new key and appended as a new record that
// supersedes it. The old record stays on the drives until a separate,
// quorum-approved retirement. The job is resumable: which records are done
// is read from the drives (through the catalog's supersede index), so a
// crash at any point neither loses nor doubles a record.

// RekeyJob is the job state kept in the catalog (for `coffre reencap status`).
type RekeyJob struct {
	Epoch   uint32 `json:"epoch"`
	Total   int    `json:"total"`
	Done    int    `json:"done"`
	Bytes   int64  `json:"bytes"`
	Started string `json:"started,omitempty"`
	Status  string `json:"status"` // running, done
}

const rekeyJobID = "reencap-record-rekey"

// recordKeyName is the keystore name of an epoch's record key.
func recordKeyName(epoch uint32) string {
	if epoch == 0 {
		return keyRecord
	}
	return fmt.Sprintf("%s.%d", keyRecord, epoch)
}

// currentEpoch is the highest record key epoch in the keystore: new records
// are written under it.
func (a *Appliance) currentEpoch() uint32 {
	var e uint32
	for n := range a.secrets {
		if s, ok := strings.CutPrefix(n, keyRecord+"."); ok {
			if v, err := strconv.ParseUint(s, 10, 32); err == nil && uint32(v) > e {
				e = uint32(v)
			}
		}
	}
	return e
}

// RecordEpochs counts the live records under each record key epoch.
func (a *Appliance) RecordEpochs() (map[uint32]int, error) {
	out := map[uint32]int{}
	err := a.vault.Records(0, func(h storage.RecordInfo) error {
		if h.Type == storage.TypeCheckpoint {
			return nil
		}
		e, err := a.cat.Get(h.Index)
		if err != nil || !e.Live() || e.Meta.Kind == catalog.KindGenesis {
			return nil
		}
		out[h.KeyEpoch]++
		return nil
	})
	return out, err
}

// RekeyOptions are the options of a record-layer rekey run.
type RekeyOptions struct {
	NewEpoch bool // create a fresh record key epoch first (else resume)
	Max      int  // re-encrypt at most this many records in this run; <0: all
	// Batch bounds the records of one atomic batch (default and most:
	// rekeyBatchRecords). Smaller batches redo less after a power cut.
	Batch    int
	Progress func(done, total int)
}

// Rekey runs (or resumes) the record-layer rekey: records under an epoch
// older than the newest are re-encrypted under it. With o.NewEpoch it
// first creates a fresh record key epoch.
func (a *Appliance) Rekey(ctx context.Context, o RekeyOptions) (*RekeyJob, error) {
	limit, progress := o.Max, o.Progress
	perBatch := rekeyBatchRecords
	if o.Batch > 0 {
		perBatch = min(o.Batch, rekeyBatchRecords)
	}
	if o.NewEpoch {
		if err := a.addRecordEpoch(); err != nil {
			return nil, err
		}
	}
	epoch := a.currentEpoch()
	if err := a.reopenVault(epoch); err != nil {
		return nil, err
	}
	// What remains: live records under an older epoch.
	var todo []uint64
	var bytes int64
	err := a.vault.Records(0, func(h storage.RecordInfo) error {
		if h.Type == storage.TypeCheckpoint || h.KeyEpoch >= epoch {
			return nil
		}
		e, err := a.cat.Get(h.Index)
		if err != nil {
			return fmt.Errorf("appliance: rekey: record %d is not in the catalog: %w (run coffre catalog rebuild)", h.Index, err)
		}
		if e.Meta.Kind == catalog.KindGenesis {
			return nil // public identity, never superseded (see appendGenesisRecord)
		}
		if e.Live() {
			todo = append(todo, h.Index)
			bytes += h.Len
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	job := &RekeyJob{Epoch: epoch, Total: len(todo), Status: "running"}
	if old, ok, _ := a.cat.Job(rekeyJobID); ok {
		var prev RekeyJob
		if json.Unmarshal(old, &prev) == nil && prev.Epoch == epoch {
			// Done is what the drives show done (the saved count may lag).
			job.Total = max(prev.Total, prev.Done+len(todo))
			job.Done, job.Started = job.Total-len(todo), prev.Started
		}
	}
	a.putJob(job)
	a.Log.Info("record-layer rekey", "epoch", epoch, "records", len(todo), "bytes", bytes)
	sort.Slice(todo, func(i, j int) bool { return todo[i] < todo[j] })
	if limit >= 0 && len(todo) > limit {
		todo = todo[:limit] // a bounded maintenance window; the rest resumes later
	}
	// A reader goroutine fetches the records ahead (bounded) while this
	// one commits: small records go in batches (one sync per drive for
	// many), a large one streams from the drives alone. Each batch is
	// written while the one before it is synced (commitEach).
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan rekeyBatch, 1)
	go a.readRekeyBatches(rctx, todo, perBatch, batches)
	var queue []rekeyBatch // given to commitEach, not yet done
	defer func() {
		for _, b := range queue {
			b.close()
		}
	}()
	next := func() ([]pending, error) {
		b, ok := <-batches
		if !ok {
			return nil, io.EOF
		}
		if b.err != nil {
			return nil, b.err
		}
		if err := ctx.Err(); err != nil {
			b.close()
			return nil, err
		}
		queue = append(queue, b)
		return b.ps, nil
	}
	done := func([]uint64) error {
		b := queue[0]
		queue = queue[1:]
		b.close()
		job.Done += len(b.ps)
		job.Bytes += b.bytes
		if job.Done < job.Total {
			crashpoint.Hit("reencap.batch")
		}
		a.putJob(job)
		if progress != nil {
			progress(job.Done, job.Total)
		}
		return nil
	}
	if err := a.commitEach(ctx, next, done); err != nil {
		if len(queue) > 0 && !errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("appliance: rekey: records %d..: %w", queue[0].ps[0].meta.Supersedes, err)
		}
		return job, err
	}
	if err := ctx.Err(); err != nil {
		return job, err
	}
	if job.Done >= job.Total {
		job.Status = "done"
	}
	a.putJob(job)
	return job, nil
}

// Bounds of one rekey batch: records whose body is at most
// rekeyInline bytes are read whole and committed together, up to
// rekeyBatchBytes or rekeyBatchRecords; a larger one goes alone, streamed.
const (
	rekeyInline       = 4 << 20
	rekeyBatchBytes   = 32 << 20
	rekeyBatchRecords = 512
)

// rekeyBatch is records ready to append under the new epoch, each
// superseding its old copy.
type rekeyBatch struct {
	ps     []pending
	bytes  int64
	closer io.Closer // the streamed body of a large record
	err    error
}

func (b *rekeyBatch) close() {
	if b.closer != nil {
		b.closer.Close()
	}
}

// readRekeyBatches reads the records of todo into batches, in order, and
// closes out. It stops at the first error (sent as a batch) or when ctx
// ends.
func (a *Appliance) readRekeyBatches(ctx context.Context, todo []uint64, perBatch int, out chan<- rekeyBatch) {
	defer close(out)
	send := func(b rekeyBatch) bool {
		select {
		case out <- b:
			return true
		case <-ctx.Done():
			b.close()
			return false
		}
	}
	fctx, cancel := context.WithCancel(ctx)
	futs := a.fetchAhead(fctx, todo)
	defer func() {
		cancel()
		for f := range futs { // let the fetcher stop; drop what it read
			if r := <-f; r.body != nil {
				r.body.Close()
			}
		}
	}()
	// The first batches are small, so that writing starts early; they
	// double up to rekeyBatchBytes.
	var cur rekeyBatch
	limit := int64(rekeyBatchBytes / 8)
	for f := range futs {
		r := <-f
		if r.err != nil {
			cur.close()
			send(rekeyBatch{err: r.err})
			return
		}
		if r.body != nil { // large: streamed alone
			if len(cur.ps) > 0 && !send(cur) {
				r.body.Close()
				return
			}
			cur = rekeyBatch{}
			if !send(rekeyBatch{ps: []pending{{r.h.Type, r.m, r.body}}, bytes: int64(r.h.BodyLen), closer: r.body}) {
				return
			}
			continue
		}
		cur.ps = append(cur.ps, pending{r.h.Type, r.m, bytes.NewReader(r.buf)})
		cur.bytes += int64(len(r.buf))
		if cur.bytes >= limit || len(cur.ps) >= perBatch {
			if !send(cur) {
				return
			}
			cur = rekeyBatch{}
			limit = min(2*limit, rekeyBatchBytes)
		}
	}
	if err := ctx.Err(); err != nil {
		return
	}
	if len(cur.ps) > 0 {
		send(cur)
	}
}

// Reading ahead: rekeyReaders records are read at once (one waits for its
// drive while another is decrypted and hashed), at most rekeyAhead records
// ahead of the batch being built.
const (
	rekeyReaders = 3
	rekeyAhead   = 4
)

// fetched is one record read for the rekey: a small body whole, a large
// one as a stream to read while it is appended.
type fetched struct {
	h    storage.Header
	m    catalog.Meta
	buf  []byte
	body io.ReadCloser
	err  error
}

// fetchAhead reads the records of todo on rekeyReaders goroutines and
// hands out, in todo's order, one channel per record that gets it. When
// ctx ends, the channel handed out last gets ctx's error.
func (a *Appliance) fetchAhead(ctx context.Context, todo []uint64) <-chan chan fetched {
	out := make(chan chan fetched, rekeyAhead)
	go func() {
		defer close(out)
		sem := make(chan struct{}, rekeyReaders)
		for _, idx := range todo {
			f := make(chan fetched, 1)
			select {
			case out <- f:
			case <-ctx.Done():
				return
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				f <- fetched{err: ctx.Err()}
				return
			}
			go func() {
				defer func() { <-sem }()
				f <- a.fetchRekey(idx)
			}()
		}
	}()
	return out
}

// fetchRekey reads record idx and marks its meta as superseding it.
func (a *Appliance) fetchRekey(idx uint64) fetched {
	h, mb, body, err := a.vault.Get(idx)
	if err != nil {
		return fetched{err: fmt.Errorf("appliance: rekey: reading record %d: %w", idx, err)}
	}
	m, err := catalog.ParseMeta(mb)
	if err != nil {
		body.Close()
		return fetched{err: fmt.Errorf("appliance: rekey: record %d meta: %w", idx, err)}
	}
	m.Supersedes = idx
	if h.BodyLen > rekeyInline {
		return fetched{h: h, m: m, body: body}
	}
	buf := make([]byte, h.BodyLen)
	_, err = io.ReadFull(body, buf)
	if err == nil {
		// The body must end where its header says, and its payload hash
		// match (checked at the end of the stream).
		switch n, rerr := body.Read(make([]byte, 1)); {
		case n != 0:
			err = errors.New("body longer than its header says")
		case rerr != io.EOF:
			err = rerr
		}
	}
	body.Close()
	if err != nil {
		return fetched{err: fmt.Errorf("appliance: rekey: reading record %d: %w", idx, err)}
	}
	return fetched{h: h, m: m, buf: buf}
}

func (a *Appliance) putJob(j *RekeyJob) {
	b, _ := json.Marshal(j)
	if err := a.cat.PutJob(rekeyJobID, b); err != nil {
		a.Log.Warn("rekey: saving job state", "err", err)
	}
}

// RekeyStatus returns the rekey job's state, if any. A running job's
// progress is recounted from the drives: the saved state is written after
// each batch is durable, so a crash between the two leaves it behind (the
// resume itself always works from the drives).
func (a *Appliance) RekeyStatus() (*RekeyJob, bool, error) {
	b, ok, err := a.cat.Job(rekeyJobID)
	if err != nil || !ok {
		return nil, ok, err
	}
	var j RekeyJob
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, true, fmt.Errorf("appliance: rekey job state: %w", err)
	}
	if j.Status != "running" {
		return &j, true, nil
	}
	epochs, err := a.RecordEpochs()
	if err != nil {
		return nil, true, err
	}
	left := 0
	for e, n := range epochs {
		if e < j.Epoch {
			left += n
		}
	}
	j.Done = min(max(j.Total-left, j.Done), j.Total)
	if left == 0 && j.Epoch == a.currentEpoch() {
		j.Status = "done"
	}
	return &j, true, nil
}

// addRecordEpoch seals a fresh record key for the next epoch.
func (a *Appliance) addRecordEpoch() error {
	next := a.currentEpoch() + 1
	k := make([]byte, 32)
	rand.Read(k)
	name := recordKeyName(next)
	if err := a.ks.Seal(name, k); err != nil {
		clear(k)
		return fmt.Errorf("appliance: sealing the record key of epoch %d: %w", next, err)
	}
	a.secrets[name] = k
	a.Log.Info("new record key epoch", "epoch", next)
	return nil
}

// reopenVault reopens the drives so that new records use epoch.
func (a *Appliance) reopenVault(epoch uint32) error {
	var paths []string
	for _, d := range a.vault.Drives() {
		if d.Path != "" && d.State != storage.StateRetired && d.State != storage.StateMissing {
			paths = append(paths, d.Path)
		}
	}
	if err := a.vault.Close(); err != nil {
		return err
	}
	a.vault = nil
	opts, err := a.storageOptions(a.quorum)
	if err != nil {
		return err
	}
	opts.KeyEpoch = epoch
	v, err := storage.Open(paths, opts)
	if err != nil {
		return fmt.Errorf("appliance: reopening the drives for epoch %d: %w", epoch, err)
	}
	a.vault = v
	return nil
}
