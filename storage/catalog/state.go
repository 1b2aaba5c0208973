package catalog

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Drive states (DESIGN.md, replication model).
const (
	DriveActive      = "active"
	DriveSyncing     = "syncing"
	DriveMissing     = "missing"
	DriveFailed      = "failed"
	DriveQuarantined = "quarantined"
	DriveRetired     = "retired"
)

var driveStates = map[string]bool{
	DriveActive: true, DriveSyncing: true, DriveMissing: true,
	DriveFailed: true, DriveQuarantined: true, DriveRetired: true,
}

// DriveState is what the appliance last knew of a drive. It is not derivable
// from the drives, so Rebuild carries it over from the old catalog.
type DriveState struct {
	State    string    `json:"state"` // one of the Drive* constants
	Slot     int       `json:"slot"`  // bay number, or -1 when not inserted
	LastSeen time.Time `json:"last_seen"`
	Note     string    `json:"note,omitempty"`
}

func (s DriveState) validate(uuid string) error {
	if uuid == "" || len(uuid) > MaxDriveIDLen || !allBytes(uuid, isIDByte) {
		return fmt.Errorf("catalog: bad drive uuid %q (1 to %d printable ASCII bytes)", truncate(uuid), MaxDriveIDLen)
	}
	if !driveStates[s.State] {
		return fmt.Errorf("catalog: drive %s: unknown state %q", uuid, truncate(s.State))
	}
	if s.Slot < -1 || s.Slot > 255 {
		return fmt.Errorf("catalog: drive %s: slot %d outside [-1, 255]", uuid, s.Slot)
	}
	if len(s.Note) > MaxDriveNoteLen {
		return fmt.Errorf("catalog: drive %s: note of %d bytes, more than %d", uuid, len(s.Note), MaxDriveNoteLen)
	}
	return nil
}

// SetDriveState records the state of the drive with the given uuid.
func (c *Catalog) SetDriveState(uuid string, s DriveState) error {
	if err := s.validate(uuid); err != nil {
		return err
	}
	s.LastSeen = s.LastSeen.UTC()
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("catalog: drive %s: %w", uuid, err)
	}
	err = c.update(func(txn *badger.Txn) error {
		return txn.Set(append([]byte{pDrive}, uuid...), b)
	})
	if err != nil {
		return c.wrap("drive "+uuid, err)
	}
	return nil
}

// DriveStates returns every drive's last recorded state, by uuid.
func (c *Catalog) DriveStates() (map[string]DriveState, error) {
	out := map[string]DriveState{}
	err := c.view(func(txn *badger.Txn) error {
		return scanValues(txn, []byte{pDrive}, func(rest, v []byte) error {
			var s DriveState
			if err := json.Unmarshal(v, &s); err != nil {
				return fmt.Errorf("drive %s: %w", rest, err)
			}
			if err := s.validate(string(rest)); err != nil {
				return err
			}
			out[string(rest)] = s
			return nil
		})
	})
	if err != nil {
		return nil, c.wrap("drive states", err)
	}
	return out, nil
}

func checkJobID(id string) error {
	if id == "" || len(id) > MaxJobIDLen || !allBytes(id, isIDByte) {
		return fmt.Errorf("catalog: bad job id %q (1 to %d printable ASCII bytes)", truncate(id), MaxJobIDLen)
	}
	return nil
}

// PutJob stores a job's state (opaque bytes, at most MaxJobStateSize),
// replacing any earlier state of that job. Job states must not hold
// secrets in the clear: badger's encryption is not authenticated.
func (c *Catalog) PutJob(id string, state []byte) error {
	if err := checkJobID(id); err != nil {
		return err
	}
	if len(state) > MaxJobStateSize {
		return fmt.Errorf("catalog: job %s: state of %d bytes, more than %d", id, len(state), MaxJobStateSize)
	}
	err := c.update(func(txn *badger.Txn) error {
		return txn.Set(append([]byte{pJob}, id...), append([]byte{}, state...))
	})
	if err != nil {
		return c.wrap("job "+id, err)
	}
	return nil
}

// Job returns a job's state and whether it exists.
func (c *Catalog) Job(id string) ([]byte, bool, error) {
	if err := checkJobID(id); err != nil {
		return nil, false, err
	}
	var v []byte
	err := c.view(func(txn *badger.Txn) error {
		it, err := txn.Get(append([]byte{pJob}, id...))
		if err != nil {
			return err
		}
		v, err = it.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, c.wrap("job "+id, err)
	}
	return v, true, nil
}

// DeleteJob removes a job's state; deleting a missing job is a no-op.
func (c *Catalog) DeleteJob(id string) error {
	if err := checkJobID(id); err != nil {
		return err
	}
	err := c.update(func(txn *badger.Txn) error {
		return txn.Delete(append([]byte{pJob}, id...))
	})
	if err != nil {
		return c.wrap("job "+id, err)
	}
	return nil
}

// Jobs returns every job's state, by id.
func (c *Catalog) Jobs() (map[string][]byte, error) {
	out := map[string][]byte{}
	err := c.view(func(txn *badger.Txn) error {
		return scanValues(txn, []byte{pJob}, func(rest, v []byte) error {
			out[string(rest)] = v
			return nil
		})
	})
	if err != nil {
		return nil, c.wrap("jobs", err)
	}
	return out, nil
}

// scanValues calls fn with the rest of every key under prefix and a copy
// of its value.
func scanValues(txn *badger.Txn, prefix []byte, fn func(rest, v []byte) error) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
	defer it.Close()
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		if err := fn(append([]byte{}, item.Key()[len(prefix):]...), v); err != nil {
			return err
		}
	}
	return nil
}
