// Package benchrow records the figures that `make bench` reports: each is a
// measurement of ours set beside the peer a user would pick instead (gpg,
// sha256sum, dd, zbarimg…), measured in the same run, with the ratio.
//
// Benchmarks live in files with the build tag `bench` as tests named
// TestBench…; each calls Record once per figure. `make bench` runs them with
// COFFRE_BENCH_OUT pointing to a JSON-lines file and merges the rows into
// bench/results.json with cmd/benchreport.
package benchrow

import (
	"encoding/json"
	"os"
	"sync"
	"testing"
)

// Row is one figure. Ratio is computed by Record: ours/peer when higher is
// better (throughputs), peer/ours otherwise (times), so a ratio above 1 always
// means Coffre did better than the peer.
type Row struct {
	Name           string  `json:"name"`
	Ours           float64 `json:"ours"`
	Peer           string  `json:"peer"`
	PeerValue      float64 `json:"peer_value"`
	Unit           string  `json:"unit"`
	Ratio          float64 `json:"ratio"`
	Goal           float64 `json:"goal"`
	HigherIsBetter bool    `json:"higher_is_better"`
	Note           string  `json:"note,omitempty"`
}

var mu sync.Mutex

// Record computes the ratio and appends the row to $COFFRE_BENCH_OUT (and
// logs it). It fails the test when the output file is not set.
func Record(t testing.TB, r Row) {
	t.Helper()
	if r.PeerValue != 0 && r.Ours != 0 {
		if r.HigherIsBetter {
			r.Ratio = r.Ours / r.PeerValue
		} else {
			r.Ratio = r.PeerValue / r.Ours
		}
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bench: %s", b)
	path := os.Getenv("COFFRE_BENCH_OUT")
	if path == "" {
		t.Fatalf("benchrow: COFFRE_BENCH_OUT is not set (run through `make bench`)")
	}
	mu.Lock()
	defer mu.Unlock()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(append(b, '\n')); err != nil {
		t.Fatal(err)
	}
}
