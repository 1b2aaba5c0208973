package catalog

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

func TestRebuildIdentical(t *testing.T) {
	recs := makeRecords(3000)
	key := newKey(t)

	// The catalog the appliance built live, one Index at a time for some.
	live := openTemp(t, key)
	for _, r := range recs[:100] {
		if err := live.Index(r.Index, r.Meta); err != nil {
			t.Fatal(err)
		}
	}
	if err := live.IndexBatch(recs[100:]); err != nil {
		t.Fatal(err)
	}
	want := mustDigest(t, live)

	root := t.TempDir()
	var digests [][32]byte
	for i, order := range [][]Record{recs, reversed(recs)} {
		dir := filepath.Join(root, fmt.Sprint(i))
		c, sum, err := Rebuild(dir, key, scanOf(t, order), nil)
		if err != nil {
			t.Fatal(err)
		}
		if d := mustDigest(t, c); d != sum {
			t.Errorf("rebuild %d returned digest %x, the catalog's is %x", i, sum, d)
		}
		digests = append(digests, sum)
		if w, _ := c.Watermark(); w != uint64(len(recs)) {
			t.Errorf("rebuilt watermark %d, want %d", w, len(recs))
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for i, d := range digests {
		if d != want {
			t.Errorf("rebuild %d digest %x, want %x (the live catalog)", i, d, want)
		}
	}
}

func reversed(recs []Record) []Record {
	out := make([]Record, len(recs))
	for i, r := range recs {
		out[len(recs)-1-i] = r
	}
	return out
}

func TestRebuildOverExisting(t *testing.T) {
	recs := makeRecords(500)
	key := newKey(t)
	dir := filepath.Join(t.TempDir(), "catalog")

	// An old catalog with a stale index (only half the records, and one
	// record that the drives do not have) plus drive and job states.
	old, err := Open(dir, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.IndexBatch(recs[:250]); err != nil {
		t.Fatal(err)
	}
	if err := old.Index(9999, Meta{Kind: KindDriveEvent}); err != nil {
		t.Fatal(err)
	}
	ds := DriveState{State: DriveActive, Slot: 2, Note: "bay 2"}
	if err := old.SetDriveState("drive-a", ds); err != nil {
		t.Fatal(err)
	}
	if err := old.PutJob("reencap", []byte("at 812")); err != nil {
		t.Fatal(err)
	}

	t.Run("refused while in use", func(t *testing.T) {
		_, _, err := Rebuild(dir, key, scanOf(t, recs), nil)
		if err == nil || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("Rebuild of an open catalog: %v", err)
		}
		assertNoLeftovers(t, dir)
	})
	old.Close()

	t.Run("refused when opened during the rebuild", func(t *testing.T) {
		var late *Catalog
		testHook = func(stage string) {
			if stage == "scanned" { // coffred started meanwhile
				var err error
				if late, err = Open(dir, key, nil); err != nil {
					t.Errorf("open during the rebuild: %v", err)
				}
			}
		}
		defer func() { testHook = nil }()
		_, _, err := Rebuild(dir, key, scanOf(t, recs), nil)
		if err == nil || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("Rebuild with the catalog opened meanwhile: %v", err)
		}
		assertNoLeftovers(t, dir)
		if late == nil {
			t.Fatal("no catalog opened")
		}
		// The process that opened it still has it whole.
		if v, ok, err := late.Job("reencap"); err != nil || !ok || string(v) != "at 812" {
			t.Fatalf("the catalog opened during the rebuild lost its state: %q %v %v", v, ok, err)
		}
		if err := late.Close(); err != nil {
			t.Fatal(err)
		}
	})

	c, _, err := Rebuild(dir, key, scanOf(t, recs), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fresh, _, err := Rebuild(filepath.Join(t.TempDir(), "fresh"), key, scanOf(t, recs), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if mustDigest(t, c) != mustDigest(t, fresh) {
		t.Fatal("rebuild over an old catalog differs from a fresh rebuild")
	}
	if _, err := c.Get(9999); !errors.Is(err, ErrNotFound) {
		t.Fatalf("record only the old catalog had survived the rebuild: %v", err)
	}
	states, err := c.DriveStates()
	if err != nil || states["drive-a"].State != DriveActive || states["drive-a"].Note != "bay 2" {
		t.Fatalf("drive states not carried over: %v, %v", states, err)
	}
	if v, ok, err := c.Job("reencap"); err != nil || !ok || string(v) != "at 812" {
		t.Fatalf("job not carried over: %q %v %v", v, ok, err)
	}
	assertNoLeftovers(t, dir)
}

func TestRebuildOneAtATime(t *testing.T) {
	recs := makeRecords(500)
	key := newKey(t)
	dir := filepath.Join(t.TempDir(), "catalog")
	var second error
	testHook = func(stage string) {
		if stage == "sorting" {
			_, _, second = Rebuild(dir, key, scanOf(t, recs), nil)
		}
	}
	defer func() { testHook = nil }()
	c, _, err := Rebuild(dir, key, scanOf(t, recs), nil)
	if err != nil {
		t.Fatalf("the first rebuild failed: %v", err)
	}
	c.Close()
	if second == nil || !strings.Contains(second.Error(), "another rebuild") {
		t.Fatalf("a rebuild during another: %v", second)
	}
	assertNoLeftovers(t, dir)
}

func TestRebuildOldCatalogUnreadable(t *testing.T) {
	recs := makeRecords(50)
	dir := filepath.Join(t.TempDir(), "catalog")
	old, err := Open(dir, newKey(t), nil) // the key was lost and replaced
	if err != nil {
		t.Fatal(err)
	}
	if err := old.SetDriveState("drive-a", DriveState{State: DriveActive}); err != nil {
		t.Fatal(err)
	}
	old.Close()

	var logBuf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	key := newKey(t)
	c, _, err := Rebuild(dir, key, scanOf(t, recs), log)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if states, _ := c.DriveStates(); len(states) != 0 {
		t.Fatalf("states from an unreadable catalog: %v", states)
	}
	if !strings.Contains(logBuf.String(), "not carried over") {
		t.Fatalf("no warning logged:\n%s", logBuf.String())
	}
	if strings.Contains(logBuf.String(), hex.EncodeToString(key)) {
		t.Fatal("key in the log")
	}
	if w, _ := c.Watermark(); w != 50 {
		t.Fatalf("watermark %d", w)
	}
}

func TestRebuildFailureKeepsOld(t *testing.T) {
	recs := makeRecords(400)
	key := newKey(t)
	dir := filepath.Join(t.TempDir(), "catalog")
	old, err := Open(dir, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.IndexBatch(recs[:100]); err != nil {
		t.Fatal(err)
	}
	want := mustDigest(t, old)
	old.Close()

	good := scanOf(t, recs)
	cases := []struct {
		name    string
		scan    ScanFunc
		wantErr string
	}{
		{"scan fails midway", func(fn func(uint64, []byte) error) error {
			n := 0
			return good(func(i uint64, b []byte) error {
				if n++; n == 300 {
					return errors.New("drive 2: read error at record 299")
				}
				return fn(i, b)
			})
		}, "drive 2: read error"},
		{"malformed meta", func(fn func(uint64, []byte) error) error {
			return good(func(i uint64, b []byte) error {
				if i == 123 {
					b = append(b, 0)
				}
				return fn(i, b)
			})
		}, "record 123: malformed record meta"},
		{"supersede of a later record", func(fn func(uint64, []byte) error) error {
			return good(func(i uint64, b []byte) error {
				if i == 200 {
					b, _ = EncodeMeta(Meta{Kind: KindSupersede, Supersedes: 201})
				}
				return fn(i, b)
			})
		}, "record 200"},
		{"two metas for one record", func(fn func(uint64, []byte) error) error {
			if err := good(fn); err != nil {
				return err
			}
			b, _ := EncodeMeta(Meta{Kind: KindDriveEvent, Attrs: map[string]string{"x": "y"}})
			return fn(5, b)
		}, "record 5"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Rebuild(dir, key, tc.scan, nil)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "catalog: ") {
				t.Fatalf("Rebuild: %v, want an error containing %q", err, tc.wantErr)
			}
			assertNoLeftovers(t, dir)
			c, err := Open(dir, key, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if mustDigest(t, c) != want {
				t.Fatal("a failed rebuild changed the old catalog")
			}
		})
	}
}

func assertNoLeftovers(t *testing.T, dir string) {
	t.Helper()
	m, _ := filepath.Glob(dir + rebuildSuffix + "*")
	if len(m) != 0 {
		t.Fatalf("leftover temporaries: %v", m)
	}
}

// TestRebuildCrash kills a rebuilding process (SIGKILL, no clean-up) at
// each stage and checks that the catalog at dir is then complete: the old
// one before the swap, the new one after it, and that the next Rebuild
// clears the leftovers.
func TestRebuildCrash(t *testing.T) {
	recs := makeRecords(3000)
	key := newKey(t)
	root := t.TempDir()
	// The drives' view, written for the child to scan.
	scanFile := filepath.Join(root, "records")
	var sb bytes.Buffer
	for _, r := range recs {
		b, err := EncodeMeta(r.Meta)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&sb, "%d %x\n", r.Index, b)
	}
	if err := os.WriteFile(scanFile, sb.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	fresh, _, err := Rebuild(filepath.Join(root, "reference"), key, scanOf(t, recs), nil)
	if err != nil {
		t.Fatal(err)
	}
	newDigest := mustDigest(t, fresh)
	fresh.Close()

	for _, stage := range []string{"mid-scan", "scanned", "swapped", "none"} {
		t.Run(stage, func(t *testing.T) {
			dir := filepath.Join(root, stage, "catalog")
			old, err := Open(dir, key, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := old.IndexBatch(recs[:700]); err != nil {
				t.Fatal(err)
			}
			if err := old.PutJob("j", []byte("kept")); err != nil {
				t.Fatal(err)
			}
			oldDigest := mustDigest(t, old)
			old.Close()

			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "COFFRE_CATALOG_CHILD=1", "CHILD_DIR="+dir,
				"CHILD_KEY="+hex.EncodeToString(key), "CHILD_STAGE="+stage, "CHILD_RECORDS="+scanFile)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			killed := errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
			if stage == "none" {
				if err != nil {
					t.Fatalf("child: %v\n%s", err, out)
				}
			} else if !killed {
				t.Fatalf("child was not killed at %s: %v\n%s", stage, err, out)
			}

			c, err := Open(dir, key, nil)
			if err != nil {
				t.Fatalf("catalog unusable after a crash at %s: %v", stage, err)
			}
			got := mustDigest(t, c)
			want := oldDigest
			if stage == "swapped" || stage == "none" {
				want = newDigest
			}
			if got != want {
				t.Fatalf("after a crash at %s: digest %x, want %x (old %x, new %x)", stage, got, want, oldDigest, newDigest)
			}
			if v, ok, _ := c.Job("j"); !ok || string(v) != "kept" {
				t.Fatalf("job state lost after a crash at %s", stage)
			}
			c.Close()

			// The next rebuild completes and clears any leftovers.
			c, _, err = Rebuild(dir, key, scanOf(t, recs), nil)
			if err != nil {
				t.Fatal(err)
			}
			if mustDigest(t, c) != newDigest {
				t.Fatal("rebuild after a crash differs")
			}
			c.Close()
			assertNoLeftovers(t, dir)
		})
	}
}

// childModes are the jobs this test binary runs as a child process, by
// the value of COFFRE_CATALOG_CHILD.
var childModes = map[string]func() error{"1": rebuildChild}

func TestMain(m *testing.M) {
	if mode := os.Getenv("COFFRE_CATALOG_CHILD"); mode != "" {
		run, ok := childModes[mode]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown child mode %q\n", mode)
			os.Exit(3)
		}
		if err := run(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// rebuildChild is the child process of TestRebuildCrash: it rebuilds and
// kills itself at CHILD_STAGE.
func rebuildChild() error {
	key, err := hex.DecodeString(os.Getenv("CHILD_KEY"))
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(os.Getenv("CHILD_RECORDS"))
	if err != nil {
		return err
	}
	stage := os.Getenv("CHILD_STAGE")
	die := func() { syscall.Kill(os.Getpid(), syscall.SIGKILL); select {} }
	testHook = func(s string) {
		if s == stage {
			die()
		}
	}
	scan := func(fn func(uint64, []byte) error) error {
		for n, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
			if stage == "mid-scan" && n == 2500 {
				die()
			}
			var idx uint64
			var hx string
			if _, err := fmt.Sscanf(line, "%d %s", &idx, &hx); err != nil {
				return err
			}
			b, err := hex.DecodeString(hx)
			if err != nil {
				return err
			}
			if err := fn(idx, b); err != nil {
				return err
			}
		}
		return nil
	}
	c, _, err := Rebuild(os.Getenv("CHILD_DIR"), key, scan, nil)
	if err != nil {
		return err
	}
	return c.Close()
}

// TestRebuildBulkPaths rebuilds, through the bulk load and through
// transactions, record sets that exercise its corners, and checks both
// give the live catalog's content and digest.
func TestRebuildBulkPaths(t *testing.T) {
	big := item("user-big", "letter", 1, 90001, 0)
	big.Attrs = map[string]string{"note": strings.Repeat("é", 7000)} // a meta above the value threshold
	withBig := append(makeRecords(500), Record{500, big})
	gap := makeRecords(400)
	gap = append(gap[:200:200], gap[201:]...) // record 200 missing
	cases := []struct {
		name       string
		recs       []Record
		sortMemory int
		watermark  uint64
	}{
		{"keys sorted in memory", makeRecords(3000), RebuildSortMemory, 3000},
		{"keys spilled and merged", makeRecords(3000), 4 << 10, 3000},
		{"meta above the value threshold", withBig, RebuildSortMemory, 501},
		{"gap in the records", gap, 8 << 10, 200},
		{"no records", nil, RebuildSortMemory, 0},
		{"no record 0", makeRecords(300)[1:], RebuildSortMemory, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			defer func(m int) { rebuildSortMemory = m }(rebuildSortMemory)
			rebuildSortMemory = tc.sortMemory
			key := newKey(t)
			live := openTemp(t, key)
			if err := live.IndexBatch(tc.recs); err != nil {
				t.Fatal(err)
			}
			want := mustDigest(t, live)
			root := t.TempDir()
			for _, order := range []string{"in order", "reversed"} {
				recs := tc.recs
				if order == "reversed" {
					recs = reversed(recs)
				}
				c, sum, err := Rebuild(filepath.Join(root, order), key, scanOf(t, recs), nil)
				if err != nil {
					t.Fatal(err)
				}
				if got := mustDigest(t, c); got != want || sum != want {
					t.Errorf("%s: digest %x, returned %x, want %x", order, got, sum, want)
				}
				if w, err := c.Watermark(); err != nil || w != tc.watermark {
					t.Errorf("%s: watermark %d %v, want %d", order, w, err, tc.watermark)
				}
				for _, r := range tc.recs {
					e, err := c.Get(r.Index)
					if err != nil || !reflect.DeepEqual(e.Meta, r.Meta) {
						t.Fatalf("%s: record %d: %+v %v", order, r.Index, e.Meta, err)
					}
				}
				// The rebuilt catalog takes live writes after it.
				next := Record{9000, item("user-late", "pw", 1, 9000, 0)}
				if err := c.Index(next.Index, next.Meta); err != nil {
					t.Fatal(err)
				}
				if e, err := c.Get(next.Index); err != nil || e.Meta.UserID != "user-late" {
					t.Fatalf("%s: record indexed after the rebuild: %+v %v", order, e, err)
				}
				if err := c.Close(); err != nil {
					t.Fatal(err)
				}
				assertNoLeftovers(t, filepath.Join(root, order))
			}
		})
	}
}

// TestRebuildEncryptedAtRest: the bulk-loaded catalog and the sorter's
// spilled runs hold no user id in the clear.
func TestRebuildEncryptedAtRest(t *testing.T) {
	defer func(m int) { rebuildSortMemory = m }(rebuildSortMemory)
	rebuildSortMemory = 4 << 10
	const marker = "plaintext-marker-user-5b1e"
	var recs []Record
	for i := uint64(0); i < 2000; i++ {
		recs = append(recs, Record{i, item(fmt.Sprintf("%s-%d", marker, i%50), "pw", uint32(i/50+1), i, 0)})
	}
	root := t.TempDir()
	dir := filepath.Join(root, "catalog")
	spilled := 0
	testHook = func(stage string) {
		if stage == "sorting" { // the runs exist now
			m, _ := filepath.Glob(filepath.Join(root, "catalog"+rebuildSuffix+"sort-*", "*.run"))
			spilled = len(m)
			checkNoMarker(t, root, marker)
		}
	}
	defer func() { testHook = nil }()
	c, _, err := Rebuild(dir, newKey(t), scanOf(t, recs), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if spilled == 0 {
		t.Fatal("the rebuild spilled no run")
	}
	if n := checkNoMarker(t, root, marker); n < 10000 {
		t.Fatalf("only %d bytes on disk", n)
	}
}

func checkNoMarker(t *testing.T, root, marker string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		n += len(b)
		if bytes.Contains(b, []byte(marker)) {
			t.Errorf("%s holds a user id in the clear", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
