//go:build bench

package storage

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"
)

func TestProfMake(t *testing.T) {
	k := newTestKeys(t)
	n := 100000
	p := "/tmp/many.img"
	os.Remove(p)
	Format(p, FormatOptions{VaultID: k.vault, Slot: 1, WrappedRecordKey: []byte("w"), Size: int64(n+200) * 4096})
	os.WriteFile("/tmp/key", k.key, 0o600)
	v := openVault(t, k, []string{p}, 1)
	meta := bytes.Repeat([]byte("m"), 64)
	body := bytes.Repeat([]byte("b"), 512)
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
}

func TestProfScan2(t *testing.T) {
	t1 := time.Now()
	n := 0
	err := ScanDrive("/tmp/many.img", func(uint32) ([]byte, error) { return os.ReadFile("/tmp/key") }, func(h Header, m []byte) error { n++; return nil })
	t.Logf("scan %v %d %v", time.Since(t1), n, err)
}
