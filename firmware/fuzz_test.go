package firmware_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffre/firmware"
)

// FuzzParseManifest: parsing is strict, and what parses re-encodes to the
// same bytes.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte("coffre firmware manifest v1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := firmware.ParseManifest(b)
		if err != nil {
			return
		}
		out, err := m.Marshal()
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("manifest re-encodes differently (%v)", err)
		}
	})
}

// FuzzParseBundle: the container parser never panics, is canonical, and
// Verify against the vector trust root never panics.
func FuzzParseBundle(f *testing.F) {
	rb, err := os.ReadFile(filepath.Join(vecDir, "trust-root.txt"))
	if err != nil {
		f.Fatal(err)
	}
	root, err := firmware.ParseTrustRoot(rb)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("CFFWBNDL\x01\x00\x03"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := firmware.ParseBundle(data)
		if err != nil {
			return
		}
		if _, err := firmware.ParseManifest(b.Manifest); err == nil {
			out, err := b.Marshal()
			if err == nil && !bytes.Equal(out, data) {
				t.Fatalf("bundle re-encodes differently")
			}
		}
		firmware.Verify(data, root)
	})
}

// FuzzParseTrustRoot: the trust root file parser never panics.
func FuzzParseTrustRoot(f *testing.F) {
	f.Add([]byte("coffre firmware trust root v1\nthreshold 1\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := firmware.ParseTrustRoot(b)
		if err != nil {
			return
		}
		if r.Threshold < 1 || r.Threshold > len(r.Keys) {
			t.Fatalf("accepted threshold %d of %d", r.Threshold, len(r.Keys))
		}
	})
}

var genCorpus = flag.Bool("gencorpus", false, "regenerate testdata/fuzz seed corpora from the vectors")

func TestGenCorpus(t *testing.T) {
	targets := map[string][]string{
		"FuzzParseManifest":  {"*.manifest"},
		"FuzzParseBundle":    {"*.bundle"},
		"FuzzParseTrustRoot": {"trust-root.txt"},
	}
	for tg, globs := range targets {
		d := filepath.Join("testdata", "fuzz", tg)
		if !*genCorpus {
			if ents, _ := os.ReadDir(d); len(ents) < 1 {
				t.Errorf("%s is empty: run go test -run TestGenCorpus -gencorpus", d)
			}
			continue
		}
		os.RemoveAll(d)
		os.MkdirAll(d, 0o755)
		i := 0
		for _, g := range globs {
			paths, _ := filepath.Glob(filepath.Join(vecDir, g))
			for _, p := range paths {
				b, _ := os.ReadFile(p)
				name := strings.TrimSuffix(filepath.Base(p), filepath.Ext(p))
				os.WriteFile(filepath.Join(d, name), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)), 0o644)
				i++
			}
		}
		if i == 0 {
			t.Errorf("no seeds for %s", tg)
		}
	}
}
