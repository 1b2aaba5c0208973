package appliance

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
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
	err := a.vault.Scan(0, func(h storage.Header, _ []byte) error {
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

// Rekey runs (or resumes) the record-layer rekey: records under an epoch
// older than the newest are re-encrypted under it. With newEpoch true it
// first creates a fresh record key epoch.
func (a *Appliance) Rekey(ctx context.Context, newEpoch bool, max int, progress func(done, total int)) (*RekeyJob, error) {
	if newEpoch {
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
	err := a.vault.Scan(0, func(h storage.Header, _ []byte) error {
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
			bytes += h.RecordLen()
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
			job.Total, job.Done, job.Started = prev.Done+len(todo), prev.Done, prev.Started
		}
	}
	a.putJob(job)
	a.Log.Info("record-layer rekey", "epoch", epoch, "records", len(todo), "bytes", bytes)
	sort.Slice(todo, func(i, j int) bool { return todo[i] < todo[j] })
	if max >= 0 && len(todo) > max {
		todo = todo[:max] // a bounded maintenance window; the rest resumes later
	}
	for _, idx := range todo {
		if err := ctx.Err(); err != nil {
			return job, err
		}
		if err := a.rekeyRecord(ctx, idx); err != nil {
			return job, err
		}
		job.Done++
		if job.Done < job.Total {
			crashpoint.Hit("reencap.batch")
		}
		a.putJob(job)
		if progress != nil {
			progress(job.Done, job.Total)
		}
	}
	if job.Done >= job.Total {
		job.Status = "done"
	}
	a.putJob(job)
	return job, nil
}

// rekeyRecord appends a copy of record idx under the current epoch that
// supersedes it.
func (a *Appliance) rekeyRecord(ctx context.Context, idx uint64) error {
	h, mb, body, err := a.vault.Get(idx)
	if err != nil {
		return fmt.Errorf("appliance: rekey: reading record %d: %w", idx, err)
	}
	defer body.Close()
	m, err := catalog.ParseMeta(mb)
	if err != nil {
		return fmt.Errorf("appliance: rekey: record %d meta: %w", idx, err)
	}
	m.Supersedes = idx
	_, err = a.commit(ctx, h.Type, m, body)
	if err != nil {
		return fmt.Errorf("appliance: rekey: record %d: %w", idx, err)
	}
	return nil
}

func (a *Appliance) putJob(j *RekeyJob) {
	b, _ := json.Marshal(j)
	if err := a.cat.PutJob(rekeyJobID, b); err != nil {
		a.Log.Warn("rekey: saving job state", "err", err)
	}
}

// RekeyStatus returns the rekey job's state, if any.
func (a *Appliance) RekeyStatus() (*RekeyJob, bool, error) {
	b, ok, err := a.cat.Job(rekeyJobID)
	if err != nil || !ok {
		return nil, ok, err
	}
	var j RekeyJob
	return &j, true, json.Unmarshal(b, &j)
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
