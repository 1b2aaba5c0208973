package bailiff

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
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
	for _, n := range []int{0, 1, 15, 16, 17, 191, 192, 511, 512, 8383, 8384, outChunk - 7, outChunk, litChunk - 6, litChunk - 5, litChunk, 2*litChunk - 6, 2*litChunk - 5, outSlots*outChunk + 3, 3*litChunk + 5} {
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

// TestSEIPDFraming runs the writer, in both its forms (streaming with read
// ahead, and the io.WriteCloser), over every size around the literal and
// SEIPD partial-length boundaries and the output buffer's flush point,
// and reads each message back with go-crypto's packet reader given the
// session key: framing, literal packet and MDC must all check.
func TestSEIPDFraming(t *testing.T) {
	key := make([]byte, 32)
	rand.Read(key)
	var sizes []int
	for _, b := range []int{0, 8384 - 47, litChunk - 6, 2*litChunk - 6, outChunk - 47, 2*outChunk - 47, outSlots*outChunk - 47, outSlots*outChunk - 30} {
		for d := -3; d <= 3; d++ {
			if b+d >= 0 {
				sizes = append(sizes, b+d)
			}
		}
	}
	sizes = append(sizes, 4*outSlots*outChunk+12345)
	pt := make([]byte, slices.Max(sizes))
	rand.Read(pt)
	for _, n := range sizes {
		var a, b bytes.Buffer
		if err := sealStream(&a, []byte("HEAD"), key, bytes.NewReader(pt[:n])); err != nil {
			t.Fatal(err)
		}
		lw, err := newLiteralWriter(&b, []byte("HEAD"), key)
		if err != nil {
			t.Fatal(err)
		}
		for off, step := 0, 1; off < n; off, step = off+step, step*3+1 {
			lw.Write(pt[off:min(n, off+step)])
		}
		if err := lw.Close(); err != nil {
			t.Fatal(err)
		}
		for name, msg := range map[string][]byte{"stream": a.Bytes(), "writer": b.Bytes()} {
			if !bytes.HasPrefix(msg, []byte("HEAD")) {
				t.Fatalf("%s %d: key packet not first", name, n)
			}
			got, err := readSEIPD(msg[4:], key)
			if err != nil {
				t.Fatalf("%s %d bytes: %v", name, n, err)
			}
			if !bytes.Equal(got, pt[:n]) {
				t.Fatalf("%s %d bytes: plaintext differs", name, n)
			}
		}
	}
}

// readSEIPD decrypts one SEIPD v1 packet holding one literal packet with
// go-crypto, checking the MDC.
func readSEIPD(msg, key []byte) ([]byte, error) {
	r := bytes.NewReader(msg)
	p, err := packet.Read(r)
	if err != nil {
		return nil, err
	}
	se, ok := p.(*packet.SymmetricallyEncrypted)
	if !ok || !se.IntegrityProtected || se.Version != 1 {
		return nil, errors.New("not a SEIPD v1 packet")
	}
	rc, err := se.Decrypt(packet.CipherAES256, key)
	if err != nil {
		return nil, err
	}
	p, err = packet.Read(rc)
	if err != nil {
		return nil, err
	}
	lit, ok := p.(*packet.LiteralData)
	if !ok || !lit.IsBinary || lit.FileName != "" || lit.Time != 0 {
		return nil, errors.New("not a binary literal packet without name and time")
	}
	body, err := io.ReadAll(lit.Body)
	if err != nil {
		return nil, err
	}
	if rest, err := io.ReadAll(rc); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("after the literal packet: %d bytes, %v", len(rest), err)
	}
	if err := rc.Close(); err != nil {
		return nil, err
	}
	if r.Len() != 0 {
		return nil, errors.New("data after the SEIPD packet")
	}
	return body, nil
}

// failingReader returns n bytes, then an error, and counts reads after it
// said stop.
type failingReader struct {
	n       int
	stopped atomic.Bool
	late    atomic.Int32
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.stopped.Load() {
		f.late.Add(1)
	}
	if f.n == 0 {
		return 0, errors.New("source broke")
	}
	k := min(len(p), f.n)
	f.n -= k
	return k, nil
}

type failingWriter struct{ left int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.left {
		return 0, errors.New("disk full")
	}
	w.left -= len(p)
	return len(p), nil
}

// TestSealStreamErrors: a reader error mid-item and a writer error both
// end sealStream with that error, without an MDC written, and the read
// ahead goroutine has stopped reading when it returns.
func TestSealStreamErrors(t *testing.T) {
	key := make([]byte, 32)
	for _, n := range []int{100, 3 * litChunk, 10 * litChunk} {
		src := &failingReader{n: n}
		var out bytes.Buffer
		err := sealStream(&out, nil, key, src)
		src.stopped.Store(true)
		if err == nil || err.Error() != "source broke" {
			t.Fatalf("%d bytes then a read error: err = %v", n, err)
		}
		if _, err := readSEIPD(out.Bytes(), key); err == nil {
			t.Fatalf("%d bytes: a message cut by a read error reads back", n)
		}
	}
	src := &failingReader{n: 1 << 30}
	err := sealStream(&failingWriter{left: 3 * outSlots * outChunk}, nil, key, src)
	src.stopped.Store(true)
	if err == nil || err.Error() != "disk full" {
		t.Fatalf("write error: err = %v", err)
	}
	time.Sleep(20 * time.Millisecond)
	if src.late.Load() != 0 {
		t.Fatal("the read-ahead goroutine kept reading after sealStream returned")
	}
}
