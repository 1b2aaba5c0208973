package appliance

import (
	"path/filepath"
	"runtime/debug"

	"coffre/storage"
	"coffre/storage/catalog"
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
	c, d, err := catalog.Rebuild(filepath.Join(state, catalogDir), key, scan, a.Log)
	if err != nil {
		return [32]byte{}, 0, err
	}
	return d, n, c.Close()
}

// rebuildGCPercent is the collector's target while RebuildCatalog runs.
const rebuildGCPercent = 50
