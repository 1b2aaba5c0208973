package appliance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/ProtonMail/go-crypto/openpgp"

	"coffre/appliance/receipt"
	"coffre/bailiff"
	"coffre/ingest/envelope"
	"coffre/storage"
	"coffre/storage/catalog"
)

// bufferLimit is the largest item re-encrypted into memory so that several
// uploads can be prepared in parallel and committed as one batch; larger
// items stream straight through to the drives.
const bufferLimit = 1 << 20

// Pipeline errors callers (and the operator's console) tell apart.
var (
	// ErrNoRoster: no genesis ceremony yet, so no escrow key can be made.
	ErrNoRoster = errors.New("appliance: no bailiff roster yet: run `coffre ceremony genesis` first")
	// ErrVersionExists: a new version never overwrites an old one.
	ErrVersionExists = errors.New("appliance: this item version is already stored; a new version must have a higher number")
)

// IngestResult says what became of one upload.
type IngestResult struct {
	UploadID string `json:"upload_id"`
	UserID   string `json:"user_id"`
	ItemID   string `json:"item_id"`
	Version  uint32 `json:"version"`
	Kind     string `json:"kind"`
	Size     int64  `json:"size"`
	Index    uint64 `json:"index"`
	// Replay is true when the upload was already stored (re-fed frames or
	// a stick plugged twice): nothing was written.
	Replay      bool   `json:"replay"`
	ReceiptPath string `json:"receipt_path,omitempty"`
	Receipt     []byte `json:"-"`
}

// Ingest runs one envelope through the pipeline: the courier signature and
// replay checks, transport decryption (streamed, bounded memory),
// re-encryption to the user's escrow key (created on the user's first
// upload), a replicated append acknowledged on the write quorum, the catalog,
// and a receipt. On any error nothing of the upload is stored.
func (a *Appliance) Ingest(ctx context.Context, r io.Reader) (*IngestResult, error) {
	if a.vault == nil {
		return nil, errors.New("appliance: opened without drives")
	}
	var replayed string
	up, err := envelope.Open(r, envelope.OpenParams{
		IngestKeys: a.ingest,
		Couriers:   a.couriers,
		Seen: func(id string) (bool, error) {
			seen, err := a.seen(id)
			if seen {
				replayed = id
			}
			return seen, err
		},
	})
	if err != nil {
		if errors.Is(err, envelope.ErrReplay) && replayed != "" {
			return a.replayResult(replayed, err)
		}
		return nil, err
	}
	// Close releases the hashing goroutines of an upload abandoned half-way.
	defer up.Close()
	m := up.Manifest
	res := &IngestResult{UploadID: up.UploadID, UserID: up.UserID, ItemID: m.ItemID, Version: m.Version, Kind: m.Kind, Size: m.Size}

	release, err := a.claimUpload(up.UploadID)
	if err != nil {
		return nil, err
	}
	defer release()
	unlock := a.lockUser(up.UserID)
	defer unlock()

	if err := a.checkVersion(up.UserID, m.ItemID, m.Version); err != nil {
		return nil, err
	}
	// A first upload makes the user's escrow key; its record goes into the
	// same batch as the item, so a failed upload leaves no trace at all.
	var (
		esc    *bailiff.Escrow
		escRec *pending
		body   io.Reader
	)
	switch {
	case m.Size <= bufferLimit:
		if esc, escRec, err = a.escrowFor(up.UserID); err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		if _, err := bailiff.SealEscrowItem(&buf, esc, up.Content); err != nil {
			return nil, fmt.Errorf("appliance: upload %s: %w", up.UploadID, err)
		}
		body = &buf
	case a.firstP521Upload(up.UserID):
		// A large first upload: the item is re-encrypted while the user's
		// escrow key is made (some twenty P-521 operations), into the
		// pipe's room; the key packet goes in front once the key exists.
		sealer, err := bailiff.NewItemSealer()
		if err != nil {
			return nil, err
		}
		p := newAheadPipe()
		sealed := make(chan struct{})
		go func() {
			defer close(sealed)
			p.CloseWithError(sealer.Body(p, up.Content))
		}()
		defer func() {
			up.Close() // a sealer still reading fails at its next read
			p.Close()  // or at its next write
			<-sealed
			sealer.Wipe()
		}()
		if esc, escRec, err = a.escrowFor(up.UserID); err != nil {
			return nil, err
		}
		head, _, err := sealer.KeyPacket(esc.PublicKey())
		if err != nil {
			return nil, fmt.Errorf("appliance: upload %s: %w", up.UploadID, err)
		}
		body = io.MultiReader(bytes.NewReader(head), p)
	default:
		if esc, escRec, err = a.escrowFor(up.UserID); err != nil {
			return nil, err
		}
		p := newAheadPipe()
		go func() {
			_, err := bailiff.SealEscrowItem(p, esc, up.Content)
			p.CloseWithError(err)
		}()
		defer p.Close()
		body = p
	}
	meta := catalog.Meta{
		Kind:        catalog.KindItem,
		UserID:      up.UserID,
		ItemID:      m.ItemID,
		Version:     m.Version,
		UploadID:    up.UploadID,
		ItemKind:    m.Kind,
		ContentType: m.ContentType,
		Size:        m.Size,
		Digest:      m.Digest,
		Algorithms:  algorithmList(esc.ItemAlgorithms()), // post-quantum once the user's escrow is upgraded
	}
	if len(m.Beneficiaries) > 0 {
		meta.Attrs = map[string]string{"beneficiaries": designationsAttr(m.Beneficiaries)}
	}
	batch := []pending{{storage.TypeItem, meta, body}}
	if escRec != nil {
		batch = append([]pending{*escRec}, batch...)
	}
	idx, err := a.commitBatch(ctx, batch)
	if err != nil {
		return nil, fmt.Errorf("appliance: upload %s not stored: %w", up.UploadID, err)
	}
	if escRec != nil {
		a.mu.Lock()
		a.escrows[up.UserID] = esc
		a.mu.Unlock()
		a.Log.Info("escrow key created", "user", up.UserID, "fingerprint", esc.Fingerprint, "record", idx[0])
	}
	res.Index = idx[len(idx)-1]
	if err := a.issueReceipt(res); err != nil {
		return nil, err
	}
	a.Log.Info("upload stored", "upload", up.UploadID, "user", up.UserID, "item", m.ItemID, "version", m.Version, "record", res.Index)
	return res, nil
}

func designationsAttr(ds []envelope.Designation) string {
	var b bytes.Buffer
	for i, d := range ds {
		if i > 0 {
			b.WriteByte(';')
		}
		fmt.Fprintf(&b, "%s|%s|%s", d.Name, d.Email, d.Fingerprint)
	}
	return b.String()
}

// firstP521Upload reports whether an upload of user will make the user's
// escrow, and a P-521 one (the kind ItemSealer seals to). The caller holds
// the user's lock.
func (a *Appliance) firstP521Upload(user string) bool {
	a.mu.Lock()
	e := a.escrows[user]
	a.mu.Unlock()
	if e != nil {
		return false
	}
	if _, ok, err := a.escrowRecord(user); err != nil || ok {
		return false
	}
	pq, err := a.checkEscrowPQ()
	return err == nil && !pq
}

// seen backs the envelope's replay check with the catalog.
func (a *Appliance) seen(uploadID string) (bool, error) {
	_, found, err := a.cat.Upload(uploadID)
	return found, err
}

// replayResult answers a re-fed upload with its existing receipt.
func (a *Appliance) replayResult(id string, replayErr error) (*IngestResult, error) {
	idx, found, err := a.cat.Upload(id)
	if err != nil || !found {
		return nil, replayErr
	}
	e, err := a.cat.Get(idx)
	if err != nil {
		return nil, replayErr
	}
	res := &IngestResult{UploadID: id, UserID: e.Meta.UserID, ItemID: e.Meta.ItemID, Version: e.Meta.Version, Kind: e.Meta.ItemKind, Size: e.Meta.Size, Index: idx, Replay: true}
	res.ReceiptPath = a.receiptPath(id)
	if res.Receipt, err = os.ReadFile(res.ReceiptPath); err != nil {
		// Stored, but the process died before the receipt was written:
		// a receipt is a proof, it can be made again at any time.
		if err := a.issueReceipt(res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// claimUpload makes sure one upload id is processed once at a time.
func (a *Appliance) claimUpload(id string) (func(), error) {
	a.inflightMu.Lock()
	defer a.inflightMu.Unlock()
	if a.inflight == nil {
		a.inflight = map[string]bool{}
	}
	if a.inflight[id] {
		return nil, fmt.Errorf("appliance: upload %s is already being stored", id)
	}
	a.inflight[id] = true
	return func() {
		a.inflightMu.Lock()
		delete(a.inflight, id)
		a.inflightMu.Unlock()
	}, nil
}

func (a *Appliance) lockUser(user string) func() {
	a.mu.Lock()
	m := a.userMu[user]
	if m == nil {
		m = &sync.Mutex{}
		a.userMu[user] = m
	}
	a.mu.Unlock()
	m.Lock()
	return m.Unlock
}

func (a *Appliance) checkVersion(user, item string, version uint32) error {
	entries, err := a.cat.Items(user)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Meta.Kind == catalog.KindItem && e.Meta.ItemID == item && e.Meta.Version == version {
			return fmt.Errorf("%w (user %s, item %s, version %d is record %d)", ErrVersionExists, user, item, version, e.Record)
		}
	}
	return nil
}

// pending is a record about to be appended.
type pending struct {
	typ  storage.RecordType
	meta catalog.Meta
	body io.Reader
}

// commit appends one record, indexes it and returns its index.
func (a *Appliance) commit(ctx context.Context, t storage.RecordType, meta catalog.Meta, body io.Reader) (uint64, error) {
	idx, err := a.commitBatch(ctx, []pending{{t, meta, body}})
	if err != nil {
		return 0, err
	}
	return idx[0], nil
}

// commitBatch appends records as one batch (all durable on the quorum, or
// none acknowledged), indexes them and their checkpoint, and returns their
// indexes.
//
// Group commit: batches whose bodies are already in memory (they cannot
// fail half-way) and that arrive while another append is on the drives are
// written together, behind one checkpoint and one flush, by whichever
// caller gets the drives next. Each caller still gets exactly its own
// indexes, and its records stay contiguous and in its order. A batch with a
// streamed body goes alone, so that one bad upload cannot fail the others.
func (a *Appliance) commitBatch(ctx context.Context, ps []pending) ([]uint64, error) {
	req := &commitReq{ps: ps, groupable: groupable(ps)}
	if !req.groupable {
		a.lockAppend()
		defer a.appendMu.Unlock()
		a.commitGroup(ctx, []*commitReq{req})
		return req.idx, req.err
	}
	a.groupMu.Lock()
	a.groupQueue = append(a.groupQueue, req)
	a.groupMu.Unlock()
	a.lockAppend()
	defer a.appendMu.Unlock()
	a.groupMu.Lock()
	if req.done {
		a.groupMu.Unlock()
		return req.idx, req.err // an earlier caller wrote it with its own
	}
	group := a.groupQueue
	a.groupQueue = nil
	a.groupMu.Unlock()
	a.commitGroup(ctx, group)
	return req.idx, req.err
}

// commitReq is one caller's batch waiting for the drives.
type commitReq struct {
	ps        []pending
	groupable bool
	idx       []uint64
	err       error
	done      bool // guarded by groupMu
}

// groupable reports whether every body of a batch is already in memory.
func groupable(ps []pending) bool {
	for _, p := range ps {
		switch p.body.(type) {
		case nil, *bytes.Buffer, *bytes.Reader:
		default:
			return false
		}
	}
	return true
}

// commitGroup appends the batches of a group as one storage batch and
// indexes them. The caller holds appendMu.
func (a *Appliance) commitGroup(ctx context.Context, group []*commitReq) {
	finish := func(err error) {
		a.groupMu.Lock()
		for _, r := range group {
			if err != nil {
				r.idx, r.err = nil, err
			}
			r.done = true
		}
		a.groupMu.Unlock()
	}
	var recs []storage.Record
	var all []pending
	for _, r := range group {
		rs, err := storageRecords(r.ps)
		if err != nil {
			r.err = err // only this caller's batch is malformed
			continue
		}
		recs = append(recs, rs...)
		all = append(all, r.ps...)
	}
	if len(recs) == 0 {
		finish(nil)
		return
	}
	idx, err := a.vault.Append(ctx, recs...)
	if err != nil {
		finish(err)
		return
	}
	n := 0
	for _, r := range group {
		if r.err == nil {
			r.idx = idx[n : n+len(r.ps) : n+len(r.ps)]
			n += len(r.ps)
		}
	}
	a.indexAppended(all, idx)
	finish(nil)
}

// storageRecords encodes the metas of a batch for the drives (storage
// takes a nil body as empty).
func storageRecords(ps []pending) ([]storage.Record, error) {
	recs := make([]storage.Record, len(ps))
	for i, p := range ps {
		mb, err := catalog.EncodeMeta(p.meta)
		if err != nil {
			return nil, err
		}
		recs[i] = storage.Record{Type: p.typ, Meta: mb, Body: p.body}
	}
	return recs, nil
}

// lockAppend takes appendMu, telling a run of commitEach that a caller
// waits for it.
func (a *Appliance) lockAppend() {
	a.appendWaiting.Add(1)
	a.appendMu.Lock()
	a.appendWaiting.Add(-1)
}

// indexAppended indexes records just appended, and the checkpoint storage
// appended right after them (so the catalog's watermark keeps up). The
// caller holds appendMu.
func (a *Appliance) indexAppended(ps []pending, idx []uint64) {
	var cr []catalog.Record
	for i, p := range ps {
		if p.meta.Kind == catalog.KindEscrow {
			a.mu.Lock()
			if a.escrowIdx != nil {
				a.escrowIdx[p.meta.UserID] = idx[i]
			}
			a.mu.Unlock()
		}
		cr = append(cr, catalog.Record{Index: idx[i], Meta: p.meta})
	}
	cr = append(cr, catalog.Record{Index: idx[len(idx)-1] + 1, Meta: catalog.Meta{Kind: catalog.KindCheckpoint}})
	if err := a.cat.IndexBatch(cr); err != nil {
		// The records are durable; the catalog catches up at the next start.
		a.Log.Error("catalog: indexing stored records failed; they will be indexed at the next start", "record", idx[0], "err", err)
	}
}

// commitEach appends a run of batches as commitBatch appends one (without
// grouping), writing each while the one before it is synced (see
// storage.Vault.AppendEach): next gives each batch (io.EOF: no more), done
// is told each batch's indexes, in order, once it is durable and indexed.
// When another caller waits for the drives, the run pauses after the batch
// in flight and lets it in. An error ends the run; batches done are
// durable, the others were not acknowledged.
func (a *Appliance) commitEach(ctx context.Context, next func() ([]pending, error), done func(idx []uint64) error) error {
	for {
		var queue [][]pending // given to storage, not yet done
		paused := false
		nextRecs := func() ([]storage.Record, error) {
			if len(queue) > 0 && a.appendWaiting.Load() > 0 {
				paused = true
				return nil, io.EOF
			}
			ps, err := next()
			if err != nil {
				return nil, err
			}
			recs, err := storageRecords(ps)
			if err != nil {
				return nil, err
			}
			queue = append(queue, ps)
			return recs, nil
		}
		landed := func(idx []uint64) error {
			ps := queue[0]
			queue = queue[1:]
			a.indexAppended(ps, idx)
			return done(idx)
		}
		a.appendMu.Lock()
		err := a.vault.AppendEach(ctx, nextRecs, landed)
		a.appendMu.Unlock()
		if err != nil || !paused {
			return err
		}
	}
}

func (a *Appliance) receiptPath(uploadID string) string {
	return filepath.Join(a.State, receiptsDir, uploadID+".tlog-proof")
}

// issueReceipt proves the record against the latest checkpoint and writes
// the receipt to the receipts directory.
func (a *Appliance) issueReceipt(res *IngestResult) error {
	rc, err := a.Receipt(res.Index)
	if err != nil {
		return err
	}
	rc.Extra.UploadID, rc.Extra.UserID, rc.Extra.ItemID, rc.Extra.Version = res.UploadID, res.UserID, res.ItemID, res.Version
	b, err := rc.Marshal()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(a.State, receiptsDir), 0o700); err != nil {
		return err
	}
	res.ReceiptPath = a.receiptPath(res.UploadID)
	res.Receipt = b
	// No fsync: the upload is already durable on the drives, and a receipt
	// lost in a crash is issued again when the upload is re-fed (replay).
	tmp := res.ReceiptPath + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, res.ReceiptPath)
}

// Receipt builds the inclusion proof of record idx against the latest
// checkpoint.
func (a *Appliance) Receipt(idx uint64) (*receipt.Receipt, error) {
	cp := a.vault.Checkpoint()
	c, err := storage.OpenCheckpoint(cp, a.verifier, a.ID.Origin)
	if err != nil {
		return nil, err
	}
	proof, err := a.vault.InclusionProof(idx, c.Size)
	if err != nil {
		return nil, err
	}
	leaf, err := a.vault.LeafHash(idx)
	if err != nil {
		return nil, err
	}
	return &receipt.Receipt{Extra: receipt.Extra{Leaf: leaf}, Index: int64(idx), Proof: proof, Checkpoint: cp}, nil
}

// SealEnvelope is the online side in one call: the user's client seals the
// item to the ingest key, the courier binds it with its signature, and the
// envelope is written to path. The sealed part is buffered in a temporary
// file on the online machine (never on the appliance).
func SealEnvelope(path string, ingest, courier *openpgp.Entity, m envelope.Manifest, uploadID string, content io.Reader) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".sealed-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := envelope.SealItem(tmp, ingest, m, content); err != nil {
		return err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := envelope.Bind(out, courier, m.UserID, uploadID, tmp); err != nil {
		out.Close()
		os.Remove(path)
		return err
	}
	return out.Close()
}

// algorithmList names what protects an object, for re-encapsulation plans.
func algorithmList(a bailiff.Algorithms) []string {
	var out []string
	for _, s := range []string{a.Key, a.PKESK, a.Data} {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
