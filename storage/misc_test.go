package storage

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	mrand "math/rand/v2"
	"strings"
	"syscall"
	"testing"
)

// TestLogsCarryNoSecrets runs appends, failures and reads with a logger
// and checks that neither the record key nor plaintext reaches the log or
// the errors.
func TestLogsCarryNoSecrets(t *testing.T) {
	k := newTestKeys(t)
	paths := imageDrives(t, k, 3, 16<<20)
	var logs bytes.Buffer
	fs := &faults{}
	o := k.opts(2)
	o.open = fs.open
	o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	v, err := Open(paths, o)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	secret := []byte("SECRET-PLAINTEXT-do-not-log")
	idx, err := v.Append(context.Background(), Record{Type: TypeItem, Meta: secret, Body: bytes.NewReader(secret)})
	if err != nil {
		t.Fatal(err)
	}
	fs.devs[paths[0]].arm(syscall.EIO, true, true, true, 0)
	_, _, _, gerr := v.Get(idx[0])
	_, aerr := v.Append(context.Background(), Record{Type: TypeItem, Meta: secret, Body: bytes.NewReader(secret)})
	fs.devs[paths[1]].arm(syscall.EIO, true, true, true, 0)
	_, qerr := v.Append(context.Background(), Record{Type: TypeItem, Meta: secret, Body: bytes.NewReader(secret)})
	if !errors.Is(qerr, ErrNoQuorum) {
		t.Fatalf("want no quorum, got %v (%v %v)", qerr, gerr, aerr)
	}
	all := logs.String() + errString(gerr) + errString(aerr) + errString(qerr)
	if !strings.Contains(all, "failed") {
		t.Fatalf("expected failure logs, got %q", all)
	}
	for _, s := range []string{string(secret), hex.EncodeToString(k.key), string(k.key)} {
		if strings.Contains(all, s) {
			t.Fatalf("secret material in logs or errors: %q", all)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestAppendLimits(t *testing.T) {
	k := newTestKeys(t)
	v := openVault(t, k, imageDrives(t, k, 1, 8<<20), 1)
	ctx := context.Background()
	for name, recs := range map[string][]Record{
		"meta too big":    {{Type: TypeItem, Meta: make([]byte, MaxMetaSize+1)}},
		"checkpoint type": {{Type: TypeCheckpoint}},
		"zero type":       {{Type: 0}},
		"empty batch":     nil,
		"batch too big":   make([]Record, MaxBatch+1),
	} {
		if _, err := v.Append(ctx, recs...); err == nil || !strings.HasPrefix(err.Error(), "storage: ") {
			t.Errorf("%s: %v", name, err)
		}
	}
	// The drive fills: the error names it and says so.
	_, err := v.Append(ctx, Record{Type: TypeItem, Body: bytes.NewReader(make([]byte, 9<<20))})
	if !errors.Is(err, ErrNoQuorum) || !errors.Is(err, ErrNoSpace) {
		t.Fatalf("full drive: %v", err)
	}
	if _, _, _, err := v.Get(v.Size()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get past the end: %v", err)
	}
	if _, err := Open(nil, k.opts(1)); err == nil {
		t.Fatal("open of no drives")
	}
	o := k.opts(1)
	o.Origin = "has space"
	if _, err := Open([]string{"x"}, o); err == nil {
		t.Fatal("bad origin accepted")
	}
}

// TestScanDriveSkipsUncommittedTail: records after the last checkpoint (an
// interrupted batch) are not reported.
func TestScanDriveSkipsUncommittedTail(t *testing.T) {
	k := newTestKeys(t)
	paths := imageDrives(t, k, 1, 8<<20)
	v := openVault(t, k, paths, 1)
	r := mrand.New(mrand.NewPCG(41, 42))
	appendItems(t, v, r, 10, 20)
	// A batch whose body fails after its first record is written.
	v.Append(context.Background(), Record{Type: TypeItem, Body: bytes.NewReader([]byte("x"))}, Record{Type: TypeItem, Body: iotest{}})
	v.Close()
	var n int
	if err := ScanDrive(paths[0], k.recordKey, func(h Header, meta []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("scanned %d records, want 3 (2 items and a checkpoint)", n)
	}
	// And a wrong key is reported, not ignored.
	k2 := newTestKeys(t)
	if err := ScanDrive(paths[0], k2.recordKey, func(Header, []byte) error { return nil }); err == nil {
		t.Fatal("scan with the wrong key succeeded")
	}
}

// TestDivergedDriveQuarantinedThenSynced: a drive that took writes the
// others never saw is quarantined at open, and Sync cuts it back to the
// common prefix and recopies it.
func TestDivergedDriveQuarantinedThenSynced(t *testing.T) {
	k := newTestKeys(t)
	paths := imageDrives(t, k, 3, 16<<20)
	r := mrand.New(mrand.NewPCG(51, 52))
	v := openVault(t, k, paths, 2)
	items := appendItems(t, v, r, 100)
	v.Close()
	v = openVault(t, k, paths[:1], 1) // drive 1 alone grows one history
	appendItems(t, v, r, 7)
	v.Close()
	v = openVault(t, k, paths[1:], 1) // drives 2 and 3 another, longer one
	for k, x := range appendItems(t, v, r, 8, 9) {
		items[k] = x
	}
	for k, x := range appendItems(t, v, r, 10) {
		items[k] = x
	}
	v.Close()
	v = openVault(t, k, paths, 2)
	st, why := stateOf(v, paths[0])
	if st != StateQuarantined || !strings.Contains(why, "disagrees") {
		t.Fatalf("diverged drive: %s %q", st, why)
	}
	info, _ := ReadDriveInfo(paths[0])
	if err := v.Sync(context.Background(), info.UUID, nil); err != nil {
		t.Fatal(err)
	}
	if st, why := stateOf(v, paths[0]); st != StateActive {
		t.Fatalf("after sync: %s %q", st, why)
	}
	checkItems(t, v, items)
	v.Close()
	replicasEqual(t, paths)
	auditOK(t, k, paths)
}
