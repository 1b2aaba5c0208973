package qr

import (
	"encoding/binary"
	"testing"
)

func FuzzFrame(f *testing.F) {
	e, _ := NewEncoder([]byte("fuzz seed message for the frame parser"), Options{FragmentSize: 16})
	for seq := range 5 {
		s, _ := e.Frame(seq)
		f.Add(s)
	}
	f.Add("")
	f.Add("CQ")
	f.Add("CQGGW")
	f.Fuzz(func(t *testing.T, text string) {
		fr, err := ParseFrame(text, 0)
		if err != nil {
			if fr != nil {
				t.Fatal("frame returned with an error")
			}
			return
		}
		if len(fr.Payload) != fr.FragmentSize || fr.FragmentCount != fragmentCount(fr.MessageLen, fr.FragmentSize) {
			t.Fatalf("inconsistent frame accepted: %+v", fr)
		}
		re, err := fr.Text()
		if err != nil {
			t.Fatal(err)
		}
		if re != text {
			t.Fatalf("non-canonical frame accepted: %q re-encodes to %q", text, re)
		}
	})
}

// fuzzFrames turns fuzz input into frame texts: chunks of [len u16][flags u8]
// [binary frame]; flag bit 0 recomputes the CRC so the fuzzer reaches the
// decoder's logic past the checksum.
func fuzzFrames(data []byte) []string {
	var out []string
	for len(data) >= 3 && len(out) < 256 {
		n := int(binary.BigEndian.Uint16(data))
		fl := data[2]
		data = data[3:]
		n = min(n, len(data))
		b := append([]byte(nil), data[:n]...)
		data = data[n:]
		if fl&1 != 0 && len(b) >= ChecksumLen {
			b = fixChecksum(b)
		}
		out = append(out, Prefix+Base45Encode(b))
	}
	return out
}

func seedStream(msg []byte, f int, seqs ...int) []byte {
	e, _ := NewEncoder(msg, Options{FragmentSize: f})
	var out []byte
	for _, s := range seqs {
		text, _ := e.Frame(s)
		fr, _ := ParseFrame(text, 0)
		b, _ := fr.MarshalBinary()
		out = binary.BigEndian.AppendUint16(out, uint16(len(b)))
		out = append(out, 1)
		out = append(out, b...)
	}
	return out
}

func FuzzDecoder(f *testing.F) {
	msg := []byte("the decoder fuzz seed: a message of some length, split in pieces")
	f.Add(seedStream(msg, 16, 0, 1, 2, 3, 4, 5, 6))
	f.Add(seedStream(msg, 16, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16))
	f.Add(seedStream(msg, 16, 1, 1, 3, 20, 21, 22, 23, 24, 25))
	f.Add(seedStream([]byte("x"), 64, 0, 1, 2))
	f.Fuzz(func(t *testing.T, data []byte) {
		const mem = 1 << 20
		d := NewDecoder(Limits{MaxMemory: mem, MaxTransfers: 2, MaxMessageLen: 1 << 16})
		for _, text := range fuzzFrames(data) {
			p, err := d.AddFrame(text)
			if err == nil && (p.Received > p.Needed || p.Percent > 100) {
				t.Fatalf("progress %+v", p)
			}
			if m := d.MemoryInUse(); m < 0 || m > mem {
				t.Fatalf("memory in use %d outside 0..%d", m, mem)
			}
		}
		for _, m := range d.Completed() {
			if len(m.Data) > 1<<16 {
				t.Fatalf("message of %d bytes past the limit", len(m.Data))
			}
		}
	})
}
