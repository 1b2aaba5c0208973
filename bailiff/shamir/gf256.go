package shamir

// Arithmetic in GF(2^8) with the AES reduction polynomial x^8+x^4+x^3+x+1
// (0x11b). Every operation runs in time independent of its operands: there
// are no lookup tables indexed by secret bytes and no secret-dependent
// branches (the table-driven variant leaked through cache timing in HashiCorp
// Vault, CVE-2023-25000).

// gfMul multiplies a and b with the Russian-peasant loop, using masks instead
// of branches.
func gfMul(a, b byte) byte {
	var p byte
	for i := 0; i < 8; i++ {
		p ^= -(b & 1) & a
		hi := -(a >> 7)
		a = (a << 1) ^ (hi & 0x1b)
		b >>= 1
	}
	return p
}

// gfInv returns the multiplicative inverse of a as a^254 (a fixed
// square-and-multiply chain); gfInv(0) is 0.
func gfInv(a byte) byte {
	// 254 = 0b11111110
	a2 := gfMul(a, a)      // a^2
	a3 := gfMul(a2, a)     // a^3
	a6 := gfMul(a3, a3)    // a^6
	a12 := gfMul(a6, a6)   // a^12
	a15 := gfMul(a12, a3)  // a^15
	a30 := gfMul(a15, a15) // a^30
	a60 := gfMul(a30, a30) // a^60
	a63 := gfMul(a60, a3)  // a^63
	a126 := gfMul(a63, a63)
	a127 := gfMul(a126, a)
	return gfMul(a127, a127) // a^254
}

// gfDiv returns a/b; b must not be zero (callers guarantee it: indexes are
// public and distinct).
func gfDiv(a, b byte) byte {
	return gfMul(a, gfInv(b))
}
