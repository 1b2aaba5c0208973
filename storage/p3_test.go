//go:build bench

package storage

import (
	"os"
	"testing"
	"time"
)

func TestProfScan2(t *testing.T) {
	p := os.Getenv("IMG")
	t1 := time.Now()
	n := 0
	err := ScanDrive(p, func(uint32) ([]byte, error) { return os.ReadFile("/tmp/key") }, func(h Header, m []byte) error { n++; return nil })
	t.Logf("scan %v %d %v", time.Since(t1), n, err)
}
