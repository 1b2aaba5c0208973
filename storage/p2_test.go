//go:build bench

package storage

import (
	"os"
	"bytes"
	"context"
	"testing"
	"time"
)

func TestProfScan(t *testing.T) {
	k := newTestKeys(t)
	n := 20000
	p := "/tmp/many.img"
	Format(p, FormatOptions{VaultID: k.vault, Slot: 1, WrappedRecordKey: []byte("w"), Size: int64(n+200) * 4096})
	os.WriteFile("/tmp/key", k.key, 0o600)
	v := openVault(t, k, []string{p}, 1)
	meta := bytes.Repeat([]byte("m"), 64)
	body := bytes.Repeat([]byte("b"), 512)
	t0 := time.Now()
	for done := 0; done < n; {
		c := min(MaxBatch, n-done)
		recs := make([]Record, c)
		for i := range recs {
			recs[i] = Record{Type: TypeItem, Meta: meta, Body: bytes.NewReader(body)}
		}
		v.Append(context.Background(), recs...)
		done += c
	}
	v.Close()
	t1 := time.Now()
	ScanDrive(p, k.recordKey, func(h Header, m []byte) error { return nil })
	t.Logf("create %v scan %v", t1.Sub(t0), time.Since(t1))
	paths := formatDrives(t, k, backends[1], 4, 200<<20)
	v = openVault(t, k, paths, 3)
	t2 := time.Now()
	v.Append(context.Background(), Record{Type: TypeItem, Body: newPattern(128 << 20)})
	t.Logf("write 128MiB x4: %v", time.Since(t2))
}
