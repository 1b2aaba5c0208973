// Package appliance wires Coffre together: configuration, start-up (self-
// tests, keystore, drives, catalog recovery), the upload pipeline (envelope
// open → escrow re-encryption → replicated append → catalog → receipt), the
// ceremonies and restitution under a bailiff quorum, the local control socket
// and the demo. The cmd/ mains are thin shells over this package.
package appliance

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"golang.org/x/mod/sumdb/note"

	"coffre/bailiff"
	"coffre/firmware"
	"coffre/hsm"
	"coffre/ingest/envelope"
	"coffre/storage"
	"coffre/storage/catalog"
)

// Appliance is an open vault: keys unsealed, drives and catalog open.
type Appliance struct {
	State string
	ID    *Identity
	Log   *slog.Logger

	ks       hsm.Keystore
	vault    *storage.Vault
	cat      *catalog.Catalog
	ingest   openpgp.EntityList
	couriers openpgp.EntityList
	verifier note.Verifier

	mu      sync.Mutex // guards escrow and roster below
	escrows map[string]*bailiff.Escrow
	roster  *bailiff.Roster
	// rosters holds the rosters read off the drives, by digest (records
	// never change): see rosterByDigest.
	rosters map[[32]byte]rosterAt
	userMu  map[string]*sync.Mutex

	escrowIdx map[string]uint64 // user → live escrow record (guarded by mu)
	checkPQ   checkPQ           // see checkEscrowPQ (guarded by mu)

	secrets     map[string][]byte // the keys, unsealed once at open; wiped at Close
	quorum      int
	measurement *firmware.Measurement

	// appendMu serialises appends to the drives; groupQueue holds batches
	// waiting to be written together (group commit, see commitBatch).
	// appendWaiting counts callers of commitBatch waiting for appendMu, so
	// a long run of batches (commitEach) lets them in.
	appendMu      sync.Mutex
	appendWaiting atomic.Int32
	groupMu       sync.Mutex
	groupQueue    []*commitReq

	inflightMu sync.Mutex
	inflight   map[string]bool // upload ids being stored
}

// OpenOptions are what Open needs besides the state directory.
type OpenOptions struct {
	Keystore hsm.Config // Dir defaults to STATE/keystore
	// Drives are the paths to look at; empty means the paths remembered in
	// vault.json.
	Drives      []string
	WriteQuorum int
	Log         *slog.Logger
	// NoDrives opens keys and catalog only (for commands that need no drive).
	NoDrives bool
	// NoCatalog opens keys (and drives) without the catalog (rebuild).
	NoCatalog bool
	// Measure is what a TPM keystore measures before unsealing (default:
	// the running executable and the config file; see firmware.Measure).
	Measure []firmware.Input
}

// Open starts an appliance: known-answer self-tests (fail closed), keystore,
// keys, drives (recognised by superblock uuid; torn tails recovered), the
// catalog (caught up with the drives after a crash) and the pinned courier
// keys.
func Open(state string, o OpenOptions) (*Appliance, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	ph := newPhases()
	if err := hsm.SelfTest(); err != nil {
		return nil, fmt.Errorf("appliance: self-test failed, refusing to start: %w", err)
	}
	ph.done("self_tests")
	id, err := LoadIdentity(state)
	if err != nil {
		return nil, err
	}
	cfg := o.Keystore
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(state, keystoreDir)
	}
	ks, err := hsm.Open(cfg)
	if err != nil {
		return nil, fmt.Errorf("appliance: keystore: %w", err)
	}
	a := &Appliance{State: state, ID: id, Log: o.Log, ks: ks, escrows: map[string]*bailiff.Escrow{}, userMu: map[string]*sync.Mutex{}}
	ok := false
	defer func() {
		if !ok {
			a.Close()
		}
	}()
	if a.verifier, err = note.NewVerifier(id.AuditKey); err != nil {
		return nil, fmt.Errorf("appliance: audit key in vault.json: %w", err)
	}
	// Measure what runs before anything is unsealed (the TPM binds the keys
	// to the measurement), unseal every key the appliance needs into
	// memory, then cap the PCR so nothing else can unseal them this boot.
	if _, ok := ks.(hsm.Measured); ok {
		inputs := o.Measure
		if inputs == nil {
			exe, err := os.Executable()
			if err != nil {
				return nil, err
			}
			inputs = []firmware.Input{{Name: "coffred", Path: exe}}
		}
		if a.measurement, err = firmware.Measure(ks, inputs); err != nil {
			return nil, fmt.Errorf("appliance: measuring the running software: %w", err)
		}
	}
	if err := a.unsealAll(); err != nil {
		return nil, err
	}
	ph.done("keystore")
	if m, ok := ks.(hsm.Measured); ok {
		if err := m.Cap(); err != nil {
			return nil, fmt.Errorf("appliance: capping the measurement PCR: %w", err)
		}
	}
	ingPriv := a.secrets[keyIngest]
	if err != nil {
		return nil, fmt.Errorf("appliance: unsealing the ingest key: %w", err)
	}
	a.ingest, err = envelope.ReadKeys(bytes.NewReader(ingPriv))
	if err != nil {
		return nil, fmt.Errorf("appliance: ingest key: %w", err)
	}
	if a.couriers, err = loadCouriers(filepath.Join(state, couriersDir)); err != nil {
		return nil, err
	}
	if !o.NoCatalog {
		a.cat, err = catalog.Open(filepath.Join(state, catalogDir), a.secrets[keyCatalog], o.Log)
		if err != nil {
			return nil, fmt.Errorf("appliance: catalog: %w (it can be rebuilt from any drive: coffre catalog rebuild --state %s)", err, state)
		}
		ph.done("catalog")
	}
	if o.NoDrives {
		ok = true
		return a, nil
	}
	paths := o.Drives
	if len(paths) == 0 {
		for _, d := range id.Drives {
			paths = append(paths, d.Path)
		}
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("appliance: no drives: format some with `coffre drive format --state %s --slot N PATH`", state)
	}
	quorum := o.WriteQuorum
	if quorum == 0 {
		quorum = id.WriteQuorum
	}
	a.quorum = quorum
	if a.vault, err = a.openVault(paths, quorum); err != nil {
		return nil, err
	}
	ph.done("drives")
	if a.cat != nil {
		if err := a.catchUp(); err != nil {
			return nil, err
		}
		if err := a.checkAnchor(); err != nil {
			return nil, err
		}
		ph.done("catch_up")
	}
	if err := a.rememberDrives(); err != nil {
		return nil, err
	}
	a.Log.Debug("appliance open", ph.attrs()...)
	ok = true
	return a, nil
}

// phases times the steps of start-up for the log.
type phases struct {
	last time.Time
	kv   []any
}

func newPhases() *phases { return &phases{last: time.Now()} }

func (p *phases) done(name string) {
	now := time.Now()
	p.kv = append(p.kv, name, now.Sub(p.last).Round(time.Microsecond).String())
	p.last = now
}

func (p *phases) attrs() []any { return p.kv }

func (a *Appliance) storageOptions(quorum int) (storage.Options, error) {
	signer, err := note.NewSigner(string(a.secrets[keyAudit]))
	if err != nil {
		return storage.Options{}, fmt.Errorf("appliance: audit key: %w", err)
	}
	return storage.Options{
		RecordKey:   a.recordKey,
		KeyEpoch:    a.currentEpoch(),
		Signer:      signer,
		Verifier:    a.verifier,
		Origin:      a.ID.Origin,
		WriteQuorum: quorum,
		Logger:      a.Log,
	}, nil
}

func (a *Appliance) openVault(paths []string, quorum int) (*storage.Vault, error) {
	opts, err := a.storageOptions(quorum)
	if err != nil {
		return nil, err
	}
	v, err := storage.Open(paths, opts)
	if err != nil {
		return nil, fmt.Errorf("appliance: drives: %w", err)
	}
	return v, nil
}

// recordKey returns the vault record key of an epoch from the keystore.
func (a *Appliance) recordKey(epoch uint32) ([]byte, error) {
	k, ok := a.secrets[recordKeyName(epoch)]
	if !ok {
		return nil, fmt.Errorf("appliance: no record key of epoch %d in the keystore", epoch)
	}
	return bytes.Clone(k), nil
}

// unsealAll reads the appliance's keys from the keystore into memory (with
// a TPM keystore this is possible once per boot, before the PCR is capped).
func (a *Appliance) unsealAll() error {
	names, err := a.ks.Names()
	if err != nil {
		return fmt.Errorf("appliance: keystore: %w", err)
	}
	a.secrets = map[string][]byte{}
	for _, n := range names {
		switch {
		case n == keyIngest, n == keyAudit, n == keyCatalog, n == keyWrap, n == keyRecord, strings.HasPrefix(n, keyRecord+"."):
		default:
			continue
		}
		v, err := a.ks.Unseal(n)
		if err != nil {
			return fmt.Errorf("appliance: unsealing %s: %w", n, err)
		}
		a.secrets[n] = v
	}
	for _, n := range []string{keyIngest, keyAudit, keyCatalog, keyWrap, keyRecord} {
		if _, ok := a.secrets[n]; !ok {
			return fmt.Errorf("appliance: the keystore lacks %s: was it made by `coffre init`?", n)
		}
	}
	return nil
}

// catchUp indexes the records the drives hold beyond the catalog's
// watermark: after a crash between an append and its indexing, the drives
// are the truth. Records are indexed in batches (one durable transaction
// each); indexing is idempotent, so a crash here is caught up next time.
func (a *Appliance) catchUp() error {
	from, err := a.cat.Watermark()
	if err != nil {
		return err
	}
	if from > a.vault.Size() {
		return fmt.Errorf("%w: the catalog has indexed %d records, the drives hold %d", ErrRolledBack, from, a.vault.Size())
	}
	if from == a.vault.Size() {
		return nil // up to date (a scan would first locate every older record)
	}
	n := 0
	batch := make([]catalog.Record, 0, catchUpBatch)
	flush := func() error {
		n += len(batch)
		err := a.cat.IndexBatch(batch)
		batch = batch[:0]
		return err
	}
	err = a.vault.Scan(from, func(h storage.Header, meta []byte) error {
		m := catalog.Meta{Kind: catalog.KindCheckpoint}
		if h.Type != storage.TypeCheckpoint {
			var err error
			if m, err = catalog.ParseMeta(meta); err != nil {
				return fmt.Errorf("appliance: record %d: meta: %w", h.Index, err)
			}
		}
		batch = append(batch, catalog.Record{Index: h.Index, Meta: m})
		if len(batch) == cap(batch) {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("appliance: catching the catalog up with the drives: %w", err)
	}
	if n > 0 {
		a.Log.Info("catalog caught up with the drives", "records", n, "from", from)
	}
	return nil
}

// catchUpBatch is how many records catchUp indexes per transaction.
const catchUpBatch = 1024

// rememberDrives records the drives' uuids and paths in vault.json.
func (a *Appliance) rememberDrives() error {
	seen := map[string]DriveRef{}
	for _, d := range a.ID.Drives {
		seen[d.UUID] = d
	}
	changed := false
	for _, d := range a.vault.Drives() {
		u := storage.UUIDString(d.UUID)
		ref := DriveRef{UUID: u, Slot: d.Slot, Path: d.Path}
		if seen[u] != ref && d.Path != "" {
			seen[u] = ref
			changed = true
		}
	}
	if !changed {
		return nil
	}
	a.ID.Drives = a.ID.Drives[:0]
	for _, d := range seen {
		a.ID.Drives = append(a.ID.Drives, d)
	}
	sort.Slice(a.ID.Drives, func(i, j int) bool { return a.ID.Drives[i].Slot < a.ID.Drives[j].Slot })
	return a.ID.Save(a.State)
}

// Close closes drives, catalog and keystore.
func (a *Appliance) Close() error {
	if a == nil {
		return nil
	}
	var errs []error
	if a.vault != nil {
		errs = append(errs, a.vault.Close())
	}
	if a.cat != nil {
		errs = append(errs, a.cat.Close())
	}
	if a.ks != nil {
		errs = append(errs, a.ks.Close())
	}
	for _, s := range a.secrets {
		clear(s)
	}
	a.vault, a.cat, a.ks, a.secrets = nil, nil, nil, nil
	return errors.Join(errs...)
}

// Vault gives the open drive store (nil when opened with NoDrives).
func (a *Appliance) Vault() *storage.Vault { return a.vault }

// Catalog gives the open catalog.
func (a *Appliance) Catalog() *catalog.Catalog { return a.cat }

// AuditVerifier is the checkpoint verifier key (the content of audit.pub).
func (a *Appliance) AuditVerifier() string { return a.ID.AuditKey }

func loadCouriers(dir string) (openpgp.EntityList, error) {
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("appliance: courier keys: %w", err)
	}
	var list openpgp.EntityList
	for _, e := range ents {
		if e.IsDir() || filepath.Ext(e.Name()) != ".asc" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		keys, err := envelope.ReadKeys(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("appliance: courier key %s: %w", e.Name(), err)
		}
		list = append(list, keys...)
	}
	return list, nil
}

// PinCourier adds a courier public key (armored) to the accepted couriers.
func PinCourier(state string, armored []byte) (string, error) {
	keys, err := envelope.ReadKeys(bytes.NewReader(armored))
	if err != nil {
		return "", fmt.Errorf("appliance: courier key: %w", err)
	}
	if len(keys) != 1 || keys[0].PrivateKey != nil {
		return "", errors.New("appliance: a courier key file must hold exactly one public key (no private key)")
	}
	fp := hex.EncodeToString(keys[0].PrimaryKey.Fingerprint)
	dir := filepath.Join(state, couriersDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	return fp, os.WriteFile(filepath.Join(dir, fp+".asc"), armored, 0o644)
}
