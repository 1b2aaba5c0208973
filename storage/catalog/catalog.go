package catalog

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Key prefixes. Everything but drive states and jobs is derived from the
// records alone, and is what Digest covers.
const (
	pMeta   = 'M' // M<name> → catalog metadata (format, contiguous watermark)
	pRecord = 'R' // R<u64 index> → canonical meta bytes
	pItem   = 'I' // I<user>0x00<item>0x00<u32 version><u64 index> → ""
	pUser   = 'U' // U<user> → ""
	pUpload = 'P' // P<upload id><u64 index> → ""
	pKind   = 'K' // K<kind byte><u64 index> → ""
	pSuper  = 'S' // S<u64 superseded><u64 superseding> → ""
	pDrive  = 'D' // D<uuid> → drive state (not derived)
	pJob    = 'J' // J<id> → job state (not derived)
)

var (
	keyFormat = []byte("Mformat")
	keyContig = []byte("Mcontig")
	// formatTag names the key layout; a catalog with another tag is rebuilt.
	formatTag = []byte("coffre-catalog/1")
)

// Catalog is an open catalog. Its methods are safe for concurrent use;
// writes are serialised.
type Catalog struct {
	dir string
	db  *badger.DB
	log *slog.Logger
	mu  sync.RWMutex // guards db against Close
	wmu sync.Mutex   // serialises writers (so no transaction conflicts)
}

// Open opens the catalog in dir, creating an empty one when dir does not
// exist. key is the 32-byte catalog key from the keystore. log receives
// badger's messages (nil silences them). Open fails with ErrWrongKey when
// key is not the key the catalog was created with.
func Open(dir string, key []byte, log *slog.Logger) (*Catalog, error) {
	return open(dir, key, log, true)
}

func open(dir string, key []byte, log *slog.Logger, syncWrites bool) (*Catalog, error) {
	return openWith(dir, key, log, func(o badger.Options) badger.Options { return o.WithSyncWrites(syncWrites) })
}

// openWith opens the catalog with the options that tune changes.
func openWith(dir string, key []byte, log *slog.Logger, tune func(badger.Options) badger.Options) (*Catalog, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("catalog: %s: key is %d bytes, want %d: check the keystore's catalog key", dir, len(key), KeySize)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	if err := dropEmptyMemtables(dir, log); err != nil {
		return nil, err
	}
	db, err := badger.Open(tune(options_(dir, key, log, true)))
	if err != nil {
		if errors.Is(err, badger.ErrEncryptionKeyMismatch) || strings.Contains(err.Error(), badger.ErrEncryptionKeyMismatch.Error()) {
			return nil, fmt.Errorf("catalog: %s: %w: the keystore's catalog key does not open it; if the key was replaced, run `coffre catalog rebuild`", dir, ErrWrongKey)
		}
		return nil, fmt.Errorf("catalog: %s: open: %v: if it is damaged, run `coffre catalog rebuild`", dir, err)
	}
	c := &Catalog{dir: dir, db: db, log: log}
	if err := c.checkFormat(); err != nil {
		db.Close()
		return nil, err
	}
	return c, nil
}

// VerifyChecksum reads every table of the catalog and checks its
// checksums.
func (c *Catalog) VerifyChecksum() (err error) {
	// badger v4.9.6's Table.VerifyChecksum dereferences a nil block when a
	// block fails its checksum (table.go:711), in this goroutine: the
	// panic is that finding.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("catalog: verify: a table block fails its checksum (%v)", r)
		}
	}()
	if err := c.db.VerifyChecksum(); err != nil {
		return withPrefix(err, "catalog: verify")
	}
	return nil
}

// options_ returns the badger options the catalog runs with.
func options_(dir string, key []byte, log *slog.Logger, syncWrites bool) badger.Options {
	o := badger.DefaultOptions(dir)
	// Tables stay BaseTableSize at every level: a compaction's table
	// builders allocate twice the table size each, up to 13 at a time.
	o.TableSizeMultiplier = TableSizeMultiplier
	return o.
		WithSyncWrites(syncWrites).
		WithEncryptionKey(bytes.Clone(key)).
		// Every block is verified as it is read; whole tables are verified
		// by VerifyChecksum (after a rebuild, and by scrub), not at every
		// open: at a million records that read 300 MB and took 2 s of
		// start-up.
		WithChecksumVerificationMode(options.OnBlockRead).
		WithVerifyValueChecksum(true).
		WithMemTableSize(MemTableSize).
		WithNumMemtables(NumMemtables).
		WithBlockCacheSize(BlockCacheSize).
		WithIndexCacheSize(IndexCacheSize).
		WithValueLogFileSize(ValueLogFileSize).
		WithBaseTableSize(BaseTableSize).
		WithBaseLevelSize(BaseLevelSize).
		WithLevelSizeMultiplier(LevelSizeMultiplier).
		WithValueThreshold(ValueThreshold).
		WithNumCompactors(NumCompactors).
		WithNumLevelZeroTables(NumLevelZeroTables).
		WithNumLevelZeroTablesStall(3 * NumLevelZeroTables).
		WithNumGoroutines(NumGoroutines).
		WithCompression(options.None).
		WithMetricsEnabled(false).
		WithDetectConflicts(false).
		WithLogger(badgerLogger{log})
}

// openBulk opens a fresh database for Rebuild's bulk load: no sync per
// write, and no checksum verification of the tables as the load creates
// them (they are written with checksums, and verified when the finished
// catalog is opened).
func openBulk(dir string, key []byte, log *slog.Logger) (*Catalog, error) {
	o := options_(dir, key, log, false).WithChecksumVerificationMode(options.NoVerification).
		// The load bypasses the memtable; Rebuild's few other writes
		// (drive and job states) fit in a small one.
		WithMemTableSize(1 << 20)
	db, err := badger.Open(o)
	if err != nil {
		return nil, fmt.Errorf("catalog: %s: open: %v", dir, err)
	}
	return &Catalog{dir: dir, db: db, log: log}, nil
}

func (c *Catalog) checkFormat() error {
	return c.update(func(txn *badger.Txn) error {
		it, err := txn.Get(keyFormat)
		if err == nil {
			v, err := it.ValueCopy(nil)
			if err != nil {
				return err
			}
			if !bytes.Equal(v, formatTag) {
				return fmt.Errorf("catalog: %s: format %q, want %q: run `coffre catalog rebuild`", c.dir, truncate(string(v)), formatTag)
			}
			return nil
		}
		if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		// No format key: only an empty database may be claimed.
		iter := txn.NewIterator(badger.IteratorOptions{})
		defer iter.Close()
		iter.Rewind()
		if iter.Valid() {
			return fmt.Errorf("catalog: %s: not a coffre catalog (no format tag): move it aside and run `coffre catalog rebuild`", c.dir)
		}
		return txn.Set(keyFormat, formatTag)
	})
}

// Dir returns the catalog's directory.
func (c *Catalog) Dir() string { return c.dir }

// Close flushes and closes the catalog.
func (c *Catalog) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.db == nil {
		return nil
	}
	err := c.db.Close()
	c.db = nil
	if err != nil {
		return fmt.Errorf("catalog: %s: close: %v", c.dir, err)
	}
	return nil
}

// update runs fn in a read-write transaction; callers hold no lock.
func (c *Catalog) update(fn func(*badger.Txn) error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.db == nil {
		return fmt.Errorf("catalog: %s: %w", c.dir, ErrClosed)
	}
	return c.db.Update(fn)
}

func (c *Catalog) view(fn func(*badger.Txn) error) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.db == nil {
		return fmt.Errorf("catalog: %s: %w", c.dir, ErrClosed)
	}
	return c.db.View(fn)
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func recordKey(idx uint64) []byte { return append([]byte{pRecord}, u64(idx)...) }

// badgerLogger routes badger's messages to slog. Badger's info messages
// (compactions, flushes) go to debug.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) { b.log(slog.LevelError, f, a) }
func (b badgerLogger) Warningf(f string, a ...any) {
	b.log(slog.LevelWarn, f, a)
}
func (b badgerLogger) Infof(f string, a ...any)  { b.log(slog.LevelDebug, f, a) }
func (b badgerLogger) Debugf(f string, a ...any) { b.log(slog.LevelDebug-4, f, a) }

func (b badgerLogger) log(level slog.Level, f string, a []any) {
	if !b.l.Enabled(context.Background(), level) {
		return
	}
	b.l.Log(context.Background(), level, "catalog: badger: "+strings.TrimSpace(fmt.Sprintf(f, a...)))
}
