package appliance_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"coffre/appliance"
	"coffre/hsm"
	"coffre/storage"
	"coffre/storage/catalog"
)

// TestCatalogCatchUpAfterRebuild: records the drives gained after a
// catalog rebuild (written while the catalog was not updated, as after a
// crash between an append and its indexing) are caught up at start-up, and
// the caught-up catalog is the one a full rebuild from another replica
// gives.
func TestCatalogCatchUpAfterRebuild(t *testing.T) {
	e := newVault(t)
	opts := appliance.OpenOptions{Keystore: hsm.Config{Backend: "soft", Passphrase: []byte(testPass)}, Drives: e.drives()}
	appendItems := func(from, n int) {
		t.Helper()
		o := opts
		o.NoCatalog = true
		a, err := appliance.Open(e.state, o)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		var recs []storage.Record
		for i := from; i < from+n; i++ {
			m := catalog.Meta{Kind: catalog.KindItem, UserID: fmt.Sprintf("user-%d", i%7), ItemID: fmt.Sprintf("item-%d", i),
				Version: 1, UploadID: fmt.Sprintf("%032x", 1000+i), ItemKind: "letter"}
			b, err := catalog.EncodeMeta(m)
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, storage.Record{Type: storage.TypeItem, Meta: b, Body: bytes.NewReader([]byte("sealed"))})
			if len(recs) == 40 || i == from+n-1 { // several batches, each with its checkpoint
				if _, err := a.Vault().Append(context.Background(), recs...); err != nil {
					t.Fatal(err)
				}
				recs = recs[:0]
			}
		}
	}
	appendItems(0, 100)
	if _, _, err := appliance.RebuildCatalog(e.state, opts, e.drives()[0]); err != nil {
		t.Fatal(err)
	}
	appendItems(100, 150)

	a, err := appliance.Open(e.state, opts) // catches up
	if err != nil {
		t.Fatal(err)
	}
	caught, err := a.Catalog().Digest()
	if err != nil {
		t.Fatal(err)
	}
	w, err := a.Catalog().Watermark()
	if err != nil {
		t.Fatal(err)
	}
	size := a.Vault().Size()
	live, err := a.Catalog().Live("user-3")
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	if w != size {
		t.Fatalf("watermark %d after catching up, the drives hold %d records", w, size)
	}
	if len(live) != 250/7+1 {
		t.Fatalf("user-3 has %d live items, want %d", len(live), 250/7+1)
	}

	full, n, err := appliance.RebuildCatalog(e.state, opts, e.drives()[2])
	if err != nil {
		t.Fatal(err)
	}
	if uint64(n) != size {
		t.Fatalf("rebuild indexed %d records, the drives hold %d", n, size)
	}
	if full != caught {
		t.Fatalf("caught-up catalog %x, full rebuild from another replica %x", caught, full)
	}
}
