package appliance

import (
	"path/filepath"

	"coffre/storage"
	"coffre/storage/catalog"
)

// RebuildCatalog recreates the catalog from one drive replica (any drive of
// the vault, read-only) and returns the new catalog's digest. Drive and job
// states are carried over from the old catalog when it is readable.
func RebuildCatalog(state string, o OpenOptions, drive string) ([32]byte, int, error) {
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
