package catalog

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"slices"

	badger "github.com/dgraph-io/badger/v4"
)

// digestDomain separates the catalog digest from every other hash.
const digestDomain = "coffre catalog digest v2\n"

// Digest returns a SHA-256 over the catalog's record-derived content: every
// key and value except drive and job states. Two catalogs that indexed the
// same set of records (in any order, by Index or Rebuild) have the same
// digest.
//
// The keys are hashed in groups so that Rebuild, which writes several
// groups at once, can compute the digest as it writes: a key's group is its
// first byte, or its first two bytes for a kind key ('K' and the kind).
// Each group's hash is SHA-256 over its entries in key order, each as a
// 4-byte big-endian length and the key, then a 4-byte big-endian length
// and the value. The digest is SHA-256 over digestDomain, then for each
// group in ascending order of its prefix: the prefix's length (1 byte), the
// prefix, the number of entries (8 bytes big-endian) and the group hash.
func (c *Catalog) Digest() ([32]byte, error) {
	var sum [32]byte
	err := c.view(func(txn *badger.Txn) error {
		var d digester
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			if len(k) > 0 && (k[0] == pDrive || k[0] == pJob) {
				continue
			}
			err := item.Value(func(v []byte) error {
				d.add(k, v)
				return nil
			})
			if err != nil {
				return err
			}
		}
		sum = d.sum()
		return nil
	})
	if err != nil {
		return [32]byte{}, c.wrap("digest", err)
	}
	return sum, nil
}

// digestGroup returns the prefix of k's digest group.
func digestGroup(k []byte) []byte {
	if len(k) >= 2 && k[0] == pKind {
		return k[:2]
	}
	return k[:min(len(k), 1)]
}

// digester computes the digest from entries given in key order within
// each group; groups may be interleaved.
type digester struct {
	groups []*groupHash
	last   *groupHash
}

type groupHash struct {
	prefix []byte
	n      uint64
	h      hash.Hash
	buf    []byte // entries not yet hashed
}

func (d *digester) add(k, v []byte) {
	p := digestGroup(k)
	g := d.last
	if g == nil || !bytes.Equal(g.prefix, p) {
		g = nil
		for _, x := range d.groups {
			if bytes.Equal(x.prefix, p) {
				g = x
				break
			}
		}
		if g == nil {
			g = &groupHash{prefix: bytes.Clone(p), h: sha256.New(), buf: make([]byte, 0, 64<<10)}
			d.groups = append(d.groups, g)
		}
		d.last = g
	}
	g.n++
	if len(g.buf)+8+len(k)+len(v) > cap(g.buf) {
		g.h.Write(g.buf)
		g.buf = g.buf[:0]
	}
	if 8+len(k)+len(v) > cap(g.buf) {
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(k)))
		g.h.Write(l[:])
		g.h.Write(k)
		binary.BigEndian.PutUint32(l[:], uint32(len(v)))
		g.h.Write(l[:])
		g.h.Write(v)
		return
	}
	g.buf = binary.BigEndian.AppendUint32(g.buf, uint32(len(k)))
	g.buf = append(g.buf, k...)
	g.buf = binary.BigEndian.AppendUint32(g.buf, uint32(len(v)))
	g.buf = append(g.buf, v...)
}

func (d *digester) sum() [32]byte {
	slices.SortFunc(d.groups, func(a, b *groupHash) int { return bytes.Compare(a.prefix, b.prefix) })
	h := sha256.New()
	h.Write([]byte(digestDomain))
	for _, g := range d.groups {
		g.h.Write(g.buf)
		h.Write([]byte{byte(len(g.prefix))})
		h.Write(g.prefix)
		h.Write(binary.BigEndian.AppendUint64(nil, g.n))
		h.Write(g.h.Sum(nil))
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}
