package bailiff

import (
	"bytes"
	"io"
	"os"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
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

// FuzzOpenItem feeds the item reader (Restitute's decryption path) with
// arbitrary bytes under a fixed test key (testdata/item-key.sec, test only).
func FuzzOpenItem(f *testing.F) {
	el := fuzzKeyRing(f, "testdata/item-key.sec")
	f.Fuzz(func(t *testing.T, ct []byte) {
		r, err := openItem(bytes.NewReader(ct), el)
		if err != nil {
			return
		}
		io.Copy(io.Discard, io.LimitReader(r, 1<<20))
	})
}

func FuzzParseReencapOrder(f *testing.F) {
	for _, n := range []string{"reencap/order-ok.txt", "reencap/order-retire-ok.txt", "roster-pq/order.txt"} {
		if b, err := os.ReadFile("../testdata/" + n); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := ParseReencapOrder(b)
		if err != nil {
			return
		}
		if !bytes.Equal(o.Marshal(), b) {
			t.Fatal("accepted order does not re-encode to the same bytes")
		}
	})
}

func FuzzParseReencapStep(f *testing.F) {
	if b, err := os.ReadFile("../testdata/reencap/step-ok.txt"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseReencapStep(b)
		if err != nil {
			return
		}
		if !bytes.Equal(s.Marshal(), b) {
			t.Fatal("accepted step does not re-encode to the same bytes")
		}
	})
}

// FuzzOpenItemPQ feeds the post-quantum item reader with arbitrary bytes
// under a fixed test key (testdata/item-key-pq.sec, test only).
func FuzzOpenItemPQ(f *testing.F) {
	el := fuzzKeyRing(f, "testdata/item-key-pq.sec")
	f.Fuzz(func(t *testing.T, ct []byte) {
		r, err := openItemAny(bytes.NewReader(ct), el)
		if err != nil {
			return
		}
		io.Copy(io.Discard, io.LimitReader(r, 1<<20))
	})
}

// FuzzOpenItemFast feeds the upgrade's item reader (crypto/ecdh key packet
// path, falling back to the general reader) under the fixed P-521 test key.
func FuzzOpenItemFast(f *testing.F) {
	el := fuzzKeyRing(f, "testdata/item-key.sec")
	fk := newFastKey(el[0])
	if fk == nil {
		f.Fatal("the test key is not an ECDH P-521 escrow key")
	}
	f.Fuzz(func(t *testing.T, ct []byte) {
		r, err := openItemFast(bytes.NewReader(ct), el, fk)
		if err != nil {
			return
		}
		io.Copy(io.Discard, io.LimitReader(r, 1<<20))
	})
}

// FuzzRestoreKeyCard feeds what a scanned key card carries to the restorer,
// with the public key of post-quantum vector bailiff 1 (testdata/roster-pq).
// Whatever it accepts is one secret key with that key's fingerprint.
func FuzzRestoreKeyCard(f *testing.F) {
	r, err := ParseRoster(mustReadFile(f, "../testdata/roster-pq/roster.txt"), vectorTime)
	if err != nil {
		f.Fatal(err)
	}
	var pub *BailiffKey
	for _, b := range r.Bailiffs {
		if b.Name == "Vector PQ Bailiff 1" {
			pub = b
		}
	}
	if pub == nil {
		f.Fatal("no Vector PQ Bailiff 1 on testdata/roster-pq/roster.txt")
	}
	f.Fuzz(func(t *testing.T, card []byte) {
		out, err := RestoreKeyCard(card, pub.Public, vectorTime)
		if err != nil {
			return
		}
		el, err := openpgp.ReadKeyRing(bytes.NewReader(out))
		if err != nil || len(el) != 1 || el[0].PrivateKey == nil {
			t.Fatalf("restored card is not one secret key: %v", err)
		}
		if !bytes.Equal(card, out) && Fingerprint(el[0]) != pub.Fingerprint {
			t.Fatalf("restored key %s, want %s", Fingerprint(el[0]), pub.Fingerprint)
		}
	})
}

func mustReadFile(f *testing.F, name string) []byte {
	b, err := os.ReadFile(name)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// fuzzKeyRing reads the fixed test key of a fuzz target.
func fuzzKeyRing(f *testing.F, path string) openpgp.EntityList {
	b, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	el, err := openpgp.ReadKeyRing(bytes.NewReader(b))
	if err != nil {
		f.Fatal(err)
	}
	return el
}
