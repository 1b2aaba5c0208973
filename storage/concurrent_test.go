package storage

import (
	"context"
	"sync"
	"testing"
	"time"
)

// gatedDev holds every Sync, once armed, until the gate opens: an Append
// can be stopped in the middle of its durable write.
type gatedDev struct {
	device
	g *gate
}

type gate struct {
	mu      sync.Mutex
	armed   bool
	open    chan struct{}
	entered chan struct{} // closed when the first Sync is held
	once    sync.Once
}

func (d *gatedDev) Sync() error {
	d.g.mu.Lock()
	armed := d.g.armed
	d.g.mu.Unlock()
	if armed {
		d.g.once.Do(func() { close(d.g.entered) })
		<-d.g.open
	}
	return d.device.Sync()
}

// TestReadDuringAppend: readers (Get and its body, Scan, Size, Drives,
// LeafHash, InclusionProof, Checkpoint) are served while an Append is
// stopped in its fdatasync, and see the vault as it was before that
// batch; the batch appears once it is durable.
func TestReadDuringAppend(t *testing.T) {
	k := newTestKeys(t)
	paths := imageDrives(t, k, 4, 32<<20)
	g := &gate{open: make(chan struct{}), entered: make(chan struct{})}
	o := k.opts(3)
	o.open = func(path string, write bool) (device, error) {
		d, err := openDevice(path, write)
		if err != nil {
			return nil, err
		}
		return &gatedDev{device: d, g: g}, nil
	}
	v, err := Open(paths, o)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	before := appendItems(t, v, nil, 100, 300<<10, 0)
	size0, ckpt0 := v.Size(), string(v.Checkpoint())

	g.mu.Lock()
	g.armed = true
	g.mu.Unlock()
	appended := make(chan []uint64, 1)
	go func() {
		// appendItems would call t.Fatalf off the test goroutine.
		defer close(appended)
		r := Record{Type: TypeItem, Meta: []byte("late"), Body: nil}
		idx, err := v.Append(context.Background(), r)
		if err != nil {
			t.Errorf("append: %v", err)
			return
		}
		appended <- idx
	}()
	<-g.entered // the append holds its batch in fdatasync

	read := make(chan struct{})
	go func() {
		defer close(read)
		checkItems(t, v, before)
		if got := v.Size(); got != size0 {
			t.Errorf("size during the append: %d, want %d (the batch is not durable yet)", got, size0)
		}
		if got := string(v.Checkpoint()); got != ckpt0 {
			t.Errorf("checkpoint changed before the batch was durable")
		}
		if n := len(v.Drives()); n != 4 {
			t.Errorf("%d drives listed, want 4", n)
		}
		if _, err := v.LeafHash(0); err != nil {
			t.Errorf("leaf hash: %v", err)
		}
		if _, err := v.InclusionProof(0, size0); err != nil {
			t.Errorf("inclusion proof: %v", err)
		}
		n := 0
		if err := v.Scan(0, func(Header, []byte) error { n++; return nil }); err != nil || uint64(n) != size0 {
			t.Errorf("scan: %d records, %v; want %d", n, err, size0)
		}
	}()
	select {
	case <-read:
	case <-time.After(60 * time.Second):
		close(g.open) // let the append finish, so the vault can close
		t.Fatal("readers waited for the append in flight")
	}
	close(g.open)
	after, ok := <-appended
	if !ok {
		t.FailNow()
	}
	checkItems(t, v, before)
	for _, idx := range after {
		_, meta, _, err := v.Get(idx)
		if err != nil || string(meta) != "late" {
			t.Fatalf("record %d after the append: meta %q, %v", idx, meta, err)
		}
	}
	if v.Size() <= size0 {
		t.Fatalf("size %d after the append, want > %d", v.Size(), size0)
	}
}
