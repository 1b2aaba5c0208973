package catalog

import (
	"crypto/sha256"
	"encoding/binary"

	badger "github.com/dgraph-io/badger/v4"
)

// digestDomain separates the catalog digest from every other hash.
const digestDomain = "coffre catalog digest v1\n"

// Digest returns a SHA-256 over the catalog's record-derived content: every
// key and value except drive and job states, in key order, each as a
// 4-byte big-endian length and the bytes. Two catalogs that indexed the
// same set of records (in any order, by Index or Rebuild) have the same
// digest.
func (c *Catalog) Digest() ([32]byte, error) {
	var sum [32]byte
	err := c.view(func(txn *badger.Txn) error {
		h := sha256.New()
		h.Write([]byte(digestDomain))
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false})
		defer it.Close()
		var lb [4]byte
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			if len(k) > 0 && (k[0] == pDrive || k[0] == pJob) {
				continue
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			binary.BigEndian.PutUint32(lb[:], uint32(len(k)))
			h.Write(lb[:])
			h.Write(k)
			binary.BigEndian.PutUint32(lb[:], uint32(len(v)))
			h.Write(lb[:])
			h.Write(v)
		}
		h.Sum(sum[:0])
		return nil
	})
	if err != nil {
		return [32]byte{}, c.wrap("digest", err)
	}
	return sum, nil
}
