package catalog

import (
	"os"
	"path/filepath"
	"testing"
)

// TestReopenAfterTornMemtable: a process killed while badger creates a
// memtable file leaves it at zero bytes; the catalog still opens, with what
// it held, and the empty file is gone.
func TestReopenAfterTornMemtable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "catalog")
	key := newKey(t)
	c, err := Open(dir, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	recs := makeRecords(50)
	if err := c.IndexBatch(recs); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	torn := filepath.Join(dir, "00099.mem")
	if err := os.WriteFile(torn, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = Open(dir, key, nil)
	if err != nil {
		t.Fatalf("reopen after a torn memtable: %v", err)
	}
	defer c.Close()
	if _, err := os.Stat(torn); !os.IsNotExist(err) {
		t.Fatalf("the empty memtable is still there: %v", err)
	}
	for _, r := range recs {
		if _, err := c.Get(r.Index); err != nil {
			t.Fatalf("record %d after reopen: %v", r.Index, err)
		}
	}
}

// TestTornMemtableLeftWhileInUse: while another handle holds the catalog,
// an empty memtable (one being created right now) is not removed.
func TestTornMemtableLeftWhileInUse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "catalog")
	c, err := Open(dir, newKey(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	torn := filepath.Join(dir, "00099.mem")
	if err := os.WriteFile(torn, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := dropEmptyMemtables(dir, c.log); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(torn); err != nil {
		t.Fatalf("an empty memtable of a catalog in use was removed: %v", err)
	}
}
