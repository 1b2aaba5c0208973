package qr

import "testing"

// The capacities documented in docs/formats/qr.md, and that every frame of
// that size really fits its QR version.
func TestFragmentSizeFor(t *testing.T) {
	for _, tc := range []struct {
		v    int
		ecc  string
		want int
	}{{20, "M", 612}, {10, "L", 228}, {25, "M", 932}, {40, "L", 2829}} {
		f, err := FragmentSizeFor(tc.v, tc.ecc)
		if err != nil || f != tc.want {
			t.Fatalf("%d-%s: %d, %v; want %d", tc.v, tc.ecc, f, err, tc.want)
		}
	}
	if _, err := FragmentSizeFor(1, "H"); err == nil {
		t.Fatal("1-H has no room for a frame")
	}
	// Worst case for mode segmentation: digit-rich texts still fit.
	o := Options{Version: 10, ECC: "L"}
	msg := make([]byte, 5000)
	frames, err := Encode(msg, o)
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range frames {
		if _, err := RenderPNG(f, o); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
}
