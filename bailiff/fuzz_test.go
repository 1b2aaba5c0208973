package bailiff

import (
	"bytes"
	"testing"
)

// The parsers are strict and canonical: anything they accept re-encodes to
// the same bytes, and nothing makes them panic.

func FuzzParseRoster(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRoster(b, vectorTime)
		if err != nil {
			return
		}
		if !bytes.Equal(r.Marshal(), b) {
			t.Fatal("accepted roster does not re-encode to the same bytes")
		}
		_ = r.Verify()
	})
}

func FuzzParseEscrow(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEscrow(b, vectorTime)
		if err != nil {
			return
		}
		if !bytes.Equal(e.Marshal(), b) {
			t.Fatal("accepted escrow bundle does not re-encode to the same bytes")
		}
	})
}

func FuzzParseOrder(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := ParseOrder(b, vectorTime)
		if err != nil {
			return
		}
		if !bytes.Equal(o.Marshal(), b) {
			t.Fatal("accepted order does not re-encode to the same bytes")
		}
	})
}
