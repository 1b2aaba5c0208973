package catalog

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzParseMeta checks that ParseMeta never panics, that everything it
// accepts is canonical (re-encodes to the same bytes, like age's
// FuzzMalleability), and that every rejection wraps ErrMalformedMeta. The
// committed corpus is in testdata/fuzz/FuzzParseMeta.
func FuzzParseMeta(f *testing.F) {
	for _, m := range []Meta{exampleItem(), {Kind: KindGenesis}, {Kind: KindEscrow, UserID: "u"}} {
		b, err := EncodeMeta(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMeta(b)
		if err != nil {
			if !errors.Is(err, ErrMalformedMeta) {
				t.Fatalf("error %v does not wrap ErrMalformedMeta", err)
			}
			return
		}
		re, err := EncodeMeta(m)
		if err != nil {
			t.Fatalf("EncodeMeta of a parsed meta: %v", err)
		}
		if !bytes.Equal(re, b) {
			t.Fatalf("non-canonical input accepted:\n in  %x\n out %x", b, re)
		}
		m2, err := ParseMeta(re)
		if err != nil || !metaEqual(m, m2) {
			t.Fatalf("second parse differs: %v", err)
		}
	})
}
