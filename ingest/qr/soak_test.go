//go:build soak

package qr

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"
)

// A few-MiB envelope through the fountain with heavy loss, at the default
// frame size: the decoder completes and stays near the ideal frame count.
func TestSoakLargeTransfer(t *testing.T) {
	for _, tc := range []struct {
		size int
		loss float64
	}{{4 << 20, 0.05}, {4 << 20, 0.4}, {16 << 20, 0.2}} {
		msg := testMessage(tc.size, 77)
		e, err := NewEncoder(msg, Options{FragmentSize: MaxFragmentSize / 2})
		if err != nil {
			t.Fatal(err)
		}
		d := NewDecoder(Limits{})
		r := rand.New(rand.NewPCG(1, 2))
		start := time.Now()
		ideal := float64(e.Count()) / (1 - tc.loss)
		sent, got := feedUntilDone(t, e, d, tc.loss, r, int(ideal*1.6)+64)
		if !bytes.Equal(got, msg) {
			t.Fatal("message differs")
		}
		t.Logf("%d bytes, %d fragments, loss %.2f: %d frames sent (%.3f of ideal) in %v, stats %+v",
			tc.size, e.Count(), tc.loss, sent, float64(sent)/ideal, time.Since(start), d.Stats())
	}
}
