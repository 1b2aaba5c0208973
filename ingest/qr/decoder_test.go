package qr

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"
)

// A header claiming a huge message or fragment count is rejected before
// anything is allocated for it.
func TestHugeHeaderRejectedBeforeAllocation(t *testing.T) {
	e, _ := NewEncoder([]byte("small"), Options{FragmentSize: 16})
	text, _ := e.Frame(0)
	fr, _ := ParseFrame(text, 0)
	raw, _ := fr.MarshalBinary()
	forge := func(msgLen uint32, frag uint16, count uint32) string {
		b := append([]byte(nil), raw...)
		binary.BigEndian.PutUint32(b[10:], msgLen)
		binary.BigEndian.PutUint16(b[14:], frag)
		binary.BigEndian.PutUint32(b[16:], count)
		return rawFrameText(b, true)
	}
	d := NewDecoder(Limits{MaxMessageLen: 1 << 20})
	for _, tc := range []struct {
		name string
		text string
	}{
		{"length-4GiB", forge(0xffffffff, 16, 0x10000000)},
		{"length-over-decoder-limit", forge(2<<20, 2048, uint32(fragmentCount(2<<20, 2048)))},
		{"count-over-cap", forge(16*(MaxFragmentCount+1), 16, MaxFragmentCount+3)},
		{"count-lies", forge(100, 16, 1<<20)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			allocs := testing.AllocsPerRun(10, func() { d.AddFrame(tc.text) })
			_, err := d.AddFrame(tc.text)
			if !errors.Is(err, ErrLimit) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want a limit or corrupt error", err)
			}
			if d.MemoryInUse() != 0 || len(d.InFlight()) != 0 {
				t.Fatalf("decoder holds %d bytes and %d transfers", d.MemoryInUse(), len(d.InFlight()))
			}
			// Parsing a ~100 byte frame: the base45 buffer and the error.
			if allocs > 20 {
				t.Fatalf("%v allocations for a rejected frame", allocs)
			}
		})
	}
	// A transfer larger than the memory budget is refused up front.
	small := NewDecoder(Limits{MaxMemory: 64 << 10})
	big, _ := NewEncoder(testMessage(200<<10, 1), Options{FragmentSize: 1000})
	text, _ = big.Frame(0)
	if _, err := small.AddFrame(text); !errors.Is(err, ErrLimit) || small.MemoryInUse() != 0 {
		t.Fatalf("err = %v, memory %d", err, small.MemoryInUse())
	}
}

// Memory stays within the budget however many mixed frames arrive while
// the systematic ones are missing, and the decoder still completes.
func TestDecoderMemoryBounded(t *testing.T) {
	msg := testMessage(100_000, 9)
	e, _ := NewEncoder(msg, Options{FragmentSize: 500})
	budget := e.Count()*(500+fragmentOverhead) + 256 + 40_000
	d := NewDecoder(Limits{MaxMemory: budget})
	peak := 0
	for seq := e.Count(); seq < 20*e.Count(); seq++ {
		text, _ := e.Frame(seq)
		p, err := d.AddFrame(text)
		if err != nil {
			t.Fatal(err)
		}
		peak = max(peak, d.MemoryInUse())
		if d.MemoryInUse() > budget {
			t.Fatalf("memory %d over budget %d", d.MemoryInUse(), budget)
		}
		if p.Done {
			break
		}
	}
	if d.Stats().Dropped == 0 {
		t.Fatal("budget never reached: the test does not exercise the bound")
	}
	for seq := 0; seq < e.Count() && len(d.Completed()) == 0; seq++ {
		text, _ := e.Frame(seq)
		if _, err := d.AddFrame(text); err != nil {
			t.Fatal(err)
		}
		if d.Stats().Completed == 1 {
			break
		}
	}
	if d.Stats().Completed != 1 || d.MemoryInUse() != 0 {
		t.Fatalf("stats %+v, memory %d", d.Stats(), d.MemoryInUse())
	}
	t.Logf("peak %d of %d", peak, budget)
}

// Several transfers decode side by side; beyond MaxTransfers the least
// recently active is dropped; a completed transfer's frames are duplicates.
func TestDecoderSeveralTransfers(t *testing.T) {
	var encs []*Encoder
	var msgs [][]byte
	for i := range 3 {
		m := testMessage(3000+i*100, uint64(20+i))
		e, _ := NewEncoder(m, Options{FragmentSize: 100})
		encs, msgs = append(encs, e), append(msgs, m)
	}
	d := NewDecoder(Limits{MaxTransfers: 2})
	for seq := 0; seq < 200; seq++ {
		for i := range 2 {
			text, _ := encs[i].Frame(seq)
			if _, err := d.AddFrame(text); err != nil {
				t.Fatal(err)
			}
		}
	}
	got := d.Completed()
	if len(got) != 2 || !bytes.Equal(got[0].Data, msgs[0]) || !bytes.Equal(got[1].Data, msgs[1]) {
		t.Fatalf("completed %d", len(got))
	}
	if d.Stats().Duplicates == 0 {
		t.Fatal("frames after completion not counted as duplicates")
	}
	// Fill two transfers, then a third evicts the least recently active.
	d = NewDecoder(Limits{MaxTransfers: 2})
	for i := range 3 {
		text, _ := encs[i].Frame(0)
		d.AddFrame(text)
	}
	if len(d.InFlight()) != 2 || d.Stats().Evicted != 1 {
		t.Fatalf("in flight %d, stats %+v", len(d.InFlight()), d.Stats())
	}
	for _, p := range d.InFlight() {
		if p.Transfer == encs[0].Transfer() {
			t.Fatal("oldest transfer kept")
		}
	}
}

// A frame that reuses a transfer id with another header is not mixed in.
func TestDecoderHeaderConflictIsForeign(t *testing.T) {
	id := TransferID{1, 2, 3, 4, 5, 6, 7, 8}
	a, _ := NewEncoder(testMessage(500, 1), Options{FragmentSize: 50, Transfer: id})
	b, _ := NewEncoder(testMessage(600, 2), Options{FragmentSize: 50, Transfer: id})
	d := NewDecoder(Limits{})
	ta, _ := a.Frame(0)
	tb, _ := b.Frame(1)
	if _, err := d.AddFrame(ta); err != nil {
		t.Fatal(err)
	}
	if _, err := d.AddFrame(tb); !errors.Is(err, ErrForeign) {
		t.Fatalf("err = %v, want ErrForeign", err)
	}
}

// Never stuck at 99%: for many seeds, a stream with heavy random loss
// keeps making progress and always completes; the last fragments come in
// within a bounded number of frames.
func TestDecoderNeverSticks(t *testing.T) {
	for seed := range 40 {
		msg := testMessage(2000+seed*37, uint64(seed))
		e, _ := NewEncoder(msg, Options{FragmentSize: 64})
		d := NewDecoder(Limits{})
		r := rand.New(rand.NewPCG(uint64(seed), 7))
		ninetyAt := -1
		for seq := 0; ; seq++ {
			if seq > 10*e.Count() {
				t.Fatalf("seed %d: not done after %d frames (%d fragments)", seed, seq, e.Count())
			}
			if r.Float64() < 0.5 {
				continue
			}
			text, _ := e.Frame(seq)
			p, err := d.AddFrame(text)
			if err != nil {
				t.Fatal(err)
			}
			if p.Percent >= 90 && ninetyAt < 0 {
				ninetyAt = seq
			}
			if p.Done {
				if tail := seq - ninetyAt; tail > e.Count() {
					t.Fatalf("seed %d: %d frames from 90%% to done (%d fragments)", seed, tail, e.Count())
				}
				break
			}
		}
		if m := d.Completed(); len(m) != 1 || !bytes.Equal(m[0].Data, msg) {
			t.Fatalf("seed %d: wrong message", seed)
		}
	}
}

// Rejected frames of every kind are counted, and never disturb a transfer.
func TestDecoderCountsRejects(t *testing.T) {
	msg := testMessage(1000, 3)
	frames, _ := Encode(msg, Options{FragmentSize: 100})
	d := NewDecoder(Limits{})
	junk := []string{"hello", "CQ!!", frames[0][:len(frames[0])-3], "CQ" + Base45Encode(make([]byte, 40))}
	for i, f := range frames {
		if i < len(junk) {
			if _, err := d.AddFrame(junk[i]); err == nil {
				t.Fatalf("junk %q accepted", junk[i])
			}
		}
		d.AddFrame(f)
	}
	st := d.Stats()
	if st.NotFrame != 2 || st.Corrupt != 2 || st.Completed != 1 {
		t.Fatalf("stats %+v", st)
	}
}
