package qr

import (
	"bytes"
	"errors"
	"testing"
)

// RFC 9285 section 4.3 examples, plus the rejects section 4.2 requires.
func TestBase45RFC9285(t *testing.T) {
	for _, tc := range []struct{ in, out string }{
		{"AB", "BB8"},
		{"Hello!!", "%69 VD92EX0"},
		{"base-45", "UJCLQE7W581"},
		{"ietf!", "QED8WEX0"},
		{"", ""},
		{"\x00", "00"},
		{"\xff\xff", "FGW"},
	} {
		if got := Base45Encode([]byte(tc.in)); got != tc.out {
			t.Errorf("encode %q = %q, want %q", tc.in, got, tc.out)
		}
		got, err := Base45Decode(tc.out)
		if err != nil || !bytes.Equal(got, []byte(tc.in)) {
			t.Errorf("decode %q = %q, %v", tc.out, got, err)
		}
	}
	for _, bad := range []string{"GGW", "GGW0", "A", "ABCD", "aBC", "AB\x00", "U:", "ZZZ"} {
		if _, err := Base45Decode(bad); !errors.Is(err, ErrBase45) {
			t.Errorf("decode %q: err %v, want ErrBase45", bad, err)
		}
	}
}

func FuzzBase45(f *testing.F) {
	f.Add([]byte("Hello!!"))
	f.Add([]byte{0xff, 0xff, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		s := Base45Encode(b)
		if !IsAlphanumeric(s) || len(s) != Base45EncodedLen(len(b)) {
			t.Fatalf("encoding %q is not alphanumeric or has the wrong length", s)
		}
		got, err := Base45Decode(s)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("round trip of %x: %x, %v", b, got, err)
		}
		// Decoding arbitrary text must be canonical: whatever decodes
		// re-encodes to the same text.
		if dec, err := Base45Decode(string(b)); err == nil {
			if re := Base45Encode(dec); re != string(b) {
				t.Fatalf("non-canonical text %q accepted (re-encodes to %q)", b, re)
			}
		}
	})
}
