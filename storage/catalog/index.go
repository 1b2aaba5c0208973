package catalog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// Entry is one indexed record.
type Entry struct {
	Record uint64 // the record's index in the drive log
	Meta   Meta
	// SupersededBy is the lowest record index that supersedes this one, or
	// 0 when none does (record 0 never supersedes anything).
	SupersededBy uint64
}

// Live reports whether no record supersedes this one.
func (e Entry) Live() bool { return e.SupersededBy == 0 }

// Record is one drive record's index and meta, as IndexBatch takes them.
type Record struct {
	Index uint64
	Meta  Meta
}

// Index adds one record to the catalog. It is idempotent: indexing the same
// record index with the same meta again is a no-op; with different meta it
// fails with ErrConflict (the catalog disagrees with the drives: rebuild).
// Records may be indexed in any order; the result depends only on the set.
func (c *Catalog) Index(recordIndex uint64, m Meta) error {
	return c.IndexBatch([]Record{{Index: recordIndex, Meta: m}})
}

// IndexBatch indexes several records in as few durable transactions as the
// database allows. It is all-or-nothing per transaction, and idempotent like
// Index, so a failed batch can simply be retried.
func (c *Catalog) IndexBatch(recs []Record) error {
	enc := make([]encoded, 0, len(recs))
	for _, r := range recs {
		b, err := EncodeMeta(r.Meta)
		if err != nil {
			return withPrefix(err, "catalog: record %d", r.Index)
		}
		if err := checkPlacement(r.Index, r.Meta); err != nil {
			return err
		}
		enc = append(enc, encoded{r.Index, r.Meta, b})
	}
	return c.indexEncoded(enc)
}

// IndexRaw indexes one record from its meta bytes as stored on the drives
// (the appliance's catch-up path after a crash). The bytes must be a
// canonical encoding (ParseMeta).
func (c *Catalog) IndexRaw(recordIndex uint64, meta []byte) error {
	m, err := ParseMeta(meta)
	if err != nil {
		return withPrefix(err, "catalog: record %d", recordIndex)
	}
	if err := checkPlacement(recordIndex, m); err != nil {
		return err
	}
	return c.indexEncoded([]encoded{{recordIndex, m, append([]byte{}, meta...)}})
}

// checkPlacement checks the rule that ties a meta to its record index: a
// record supersedes only an earlier one. (Supersedes 0 means "none", so
// record 0 cannot be superseded by reference; the appliance never writes an
// item there, but the catalog indexes whatever the drives hold.)
func checkPlacement(idx uint64, m Meta) error {
	if m.Supersedes != 0 && m.Supersedes >= idx {
		return fmt.Errorf("catalog: record %d: %w: supersedes record %d, which is not earlier", idx, ErrMalformedMeta, m.Supersedes)
	}
	return nil
}

type encoded struct {
	idx  uint64
	m    Meta
	meta []byte
}

func (c *Catalog) indexEncoded(recs []encoded) error {
	if len(recs) == 0 {
		return nil
	}
	err := c.update(func(txn *badger.Txn) error { return indexTxn(txn, recs) })
	if errors.Is(err, badger.ErrTxnTooBig) && len(recs) > 1 {
		h := len(recs) / 2
		if err := c.indexEncoded(recs[:h]); err != nil {
			return err
		}
		return c.indexEncoded(recs[h:])
	}
	if err != nil {
		if errors.Is(err, ErrConflict) || errors.Is(err, ErrClosed) {
			return err
		}
		return fmt.Errorf("catalog: %s: index: %w", c.dir, err)
	}
	return nil
}

func indexTxn(txn *badger.Txn, recs []encoded) error {
	empty := []byte{}
	for _, r := range recs {
		rk := recordKey(r.idx)
		it, err := txn.Get(rk)
		if err == nil {
			old, err := it.ValueCopy(nil)
			if err != nil {
				return err
			}
			if !bytes.Equal(old, r.meta) {
				return fmt.Errorf("catalog: record %d: %w: the catalog disagrees with the drives; run `coffre catalog rebuild`", r.idx, ErrConflict)
			}
			continue
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		for _, kv := range derivedKeys(r.idx, r.m) {
			if err := txn.Set(kv, empty); err != nil {
				return err
			}
		}
		if err := txn.Set(rk, r.meta); err != nil {
			return err
		}
	}
	// Advance the contiguous watermark over every record now present.
	w, err := getU64(txn, keyContig)
	if err != nil {
		return err
	}
	start := w
	for {
		_, err := txn.Get(recordKey(w))
		if errors.Is(err, badger.ErrKeyNotFound) {
			break
		}
		if err != nil {
			return err
		}
		w++
	}
	if w != start {
		return txn.Set(keyContig, u64(w))
	}
	return nil
}

// derivedKeys returns the secondary index keys of one record (all with
// empty values).
func derivedKeys(idx uint64, m Meta) [][]byte {
	var keys [][]byte
	eachDerivedKey(nil, idx, &m, func(k []byte) error {
		keys = append(keys, bytes.Clone(k))
		return nil
	})
	return keys
}

// eachDerivedKey calls fn with each secondary index key of record idx, in
// this order: kind, user, item, upload, supersession. The key is built in
// buf, which is returned for reuse: fn must not keep it.
func eachDerivedKey(buf []byte, idx uint64, m *Meta, fn func(k []byte) error) ([]byte, error) {
	var ib [8]byte
	binary.BigEndian.PutUint64(ib[:], idx)
	buf = append(append(buf[:0], pKind, byte(m.Kind)), ib[:]...)
	if err := fn(buf); err != nil {
		return buf, err
	}
	if m.UserID != "" {
		buf = append(append(buf[:0], pUser), m.UserID...)
		if err := fn(buf); err != nil {
			return buf, err
		}
	}
	if m.Kind == KindItem {
		buf = appendItemKey(buf[:0], m.UserID, m.ItemID, m.Version, idx)
		if err := fn(buf); err != nil {
			return buf, err
		}
	}
	if m.UploadID != "" {
		buf = append(append(append(buf[:0], pUpload), m.UploadID...), ib[:]...)
		if err := fn(buf); err != nil {
			return buf, err
		}
	}
	if m.Supersedes != 0 {
		buf = binary.BigEndian.AppendUint64(append(buf[:0], pSuper), m.Supersedes)
		buf = append(buf, ib[:]...)
		if err := fn(buf); err != nil {
			return buf, err
		}
	}
	return buf, nil
}

func appendItemKey(k []byte, user, item string, version uint32, idx uint64) []byte {
	k = append(k, pItem)
	k = append(k, user...)
	k = append(k, 0)
	k = append(k, item...)
	k = append(k, 0)
	k = binary.BigEndian.AppendUint32(k, version)
	return binary.BigEndian.AppendUint64(k, idx)
}

func getU64(txn *badger.Txn, key []byte) (uint64, error) {
	it, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	v, err := it.ValueCopy(nil)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("catalog: %q holds %d bytes, want 8: run `coffre catalog rebuild`", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// Watermark returns the lowest record index not yet indexed: every record
// below it is in the catalog. When records are indexed in order it is the
// highest indexed record + 1. After a crash the appliance re-indexes the
// drive records from the watermark on (Index is idempotent).
func (c *Catalog) Watermark() (uint64, error) {
	var w uint64
	err := c.view(func(txn *badger.Txn) (err error) {
		w, err = getU64(txn, keyContig)
		return err
	})
	if err != nil {
		return 0, c.wrap("watermark", err)
	}
	return w, nil
}

// Upload looks an upload id up in the seen-set: it returns the lowest
// record index that carries it.
func (c *Catalog) Upload(uploadID string) (recordIndex uint64, found bool, err error) {
	if len(uploadID) != UploadIDLen || !allBytes(uploadID, isLowerHex) {
		return 0, false, fmt.Errorf("catalog: upload id is not %d lowercase hex characters", UploadIDLen)
	}
	prefix := append([]byte{pUpload}, uploadID...)
	err = c.view(func(txn *badger.Txn) error {
		return scanKeys(txn, prefix, func(rest []byte) (bool, error) {
			if len(rest) != 8 {
				return false, corrupt(prefix)
			}
			recordIndex, found = binary.BigEndian.Uint64(rest), true
			return false, nil
		})
	})
	if err != nil {
		return 0, false, c.wrap("upload", err)
	}
	return recordIndex, found, nil
}

// Users returns every user id that has at least one record, sorted.
func (c *Catalog) Users() ([]string, error) {
	var users []string
	err := c.view(func(txn *badger.Txn) error {
		return scanKeys(txn, []byte{pUser}, func(rest []byte) (bool, error) {
			users = append(users, string(rest))
			return true, nil
		})
	})
	if err != nil {
		return nil, c.wrap("users", err)
	}
	return users, nil
}

// Items returns every item record of a user, every version, sorted by item
// id, then version, then record index. Superseded records stay listed.
func (c *Catalog) Items(userID string) ([]Entry, error) {
	if err := checkUserID(userID); err != nil || userID == "" {
		return nil, fmt.Errorf("catalog: bad user id %q", truncate(userID))
	}
	prefix := append(append([]byte{pItem}, userID...), 0)
	var out []Entry
	err := c.view(func(txn *badger.Txn) error {
		var idxs []uint64
		err := scanKeys(txn, prefix, func(rest []byte) (bool, error) {
			if len(rest) < 12 {
				return false, corrupt(prefix)
			}
			idxs = append(idxs, binary.BigEndian.Uint64(rest[len(rest)-8:]))
			return true, nil
		})
		if err != nil {
			return err
		}
		out, err = entries(txn, idxs)
		return err
	})
	if err != nil {
		return nil, c.wrap("items", err)
	}
	return out, nil
}

// Live returns a user's item records that no record supersedes, every
// version, in the order of Items.
func (c *Catalog) Live(userID string) ([]Entry, error) {
	all, err := c.Items(userID)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, e := range all {
		if e.Live() {
			out = append(out, e)
		}
	}
	return out, nil
}

// Latest returns, for each of a user's items, the live record of its
// highest version (the highest record index when several are live),
// sorted by item id.
func (c *Catalog) Latest(userID string) ([]Entry, error) {
	live, err := c.Live(userID)
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, e := range live {
		// Items order is item, version, record: the last of each item wins.
		if n := len(out); n > 0 && out[n-1].Meta.ItemID == e.Meta.ItemID {
			out[n-1] = e
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// Get returns one record's entry, or an error wrapping ErrNotFound.
func (c *Catalog) Get(recordIndex uint64) (Entry, error) {
	var e []Entry
	err := c.view(func(txn *badger.Txn) (err error) {
		e, err = entries(txn, []uint64{recordIndex})
		return err
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return Entry{}, fmt.Errorf("catalog: record %d: %w", recordIndex, ErrNotFound)
		}
		return Entry{}, c.wrap("get", err)
	}
	return e[0], nil
}

// ByKind returns every record of a kind, sorted by record index.
func (c *Catalog) ByKind(kind MetaKind) ([]Entry, error) {
	if !kind.Valid() {
		return nil, fmt.Errorf("catalog: unknown record kind %d", uint8(kind))
	}
	prefix := []byte{pKind, byte(kind)}
	var out []Entry
	err := c.view(func(txn *badger.Txn) error {
		var idxs []uint64
		err := scanKeys(txn, prefix, func(rest []byte) (bool, error) {
			if len(rest) != 8 {
				return false, corrupt(prefix)
			}
			idxs = append(idxs, binary.BigEndian.Uint64(rest))
			return true, nil
		})
		if err != nil {
			return err
		}
		out, err = entries(txn, idxs)
		return err
	})
	if err != nil {
		return nil, c.wrap("by kind", err)
	}
	return out, nil
}

// entries loads the records with the given indexes, in that order.
func entries(txn *badger.Txn, idxs []uint64) ([]Entry, error) {
	out := make([]Entry, 0, len(idxs))
	for _, idx := range idxs {
		it, err := txn.Get(recordKey(idx))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil, fmt.Errorf("record %d: %w", idx, ErrNotFound)
		}
		if err != nil {
			return nil, err
		}
		b, err := it.ValueCopy(nil)
		if err != nil {
			return nil, err
		}
		m, err := ParseMeta(b)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", idx, err)
		}
		e := Entry{Record: idx, Meta: m}
		prefix := append([]byte{pSuper}, u64(idx)...)
		err = scanKeys(txn, prefix, func(rest []byte) (bool, error) {
			if len(rest) != 8 {
				return false, corrupt(prefix)
			}
			e.SupersededBy = binary.BigEndian.Uint64(rest)
			return false, nil
		})
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// scanKeys calls fn with the rest of every key under prefix, in order,
// until fn returns false.
func scanKeys(txn *badger.Txn, prefix []byte, fn func(rest []byte) (bool, error)) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		more, err := fn(it.Item().Key()[len(prefix):])
		if err != nil || !more {
			return err
		}
	}
	return nil
}

func corrupt(prefix []byte) error {
	return fmt.Errorf("malformed index key under %q", prefix)
}

func (c *Catalog) wrap(op string, err error) error {
	if errors.Is(err, ErrClosed) {
		return err
	}
	return fmt.Errorf("catalog: %s: %s: %w: if this persists, run `coffre catalog rebuild`", c.dir, op, err)
}
