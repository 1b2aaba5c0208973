package catalog

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

func records(es []Entry) []uint64 {
	var out []uint64
	for _, e := range es {
		out = append(out, e.Record)
	}
	return out
}

func TestIndexSemantics(t *testing.T) {
	type want struct {
		items, live, latest []uint64
		superseded          map[uint64]uint64 // record → superseded by
	}
	cases := []struct {
		name string
		recs []Record
		user string
		want want
	}{
		{
			name: "versions are appended, never overwritten",
			recs: []Record{
				{1, item("alice", "pw", 1, 1, 0)},
				{2, item("alice", "pw", 2, 2, 0)},
				{3, item("alice", "pw", 3, 3, 0)},
			},
			user: "alice",
			want: want{items: []uint64{1, 2, 3}, live: []uint64{1, 2, 3}, latest: []uint64{3}},
		},
		{
			name: "same version twice without supersede keeps both",
			recs: []Record{
				{1, item("alice", "pw", 1, 1, 0)},
				{2, item("alice", "pw", 1, 2, 0)},
			},
			user: "alice",
			want: want{items: []uint64{1, 2}, live: []uint64{1, 2}, latest: []uint64{2}},
		},
		{
			name: "supersede hides from live but stays listed",
			recs: []Record{
				{1, item("alice", "pw", 1, 1, 0)},
				{2, item("alice", "pw", 2, 2, 0)},
				{5, item("alice", "pw", 2, 2, 2)}, // re-encap of v2
			},
			user: "alice",
			want: want{items: []uint64{1, 2, 5}, live: []uint64{1, 5}, latest: []uint64{5},
				superseded: map[uint64]uint64{2: 5}},
		},
		{
			name: "superseded latest version falls back to the live record",
			recs: []Record{
				{1, item("alice", "pw", 1, 1, 0)},
				{2, item("alice", "pw", 2, 2, 0)},
				{3, Meta{Kind: KindSupersede, Supersedes: 2}},
			},
			user: "alice",
			want: want{items: []uint64{1, 2}, live: []uint64{1}, latest: []uint64{1},
				superseded: map[uint64]uint64{2: 3}},
		},
		{
			name: "sorted by item, then version, whatever the record order",
			recs: []Record{
				{1, item("alice", "zeta", 2, 1, 0)},
				{2, item("alice", "alpha", 1, 2, 0)},
				{3, item("alice", "zeta", 1, 3, 0)},
				{4, item("alice", "alpha!", 1, 4, 0)},
			},
			user: "alice",
			want: want{items: []uint64{2, 4, 3, 1}, live: []uint64{2, 4, 3, 1}, latest: []uint64{2, 4, 1}},
		},
		{
			name: "users are kept apart, prefix users included",
			recs: []Record{
				{1, item("al", "pw", 1, 1, 0)},
				{2, item("alice", "pw", 1, 2, 0)},
				{3, Meta{Kind: KindEscrow, UserID: "al"}},
			},
			user: "al",
			want: want{items: []uint64{1}, live: []uint64{1}, latest: []uint64{1}},
		},
		{
			name: "lowest superseding record is reported",
			recs: []Record{
				{1, item("alice", "pw", 1, 1, 0)},
				{4, item("alice", "pw", 1, 1, 1)},
				{3, item("alice", "pw", 1, 1, 1)},
			},
			user: "alice",
			want: want{items: []uint64{1, 3, 4}, live: []uint64{3, 4}, latest: []uint64{4},
				superseded: map[uint64]uint64{1: 3}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := openTemp(t, newKey(t))
			for _, r := range tc.recs {
				if err := c.Index(r.Index, r.Meta); err != nil {
					t.Fatal(err)
				}
			}
			items, err := c.Items(tc.user)
			if err != nil {
				t.Fatal(err)
			}
			live, err := c.Live(tc.user)
			if err != nil {
				t.Fatal(err)
			}
			latest, err := c.Latest(tc.user)
			if err != nil {
				t.Fatal(err)
			}
			if got := records(items); !reflect.DeepEqual(got, tc.want.items) {
				t.Errorf("Items = %v, want %v", got, tc.want.items)
			}
			if got := records(live); !reflect.DeepEqual(got, tc.want.live) {
				t.Errorf("Live = %v, want %v", got, tc.want.live)
			}
			if got := records(latest); !reflect.DeepEqual(got, tc.want.latest) {
				t.Errorf("Latest = %v, want %v", got, tc.want.latest)
			}
			for _, e := range items {
				if want := tc.want.superseded[e.Record]; e.SupersededBy != want {
					t.Errorf("record %d superseded by %d, want %d", e.Record, e.SupersededBy, want)
				}
				var orig Meta
				for _, r := range tc.recs {
					if r.Index == e.Record {
						orig = r.Meta
					}
				}
				if !metaEqual(e.Meta, orig) {
					t.Errorf("record %d meta %+v, want %+v", e.Record, e.Meta, orig)
				}
			}
		})
	}
}

func TestUploadSeenSet(t *testing.T) {
	c := openTemp(t, newKey(t))
	if err := c.Index(5, item("alice", "pw", 1, 42, 0)); err != nil {
		t.Fatal(err)
	}
	// A later record carrying the same upload id (a re-encapsulation).
	if err := c.Index(9, item("alice", "pw", 1, 42, 5)); err != nil {
		t.Fatal(err)
	}
	// An earlier one indexed late (concurrent appends): the lowest wins.
	if err := c.Index(3, item("bob", "pw", 1, 42, 0)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id    string
		found bool
		rec   uint64
	}{
		{uploadID(42), true, 3},
		{uploadID(43), false, 0},
		{uploadID(41), false, 0},
	} {
		rec, found, err := c.Upload(tc.id)
		if err != nil || found != tc.found || rec != tc.rec {
			t.Errorf("Upload(%s) = %d, %v, %v; want %d, %v", tc.id, rec, found, err, tc.rec, tc.found)
		}
	}
	for _, bad := range []string{"", "ABCDEF0123456789ABCDEF0123456789", uploadID(1) + "0", "zz"} {
		if _, _, err := c.Upload(bad); err == nil {
			t.Errorf("Upload(%q) accepted a malformed id", bad)
		}
	}
}

func TestIndexIdempotentAndConflict(t *testing.T) {
	c := openTemp(t, newKey(t))
	m := item("alice", "pw", 1, 1, 0)
	if err := c.Index(1, m); err != nil {
		t.Fatal(err)
	}
	d1 := mustDigest(t, c)
	if err := c.Index(1, m); err != nil {
		t.Fatalf("re-indexing the same record: %v", err)
	}
	if d2 := mustDigest(t, c); d1 != d2 {
		t.Fatal("re-indexing the same record changed the catalog")
	}
	m2 := m
	m2.Version = 2
	err := c.Index(1, m2)
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "record 1") || !strings.Contains(err.Error(), "rebuild") {
		t.Fatalf("different meta at an indexed record: %v, want ErrConflict naming the record and the fix", err)
	}
	if d3 := mustDigest(t, c); d1 != d3 {
		t.Fatal("a rejected Index changed the catalog")
	}
	// A failed batch is all-or-nothing.
	err = c.IndexBatch([]Record{{2, item("bob", "pw", 1, 2, 0)}, {1, m2}})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("batch with a conflict: %v", err)
	}
	if users, _ := c.Users(); !reflect.DeepEqual(users, []string{"alice"}) {
		t.Fatalf("failed batch left users %v", users)
	}
}

func TestIndexRejects(t *testing.T) {
	c := openTemp(t, newKey(t))
	for _, tc := range []struct {
		name string
		idx  uint64
		m    Meta
		want string
	}{
		{"supersedes itself", 4, item("a", "b", 1, 1, 4), "not earlier"},
		{"supersedes a later record", 4, item("a", "b", 1, 1, 9), "not earlier"},
		{"malformed meta", 4, Meta{Kind: KindItem}, "item record without a user id"},
		{"unknown kind", 4, Meta{Kind: 200}, "unknown kind 200"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Index(tc.idx, tc.m)
			if !errors.Is(err, ErrMalformedMeta) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Index: %v, want ErrMalformedMeta containing %q", err, tc.want)
			}
		})
	}
	if w, _ := c.Watermark(); w != 0 {
		t.Fatalf("rejected records moved the watermark to %d", w)
	}
}

func TestGetAndByKind(t *testing.T) {
	c := openTemp(t, newKey(t))
	recs := makeRecords(300)
	if err := c.IndexBatch(recs); err != nil {
		t.Fatal(err)
	}
	for _, r := range []Record{recs[0], recs[11], recs[97], recs[150]} {
		e, err := c.Get(r.Index)
		if err != nil {
			t.Fatal(err)
		}
		if e.Record != r.Index || !metaEqual(e.Meta, r.Meta) {
			t.Fatalf("Get(%d) = %+v, want %+v", r.Index, e, r)
		}
	}
	if _, err := c.Get(300); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a missing record: %v", err)
	}
	for kind := range kindNames {
		es, err := c.ByKind(kind)
		if err != nil {
			t.Fatal(err)
		}
		var want []uint64
		for _, r := range recs {
			if r.Meta.Kind == kind {
				want = append(want, r.Index)
			}
		}
		if got := records(es); !reflect.DeepEqual(got, want) {
			t.Errorf("ByKind(%s) = %v, want %v", kind, got, want)
		}
	}
	if _, err := c.ByKind(0); err == nil {
		t.Error("ByKind(0) accepted an unknown kind")
	}
	users, err := c.Users()
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 37 || users[0] != "user-000" || users[36] != "user-036" {
		t.Errorf("Users = %v", users)
	}
}

func TestWatermark(t *testing.T) {
	c := openTemp(t, newKey(t))
	steps := []struct {
		idx  uint64
		want uint64
	}{{0, 1}, {1, 2}, {3, 2}, {5, 2}, {2, 4}, {4, 6}, {4, 6}, {10, 6}}
	for _, s := range steps {
		m := Meta{Kind: KindDriveEvent}
		if s.idx == 0 {
			m = Meta{Kind: KindGenesis}
		}
		if err := c.Index(s.idx, m); err != nil {
			t.Fatal(err)
		}
		if w, err := c.Watermark(); err != nil || w != s.want {
			t.Fatalf("after indexing %d: watermark %d (%v), want %d", s.idx, w, err, s.want)
		}
	}
}

func TestOrderIndependentDigest(t *testing.T) {
	recs := makeRecords(2000)
	key := newKey(t)
	inOrder := openTemp(t, key)
	for _, r := range recs[:200] { // one durable transaction each
		if err := inOrder.Index(r.Index, r.Meta); err != nil {
			t.Fatal(err)
		}
	}
	if err := inOrder.IndexBatch(recs[200:]); err != nil {
		t.Fatal(err)
	}
	want := mustDigest(t, inOrder)

	// Concurrent appenders in shuffled order, some records twice.
	shuffled := append([]Record{}, recs...)
	shuffled = append(shuffled, recs[:100]...)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	other := openTemp(t, newKey(t)) // a different key: the digest is of content
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(part []Record) {
			defer wg.Done()
			for len(part) > 0 {
				n := min(len(part), 1+rand.IntN(50))
				if err := other.IndexBatch(part[:n]); err != nil {
					errs <- err
					return
				}
				part = part[n:]
			}
		}(shuffled[w*len(shuffled)/4 : (w+1)*len(shuffled)/4])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := mustDigest(t, other); got != want {
		t.Fatalf("digest after concurrent out-of-order indexing %x, want %x", got, want)
	}
	if w, _ := other.Watermark(); w != uint64(len(recs)) {
		t.Fatalf("watermark %d, want %d", w, len(recs))
	}
	// And a catalog missing one record differs.
	partial := openTemp(t, key)
	if err := partial.IndexBatch(recs[:len(recs)-1]); err != nil {
		t.Fatal(err)
	}
	if mustDigest(t, partial) == want {
		t.Fatal("digest does not depend on the records")
	}
	// Drive and job states are not part of the digest.
	if err := other.SetDriveState("d1", DriveState{State: DriveActive}); err != nil {
		t.Fatal(err)
	}
	if err := other.PutJob("j1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if got := mustDigest(t, other); got != want {
		t.Fatal("drive or job state changed the digest")
	}
}

func TestReopen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "catalog")
	key := newKey(t)
	c, err := Open(dir, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	recs := makeRecords(100)
	if err := c.IndexBatch(recs); err != nil {
		t.Fatal(err)
	}
	want := mustDigest(t, c)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Users(); !errors.Is(err, ErrClosed) {
		t.Fatalf("use after Close: %v", err)
	}
	if err := c.Index(200, Meta{Kind: KindGenesis}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Index after Close: %v", err)
	}

	t.Run("right key", func(t *testing.T) {
		c, err := Open(dir, key, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := mustDigest(t, c); got != want {
			t.Fatal("reopened catalog differs")
		}
		if w, _ := c.Watermark(); w != 100 {
			t.Fatalf("watermark %d after reopen", w)
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		wrong := newKey(t)
		var logBuf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug - 4}))
		_, err := Open(dir, wrong, log)
		if !errors.Is(err, ErrWrongKey) {
			t.Fatalf("Open with the wrong key: %v, want ErrWrongKey", err)
		}
		msg := err.Error()
		if !strings.Contains(msg, dir) || !strings.Contains(msg, "coffre catalog rebuild") {
			t.Errorf("error %q does not name the catalog and the next step", msg)
		}
		for _, k := range [][]byte{key, wrong} {
			for _, s := range []string{hex.EncodeToString(k), string(k)} {
				if strings.Contains(msg, s) || strings.Contains(logBuf.String(), s) {
					t.Fatal("key material in the error or the log")
				}
			}
		}
		// The failed open released the directory: the right key still works.
		c, err := Open(dir, key, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	})
	t.Run("short key", func(t *testing.T) {
		if _, err := Open(dir, key[:16], nil); err == nil || !strings.Contains(err.Error(), "want 32") {
			t.Fatalf("Open with a 16-byte key: %v", err)
		}
	})
	t.Run("second open while in use", func(t *testing.T) {
		c, err := Open(dir, key, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := Open(dir, key, nil); err == nil {
			t.Fatal("a second Open of a catalog in use succeeded")
		}
	})
}

func TestOptionsForSmallMachine(t *testing.T) {
	key := newKey(t)
	c := openTemp(t, key)
	o := c.db.Opts()
	checks := []struct {
		name      string
		got, want any
	}{
		{"SyncWrites", o.SyncWrites, true},
		{"MemTableSize", o.MemTableSize, int64(MemTableSize)},
		{"NumMemtables", o.NumMemtables, NumMemtables},
		{"BlockCacheSize", o.BlockCacheSize, int64(BlockCacheSize)},
		{"IndexCacheSize", o.IndexCacheSize, int64(IndexCacheSize)},
		{"ValueLogFileSize", o.ValueLogFileSize, int64(ValueLogFileSize)},
		{"BaseTableSize", o.BaseTableSize, int64(BaseTableSize)},
		{"NumCompactors", o.NumCompactors, NumCompactors},
		{"ChecksumVerificationMode", o.ChecksumVerificationMode, options.OnBlockRead},
		{"VerifyValueChecksum", o.VerifyValueChecksum, true},
		{"EncryptionKey", bytes.Equal(o.EncryptionKey, key), true},
		{"Logger is ours", reflect.TypeOf(o.Logger), reflect.TypeOf(badgerLogger{})},
	}
	for _, ck := range checks {
		if !reflect.DeepEqual(ck.got, ck.want) {
			t.Errorf("%s = %v, want %v", ck.name, ck.got, ck.want)
		}
	}
	// Memory budget: memtables + caches well under badger's >500 MiB.
	if budget := o.MemTableSize*int64(o.NumMemtables) + o.BlockCacheSize + o.IndexCacheSize; budget > 48<<20 {
		t.Errorf("memory budget %d MiB", budget>>20)
	}
}

func TestEncryptedAtRest(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "catalog")
	c, err := Open(dir, newKey(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	const marker = "plaintext-marker-user-7f3a"
	for i := uint64(0); i < 50; i++ {
		m := item(marker, "pw", uint32(i+1), i, 0)
		if err := c.Index(i+1, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.PutJob("job-"+marker, []byte(marker)); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil { // flushes the memtable to tables
		t.Fatal(err)
	}
	n := 0
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		n += len(b)
		if bytes.Contains(b, []byte(marker)) {
			t.Errorf("%s holds the user id in the clear", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 1000 {
		t.Fatalf("only %d bytes on disk: nothing was written", n)
	}
}

func TestBadgerLogRoutedToSlog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	key := newKey(t)
	c, err := Open(filepath.Join(t.TempDir(), "c"), key, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Index(0, Meta{Kind: KindGenesis}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	out := buf.String()
	if !strings.Contains(out, "catalog: badger:") {
		t.Fatalf("no badger message reached slog:\n%s", out)
	}
	if strings.Contains(out, hex.EncodeToString(key)) || strings.Contains(out, string(key)) {
		t.Fatal("key material in the log")
	}
}

func TestDriveStatesAndJobs(t *testing.T) {
	c := openTemp(t, newKey(t))
	seen := time.Date(2026, 11, 23, 12, 0, 0, 5, time.FixedZone("CET", 3600))
	states := map[string]DriveState{
		"0b6e-1": {State: DriveActive, Slot: 1, LastSeen: seen, Note: "bay 1"},
		"0b6e-2": {State: DriveMissing, Slot: -1, LastSeen: seen.Add(-time.Hour)},
	}
	for id, s := range states {
		if err := c.SetDriveState(id, s); err != nil {
			t.Fatal(err)
		}
	}
	// Later state replaces the earlier one.
	s := states["0b6e-2"]
	s.State = DriveSyncing
	states["0b6e-2"] = s
	if err := c.SetDriveState("0b6e-2", s); err != nil {
		t.Fatal(err)
	}
	got, err := c.DriveStates()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(states) {
		t.Fatalf("DriveStates = %v", got)
	}
	for id, s := range states {
		g := got[id]
		if g.State != s.State || g.Slot != s.Slot || g.Note != s.Note || !g.LastSeen.Equal(s.LastSeen) {
			t.Errorf("drive %s: %+v, want %+v", id, g, s)
		}
	}
	for _, bad := range []struct {
		id string
		s  DriveState
	}{
		{"", DriveState{State: DriveActive}},
		{"d", DriveState{State: "lost"}},
		{"d", DriveState{State: DriveActive, Slot: 300}},
		{"d", DriveState{State: DriveActive, Note: strings.Repeat("x", MaxDriveNoteLen+1)}},
		{"with space", DriveState{State: DriveActive}},
	} {
		if err := c.SetDriveState(bad.id, bad.s); err == nil {
			t.Errorf("SetDriveState(%q, %+v) accepted", bad.id, bad.s)
		}
	}

	if err := c.PutJob("reencap-1", []byte("step 3")); err != nil {
		t.Fatal(err)
	}
	if err := c.PutJob("reencap-1", []byte("step 4")); err != nil {
		t.Fatal(err)
	}
	if err := c.PutJob("scrub", nil); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := c.Job("reencap-1"); err != nil || !ok || string(v) != "step 4" {
		t.Fatalf("Job = %q, %v, %v", v, ok, err)
	}
	if _, ok, err := c.Job("absent"); err != nil || ok {
		t.Fatalf("Job(absent) = %v, %v", ok, err)
	}
	jobs, err := c.Jobs()
	if err != nil || len(jobs) != 2 || string(jobs["reencap-1"]) != "step 4" || len(jobs["scrub"]) != 0 {
		t.Fatalf("Jobs = %q, %v", jobs, err)
	}
	if err := c.DeleteJob("scrub"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := c.Job("scrub"); ok {
		t.Fatal("deleted job still there")
	}
	if err := c.PutJob("big", make([]byte, MaxJobStateSize+1)); err == nil {
		t.Fatal("oversized job state accepted")
	}
	if err := c.PutJob("", nil); err == nil {
		t.Fatal("empty job id accepted")
	}
}

func TestNotACatalog(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "c")
	c, err := Open(dir, newKey(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Simulate a database of another layout.
	if err := c.db.Update(func(txn *badger.Txn) error { return txn.Delete(keyFormat) }); err != nil {
		t.Fatal(err)
	}
	if err := c.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte("x"), []byte("y")) }); err != nil {
		t.Fatal(err)
	}
	key := c.db.Opts().EncryptionKey
	c.Close()
	if _, err := Open(dir, key, nil); err == nil || !strings.Contains(err.Error(), "not a coffre catalog") {
		t.Fatalf("Open of a foreign database: %v", err)
	}
}

func TestIndexRawCatchUp(t *testing.T) {
	recs := makeRecords(200)
	key := newKey(t)
	want := openTemp(t, key)
	if err := want.IndexBatch(recs); err != nil {
		t.Fatal(err)
	}
	// The appliance crashed after indexing 120 records; it catches up
	// from the watermark with the drives' meta bytes.
	c := openTemp(t, key)
	if err := c.IndexBatch(recs[:120]); err != nil {
		t.Fatal(err)
	}
	w, err := c.Watermark()
	if err != nil || w != 120 {
		t.Fatalf("watermark %d, %v", w, err)
	}
	for _, r := range recs[w-5:] { // overlap: re-indexing is a no-op
		b, err := EncodeMeta(r.Meta)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.IndexRaw(r.Index, b); err != nil {
			t.Fatal(err)
		}
	}
	if mustDigest(t, c) != mustDigest(t, want) {
		t.Fatal("catch-up with IndexRaw differs from indexing everything")
	}
	b, _ := EncodeMeta(recs[3].Meta)
	if err := c.IndexRaw(500, append(b, 0)); !errors.Is(err, ErrMalformedMeta) || !strings.Contains(err.Error(), "record 500") {
		t.Fatalf("IndexRaw of non-canonical bytes: %v", err)
	}
}

func TestIndexBatchLargerThanATransaction(t *testing.T) {
	recs := makeRecords(12000) // ~60,000 keys: more than one badger transaction holds
	c := openTemp(t, newKey(t))
	if err := c.IndexBatch(recs); err != nil {
		t.Fatal(err)
	}
	if w, err := c.Watermark(); err != nil || w != uint64(len(recs)) {
		t.Fatalf("watermark %d, %v; want %d", w, err, len(recs))
	}
	last, err := c.Get(uint64(len(recs) - 1))
	if err != nil || !metaEqual(last.Meta, recs[len(recs)-1].Meta) {
		t.Fatalf("last record: %+v, %v", last, err)
	}
}

// A flipped byte in a table file is found by VerifyChecksum (run after a
// rebuild and at every scrub), though opening no longer reads whole tables.
func TestVerifyChecksumFindsDamagedTable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "catalog")
	key := newKey(t)
	c, err := Open(dir, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.IndexBatch(makeRecords(2000)); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil { // flushes the memtable to a table
		t.Fatal(err)
	}
	tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(tables) == 0 {
		t.Fatal("no table file after close")
	}
	b, err := os.ReadFile(tables[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/3] ^= 0x40
	if err := os.WriteFile(tables[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = Open(dir, key, nil)
	if err != nil {
		return // refusing at open is as good
	}
	defer c.Close()
	if err := c.VerifyChecksum(); err == nil || !strings.Contains(err.Error(), "catalog: verify") {
		t.Fatalf("VerifyChecksum on a damaged table: %v", err)
	}
}
