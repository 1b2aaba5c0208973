package catalog

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"golang.org/x/sys/unix"
)

// ScanFunc walks one drive replica's records in any order, calling fn with
// each record's index and its meta bytes (as stored, canonical; fn does not
// keep them). It stops and returns fn's error when fn fails. Increasing
// index order (a drive scan's) is the fast one: on any other, Rebuild
// stops and calls the ScanFunc a second time.
type ScanFunc func(fn func(recordIndex uint64, meta []byte) error) error

// testHook, when set by tests, is called at each stage of Rebuild
// ("scanned", "swapped") so crashes can be injected there.
var testHook func(stage string)

// Suffixes of Rebuild's sibling directories (dir + suffix + random).
const (
	rebuildSuffix = ".rebuild-"
)

// Rebuild builds a fresh catalog in dir from one replica's records and
// returns it open, with its digest (what Digest returns). The new catalog
// is built in a sibling temporary directory, made durable, and only then
// swapped atomically for dir (renameat2 RENAME_EXCHANGE), so a crash at any
// point leaves either the old catalog or the new one complete at dir. Drive
// and job states are not derivable from the drives: they are carried over
// when the old catalog opens with key, and dropped (with a warning) when it
// does not. The old catalog must not be open (badger's directory lock);
// Rebuild fails if it is. Leftover temporaries from an interrupted Rebuild
// are removed.
//
// A scan in increasing index order (a drive scan) is bulk-loaded (see
// load.go) and the digest computed as the keys are written; any other
// order is indexed through transactions, after which scan is called again
// from the start, and the digest read back.
func Rebuild(dir string, key []byte, scan ScanFunc, log *slog.Logger) (*Catalog, [32]byte, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(key) != KeySize {
		return nil, [32]byte{}, fmt.Errorf("catalog: %s: key is %d bytes, want %d: check the keystore's catalog key", dir, len(key), KeySize)
	}
	dir = filepath.Clean(dir)
	parent, base := filepath.Dir(dir), filepath.Base(dir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, [32]byte{}, fmt.Errorf("catalog: rebuild: %w", err)
	}
	// One rebuild at a time: another's temporaries are not leftovers.
	lock, err := os.OpenFile(filepath.Join(parent, "."+base+".rebuild-lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, [32]byte{}, fmt.Errorf("catalog: rebuild: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return nil, [32]byte{}, fmt.Errorf("catalog: rebuild: another rebuild of %s is running (%v)", dir, err)
	}
	removeLeftovers(parent, base, log)

	tmp, err := os.MkdirTemp(parent, base+rebuildSuffix)
	if err != nil {
		return nil, [32]byte{}, fmt.Errorf("catalog: rebuild: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()

	// Drive and job states first: this also fails early when the catalog
	// is in use.
	states, err := readStates(dir, key, log)
	if err != nil {
		return nil, [32]byte{}, err
	}
	start := time.Now()
	nc, sum, err := build(parent, base, tmp, key, scan, log)
	if err != nil {
		return nil, [32]byte{}, err
	}
	log.Debug("catalog: rebuild: indexed", "took", time.Since(start))
	if err := writeStates(nc, states); err != nil {
		nc.Close()
		return nil, [32]byte{}, err
	}
	if err := nc.db.Sync(); err != nil {
		nc.Close()
		return nil, [32]byte{}, fmt.Errorf("catalog: rebuild: sync: %v", err)
	}
	if err := nc.Close(); err != nil {
		return nil, [32]byte{}, withPrefix(err, "catalog: rebuild")
	}
	if err := syncTree(tmp); err != nil {
		return nil, [32]byte{}, fmt.Errorf("catalog: rebuild: sync %s: %w", tmp, err)
	}
	log.Debug("catalog: rebuild: durable", "took", time.Since(start))
	if testHook != nil {
		testHook("scanned")
	}

	// Publish: swap atomically when an old catalog exists, else rename.
	unlock, err := lockOld(dir)
	if err != nil {
		return nil, [32]byte{}, err
	}
	defer unlock()
	if _, err := os.Lstat(dir); err == nil {
		if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dir, unix.RENAME_EXCHANGE); err != nil {
			return nil, [32]byte{}, fmt.Errorf("catalog: rebuild: swap %s into %s: %w", tmp, dir, err)
		}
		// tmp now holds the old catalog.
	} else if errors.Is(err, fs.ErrNotExist) {
		if err := os.Rename(tmp, dir); err != nil {
			return nil, [32]byte{}, fmt.Errorf("catalog: rebuild: rename %s to %s: %w", tmp, dir, err)
		}
		ok = true
	} else {
		return nil, [32]byte{}, fmt.Errorf("catalog: rebuild: %w", err)
	}
	if err := syncDir(parent); err != nil {
		return nil, [32]byte{}, fmt.Errorf("catalog: rebuild: sync %s: %w", parent, err)
	}
	if testHook != nil {
		testHook("swapped")
	}
	// Remove the old catalog under its lock.
	if !ok {
		os.RemoveAll(tmp)
		ok = true
	}
	unlock()
	c, err := Open(dir, key, log)
	if err != nil {
		return nil, [32]byte{}, withPrefix(err, "catalog: rebuild: reopen")
	}
	if err := c.VerifyChecksum(); err != nil {
		c.Close()
		return nil, [32]byte{}, withPrefix(err, "catalog: rebuild")
	}
	if sum == nil {
		d, err := c.Digest()
		if err != nil {
			c.Close()
			return nil, [32]byte{}, withPrefix(err, "catalog: rebuild")
		}
		sum = &d
	}
	log.Info("catalog: rebuilt", "dir", dir, "took", time.Since(start))
	return c, *sum, nil
}

// build indexes scan into a fresh catalog in tmp and returns it open, with
// the digest of what it wrote when it knows it. Nothing is synced per
// batch: nothing is published before Rebuild's final sync, close and
// directory fsync.
func build(parent, base, tmp string, key []byte, scan ScanFunc, log *slog.Logger) (*Catalog, *[32]byte, error) {
	sortDir, err := os.MkdirTemp(parent, base+rebuildSuffix+"sort-")
	if err != nil {
		return nil, nil, fmt.Errorf("catalog: rebuild: %w", err)
	}
	defer os.RemoveAll(sortDir)
	nc, err := openBulk(tmp, key, log)
	if err != nil {
		return nil, nil, withPrefix(err, "catalog: rebuild")
	}
	sum, err := load(nc, scan, sortDir)
	if err == nil {
		return nc, &sum, nil
	}
	nc.Close()
	if !errors.Is(err, errUnordered) {
		return nil, nil, err
	}
	log.Info("catalog: rebuild: records not in index order; indexing them through transactions")
	if err := os.RemoveAll(tmp); err != nil {
		return nil, nil, fmt.Errorf("catalog: rebuild: %w", err)
	}
	if nc, err = open(tmp, key, log, false); err != nil {
		return nil, nil, withPrefix(err, "catalog: rebuild")
	}
	if err := fill(nc, scan); err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, nil, nil
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

// state is one drive or job state of the old catalog.
type state struct{ k, v []byte }

// readStates reads the drive and job states of the old catalog at dir. It
// fails when the catalog is in use, and returns none (with a warning) when
// it is unreadable.
func readStates(dir string, key []byte, log *slog.Logger) ([]state, error) {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	// Only the states are read: verify the blocks read, not every table.
	old, err := openWith(dir, key, log, func(o badger.Options) badger.Options {
		return o.WithChecksumVerificationMode(options.OnBlockRead)
	})
	if err != nil {
		if strings.Contains(err.Error(), "Another process is using this Badger database") {
			return nil, fmt.Errorf("catalog: rebuild: %s is in use: stop coffred first", dir)
		}
		log.Warn("catalog: rebuild: old catalog unreadable; drive and job states not carried over", "dir", dir, "err", err)
		return nil, nil
	}
	defer old.Close()
	var states []state
	err = old.view(func(txn *badger.Txn) error {
		for _, p := range []byte{pDrive, pJob} {
			err := scanValues(txn, []byte{p}, func(rest, v []byte) error {
				states = append(states, state{append([]byte{p}, rest...), v})
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
		return nil, nil
	}
	return states, nil
}

// writeStates writes the states read from the old catalog into nc.
func writeStates(nc *Catalog, states []state) error {
	if len(states) == 0 {
		return nil
	}
	err := nc.update(func(txn *badger.Txn) error {
		for _, e := range states {
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

// lockOld takes badger's lock on the old catalog's directory (a flock on
// the directory) and holds it until unlock, so that no process opens the
// old catalog while it is swapped out and removed. It fails when a process
// has it open.
func lockOld(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return func() {}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("catalog: rebuild: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("catalog: rebuild: %s is in use: stop coffred first", dir)
	}
	var once sync.Once
	return func() { once.Do(func() { f.Close() }) }, nil
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
