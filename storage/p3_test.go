//go:build bench

package storage

import (
	"crypto/sha256"
	"testing"
	"time"
)

var sink [32]byte

func TestShaSpeed(t *testing.T) {
	s := make([]byte, 161)
	t0 := time.Now()
	for i := 0; i < 100000; i++ {
		s[0] = byte(i)
		sink = sha256.Sum256(s)
	}
	t.Logf("small %v/op", time.Since(t0)/100000)
	b := make([]byte, 64<<20)
	t0 = time.Now()
	sink = sha256.Sum256(b)
	t.Logf("big %.0f MB/s", 64/time.Since(t0).Seconds())
}

func TestShaMixed(t *testing.T) {
	a, _ := newAEAD(make([]byte, 32))
	s := make([]byte, 161)
	ct := a.Seal(nil, make([]byte, 24), make([]byte, 600), nil)
	buf := make([]byte, 0, 1000)
	t0 := time.Now()
	for i := 0; i < 100000; i++ {
		s[0] = byte(i)
		sink = sha256.Sum256(s)
	}
	d1 := time.Since(t0)
	t0 = time.Now()
	for i := 0; i < 100000; i++ {
		a.Open(buf[:0], make([]byte, 24), ct, nil)
	}
	d2 := time.Since(t0)
	t0 = time.Now()
	for i := 0; i < 100000; i++ {
		a.Open(buf[:0], make([]byte, 24), ct, nil)
		s[0] = byte(i)
		sink = sha256.Sum256(s)
	}
	t.Logf("sha %v aead %v mixed %v", d1/100000, d2/100000, time.Since(t0)/100000)
}
