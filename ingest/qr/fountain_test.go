package qr

import (
	"bytes"
	"errors"
	"hash/crc32"
	"image"
	"math/rand/v2"
	"testing"
)

func testMessage(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// feedUntilDone sends frames of e in order starting at 0, dropping each with
// probability loss, and returns how many frames were sent until the message
// came out; it fails when limit frames are not enough.
func feedUntilDone(t *testing.T, e *Encoder, d *Decoder, loss float64, r *rand.Rand, limit int) (int, []byte) {
	t.Helper()
	for seq := 0; seq < limit; seq++ {
		if r.Float64() < loss {
			continue
		}
		text, err := e.Frame(seq)
		if err != nil {
			t.Fatal(err)
		}
		p, err := d.AddFrame(text)
		if err != nil {
			t.Fatalf("frame %d: %v", seq, err)
		}
		if p.Done {
			msgs := d.Completed()
			if len(msgs) != 1 {
				t.Fatalf("done but %d messages", len(msgs))
			}
			return seq + 1, msgs[0].Data
		}
	}
	t.Fatalf("not rebuilt after %d frames (stats %+v)", limit, d.Stats())
	return 0, nil
}

func TestFountainLosses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		size  int
		frag  int
		loss  float64
		runs  int
		slack float64 // allowed frames beyond count/(1-loss)
	}{
		{"none", 20000, 200, 0, 3, 1.0},
		{"5pct", 20000, 200, 0.05, 10, 1.25},
		{"20pct", 20000, 200, 0.20, 10, 1.25},
		{"40pct", 20000, 200, 0.40, 10, 1.3},
		{"40pct-large", 300000, 300, 0.40, 2, 1.3},
		{"tiny", 10, 16, 0.4, 20, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var worst float64
			for run := 0; run < tc.runs; run++ {
				msg := testMessage(tc.size, uint64(run))
				e, err := NewEncoder(msg, Options{FragmentSize: tc.frag})
				if err != nil {
					t.Fatal(err)
				}
				ideal := float64(e.Count()) / (1 - tc.loss)
				limit := int(ideal*tc.slack) + 8
				r := rand.New(rand.NewPCG(uint64(run), 99))
				sent, got := feedUntilDone(t, e, NewDecoder(Limits{}), tc.loss, r, limit)
				if !bytes.Equal(got, msg) {
					t.Fatalf("run %d: message differs", run)
				}
				worst = max(worst, float64(sent)/ideal)
			}
			t.Logf("worst frames sent / ideal = %.3f", worst)
		})
	}
}

// Losses of 5%, 20% and 40%, with the survivors shuffled, some duplicated
// and frames of another transfer mixed in, still rebuild the message.
func TestDecoderShuffledDuplicatedForeign(t *testing.T) {
	msg := testMessage(50000, 7)
	other := testMessage(30000, 8)
	a, err := Encode(msg, Options{FragmentSize: 500, Redundancy: 1})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Encode(other, Options{FragmentSize: 400, Redundancy: 0.2})
	if err != nil {
		t.Fatal(err)
	}
	for _, loss := range []float64{0.05, 0.2, 0.4} {
		for _, pinned := range []bool{false, true} {
			r := rand.New(rand.NewPCG(uint64(loss*100), 4))
			var stream []string
			for _, f := range a {
				if r.Float64() < loss {
					continue
				}
				stream = append(stream, f)
				if r.Float64() < 0.2 {
					stream = append(stream, f)
				}
			}
			stream = append(stream, b[:len(b)/2]...)
			r.Shuffle(len(stream), func(i, j int) { stream[i], stream[j] = stream[j], stream[i] })
			l := Limits{}
			if pinned {
				id := DeriveTransferID(msg)
				l.Transfer = &id
			}
			d := NewDecoder(l)
			for _, s := range stream {
				_, err := d.AddFrame(s)
				if err != nil && !(pinned && errors.Is(err, ErrForeign)) {
					t.Fatal(err)
				}
			}
			msgs := d.Completed()
			if len(msgs) != 1 || !bytes.Equal(msgs[0].Data, msg) {
				t.Fatalf("loss %v pinned %v: got %d messages, stats %+v", loss, pinned, len(msgs), d.Stats())
			}
			st := d.Stats()
			if pinned && st.Foreign != len(b)/2 || st.Duplicates == 0 {
				t.Fatalf("loss %v pinned %v: stats %+v", loss, pinned, st)
			}
			// Unpinned, the other transfer is followed on the side and
			// stays incomplete, never mixed in.
			if !pinned && (len(d.InFlight()) != 1 || d.InFlight()[0].Transfer == DeriveTransferID(msg)) {
				t.Fatalf("in flight %+v", d.InFlight())
			}
		}
	}
}

func crc32ieee(b []byte) uint32 { return crc32.ChecksumIEEE(b) }

func lumaOf(t *testing.T, img image.Image) []byte {
	y, w, h, s, err := Luma(img)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 0, w*h)
	for r := 0; r < h; r++ {
		out = append(out, y[r*s:r*s+w]...)
	}
	return out
}
