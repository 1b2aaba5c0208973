package bailiff

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// TestSEIPDWriterSizes round-trips the hand-written SEIPD v1 writer through
// go-crypto's reader at every partial-length boundary; the gpg, sq and rnp
// tests check the same writer against the real tools.
func TestSEIPDWriterSizes(t *testing.T) {
	e, err := newP521Entity("t", "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, 15, 16, 17, 191, 192, 511, 512, 8383, 8384, partialChunk - 7, partialChunk - 6, partialChunk, partialChunk + 1, 3*partialChunk + 5, sealBuf + 3} {
		pt := make([]byte, n)
		rand.Read(pt)
		var ct bytes.Buffer
		if err := sealTo(&ct, e, bytes.NewReader(pt), true); err != nil {
			t.Fatal(err)
		}
		got, err := decryptBytes(bytes.NewReader(ct.Bytes()), openpgp.EntityList{e}, int64(n)+1)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if !bytes.Equal(got, pt) {
			t.Fatalf("%d bytes: plaintext differs", n)
		}
		// our reader agrees
		got, err = readItem(ct.Bytes(), e)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("%d bytes: openItem: %v", n, err)
		}
		// a flipped ciphertext bit anywhere after the key packet fails the
		// MDC (or the packet framing), in both readers
		for _, off := range []int{len(ct.Bytes()) - 3, len(ct.Bytes()) - 30, 250} {
			if off < 220 || off >= ct.Len() {
				continue
			}
			bad := bytes.Clone(ct.Bytes())
			bad[off] ^= 0x01
			if _, err := decryptBytes(bytes.NewReader(bad), openpgp.EntityList{e}, int64(n)+1); err == nil {
				t.Fatalf("%d bytes: go-crypto accepted a flip at %d", n, off)
			}
			if _, err := readItem(bad, e); err == nil {
				t.Fatalf("%d bytes: openItem accepted a flip at %d", n, off)
			}
		}
		// truncation is refused
		if _, err := readItem(ct.Bytes()[:ct.Len()-1], e); err == nil {
			t.Fatalf("%d bytes: truncated item accepted", n)
		}
	}
}

func readItem(ct []byte, e *openpgp.Entity) ([]byte, error) {
	r, err := openItem(bytes.NewReader(ct), openpgp.EntityList{e})
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// TestOpenItemRefusesOtherProfiles: a compressed, signed message (gpg's
// default shape) is not an item.
func TestOpenItemRefusesOtherProfiles(t *testing.T) {
	e, _ := newP521Entity("t", "", time.Now())
	var b bytes.Buffer
	cfg := config(time.Now())
	cfg.DefaultCompressionAlgo = packet.CompressionZLIB
	w, err := openpgp.Encrypt(&b, []*openpgp.Entity{e}, e, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("compressed and signed"))
	w.Close()
	if _, err := readItem(b.Bytes(), e); !errors.Is(err, ErrItemFormat) {
		t.Fatalf("err = %v, want ErrItemFormat", err)
	}
	other, _ := newP521Entity("o", "", time.Now())
	var c bytes.Buffer
	sealTo(&c, e, bytes.NewReader([]byte("x")), true)
	if _, err := readItem(c.Bytes(), other); err == nil {
		t.Fatal("item opened with another key")
	}
}
