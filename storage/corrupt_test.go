package storage

import (
	"bytes"
	"context"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Damaged-fixture generators: a flipped byte, a torn tail, a rolled-back
// or forked drive, built from real drives on every run.

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// flipByte XORs one byte of an image.
func flipByte(t testing.TB, p string, off int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	f.ReadAt(b, off)
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptionAuditAndScrub(t *testing.T) {
	k := newTestKeys(t)
	paths := imageDrives(t, k, 3, 16<<20)
	v := openVault(t, k, paths, 2)
	r := mrand.New(mrand.NewPCG(31, 32))
	items := appendItems(t, v, r, 100, 200000, 5000)
	for k, x := range appendItems(t, v, r, 70000, 1) {
		items[k] = x
	}
	recs := append([]recInfo(nil), v.recs...)
	end := v.end
	v.Close()
	victim := paths[1]
	info, _ := ReadDriveInfo(victim)
	clean := readFile(t, victim)
	size := int64(len(clean))

	type flip struct {
		name  string
		off   int64
		index int64 // expected record index, -1 for a superblock
	}
	flips := []flip{
		{"primary superblock", 30, -1},
		{"backup superblock", size - SuperblockSize + 200, -1},
		{"superblock checksum", SuperblockSize - 1, -1},
		{"record 0 header", recs[0].off + 10, 0},
		{"record 1 payload", recs[1].off + HeaderSize + 100000, 1},
		{"record 2 padding", recs[2].off + recs[2].len - 1, 2},
		{"checkpoint record body", recs[3].off + HeaderSize + 5, 3},
		{"record 4 header checksum", recs[4].off + 130, 4},
		{"last checkpoint", recs[len(recs)-1].off + HeaderSize + 1, int64(len(recs) - 1)},
	}
	for i := 0; i < 8; i++ {
		off := DataStart + r.Int64N(end-DataStart)
		idx := int64(-1)
		for j, ri := range recs {
			if off >= ri.off && off < ri.off+ri.len {
				idx = int64(j)
			}
		}
		flips = append(flips, flip{fmt.Sprintf("random %d", off), off, idx})
	}
	for _, f := range flips {
		t.Run(f.name, func(t *testing.T) {
			writeFile(t, victim, clean)
			flipByte(t, victim, f.off)
			rep, err := Audit(paths, AuditOptions{Verifier: k.verifier})
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK {
				t.Fatalf("audit missed a flipped byte at %d: %s", f.off, rep)
			}
			found := false
			for _, p := range rep.Problems {
				if p.Path != victim || p.UUID != UUIDString(info.UUID) || p.Slot != 2 {
					t.Fatalf("problem names the wrong drive: %+v", p)
				}
				if p.Index == f.index {
					found = true
				}
			}
			if !found {
				t.Fatalf("no problem at index %d: %s", f.index, rep)
			}
			// Scrub repairs it from the other replicas.
			v := openVault(t, k, paths, 2)
			srep, err := v.Scrub(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			// A damaged superblock copy is already rewritten by Open (the next
			// copy written is always the older or damaged one).
			if (f.index >= 0 && len(srep.Repairs) == 0) || srep.Unrepaired() != 0 {
				t.Fatalf("scrub: %+v", srep)
			}
			for _, rp := range srep.Repairs {
				if rp.Path != victim || (f.index >= 0 && rp.Index != f.index) {
					t.Fatalf("scrub repaired %+v, want drive %s record %d", rp, victim, f.index)
				}
			}
			for _, d := range v.Drives() {
				if d.State != StateActive {
					t.Fatalf("after scrub: %+v", d)
				}
			}
			checkItems(t, v, items)
			v.Close()
			rep, err = Audit(paths, AuditOptions{Verifier: k.verifier})
			if err != nil || !rep.OK {
				t.Fatalf("audit after scrub: %v %s", err, rep)
			}
			replicasEqual(t, paths)
		})
	}
}

func TestAuditSinceRollbackAndFork(t *testing.T) {
	k := newTestKeys(t)
	paths := imageDrives(t, k, 2, 8<<20)
	v := openVault(t, k, paths, 2)
	r := mrand.New(mrand.NewPCG(33, 34))
	appendItems(t, v, r, 100, 200)
	kept1 := v.Checkpoint()
	v.Close()
	dir := t.TempDir()
	old := []string{filepath.Join(dir, "old1.img"), filepath.Join(dir, "old2.img")}
	for i := range old {
		writeFile(t, old[i], readFile(t, paths[i]))
	}
	v = openVault(t, k, paths, 2)
	appendItems(t, v, r, 300)
	kept2 := v.Checkpoint()
	v.Close()

	rep, err := Audit(paths, AuditOptions{Verifier: k.verifier, Since: kept1})
	if err != nil || !rep.OK {
		t.Fatalf("append-only since kept1: %v %s", err, rep)
	}
	// A drive rolled back to an older state.
	rep, _ = Audit(old[:1], AuditOptions{Verifier: k.verifier, Since: kept2})
	if rep.OK || !strings.Contains(rep.String(), "rolled back") {
		t.Fatalf("rolled-back drive passed: %s", rep)
	}
	// A fork: the old drives grow another history, longer than the kept one.
	v = openVault(t, k, old, 2)
	appendItems(t, v, r, 1, 2, 3)
	v.Close()
	rep, _ = Audit(old, AuditOptions{Verifier: k.verifier, Since: kept2})
	if rep.OK || !strings.Contains(rep.String(), "forked") {
		t.Fatalf("forked drives passed: %s", rep)
	}
	// Replicas that disagree with each other.
	rep, _ = Audit([]string{paths[0], old[1]}, AuditOptions{Verifier: k.verifier})
	if rep.OK || !strings.Contains(rep.String(), "disagrees") {
		t.Fatalf("disagreeing replicas passed: %s", rep)
	}
	// A checkpoint signed by another key is refused.
	k2 := newTestKeys(t)
	if _, err := Audit(paths, AuditOptions{Verifier: k2.verifier, Since: kept1}); err == nil {
		t.Fatal("kept checkpoint under another key accepted")
	}
	rep, _ = Audit(paths, AuditOptions{Verifier: k2.verifier})
	if rep.OK {
		t.Fatal("drives audited with the wrong key passed")
	}
}

// TestTornWrite simulates a power cut during a batch: any subset of the
// batch's blocks (and maybe the new superblock) reached each drive. The
// vault must reopen with the previous batch intact, the torn one either
// whole or gone, and identical replicas.
func TestTornWrite(t *testing.T) {
	k := newTestKeys(t)
	paths := imageDrives(t, k, 3, 16<<20)
	v := openVault(t, k, paths, 2)
	r := mrand.New(mrand.NewPCG(35, 36))
	before := appendItems(t, v, r, 1000, 70000)
	v.Close()
	var sA [][]byte
	for _, p := range paths {
		sA = append(sA, readFile(t, p))
	}
	v = openVault(t, k, paths, 2)
	batch := appendItems(t, v, r, 3<<20, 10, 150000)
	nA, nB := uint64(3), v.Size()
	v.Close()
	var sB [][]byte
	for _, p := range paths {
		sB = append(sB, readFile(t, p))
	}
	for round := 0; round < 12; round++ {
		keepRate := r.Float64()
		for i, p := range paths {
			img := bytes.Clone(sA[i])
			all := true
			sbOff := len(img) - SuperblockSize
			for off := DataStart; off < sbOff; off += BlockSize {
				if !bytes.Equal(img[off:off+BlockSize], sB[i][off:off+BlockSize]) {
					if r.Float64() < keepRate {
						copy(img[off:off+BlockSize], sB[i][off:off+BlockSize])
					} else {
						all = false
					}
				}
			}
			// The superblock is written only after the batch is synced; it
			// may then be torn too (half of its blocks' bytes).
			if all && r.IntN(2) == 0 {
				for _, o := range []int{0, sbOff} {
					if r.IntN(3) == 0 {
						copy(img[o:o+SuperblockSize/2], sB[i][o:o+SuperblockSize/2])
					} else {
						copy(img[o:o+SuperblockSize], sB[i][o:o+SuperblockSize])
					}
				}
			}
			writeFile(t, p, img)
		}
		v, err := Open(paths, k.opts(2))
		if err != nil {
			t.Fatalf("round %d: open: %v", round, err)
		}
		n := v.Size()
		if n != nA && n != nB {
			t.Fatalf("round %d: size %d, want %d or %d", round, n, nA, nB)
		}
		checkItems(t, v, before)
		if n == nB {
			checkItems(t, v, batch)
		}
		for _, d := range v.Drives() {
			if d.State != StateActive {
				t.Fatalf("round %d: %+v", round, d)
			}
		}
		appendItems(t, v, r, 10)
		v.Close()
		replicasEqual(t, paths)
		rep, err := Audit(paths, AuditOptions{Verifier: k.verifier})
		if err != nil || !rep.OK {
			t.Fatalf("round %d: audit: %v %s", round, err, rep)
		}
	}
}
