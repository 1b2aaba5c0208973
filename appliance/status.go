package appliance

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"

	"coffre/storage"
	"coffre/storage/catalog"
)

// Status is what the operator's console shows (`coffre status`).
type Status struct {
	Vault      string        `json:"vault"`
	Origin     string        `json:"origin"`
	Keystore   string        `json:"keystore"`
	Records    uint64        `json:"records"`
	Quorum     int           `json:"write_quorum"`
	Drives     []DriveReport `json:"drives"`
	Inflight   []Inflight    `json:"inflight,omitempty"`
	LastErrors []Event       `json:"last_errors,omitempty"`
	Stored     int           `json:"stored"`
	Replays    int           `json:"replays"`
	Rejected   int           `json:"rejected"`
	Daemon     bool          `json:"daemon"`
	Time       time.Time     `json:"time"`
}

// DriveReport is one drive's line on the console.
type DriveReport struct {
	UUID       string `json:"uuid"`
	Slot       int    `json:"slot"`
	Path       string `json:"path"`
	State      string `json:"state"`
	Size       int64  `json:"size"`
	Used       int64  `json:"used"`
	Records    uint64 `json:"records"`
	Lag        uint64 `json:"lag"`
	Checkpoint uint64 `json:"checkpoint"`
	Error      string `json:"error,omitempty"`
	Advice     string `json:"advice,omitempty"`
}

// Status reports the vault's state (without the daemon's in-flight view).
func (a *Appliance) Status() Status {
	s := Status{Vault: a.ID.VaultID, Origin: a.ID.Origin, Keystore: a.ks.Backend(), Quorum: a.ID.WriteQuorum, Time: time.Now().UTC()}
	if a.vault == nil {
		return s
	}
	s.Records = a.vault.Size()
	for _, d := range a.vault.Drives() {
		r := DriveReport{
			UUID: storage.UUIDString(d.UUID), Slot: d.Slot, Path: d.Path, State: string(d.State),
			Size: d.Size, Used: d.Used, Records: d.Records, Lag: d.Lag, Error: d.Reason,
		}
		if c, err := storage.OpenCheckpoint(d.LastCheckpoint, a.verifier, a.ID.Origin); err == nil {
			r.Checkpoint = c.Size
		}
		r.Advice = driveAdvice(r.State, r.UUID)
		s.Drives = append(s.Drives, r)
	}
	sort.Slice(s.Drives, func(i, j int) bool { return s.Drives[i].Slot < s.Drives[j].Slot })
	return s
}

func driveAdvice(state, uuid string) string {
	switch state {
	case "failed":
		return "replace the drive, then `coffre drive add` a new one; the others hold every record"
	case "missing":
		return "plug the drive back in (offsite rotation?); it catches up by itself"
	case "quarantined":
		return fmt.Sprintf("the drive disagrees with the signed log: run `coffre audit` on it, then `coffre drive sync %s` or retire it", uuid)
	case "syncing":
		return "catching up; it counts for the quorum once verified"
	}
	return ""
}

func (d *Daemon) status() Status {
	s := d.a.Status()
	s.Daemon = true
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range d.inflight {
		s.Inflight = append(s.Inflight, *f)
	}
	sort.Slice(s.Inflight, func(i, j int) bool { return s.Inflight[i].Started.Before(s.Inflight[j].Started) })
	s.LastErrors = append(s.LastErrors, d.lastErrs...)
	s.Stored, s.Replays, s.Rejected = d.stored, d.replays, d.rejected
	return s
}

type uuidArgs struct {
	UUID string `json:"uuid"`
}
type pathArgs struct {
	Path string `json:"path"`
}

func (d *Daemon) handlers() map[string]HandlerFunc {
	return map[string]HandlerFunc{
		"status": func(ctx context.Context, _ json.RawMessage) (any, error) { return d.status(), nil },
		"drive-retire": func(ctx context.Context, raw json.RawMessage) (any, error) {
			var a uuidArgs
			if err := json.Unmarshal(raw, &a); err != nil {
				return nil, err
			}
			return nil, d.a.RetireDrive(a.UUID)
		},
		"drive-add": func(ctx context.Context, raw json.RawMessage) (any, error) {
			var a pathArgs
			if err := json.Unmarshal(raw, &a); err != nil {
				return nil, err
			}
			return nil, d.a.AddDrive(a.Path, nil)
		},
		"drive-sync": func(ctx context.Context, raw json.RawMessage) (any, error) {
			var a uuidArgs
			if err := json.Unmarshal(raw, &a); err != nil {
				return nil, err
			}
			return nil, d.a.SyncDrive(ctx, a.UUID, nil)
		},
		"ingest": func(ctx context.Context, raw json.RawMessage) (any, error) {
			var a pathArgs
			if err := json.Unmarshal(raw, &a); err != nil {
				return nil, err
			}
			d.ingestBundle(ctx, a.Path)
			return d.status(), nil
		},
	}
}

// RetireDrive takes a drive out of the vault (offsite rotation or end of
// life). The act is a record on the remaining drives.
func (a *Appliance) RetireDrive(uuid string) error {
	u, err := storage.ParseUUID(uuid)
	if err != nil {
		return err
	}
	slot := a.driveSlot(u)
	if err := a.vault.Retire(u); err != nil {
		return err
	}
	return a.driveEvent("retire", u, slot)
}

// AddDrive adds a drive (new, or returning from offsite) and lets it catch
// up. The act is a record on every drive, the new one included.
func (a *Appliance) AddDrive(path string, progress func(done, total uint64)) error {
	if err := a.vault.AddDrive(path, progress); err != nil {
		return err
	}
	if err := a.rememberDrives(); err != nil {
		return err
	}
	for _, d := range a.vault.Drives() {
		if d.Path == path {
			return a.driveEvent("add", d.UUID, d.Slot)
		}
	}
	return nil
}

// SyncDrive catches a lagging drive up from a healthy replica; the
// completed catch-up is a record on the drives.
func (a *Appliance) SyncDrive(ctx context.Context, uuid string, progress func(done, total uint64)) error {
	u, err := storage.ParseUUID(uuid)
	if err != nil {
		return err
	}
	if err := a.vault.Sync(ctx, u, progress); err != nil {
		return err
	}
	return a.driveEvent("sync", u, a.driveSlot(u))
}

// Drive-event record attributes (see docs/formats/catalog-meta.md).
const (
	driveEventAttr = "drive_event" // add | retire | sync
	driveUUIDAttr  = "drive_uuid"
	driveSlotAttr  = "drive_slot"
)

func (a *Appliance) driveSlot(u [16]byte) int {
	for _, d := range a.vault.Drives() {
		if d.UUID == u {
			return d.Slot
		}
	}
	return 0
}

// driveEvent appends the record of an operator's act on a drive, so that
// an auditor reading any replica sees when each drive joined, left and
// caught up.
func (a *Appliance) driveEvent(what string, u [16]byte, slot int) error {
	_, err := a.commit(context.Background(), storage.TypeDriveEvent, catalog.Meta{Kind: catalog.KindDriveEvent, Attrs: map[string]string{
		driveEventAttr: what, driveUUIDAttr: storage.UUIDString(u), driveSlotAttr: strconv.Itoa(slot),
		"at": time.Now().UTC().Format(time.RFC3339),
	}}, nil)
	if err != nil {
		return fmt.Errorf("appliance: drive %s %s done, but its record could not be written: %w", storage.UUIDString(u), what, err)
	}
	a.Log.Info("drive event", "event", what, "drive", storage.UUIDString(u), "slot", slot)
	return nil
}

// DriveEvents lists the drive-event records (adds, retirements, syncs and
// anchors) in log order.
func (a *Appliance) DriveEvents() ([]catalog.Entry, error) {
	return a.cat.ByKind(catalog.KindDriveEvent)
}
