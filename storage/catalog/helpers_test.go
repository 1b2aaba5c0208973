package catalog

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"testing"
)

func newKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func openTemp(t testing.TB, key []byte) *Catalog {
	t.Helper()
	c, err := Open(filepath.Join(t.TempDir(), "catalog"), key, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func uploadID(n uint64) string { return fmt.Sprintf("%032x", n+1) }

// item returns an item meta; the upload id is derived from up.
func item(user, id string, version uint32, up uint64, supersedes uint64) Meta {
	return Meta{
		Kind: KindItem, UserID: user, ItemID: id, Version: version, UploadID: uploadID(up),
		ItemKind: "password", ContentType: "text/plain", Size: int64(version) * 10,
		Digest:     sha256.Sum256([]byte(fmt.Sprintf("%s/%s/%d", user, id, version))),
		Supersedes: supersedes, Algorithms: []string{"openpgp:p521-ecdh", "aes256", "seipdv1"},
	}
}

// makeRecords returns n records as an appliance would append them: a
// genesis record, escrow bundles, items with several versions, and
// re-encapsulations that supersede earlier records.
func makeRecords(n int) []Record {
	recs := []Record{{0, Meta{Kind: KindGenesis}}}
	versions := map[string]uint32{}
	var lastOf = map[string]uint64{}
	for i := uint64(1); len(recs) < n; i++ {
		user := fmt.Sprintf("user-%03d", i%37)
		switch {
		case i%97 == 0:
			recs = append(recs, Record{i, Meta{Kind: KindCheckpoint, Attrs: map[string]string{"size": fmt.Sprint(i)}}})
		case i%11 == 0:
			recs = append(recs, Record{i, Meta{Kind: KindEscrow, UserID: user, Algorithms: []string{"openpgp:p521-ecdh"}}})
		case i%13 == 0 && len(lastOf) > 0:
			// Re-encapsulate the latest record of some item: same version,
			// new record superseding the old one.
			key := fmt.Sprintf("user-%03d/item-%d", (i/13)%37, (i/13)%5)
			old, ok := lastOf[key]
			if !ok {
				recs = append(recs, Record{i, Meta{Kind: KindDriveEvent}})
				continue
			}
			m := recs[old].Meta
			m.Supersedes = old
			m.Algorithms = []string{"openpgp:mlkem768-x25519", "aes256", "seipdv1"}
			recs = append(recs, Record{i, m})
			lastOf[key] = i
		default:
			itemID := fmt.Sprintf("item-%d", i%5)
			key := user + "/" + itemID
			versions[key]++
			recs = append(recs, Record{i, item(user, itemID, versions[key], i, 0)})
			lastOf[key] = i
		}
	}
	return recs
}

// scanOf returns a ScanFunc over recs (encoded), in the given order.
func scanOf(t testing.TB, recs []Record) ScanFunc {
	return func(fn func(uint64, []byte) error) error {
		for _, r := range recs {
			b, err := EncodeMeta(r.Meta)
			if err != nil {
				t.Fatal(err)
			}
			if err := fn(r.Index, b); err != nil {
				return err
			}
		}
		return nil
	}
}

func mustDigest(t testing.TB, c *Catalog) [32]byte {
	t.Helper()
	d, err := c.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}
