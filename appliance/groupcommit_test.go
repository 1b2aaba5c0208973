package appliance_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"testing"

	"coffre/appliance"
	"coffre/hsm"
	"coffre/storage"
	"coffre/storage/catalog"
)

// Many uploads stored at once (group commit shares the drives' flushes):
// each caller gets its own record, the drives hold exactly what was
// acknowledged, in one signed tree, every user's escrow record precedes
// their first item, and a large (streamed) upload in the middle of small
// ones is stored too.
func TestConcurrentIngest(t *testing.T) {
	e := newVault(t)
	const n = 24
	paths := make([]string, n)
	for i := range paths {
		content := []byte(fmt.Sprintf("secret %d", i))
		if i == n/2 {
			content = bytes.Repeat([]byte("large document. "), (2<<20)/16) // 2 MiB: streamed, committed alone
		}
		paths[i] = e.seal(fmt.Sprint("c", i), fmt.Sprint("user", i%5), fmt.Sprint("item", i), 1, content)
	}
	a, err := appliance.Open(e.state, appliance.OpenOptions{Keystore: hsm.Config{Backend: "soft", Passphrase: []byte(testPass)}, Drives: e.drives()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	before := a.Vault().Size()
	results := make([]*appliance.IngestResult, n)
	var wg sync.WaitGroup
	for i := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := os.ReadFile(paths[i])
			if err != nil {
				t.Error(err)
				return
			}
			if results[i], err = a.Ingest(context.Background(), bytes.NewReader(b)); err != nil {
				t.Errorf("upload %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	seen := map[uint64]bool{}
	firstItem := map[string]uint64{}
	for i, r := range results {
		if seen[r.Index] {
			t.Fatalf("record %d acknowledged to two uploads", r.Index)
		}
		seen[r.Index] = true
		ent, err := a.Catalog().Get(r.Index)
		if err != nil {
			t.Fatal(err)
		}
		if ent.Meta.Kind != catalog.KindItem || ent.Meta.UploadID != r.UploadID || ent.Meta.ItemID != fmt.Sprint("item", i) {
			t.Fatalf("upload %d (%s) was told record %d, which holds %+v", i, r.UploadID, r.Index, ent.Meta)
		}
		if f, ok := firstItem[r.UserID]; !ok || r.Index < f {
			firstItem[r.UserID] = r.Index
		}
	}
	escrows, err := a.Catalog().ByKind(catalog.KindEscrow)
	if err != nil {
		t.Fatal(err)
	}
	for user, first := range firstItem {
		ok := false
		for _, es := range escrows {
			ok = ok || (es.Meta.UserID == user && es.Record < first)
		}
		if !ok {
			t.Fatalf("no escrow record for %s before its first item (record %d)", user, first)
		}
	}
	// n items, 5 escrow records and at least one checkpoint per append; fewer
	// checkpoints than uploads when appends were grouped is allowed, more is not.
	grew := a.Vault().Size() - before
	if grew < n+5+1 || grew > 2*n+5 {
		t.Fatalf("the log grew by %d records for %d uploads", grew, n)
	}
	t.Logf("%d uploads stored as %d records (%d checkpoints)", n, grew, grew-n-5)
	a.Close()
	v, origin := e.auditVerifier()
	rep, err := storage.Audit(e.drives(), storage.AuditOptions{Verifier: v, Origin: origin})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.TreeSize+1 != before+grew { // the last record is the checkpoint over the rest
		t.Fatalf("audit ok=%v tree %d (log %d): %+v", rep.OK, rep.TreeSize, before+grew, rep.Problems)
	}
}
