package policy

import (
	"bytes"
	"testing"
	"time"
)

// FuzzParsePolicy: Parse never panics, and whatever it accepts re-encodes
// to the same bytes, validates, and can be judged.
func FuzzParsePolicy(f *testing.F) {
	f.Add(Default().Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		if !bytes.Equal(p.Marshal(), b) {
			t.Fatalf("accepted non-canonical input:\n%q\n%q", b, p.Marshal())
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("accepted invalid policy: %v", err)
		}
		for _, r := range p.Rules {
			p.Check([]string{r.Algorithm, r.Replacement, "key-epoch-1"}, time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC))
		}
		Plan(p, []Object{{Kind: KindEscrow, Algorithms: []string{p.Rules[0].Algorithm}}}, time.Unix(0, 0))
	})
}
