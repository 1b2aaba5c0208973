package appliance

import (
	"fmt"
	"path/filepath"
	"runtime/debug"

	"coffre/storage"
	"coffre/storage/catalog"

	"golang.org/x/sys/unix"
)

// RebuildCatalog recreates the catalog from one drive replica (any drive of
// the vault, read-only) and returns the new catalog's digest. Drive and job
// states are carried over from the old catalog when it is readable.
//
// The rebuild's live memory is mostly pointer-free buffers (the catalog's
// sort buffer, badger's table builders), cheap for the collector to mark,
// while indexing makes much short-lived garbage: collecting at 50% growth
// instead of 100% takes about a fifth off its peak resident memory for a
// few percent more CPU. (This sets a process-wide knob: RebuildCatalog
// runs in the one-shot `coffre catalog rebuild`, not inside coffred.)
func RebuildCatalog(state string, o OpenOptions, drive string) ([32]byte, int, error) {
	defer debug.SetGCPercent(debug.SetGCPercent(rebuildGCPercent))
	// The catalog itself may be what is broken: open without it.
	o.NoDrives, o.NoCatalog = true, true
	a, err := Open(state, o)
	if err != nil {
		return [32]byte{}, 0, err
	}
	defer a.Close()
	key := a.secrets[keyCatalog]
	n := 0
	cpMeta, err := catalog.EncodeMeta(catalog.Meta{Kind: catalog.KindCheckpoint})
	if err != nil {
		return [32]byte{}, 0, err
	}
	scan := func(fn func(idx uint64, meta []byte) error) error {
		n = 0 // Rebuild scans again from the start when it must
		return storage.ScanDrive(drive, a.recordKey, func(h storage.Header, meta []byte) error {
			n++
			if h.Type == storage.TypeCheckpoint {
				// Checkpoints carry no meta; the live catalog indexes them
				// as such, and so does the rebuild.
				return fn(h.Index, cpMeta)
			}
			return fn(h.Index, meta)
		})
	}
	if err := checkRebuildSpace(state, drive); err != nil {
		return [32]byte{}, 0, err
	}
	c, d, err := catalog.Rebuild(filepath.Join(state, catalogDir), key, scan, a.Log)
	if err != nil {
		return [32]byte{}, 0, err
	}
	return d, n, c.Close()
}

// rebuildBytesPerRecord bounds the disk a rebuilt catalog and its spill
// files take per record (measured: ~300 bytes of tables per record at 1M
// records, spill files at most as much again).
const rebuildBytesPerRecord = 1024

// checkRebuildSpace refuses a rebuild the state directory's filesystem has
// no room for: badger's bulk loader cannot report a full disk as an error
// (it panics in its own goroutine), so the room is checked first.
func checkRebuildSpace(state, drive string) error {
	info, err := storage.ReadDriveInfo(drive)
	if err != nil {
		return err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(state, &st); err != nil {
		return fmt.Errorf("appliance: free space of %s: %w", state, err)
	}
	free := st.Bavail * uint64(st.Bsize)
	need := info.Records*rebuildBytesPerRecord + 64<<20
	if free < need {
		return fmt.Errorf("appliance: catalog rebuild of %d records needs about %d MiB free in %s, %d MiB are: free some space (the old catalog is untouched)", info.Records, need>>20, state, free>>20)
	}
	return nil
}

// rebuildGCPercent is the collector's target while RebuildCatalog runs.
const rebuildGCPercent = 50
