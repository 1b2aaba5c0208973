package shamir

import "testing"

// refTables builds the classic log/antilog tables (generator 3) — the
// table-driven implementation that must not be used on secrets — as the
// reference the constant-time arithmetic is checked against.
func refTables() (exp [510]byte, log [256]byte) {
	x := byte(1)
	for i := 0; i < 255; i++ {
		exp[i] = x
		exp[i+255] = x
		log[x] = byte(i)
		// x *= 3
		hi := x & 0x80
		x2 := x << 1
		if hi != 0 {
			x2 ^= 0x1b
		}
		x ^= x2
	}
	return
}

func TestGFMulMatchesTableForAllProducts(t *testing.T) {
	exp, log := refTables()
	for a := 0; a < 256; a++ {
		for b := 0; b < 256; b++ {
			var want byte
			if a != 0 && b != 0 {
				want = exp[int(log[a])+int(log[b])]
			}
			if got := gfMul(byte(a), byte(b)); got != want {
				t.Fatalf("gfMul(%#x, %#x) = %#x, want %#x", a, b, got, want)
			}
		}
	}
}

func TestGFInv(t *testing.T) {
	if gfInv(0) != 0 {
		t.Fatalf("gfInv(0) = %#x, want 0", gfInv(0))
	}
	for a := 1; a < 256; a++ {
		if p := gfMul(byte(a), gfInv(byte(a))); p != 1 {
			t.Fatalf("a*inv(a) = %#x for a=%#x", p, a)
		}
	}
}
