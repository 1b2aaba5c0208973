package appliance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"coffre/firmware"
	"coffre/hsm"
	"coffre/ingest/qr"
)

// Daemon is a running coffred: an open appliance, its sources and its
// control socket.
type Daemon struct {
	a   *Appliance
	cfg *Config
	log *slog.Logger

	sem   chan struct{}  // bounds the uploads in flight
	wg    sync.WaitGroup // uploads in flight
	srcWG sync.WaitGroup // cameras and recordings being decoded

	mu       sync.Mutex
	seen     map[string]string // source file → fingerprint already processed
	qrDirs   map[string]*qr.DirWatcher
	inflight map[string]*Inflight
	lastErrs []Event
	stored   int
	replays  int
	rejected int
}

// Inflight is an upload (or a QR transfer filling up) in progress.
type Inflight struct {
	Source  string    `json:"source"`
	What    string    `json:"what"`
	Percent float64   `json:"percent"`
	Started time.Time `json:"started"`
}

// Event is a notable outcome shown on the console.
type Event struct {
	Time   time.Time `json:"time"`
	Source string    `json:"source"`
	Error  string    `json:"error"`
	Advice string    `json:"advice,omitempty"`
}

// RunDaemon runs coffred until ctx is cancelled: self-tests, keys, drives,
// catalog recovery, then the sources and the control socket. On
// cancellation it stops taking new uploads, lets those in flight finish, and
// closes everything.
func RunDaemon(ctx context.Context, cfg *Config, logOut io.Writer) error {
	log := newLogger(logOut, cfg.LogLevel)
	if os.Getenv("GOMEMLIMIT") == "" {
		// A soft limit keeps the catalog's compactions and large uploads
		// from growing the heap on a small appliance (see the catalog's
		// measurements in docs/operator.md).
		debug.SetMemoryLimit(384 << 20)
	}
	pass, err := readPassphrase(cfg.Keystore.PassphraseFile)
	if err != nil {
		return err
	}
	measure, err := firmware.RunningInputs(cfg.Path)
	if err != nil {
		return err
	}
	a, err := Open(cfg.State, OpenOptions{
		Measure:     measure,
		Keystore:    hsm.Config{Backend: cfg.Keystore.Backend, Passphrase: pass, Production: cfg.Production, TPM: hsm.TPMOptions{Device: cfg.Keystore.Device}},
		Drives:      cfg.Drives,
		WriteQuorum: cfg.WriteQuorum,
		Log:         log,
	})
	clear(pass)
	if err != nil {
		return err
	}
	defer a.Close()
	reserveDriveProcs(len(a.vault.Drives()))
	workers := cfg.Workers
	if workers == 0 {
		workers = runtime.NumCPU()
	}
	d := &Daemon{a: a, cfg: cfg, log: log, sem: make(chan struct{}, workers),
		seen: map[string]string{}, qrDirs: map[string]*qr.DirWatcher{}, inflight: map[string]*Inflight{}}
	ctl, err := ListenControl(cfg.Socket, d.handlers(), log)
	if err != nil {
		return err
	}
	ctlDone := make(chan struct{})
	go func() { ctl.Serve(ctx); close(ctlDone) }()
	if err := a.Anchor(ctx); err != nil {
		return err
	}
	// The roster is read (and its signatures checked) in the background:
	// on a large vault, reading an old record first locates every record
	// before it, which must not hold up start-up. So is the check escrow's
	// kind, which a new user's first upload needs (checkEscrowPQ): read
	// later, it would wait for the drives behind another upload's append.
	var warm sync.WaitGroup
	defer warm.Wait() // before a.Close
	warm.Add(1)
	go func() {
		defer warm.Done()
		if _, err := a.Roster(); err != nil && !errors.Is(err, ErrNoRoster) {
			d.event("roster", err, "the roster on the drives does not verify: audit the drives before storing anything")
		}
		a.checkEscrowPQ() // an error here is reported by the upload that needs it
	}()
	log.Info("coffred ready", "vault", a.ID.VaultID, "drives", len(a.vault.Drives()), "records", a.vault.Size(), "socket", cfg.Socket, "workers", workers, "procs", runtime.GOMAXPROCS(0))

	for _, cam := range cfg.Sources.Cameras {
		d.srcWG.Add(1)
		go d.runCamera(ctx, cam)
	}
	tick := time.NewTicker(cfg.Sources.Poll.Duration)
	defer tick.Stop()
	arrived := watchSpools(ctx, cfg.Sources.USBDirs, log)
	for {
		d.pollOnce(ctx)
		select {
		case <-arrived:
		case <-ctx.Done():
			log.Info("coffred stopping: finishing the uploads in flight")
			d.srcWG.Wait() // no source dispatches after this
			d.wg.Wait()
			<-ctlDone
			if err := a.Anchor(context.WithoutCancel(ctx)); err != nil {
				log.Error("anchor at shutdown", "err", err)
			}
			log.Info("coffred stopped", "stored", d.stored, "replays", d.replays, "rejected", d.rejected)
			return nil
		case <-tick.C:
		}
	}
}

// reserveDriveProcs gives the Go scheduler one P per drive on top of one
// per core. A drive write (O_DIRECT pwrite, fdatasync) blocks in the kernel
// holding its P, and the runtime takes a P back from a blocked syscall only
// when its monitor next looks, which is up to 10 ms later once it has backed
// off: with as many Ps as cores, the four drives' writes of one upload left
// both cores idle several times per 10 MiB upload while the re-encryption
// waited to be scheduled (seen in execution traces). The writers block
// rather than compute, so the extra Ps do not oversubscribe the cores.
// GOMAXPROCS in the environment wins.
func reserveDriveProcs(drives int) {
	if os.Getenv("GOMAXPROCS") != "" || drives <= 0 {
		return
	}
	if n := defaultProcs() + drives; n > runtime.GOMAXPROCS(0) {
		runtime.GOMAXPROCS(n)
	}
}

// defaultProcs is the runtime's own GOMAXPROCS (CPUs, or the container's
// CPU limit), read before reserveDriveProcs changes it.
var defaultProcs = sync.OnceValue(func() int { return runtime.GOMAXPROCS(0) })

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

func readPassphrase(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("appliance: passphrase file: %w", err)
	}
	return bytes.TrimRight(b, "\r\n"), nil
}

// pollOnce looks at every source once.
func (d *Daemon) pollOnce(ctx context.Context) {
	for _, dir := range d.cfg.Sources.QRDirs {
		d.pollQR(ctx, dir)
		d.pollQRVideos(ctx, dir)
	}
	for _, dir := range d.cfg.Sources.USBDirs {
		d.pollUSBDir(ctx, dir)
	}
	for _, dev := range d.cfg.Sources.USBDevices {
		d.pollUSBDevice(ctx, dev)
	}
}

// fresh reports whether a source file is new or changed since it was last
// processed, and marks it.
func (d *Daemon) fresh(path string, fi os.FileInfo) bool {
	fp := fmt.Sprintf("%d/%d", fi.Size(), fi.ModTime().UnixNano())
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seen[path] == fp {
		return false
	}
	d.seen[path] = fp
	return true
}

func (d *Daemon) pollQR(ctx context.Context, dir string) {
	d.mu.Lock()
	w := d.qrDirs[dir]
	if w == nil {
		w = qr.NewDirWatcher(dir, qr.NewDecoder(qr.Limits{}))
		d.qrDirs[dir] = w
	}
	d.mu.Unlock()
	msgs, err := w.Poll(func(p qr.Progress) {
		key := "qr:" + p.Transfer.String()
		if p.Done {
			d.clearInflight(key)
			return
		}
		d.setInflight(key, &Inflight{Source: dir, What: "QR transfer " + p.Transfer.String(), Percent: p.Percent})
	})
	if err != nil {
		d.event(dir, err, "check that the camera spool directory exists")
		return
	}
	for _, m := range msgs {
		data := m.Data
		d.dispatch(ctx, "qr "+dir+" transfer "+m.Transfer.String(), func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		})
	}
}

func (d *Daemon) pollUSBDir(ctx context.Context, dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		d.event(dir, err, "check that the USB spool directory exists")
		return
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		fi, err := os.Stat(p)
		if err != nil || strings.HasPrefix(e.Name(), ".") || !d.fresh(p, fi) {
			continue
		}
		d.ingestBundle(ctx, p)
	}
}

func (d *Daemon) pollUSBDevice(ctx context.Context, dev string) {
	fi, err := os.Stat(dev)
	if err != nil {
		return // no stick plugged in
	}
	if d.fresh(dev, fi) {
		d.ingestBundle(ctx, dev)
	}
}

// ingestBundle reads a USB bundle (in a limited child process for images and
// devices; one child streams the whole bundle) and ingests each envelope.
func (d *Daemon) ingestBundle(ctx context.Context, path string) {
	d.setInflight("usb:"+path, &Inflight{Source: path, What: "USB bundle"})
	defer d.clearInflight("usb:" + path)
	outs, err := d.a.IngestBundle(context.WithoutCancel(ctx), path)
	if err != nil && len(outs) == 0 {
		d.event(path, err, "the stick or image was refused; nothing was stored from it")
		return
	}
	for _, o := range outs {
		d.account(o.Source, o.Result, errorOf(o.Error))
	}
	if err != nil {
		d.event(path, err, "the rest of the bundle was not read; plug it again once the cause is fixed")
	}
}

func errorOf(s string) error {
	if s == "" {
		return nil
	}
	return errors.New(s)
}

// dispatch runs one upload on a worker.
func (d *Daemon) dispatch(ctx context.Context, source string, open func() (io.ReadCloser, error)) {
	if ctx.Err() != nil {
		return // stopping: an upload rebuilt now is taken again at the next start
	}
	select {
	case d.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	d.wg.Add(1)
	go func() {
		defer func() { <-d.sem; d.wg.Done() }()
		d.setInflight(source, &Inflight{Source: source, What: "storing"})
		defer d.clearInflight(source)
		rc, err := open()
		if err != nil {
			d.reject(source, err)
			return
		}
		defer rc.Close()
		// A cancelled daemon still finishes this upload: the append is
		// short and abandoning it halfway is what the drive format avoids.
		res, err := d.a.Ingest(context.WithoutCancel(ctx), rc)
		d.account(source, res, err)
	}()
}

// account counts an upload's outcome for the console.
func (d *Daemon) account(source string, res *IngestResult, err error) {
	if err != nil {
		d.reject(source, err)
		return
	}
	d.mu.Lock()
	if res.Replay {
		d.replays++
	} else {
		d.stored++
	}
	anchor := !res.Replay && d.stored%anchorEvery == 0
	d.mu.Unlock()
	if anchor {
		if err := d.a.Anchor(context.Background()); err != nil {
			d.log.Error("anchor", "err", err)
		}
	}
	if res.Replay {
		d.log.Info("upload already stored (replay)", "source", source, "upload", res.UploadID, "record", res.Index)
	}
}

func (d *Daemon) reject(source string, err error) {
	d.mu.Lock()
	d.rejected++
	d.mu.Unlock()
	d.log.Warn("upload rejected", "source", source, "err", err)
	d.remember(source, err, adviceFor(err))
}

// event reports a problem with a source (a camera, a spool, a stick) that
// is not the rejection of one upload.
func (d *Daemon) event(source string, err error, advice string) {
	d.log.Warn("source problem", "source", source, "err", err)
	d.remember(source, err, advice)
}

// remember keeps the last errors for the console.
func (d *Daemon) remember(source string, err error, advice string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lastErrs = append(d.lastErrs, Event{Time: time.Now().UTC(), Source: source, Error: err.Error(), Advice: advice})
	if len(d.lastErrs) > 20 {
		d.lastErrs = d.lastErrs[len(d.lastErrs)-20:]
	}
}

func adviceFor(err error) string {
	switch {
	case errors.Is(err, ErrNoRoster):
		return "hold the genesis ceremony: coffre ceremony genesis"
	case errors.Is(err, ErrVersionExists):
		return "the user must upload a new version number"
	}
	return "nothing was stored from this upload; ask the courier to resend it"
}

func (d *Daemon) setInflight(k string, f *Inflight) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if old := d.inflight[k]; old != nil {
		f.Started = old.Started
	} else {
		f.Started = time.Now().UTC()
	}
	d.inflight[k] = f
}

func (d *Daemon) clearInflight(k string) {
	d.mu.Lock()
	delete(d.inflight, k)
	d.mu.Unlock()
}
