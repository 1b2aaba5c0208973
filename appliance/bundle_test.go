package appliance_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffre/appliance"
	"coffre/hsm"
	"coffre/ingest/envelope"
	"coffre/ingest/usb"
	"coffre/storage"
	"coffre/storage/catalog"
)

// The large envelopes of a bundle are streamed one after another, the next
// one opened (and its user's escrow made) while the previous one commits.
// Every good upload is stored once, its user's escrow record before its
// first item; an altered one (listed in the manifest with its own hash, so
// only the envelope's checks catch it) stores nothing and fails no other;
// two large uploads of one user in a row are both stored; a small one
// among them too; an entry that differs from the manifest stops the walk
// without storing it, and what came before stays stored. The drives audit
// clean.
func TestBundleLargeUploads(t *testing.T) {
	for _, image := range []bool{false, true} {
		name := "dir"
		if image {
			name = "image"
		}
		t.Run(name, func(t *testing.T) { testBundleLargeUploads(t, image) })
	}
}

func testBundleLargeUploads(t *testing.T, image bool) {
	e := newVaultSize(t, 128<<20)
	id, err := appliance.LoadIdentity(e.state)
	if err != nil {
		t.Fatal(err)
	}
	ing, err := envelope.ReadKeys(strings.NewReader(id.IngestKey))
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := os.ReadFile(e.path("courier.sec.asc"))
	cour, err := envelope.ReadKeys(bytes.NewReader(cb))
	if err != nil {
		t.Fatal(err)
	}
	const large = 5 << 20 // above the bundle's in-memory limit: streamed in place
	ups := []struct {
		user, item string
		size       int
		altered    bool // ciphertext altered before bundling
		changed    bool // bundle entry changed after bundling (dir only)
	}{
		{user: "ann", item: "a1", size: large},
		{user: "bob", item: "b1", size: large},
		{user: "bob", item: "b2", size: large}, // same user next: waits for b1
		{user: "cyd", item: "c1", size: large, altered: true},
		{user: "dan", item: "d1", size: 1 << 10},
		{user: "eve", item: "e1", size: large},
		{user: "fay", item: "f1", size: large, changed: !image},
	}
	var files []usb.File
	for i, u := range ups {
		content := make([]byte, u.size)
		rand.Read(content)
		p := e.path(fmt.Sprintf("b%04d.env", i))
		m := envelope.Manifest{UserID: u.user, ItemID: u.item, Version: 1, Kind: "document", ContentType: "application/octet-stream"}
		if err := appliance.SealEnvelope(p, ing[0], cour[0], m, envelope.NewUploadID(), bytes.NewReader(content)); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if u.altered {
			b[len(b)-4096] ^= 1
		}
		files = append(files, usb.BytesFile(filepath.Base(p), b))
	}
	bundle := e.path("bundle")
	if image {
		_, err = usb.WriteImage(bundle, files, 0)
	} else {
		_, err = usb.WriteDir(bundle, files)
	}
	if err != nil {
		t.Fatal(err)
	}
	for i, u := range ups {
		if u.changed {
			p := filepath.Join(bundle, files[i].Name)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)/2] ^= 1
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}

	a, err := appliance.Open(e.state, appliance.OpenOptions{Keystore: hsm.Config{Backend: "soft", Passphrase: []byte(testPass)}, Drives: e.drives()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	before := a.Vault().Size()
	outs, err := a.IngestBundle(context.Background(), bundle)
	if image && err != nil {
		t.Fatal(err)
	}
	if !image && !errors.Is(err, usb.ErrHashMismatch) {
		t.Fatalf("a changed entry: IngestBundle returned %v, want %v", err, usb.ErrHashMismatch)
	}
	if len(outs) != len(ups) {
		t.Fatalf("%d outcomes for %d envelopes: %+v", len(outs), len(ups), outs)
	}
	stored := map[uint64]bool{}
	firstItem := map[string]uint64{}
	for i, u := range ups {
		o := outs[i]
		if u.altered || u.changed {
			if o.Error == "" || o.Result != nil {
				t.Fatalf("%s/%s: stored, want refused: %+v", u.user, u.item, o)
			}
			continue
		}
		if o.Error != "" {
			t.Fatalf("%s/%s: %s", u.user, u.item, o.Error)
		}
		r := o.Result
		if stored[r.Index] {
			t.Fatalf("record %d acknowledged twice", r.Index)
		}
		stored[r.Index] = true
		ent, err := a.Catalog().Get(r.Index)
		if err != nil {
			t.Fatal(err)
		}
		if ent.Meta.Kind != catalog.KindItem || ent.Meta.UploadID != r.UploadID || ent.Meta.UserID != u.user || ent.Meta.ItemID != u.item || ent.Meta.Size != int64(u.size) {
			t.Fatalf("%s/%s was told record %d, which holds %+v", u.user, u.item, r.Index, ent.Meta)
		}
		if f, ok := firstItem[u.user]; !ok || r.Index < f {
			firstItem[u.user] = r.Index
		}
	}
	escrows, err := a.Catalog().ByKind(catalog.KindEscrow)
	if err != nil {
		t.Fatal(err)
	}
	for _, es := range escrows {
		if es.Record < before {
			continue
		}
		first, ok := firstItem[es.Meta.UserID]
		if !ok {
			t.Fatalf("escrow record %d for %s, who has nothing stored", es.Record, es.Meta.UserID)
		}
		if es.Record > first {
			t.Fatalf("escrow of %s is record %d, after its first item %d", es.Meta.UserID, es.Record, first)
		}
		delete(firstItem, es.Meta.UserID)
	}
	if len(firstItem) != 0 {
		t.Fatalf("users without an escrow record before their items: %v", firstItem)
	}
	for _, u := range ups {
		if !u.altered && !u.changed {
			continue
		}
		items, err := a.Catalog().Items(u.user)
		if err != nil {
			t.Fatal(err)
		}
		if len(items) != 0 {
			t.Fatalf("refused user %s has records: %+v", u.user, items)
		}
	}
	after := a.Vault().Size()
	a.Close()
	v, origin := e.auditVerifier()
	rep, err := storage.Audit(e.drives(), storage.AuditOptions{Verifier: v, Origin: origin})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.TreeSize+1 != after {
		t.Fatalf("audit ok=%v tree %d (log %d): %+v", rep.OK, rep.TreeSize, after, rep.Problems)
	}
}
