package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	mrand "math/rand/v2"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// TestConformance runs the same suite against image files and loop
// devices.
func TestConformance(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { conformance(t, b) })
	}
}

func conformance(t *testing.T, b backend) {
	const size = 64 << 20
	t.Run("RoundTrip", func(t *testing.T) {
		k := newTestKeys(t)
		paths := formatDrives(t, k, b, 4, size)
		v := openVault(t, k, paths, 3)
		r := mrand.New(mrand.NewPCG(1, 2))
		items := appendItems(t, v, r, 0, 1, 100, ChunkSize-1, ChunkSize, ChunkSize+1, 3<<20, 5<<20+7)
		for k, v := range appendItems(t, v, r, 4000, 4096, 9000) {
			items[k] = v
		}
		checkItems(t, v, items)
		if got := v.Size(); got != 13 { // 8 + ckpt + 3 + ckpt
			t.Fatalf("size %d, want 13", got)
		}
		for _, d := range v.Drives() {
			if d.State != StateActive || d.Records != 13 || d.Lag != 0 {
				t.Fatalf("drive %+v, want active with 13 records", d)
			}
		}
		v.Close()
		replicasEqual(t, paths)
		v2 := openVault(t, k, paths, 3)
		checkItems(t, v2, items)
		// The checkpoint verifies and covers every record but the last.
		c, err := OpenCheckpoint(v2.Checkpoint(), k.verifier, "coffre.test/vault")
		if err != nil || c.Size != 12 {
			t.Fatalf("checkpoint %+v, %v", c, err)
		}
		for idx := range items {
			p, err := v2.InclusionProof(idx, c.Size)
			if err != nil {
				t.Fatal(err)
			}
			leaf, _ := v2.LeafHash(idx)
			if err := tlog.CheckRecord(p, int64(c.Size), c.Hash, int64(idx), leaf); err != nil {
				t.Fatalf("record %d: inclusion proof: %v", idx, err)
			}
		}
		info, err := ReadDriveInfo(paths[2])
		if err != nil || info.Slot != 3 || info.VaultID != k.vault || info.Records != 13 || !bytes.Equal(info.Checkpoint, v2.Checkpoint()) ||
			string(info.WrappedRecordKey) != "wrapped-key" {
			t.Fatalf("drive info %+v, %v", info, err)
		}
	})
	t.Run("ScanAndScanDrive", func(t *testing.T) {
		k := newTestKeys(t)
		paths := formatDrives(t, k, b, 3, size)
		v := openVault(t, k, paths, 3)
		r := mrand.New(mrand.NewPCG(3, 4))
		items := appendItems(t, v, r, 10, 20, 30)
		for k, v := range appendItems(t, v, r, 70000) {
			items[k] = v
		}
		var got []uint64
		err := v.Scan(0, func(h Header, meta []byte) error {
			if h.Type == TypeItem {
				if !bytes.Equal(meta, items[h.Index].meta) {
					t.Errorf("scan %d: meta %q", h.Index, meta)
				}
				got = append(got, h.Index)
			}
			return nil
		})
		if err != nil || len(got) != 4 {
			t.Fatalf("scan: %v %v", got, err)
		}
		v.Close()
		got = nil
		err = ScanDrive(paths[1], k.recordKey, func(h Header, meta []byte) error {
			if h.Type == TypeItem {
				if !bytes.Equal(meta, items[h.Index].meta) {
					t.Errorf("scandrive %d: meta %q", h.Index, meta)
				}
				got = append(got, h.Index)
			}
			return nil
		})
		if err != nil || len(got) != 4 {
			t.Fatalf("scandrive: %v %v", got, err)
		}
	})
	t.Run("ExclusiveWriter", func(t *testing.T) {
		k := newTestKeys(t)
		paths := formatDrives(t, k, b, 1, size)
		openVault(t, k, paths, 1)
		if _, err := Open(paths, k.opts(1)); err == nil || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("second writer: %v, want in use", err)
		}
	})
	t.Run("BodyErrorCommitsNothing", func(t *testing.T) {
		k := newTestKeys(t)
		paths := formatDrives(t, k, b, 3, size)
		v := openVault(t, k, paths, 2)
		r := mrand.New(mrand.NewPCG(5, 6))
		items := appendItems(t, v, r, 100)
		bad := io.MultiReader(bytes.NewReader(make([]byte, 5<<20)), iotest{})
		_, err := v.Append(context.Background(), Record{Type: TypeItem, Body: bytes.NewReader([]byte("ok"))}, Record{Type: TypeItem, Body: bad})
		if err == nil {
			t.Fatal("append with a failing body succeeded")
		}
		if v.Size() != 2 {
			t.Fatalf("size %d after a failed append, want 2", v.Size())
		}
		for k, x := range appendItems(t, v, r, 10) {
			items[k] = x
		}
		v.Close()
		v = openVault(t, k, paths, 2)
		if v.Size() != 4 {
			t.Fatalf("size %d after reopen, want 4", v.Size())
		}
		checkItems(t, v, items)
	})
	t.Run("MissingReturningAndNewDrive", func(t *testing.T) {
		k := newTestKeys(t)
		paths := formatDrives(t, k, b, 4, size)
		v := openVault(t, k, paths, 3)
		r := mrand.New(mrand.NewPCG(7, 8))
		items := appendItems(t, v, r, 1000, 2000)
		v.Close()
		// Drive 4 goes offsite; the vault carries on with three.
		v = openVault(t, k, paths[:3], 3)
		for k, x := range appendItems(t, v, r, 3000) {
			items[k] = x
		}
		var missing int
		for _, d := range v.Drives() {
			if d.State == StateMissing && d.Slot == 4 {
				missing++
			}
		}
		if missing != 1 {
			t.Fatalf("drives %+v: want slot 4 missing", v.Drives())
		}
		// It returns and catches up.
		var progressed bool
		if err := v.AddDrive(paths[3], func(done, total uint64) { progressed = done > 0 && done <= total }); err != nil {
			t.Fatal(err)
		}
		if !progressed {
			t.Fatal("no progress reported")
		}
		for _, d := range v.Drives() {
			if d.State != StateActive || d.Lag != 0 {
				t.Fatalf("drive %+v not caught up", d)
			}
		}
		// Retire drive 1; a new drive takes slot 1.
		info, _ := ReadDriveInfo(paths[0])
		if err := v.Retire(info.UUID); err != nil {
			t.Fatal(err)
		}
		nd := b.drive(t, size)
		if _, err := Format(nd, FormatOptions{VaultID: k.vault, Slot: 1, WrappedRecordKey: []byte("wrapped-key")}); err != nil {
			t.Fatal(err)
		}
		if err := v.AddDrive(nd, nil); err != nil {
			t.Fatal(err)
		}
		for k, x := range appendItems(t, v, r, 4000) {
			items[k] = x
		}
		checkItems(t, v, items)
		v.Close()
		all := []string{nd, paths[1], paths[2], paths[3]}
		replicasEqual(t, all)
		v = openVault(t, k, append(all, paths[0]), 3)
		var retired int
		for _, d := range v.Drives() {
			if d.State == StateRetired {
				retired++
			}
		}
		if retired != 1 {
			t.Fatalf("drives %+v: want the old slot-1 drive retired", v.Drives())
		}
		checkItems(t, v, items)
	})
	t.Run("Audit", func(t *testing.T) {
		k := newTestKeys(t)
		paths := formatDrives(t, k, b, 2, size)
		v := openVault(t, k, paths, 2)
		r := mrand.New(mrand.NewPCG(9, 10))
		appendItems(t, v, r, 100, 200000)
		kept := v.Checkpoint()
		appendItems(t, v, r, 300)
		v.Close()
		rep, err := Audit(paths, AuditOptions{Verifier: k.verifier, Since: kept})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK || len(rep.Problems) != 0 {
			t.Fatalf("clean drives: %s", rep)
		}
		c, err := OpenCheckpoint([]byte(rep.Checkpoint), k.verifier, "")
		if err != nil || c.Size != 4 { // 2 items, ckpt(2), item, ckpt(4)
			t.Fatalf("audit checkpoint %+v %v", c, err)
		}
	})
	t.Run("WrongVaultRefused", func(t *testing.T) {
		k := newTestKeys(t)
		k2 := newTestKeys(t)
		p1 := formatDrives(t, k, b, 1, size)
		p2 := formatDrives(t, k2, b, 1, size)
		if _, err := Open(append(p1, p2...), k.opts(1)); err == nil || !strings.Contains(err.Error(), "belongs to vault") {
			t.Fatalf("mixed vaults: %v", err)
		}
	})
	t.Run("NoQuorum", func(t *testing.T) {
		k := newTestKeys(t)
		paths := formatDrives(t, k, b, 2, size)
		v := openVault(t, k, paths, 3)
		_, err := v.Append(context.Background(), Record{Type: TypeItem})
		if !errors.Is(err, ErrNoQuorum) {
			t.Fatalf("append on 2 drives with quorum 3: %v", err)
		}
	})
}

type iotest struct{}

func (iotest) Read([]byte) (int, error) { return 0, errors.New("test: body source failed") }
