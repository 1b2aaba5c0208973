package catalog

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"
)

// ScanFunc walks one drive replica's records in any order, calling fn with
// each record's index and its meta bytes (as stored, canonical). It stops
// and returns fn's error when fn fails.
type ScanFunc func(fn func(recordIndex uint64, meta []byte) error) error

// testHook, when set by tests, is called at each stage of Rebuild
// ("scanned", "swapped") so crashes can be injected there.
var testHook func(stage string)

// Suffixes of Rebuild's sibling directories (dir + suffix + random).
const (
	rebuildSuffix = ".rebuild-"
)

// Rebuild builds a fresh catalog in dir from one replica's records and
// returns it open. The new catalog is built in a sibling temporary
// directory, made durable, and only then swapped atomically for dir
// (renameat2 RENAME_EXCHANGE), so a crash at any point leaves either the
// old catalog or the new one complete at dir. Drive and job states are not
// derivable from the drives: they are carried over when the old catalog
// opens with key, and dropped (with a warning) when it does not. The old
// catalog must not be open (badger's directory lock); Rebuild fails if it
// is. Leftover temporaries from an interrupted Rebuild are removed.
func Rebuild(dir string, key []byte, scan ScanFunc, log *slog.Logger) (*Catalog, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("catalog: %s: key is %d bytes, want %d: check the keystore's catalog key", dir, len(key), KeySize)
	}
	dir = filepath.Clean(dir)
	parent, base := filepath.Dir(dir), filepath.Base(dir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, fmt.Errorf("catalog: rebuild: %w", err)
	}
	removeLeftovers(parent, base, log)

	tmp, err := os.MkdirTemp(parent, base+rebuildSuffix)
	if err != nil {
		return nil, fmt.Errorf("catalog: rebuild: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()

	// Build without per-transaction fsync: nothing is published before the
	// final Sync, Close and directory fsync below.
	nc, err := open(tmp, key, log, false)
	if err != nil {
		return nil, withPrefix(err, "catalog: rebuild")
	}
	if err := fill(nc, scan); err != nil {
		nc.Close()
		return nil, err
	}
	if err := carryOver(dir, key, log, nc); err != nil {
		nc.Close()
		return nil, err
	}
	if err := nc.db.Sync(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("catalog: rebuild: sync: %v", err)
	}
	if err := nc.Close(); err != nil {
		return nil, withPrefix(err, "catalog: rebuild")
	}
	if err := syncTree(tmp); err != nil {
		return nil, fmt.Errorf("catalog: rebuild: sync %s: %w", tmp, err)
	}
	if testHook != nil {
		testHook("scanned")
	}

	// Publish: swap atomically when an old catalog exists, else rename.
	if _, err := os.Lstat(dir); err == nil {
		if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dir, unix.RENAME_EXCHANGE); err != nil {
			return nil, fmt.Errorf("catalog: rebuild: swap %s into %s: %w", tmp, dir, err)
		}
		// tmp now holds the old catalog.
	} else if errors.Is(err, fs.ErrNotExist) {
		if err := os.Rename(tmp, dir); err != nil {
			return nil, fmt.Errorf("catalog: rebuild: rename %s to %s: %w", tmp, dir, err)
		}
		ok = true
	} else {
		return nil, fmt.Errorf("catalog: rebuild: %w", err)
	}
	if err := syncDir(parent); err != nil {
		return nil, fmt.Errorf("catalog: rebuild: sync %s: %w", parent, err)
	}
	if testHook != nil {
		testHook("swapped")
	}
	// The deferred RemoveAll(tmp) removes the old catalog now.
	c, err := Open(dir, key, log)
	if err != nil {
		return nil, withPrefix(err, "catalog: rebuild: reopen")
	}
	log.Info("catalog: rebuilt", "dir", dir)
	return c, nil
}

// fill indexes every record of scan into c.
func fill(c *Catalog, scan ScanFunc) error {
	batch := make([]encoded, 0, rebuildBatch)
	flush := func() error {
		err := c.indexEncoded(batch)
		batch = batch[:0]
		return err
	}
	err := scan(func(idx uint64, meta []byte) error {
		m, err := ParseMeta(meta)
		if err != nil {
			return withPrefix(err, "catalog: rebuild: record %d", idx)
		}
		if err := checkPlacement(idx, m); err != nil {
			return withPrefix(err, "catalog: rebuild")
		}
		batch = append(batch, encoded{idx, m, append([]byte{}, meta...)})
		if len(batch) == rebuildBatch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		if strings.HasPrefix(err.Error(), "catalog:") {
			return err
		}
		return fmt.Errorf("catalog: rebuild: scan: %w", err)
	}
	return nil
}

// carryOver copies drive and job states from the old catalog at dir.
func carryOver(dir string, key []byte, log *slog.Logger, nc *Catalog) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	old, err := Open(dir, key, log)
	if err != nil {
		if strings.Contains(err.Error(), "Another process is using this Badger database") {
			return fmt.Errorf("catalog: rebuild: %s is in use: stop coffred first", dir)
		}
		log.Warn("catalog: rebuild: old catalog unreadable; drive and job states not carried over", "dir", dir, "err", err)
		return nil
	}
	defer old.Close()
	type kv struct{ k, v []byte }
	var kvs []kv
	err = old.view(func(txn *badger.Txn) error {
		for _, p := range []byte{pDrive, pJob} {
			err := scanValues(txn, []byte{p}, func(rest, v []byte) error {
				kvs = append(kvs, kv{append([]byte{p}, rest...), v})
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		log.Warn("catalog: rebuild: old catalog unreadable; drive and job states not carried over", "dir", dir, "err", err)
		return nil
	}
	err = nc.update(func(txn *badger.Txn) error {
		for _, e := range kvs {
			if err := txn.Set(e.k, e.v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return withPrefix(err, "catalog: rebuild: carry over states")
	}
	return nil
}

// removeLeftovers deletes temporaries of an interrupted Rebuild of base.
func removeLeftovers(parent, base string, log *slog.Logger) {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), base+rebuildSuffix) {
			p := filepath.Join(parent, e.Name())
			log.Info("catalog: removing leftover of an interrupted rebuild", "dir", p)
			os.RemoveAll(p)
		}
	}
}

// syncTree fsyncs every file and directory under root.
func syncTree(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return syncDir(p)
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	})
}

func syncDir(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
