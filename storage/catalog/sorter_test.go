package catalog

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// sorterKeys returns n keys of 1 to 300 bytes, about a tenth of them
// repeated, in random order.
func sorterKeys(n int, seed uint64) [][]byte {
	r := rand.New(rand.NewPCG(seed, 1))
	var keys [][]byte
	for len(keys) < n {
		if len(keys) > 0 && r.IntN(10) == 0 {
			keys = append(keys, keys[r.IntN(len(keys))])
			continue
		}
		k := make([]byte, 1+r.IntN(300))
		for i := range k {
			k[i] = byte('a' + r.IntN(4)) // small alphabet: long common prefixes
		}
		keys = append(keys, k)
	}
	return keys
}

func sortedUnique(keys [][]byte) []string {
	var s []string
	for _, k := range keys {
		s = append(s, string(k))
	}
	slices.Sort(s)
	return slices.Compact(s)
}

func TestSorter(t *testing.T) {
	keys := sorterKeys(20000, 7)
	want := sortedUnique(keys)
	for _, tc := range []struct {
		name     string
		limit    int
		wantRuns bool
	}{
		{"in memory", 64 << 20, false},
		{"a few runs", 1 << 20, true},
		{"many runs", 16 << 10, true},
		{"merged in passes", 4 << 10, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := newSorter(dir, tc.limit)
			for _, k := range keys {
				if err := s.add(k); err != nil {
					t.Fatal(err)
				}
			}
			if got := len(s.runs) > 0; got != tc.wantRuns {
				t.Fatalf("spilled %d runs", len(s.runs))
			}
			var got []string
			err := s.each(func(k []byte) error {
				got = append(got, string(k))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("got %d keys, want %d sorted unique ones", len(got), len(want))
			}
			s.close()
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("runs left after close: %v", ents)
			}
		})
	}
}

// TestSorterRunsSealed: spilled runs hold no key in the clear, and a run
// that was damaged, cut short or swapped for another fails the merge.
func TestSorterRunsSealed(t *testing.T) {
	const marker = "plaintext-marker-user-91c2"
	fill := func(t *testing.T) (*sorter, string) {
		dir := t.TempDir()
		s := newSorter(dir, 256<<10)
		for i := range 20000 {
			if err := s.add([]byte(fmt.Sprintf("U%s-%05d", marker, i))); err != nil {
				t.Fatal(err)
			}
		}
		if len(s.runs) < 2 {
			t.Fatalf("%d runs", len(s.runs))
		}
		return s, dir
	}
	s, dir := fill(t)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(marker)) || bytes.Contains(b, []byte("-00001")) {
			t.Fatalf("run %s holds keys in the clear", e.Name())
		}
	}
	s.close()

	damage := []struct {
		name string
		do   func(s *sorter) error
	}{
		{"flipped byte", func(s *sorter) error {
			b, err := os.ReadFile(s.runs[0].name)
			if err != nil {
				return err
			}
			b[len(b)/2] ^= 1
			return os.WriteFile(s.runs[0].name, b, 0o600)
		}},
		{"cut short", func(s *sorter) error {
			b, err := os.ReadFile(s.runs[0].name)
			if err != nil {
				return err
			}
			return os.WriteFile(s.runs[0].name, b[:len(b)-100], 0o600)
		}},
		{"last chunk dropped", func(s *sorter) error {
			b, err := os.ReadFile(s.runs[0].name)
			if err != nil {
				return err
			}
			// Keep whole chunks only: walk the length prefixes.
			off, last := 0, 0
			for off < len(b) {
				last = off
				off += 4 + int(uint32(b[off])<<24|uint32(b[off+1])<<16|uint32(b[off+2])<<8|uint32(b[off+3]))
			}
			if last == 0 {
				return errors.New("run of one chunk")
			}
			return os.WriteFile(s.runs[0].name, b[:last], 0o600)
		}},
		{"runs swapped", func(s *sorter) error {
			a, b := s.runs[0].name, s.runs[1].name
			if err := os.Rename(a, a+".tmp"); err != nil {
				return err
			}
			if err := os.Rename(b, a); err != nil {
				return err
			}
			return os.Rename(a+".tmp", b)
		}},
	}
	for _, d := range damage {
		t.Run(d.name, func(t *testing.T) {
			s, _ := fill(t)
			defer s.close()
			if err := d.do(s); err != nil {
				t.Fatal(err)
			}
			err := s.each(func([]byte) error { return nil })
			if !errors.Is(err, errRun) {
				t.Fatalf("merge of a damaged run: %v, want %v", err, errRun)
			}
		})
	}
}
