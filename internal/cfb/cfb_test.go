package cfb

import (
	"bytes"
	"crypto/aes"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"testing"
)

// reference is CFB-128 straight from SP 800-38A §6.3, a byte at a time.
func reference(key, iv, in []byte, decrypt bool) []byte {
	b, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	fb := bytes.Clone(iv)
	out := make([]byte, len(in))
	var ks [16]byte
	for i := range in {
		if i%16 == 0 {
			b.Encrypt(ks[:], fb)
		}
		out[i] = in[i] ^ ks[i%16]
		if decrypt {
			fb[i%16] = in[i]
		} else {
			fb[i%16] = out[i]
		}
	}
	return out
}

// newGeneric is newStream without the assembly.
func newGeneric(key, iv []byte, decrypt bool) *Stream {
	s, err := newStream(key, iv, decrypt)
	if err != nil {
		panic(err)
	}
	if s.fast {
		s.fast = false
		s.blk, _ = aes.NewCipher(key)
	}
	return s
}

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// SP 800-38A F.3.13, F.3.15, F.3.17 (CFB128-AES128/192/256.Encrypt).
var nist = []struct{ key, ct string }{
	{"2b7e151628aed2a6abf7158809cf4f3c", "3b3fd92eb72dad20333449f8e83cfb4ac8a64537a0b3a93fcde3cdad9f1ce58b26751f67a3cbb140b1808cf187a4f4dfc04b05357c5d1c0eeac4c66f9ff7f2e6"},
	{"8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b", "cdc80d6fddf18cab34c25909c99a417467ce7f7f81173621961a2b70171d3d7a2e1e8a1dd59b88b1c8e60fed1efac4c9c05f9f9ca9834fa042ae8fba584b09ff"},
	{"603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", "dc7e84bfda79164b7ecd8486985d386039ffed143b28b1c832113c6331e5407bdf10132415e54b92a13ed0a8267ae2f975a385741ab9cef82031623d55b1e471"},
}

const (
	nistIV = "000102030405060708090a0b0c0d0e0f"
	nistPT = "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
)

func TestNISTVectors(t *testing.T) {
	for _, v := range nist {
		key, iv, pt, ct := unhex(v.key), unhex(nistIV), unhex(nistPT), unhex(v.ct)
		for _, generic := range []bool{false, true} {
			t.Run(fmt.Sprintf("AES-%d/generic=%v", 8*len(key), generic), func(t *testing.T) {
				mk := func(dec bool) *Stream {
					if generic {
						return newGeneric(key, iv, dec)
					}
					s, err := newStream(key, iv, dec)
					if err != nil {
						t.Fatal(err)
					}
					return s
				}
				got := make([]byte, len(pt))
				mk(false).XORKeyStream(got, pt)
				if !bytes.Equal(got, ct) {
					t.Fatalf("encrypt: got %x, want %x", got, ct)
				}
				mk(true).XORKeyStream(got, ct)
				if !bytes.Equal(got, pt) {
					t.Fatalf("decrypt: got %x, want %x", got, pt)
				}
			})
		}
	}
}

func TestAssemblyInUse(t *testing.T) {
	s, err := NewEncrypter(make([]byte, 32), make([]byte, 16))
	if err != nil {
		t.Fatal(err)
	}
	if s.fast != haveAsm {
		t.Fatalf("AES-256 stream fast=%v, assembly available=%v", s.fast, haveAsm)
	}
	if haveAsm {
		if err := knownAnswer(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStreamingMatchesReference: any split of the input into calls, in
// place or not, for every key size and both implementations, gives the
// reference output.
func TestStreamingMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 600; iter++ {
		key := make([]byte, []int{16, 24, 32, 32, 32}[iter%5])
		iv := make([]byte, 16)
		for i := range key {
			key[i] = byte(r.Uint32())
		}
		for i := range iv {
			iv[i] = byte(r.Uint32())
		}
		n := r.IntN(3000)
		if iter%50 == 0 {
			n = 1<<16 + r.IntN(300)
		}
		in := make([]byte, n)
		for i := range in {
			in[i] = byte(r.Uint32())
		}
		for _, dec := range []bool{false, true} {
			want := reference(key, iv, in, dec)
			for _, generic := range []bool{false, true} {
				var s *Stream
				if generic {
					s = newGeneric(key, iv, dec)
				} else {
					var err error
					if s, err = newStream(key, iv, dec); err != nil {
						t.Fatal(err)
					}
				}
				inPlace := iter%2 == 0
				buf := bytes.Clone(in)
				out := buf
				if !inPlace {
					out = make([]byte, n)
				}
				for off := 0; off < n; {
					step := r.IntN(200)
					if r.IntN(4) == 0 {
						step = r.IntN(5000)
					}
					step = min(step, n-off)
					s.XORKeyStream(out[off:off+step], buf[off:off+step])
					off += step
				}
				if !bytes.Equal(out, want) {
					t.Fatalf("iter %d: key %d bytes, len %d, decrypt %v, generic %v, in place %v: output differs from reference", iter, len(key), n, dec, generic, inPlace)
				}
				s.Wipe()
			}
		}
	}
}

func TestOverlapPanics(t *testing.T) {
	s, _ := NewEncrypter(make([]byte, 32), make([]byte, 16))
	buf := make([]byte, 64)
	defer func() {
		if recover() == nil {
			t.Fatal("no panic on inexact overlap")
		}
	}()
	s.XORKeyStream(buf[1:33], buf[:32])
}

func TestBadParameters(t *testing.T) {
	if _, err := NewEncrypter(make([]byte, 32), make([]byte, 15)); err == nil {
		t.Error("15-byte IV accepted")
	}
	if _, err := NewDecrypter(make([]byte, 31), make([]byte, 16)); err == nil {
		t.Error("31-byte key accepted")
	}
}

func TestWipe(t *testing.T) {
	key := bytes.Repeat([]byte{0xa5}, 32)
	s, _ := NewEncrypter(key, make([]byte, 16))
	s.XORKeyStream(make([]byte, 20), make([]byte, 20))
	s.Wipe()
	for _, w := range s.xk {
		if w != 0 {
			t.Fatal("key schedule not cleared")
		}
	}
	if s.blk != nil || s.ks != [16]byte{} || s.iv != [16]byte{} {
		t.Fatal("stream state not cleared")
	}
}

func FuzzStream(f *testing.F) {
	f.Add(make([]byte, 32), make([]byte, 16), []byte("hello"), uint16(3), false)
	f.Add(make([]byte, 16), make([]byte, 16), make([]byte, 300), uint16(17), true)
	f.Fuzz(func(t *testing.T, key, iv, in []byte, split uint16, dec bool) {
		if len(iv) != 16 || (len(key) != 16 && len(key) != 24 && len(key) != 32) {
			return
		}
		want := reference(key, iv, in, dec)
		s, err := newStream(key, iv, dec)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]byte, len(in))
		k := min(int(split), len(in))
		s.XORKeyStream(out[:k], in[:k])
		s.XORKeyStream(out[k:], in[k:])
		if !bytes.Equal(out, want) {
			t.Fatal("output differs from reference")
		}
	})
}

func benchStream(b *testing.B, dec, generic bool) {
	key := make([]byte, 32)
	buf := make([]byte, 256<<10)
	var s *Stream
	if generic {
		s = newGeneric(key, make([]byte, 16), dec)
	} else {
		s, _ = newStream(key, make([]byte, 16), dec)
	}
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		s.XORKeyStream(buf, buf)
	}
}

func BenchmarkEncrypt(b *testing.B)        { benchStream(b, false, false) }
func BenchmarkDecrypt(b *testing.B)        { benchStream(b, true, false) }
func BenchmarkEncryptGeneric(b *testing.B) { benchStream(b, false, true) }
func BenchmarkDecryptGeneric(b *testing.B) { benchStream(b, true, true) }
