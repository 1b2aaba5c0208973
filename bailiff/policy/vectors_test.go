package policy

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coffre/bailiff"
)

const vectorDir = "../../testdata/policy"

// TestVectors replays testdata/policy/vectors.txt: one subtest per line
// "file expect [roster]", expect one of valid (parses), verified (parses
// and verifies against roster), parse-error, verify-error.
func TestVectors(t *testing.T) {
	f, err := os.ReadFile(filepath.Join(vectorDir, "vectors.txt"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(f))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Fields(line)
		if len(fs) < 2 {
			t.Fatalf("vectors.txt: bad line %q", line)
		}
		n++
		t.Run(fs[0], func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(vectorDir, fs[0]))
			if err != nil {
				t.Fatal(err)
			}
			p, perr := Parse(b)
			switch fs[1] {
			case "parse-error":
				if perr == nil || !errors.Is(perr, ErrFormat) {
					t.Fatalf("Parse = %v, want an ErrFormat error", perr)
				}
				t.Log(perr)
				return
			case "valid", "verified", "verify-error":
				if perr != nil {
					t.Fatalf("Parse: %v", perr)
				}
			default:
				t.Fatalf("unknown expectation %q", fs[1])
			}
			if fs[1] == "valid" {
				return
			}
			if len(fs) != 3 {
				t.Fatal("verify vectors name a roster")
			}
			rb, err := os.ReadFile(filepath.Join(vectorDir, fs[2]))
			if err != nil {
				t.Fatal(err)
			}
			r, err := bailiff.ParseRoster(rb, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Verify(); err != nil {
				t.Fatal(err)
			}
			verr := p.Verify(r)
			if fs[1] == "verified" && verr != nil {
				t.Fatalf("Verify: %v", verr)
			}
			if fs[1] == "verify-error" && verr == nil {
				t.Fatal("Verify succeeded, want an error")
			}
			t.Logf("%v", verr)
		})
	}
	if n < 10 {
		t.Fatalf("only %d vectors", n)
	}
}

// TestCheckVectors replays testdata/policy/checks.txt against
// default.policy: "date verdict alg,alg,…" with verdict ok, warn or fail.
func TestCheckVectors(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(vectorDir, "default.policy"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, Default().Marshal()) {
		t.Error("default.policy differs from Default(); regenerate the vectors or fix Default")
	}
	f, err := os.ReadFile(filepath.Join(vectorDir, "checks.txt"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i, line := range strings.Split(string(f), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Fields(line)
		if len(fs) != 3 {
			t.Fatalf("checks.txt line %d: %q", i+1, line)
		}
		n++
		t.Run(strings.Join(fs, "_"), func(t *testing.T) {
			at, err := time.Parse(time.DateOnly, fs[0])
			if err != nil {
				t.Fatal(err)
			}
			v := p.Check(strings.Split(fs[2], ","), at)
			got := "ok"
			if !v.OK {
				got = "fail"
			} else if v.Warn {
				got = "warn"
			}
			if got != fs[1] {
				t.Fatalf("got %s, want %s: %v", got, fs[1], v.Reasons)
			}
		})
	}
	if n == 0 {
		t.Fatal("no check vectors")
	}
}
