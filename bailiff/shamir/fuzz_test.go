package shamir

import (
	"bytes"
	"testing"
)

func FuzzParseShare(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseShare(b)
		if err != nil {
			return
		}
		// canonical: re-encoding gives the same bytes
		again, err := s.MarshalBinary()
		if err != nil {
			t.Fatalf("parsed share does not re-encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func FuzzParseCard(f *testing.F) {
	f.Fuzz(func(t *testing.T, text string) {
		s, err := ParseCard(text)
		if err != nil {
			return
		}
		card, err := s.CardText()
		if err != nil {
			t.Fatalf("parsed card does not re-encode: %v", err)
		}
		s2, err := ParseCard(card)
		if err != nil || !bytes.Equal(s2.Value, s.Value) || s2.Index != s.Index {
			t.Fatalf("card round trip failed: %v", err)
		}
	})
}
