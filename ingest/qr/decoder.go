package qr

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"math/bits"
)

// Progress reports how far one transfer has come.
type Progress struct {
	Transfer   TransferID
	MessageLen int
	Received   int     // fragments known so far
	Needed     int     // fragments in the message
	Percent    float64 // 100 * Received / Needed
	Frames     int     // frames accepted for this transfer
	Done       bool    // the message was rebuilt and its digest checked
}

// Message is a completed transfer.
type Message struct {
	Transfer TransferID
	Data     []byte
}

// Stats counts what a Decoder has seen.
type Stats struct {
	Frames     int // AddFrame calls
	Accepted   int // frames that added equations or fragments
	Duplicates int // frames already known, or of a completed transfer
	NotFrame   int // texts that are not Coffre frames
	Corrupt    int // malformed frames, checksum failures, bad versions
	OverLimit  int // headers beyond the limits
	Foreign    int // frames of another transfer than the pinned one, or disagreeing with their transfer
	Dropped    int // mixed frames dropped for lack of memory
	Evicted    int // transfers dropped to make room for a new one
	Completed  int // messages rebuilt
	Failed     int // transfers whose digest did not match
}

type equation struct {
	cols    []int // fragment indices; known ones are XORed out lazily
	left    int   // number of cols still unknown
	payload []byte
	done    bool
}

type transfer struct {
	id        TransferID
	msgLen    int
	f         int
	count     int
	frags     [][]byte
	known     int
	frames    int
	seen      map[int]struct{} // mixed sequence numbers accepted
	byCol     map[int][]*equation
	live      int // equations not done
	mixes     int // mixed frames accepted
	nextGE    int // mixes count at which elimination is next tried
	nextKnown int // or known count
	lastUse   int
	mem       int
	queue     []int // columns newly known, to propagate
	scratch   []int
}

// Decoder rebuilds messages from frames of one or several transfers. It is
// not safe for concurrent use.
type Decoder struct {
	lim       Limits
	transfers map[TransferID]*transfer
	done      map[TransferID]struct{}
	doneOrder []TransferID
	completed []Message
	stats     Stats
	clock     int
	mem       int
	pinned    bool
	pin       TransferID
}

// NewDecoder returns a decoder bounded by l.
func NewDecoder(l Limits) *Decoder {
	d := &Decoder{
		lim:       l.withDefaults(),
		transfers: map[TransferID]*transfer{},
		done:      map[TransferID]struct{}{},
	}
	if l.Transfer != nil {
		d.pinned = true
		d.pin = *l.Transfer
	}
	return d
}

// Stats returns the counters.
func (d *Decoder) Stats() Stats { return d.stats }

// Completed returns the messages rebuilt since the last call.
func (d *Decoder) Completed() []Message {
	c := d.completed
	d.completed = nil
	return c
}

// InFlight returns the progress of every transfer being followed.
func (d *Decoder) InFlight() []Progress {
	out := make([]Progress, 0, len(d.transfers))
	for _, t := range d.transfers {
		out = append(out, t.progress())
	}
	return out
}

// MemoryInUse returns the bytes the decoder accounts for.
func (d *Decoder) MemoryInUse() int { return d.mem }

func (t *transfer) progress() Progress {
	return Progress{
		Transfer: t.id, MessageLen: t.msgLen, Received: t.known, Needed: t.count,
		Percent: 100 * float64(t.known) / float64(t.count), Frames: t.frames,
	}
}

// AddFrame feeds one frame text. It returns the progress of the frame's
// transfer, or an error wrapping ErrNotFrame, ErrCorrupt, ErrVersion,
// ErrLimit, ErrForeign or ErrDigest for a frame that was not used. It never
// panics on any input.
func (d *Decoder) AddFrame(text string) (Progress, error) {
	d.stats.Frames++
	d.clock++
	fr, err := ParseFrame(text, d.lim.MaxMessageLen)
	if err != nil {
		switch {
		case errors.Is(err, ErrNotFrame):
			d.stats.NotFrame++
		case errors.Is(err, ErrLimit):
			d.stats.OverLimit++
		default:
			d.stats.Corrupt++
		}
		return Progress{}, err
	}
	if d.pinned && fr.Transfer != d.pin {
		d.stats.Foreign++
		return Progress{}, fmt.Errorf("%w: transfer %s (following %s)", ErrForeign, fr.Transfer, d.pin)
	}
	if _, ok := d.done[fr.Transfer]; ok {
		d.stats.Duplicates++
		return Progress{Transfer: fr.Transfer, MessageLen: fr.MessageLen, Received: fr.FragmentCount, Needed: fr.FragmentCount, Percent: 100, Done: true}, nil
	}
	t := d.transfers[fr.Transfer]
	if t == nil {
		t, err = d.newTransfer(fr)
		if err != nil {
			d.stats.OverLimit++
			return Progress{}, err
		}
	} else if t.msgLen != fr.MessageLen || t.f != fr.FragmentSize || t.count != fr.FragmentCount {
		d.stats.Foreign++
		return t.progress(), fmt.Errorf("%w: frame %d of transfer %s disagrees with the transfer's header", ErrForeign, fr.Seq, fr.Transfer)
	}
	t.lastUse = d.clock
	if !d.add(t, fr) {
		return t.progress(), nil
	}
	t.frames++
	d.stats.Accepted++
	if t.known == t.count {
		return d.finish(t)
	}
	return t.progress(), nil
}

func (d *Decoder) newTransfer(fr *Frame) (*transfer, error) {
	need := fr.FragmentCount*(fr.FragmentSize+fragmentOverhead) + 256
	if need > d.lim.MaxMemory {
		return nil, fmt.Errorf("%w: transfer %s needs %d bytes, memory limit is %d", ErrLimit, fr.Transfer, need, d.lim.MaxMemory)
	}
	for len(d.transfers) >= d.lim.MaxTransfers || d.mem+need > d.lim.MaxMemory {
		var old *transfer
		for _, t := range d.transfers {
			if old == nil || t.lastUse < old.lastUse {
				old = t
			}
		}
		if old == nil {
			break
		}
		d.drop(old)
		d.stats.Evicted++
	}
	t := &transfer{
		id: fr.Transfer, msgLen: fr.MessageLen, f: fr.FragmentSize, count: fr.FragmentCount,
		frags: make([][]byte, fr.FragmentCount), seen: map[int]struct{}{}, byCol: map[int][]*equation{},
		mem: need,
	}
	d.mem += need
	d.transfers[t.id] = t
	return t, nil
}

func (d *Decoder) drop(t *transfer) {
	d.mem -= t.mem
	delete(d.transfers, t.id)
}

// add feeds a parsed frame to its transfer; it reports whether the frame
// was new.
func (d *Decoder) add(t *transfer, fr *Frame) bool {
	if fr.Seq < t.count {
		if t.frags[fr.Seq] != nil {
			d.stats.Duplicates++
			return false
		}
		d.learn(t, fr.Seq, fr.Payload)
		d.maybeEliminate(t)
		return true
	}
	if _, ok := t.seen[fr.Seq]; ok {
		d.stats.Duplicates++
		return false
	}
	if len(t.scratch) < t.count {
		t.scratch = make([]int, t.count)
	}
	cols := mixIndices(t.id, fr.Seq, t.count, t.scratch)
	payload := fr.Payload
	var unknown []int
	for _, c := range cols {
		if t.frags[c] != nil {
			xorInto(payload, t.frags[c])
		} else {
			unknown = append(unknown, c)
		}
	}
	switch len(unknown) {
	case 0:
		d.stats.Duplicates++
		return false
	case 1:
		if d.mem+seenCost <= d.lim.MaxMemory {
			d.mem += seenCost
			t.mem += seenCost
			t.seen[fr.Seq] = struct{}{}
		}
		d.learn(t, unknown[0], payload)
		return true
	}
	cost := eqCost(len(payload), len(unknown))
	if d.mem+cost > d.lim.MaxMemory || t.live >= t.count+MaxGaussUnknowns {
		d.stats.Dropped++
		return false
	}
	d.mem += cost
	t.mem += cost
	if d.mem+seenCost <= d.lim.MaxMemory {
		d.mem += seenCost
		t.mem += seenCost
		t.seen[fr.Seq] = struct{}{}
	}
	eq := &equation{cols: unknown, left: len(unknown), payload: payload}
	for _, c := range unknown {
		t.byCol[c] = append(t.byCol[c], eq)
	}
	t.live++
	t.mixes++
	d.maybeEliminate(t)
	return true
}

// maybeEliminate runs Gaussian elimination when peeling has stalled with at
// least as many pending equations as unknowns, at most once per m/8 new
// mixes or newly known fragments (m the unknowns), so its cost stays a
// fraction of the frames' own.
func (d *Decoder) maybeEliminate(t *transfer) {
	m := t.count - t.known
	if m == 0 || m > MaxGaussUnknowns || t.live < m {
		return
	}
	if t.mixes < t.nextGE && t.known < t.nextKnown {
		return
	}
	d.eliminate(t)
}

// Memory accounting (approximate, conservative): per fragment its payload
// plus slice header and scratch; per pending mixed frame its payload, its
// column list and its entries in the column index; per remembered sequence
// number a map entry.
const (
	fragmentOverhead = 32
	seenCost         = 32
)

func eqCost(payload, cols int) int { return payload + 16*cols + 96 }

// learn records fragment c and propagates it through the pending equations
// (peeling).
func (d *Decoder) learn(t *transfer, c int, payload []byte) {
	if t.frags[c] != nil {
		return
	}
	t.frags[c] = payload
	t.known++
	t.queue = append(t.queue[:0], c)
	for len(t.queue) > 0 {
		c := t.queue[len(t.queue)-1]
		t.queue = t.queue[:len(t.queue)-1]
		eqs := t.byCol[c]
		delete(t.byCol, c)
		for _, eq := range eqs {
			if eq.done {
				continue
			}
			xorInto(eq.payload, t.frags[c])
			eq.left--
			switch eq.left {
			case 0:
				d.retire(t, eq)
			case 1:
				for _, u := range eq.cols {
					if u != c && t.frags[u] == nil {
						d.retire(t, eq)
						t.frags[u] = eq.payload
						t.known++
						t.queue = append(t.queue, u)
						break
					}
				}
			}
		}
	}
}

func (d *Decoder) retire(t *transfer, eq *equation) {
	eq.done = true
	t.live--
	cost := eqCost(len(eq.payload), len(eq.cols))
	d.mem -= cost
	t.mem -= cost
}

// eliminate runs Gaussian elimination over GF(2) on the pending equations
// (at most unknowns+64 of them) restricted to the unknown fragments, and
// learns every fragment it pins down. A first pass reduces the coefficient
// bits only (cheap: no payload is touched); only when it shows that some
// fragment is determined does a second pass redo the reduction with the
// payloads. It is tried when peeling has stalled with at least as many
// pending equations as unknowns, then again after every unknowns/8 new
// mixes or newly known fragments.
func (d *Decoder) eliminate(t *transfer) {
	m := t.count - t.known
	t.nextGE = t.mixes + max(1, m/8)
	t.nextKnown = t.known + max(1, m/8)
	pos := make(map[int]int, m)
	cols := make([]int, 0, m)
	for c, f := range t.frags {
		if f == nil {
			pos[c] = len(cols)
			cols = append(cols, c)
		}
	}
	words := (m + 63) / 64
	var eqs []*equation
	seen := map[*equation]bool{}
	for _, list := range t.byCol {
		for _, eq := range list {
			if eq.done || seen[eq] || len(eqs) >= m+64 {
				continue
			}
			seen[eq] = true
			eqs = append(eqs, eq)
		}
	}
	build := func() [][]uint64 {
		rows := make([][]uint64, len(eqs))
		for i, eq := range eqs {
			r := make([]uint64, words)
			for _, c := range eq.cols {
				if t.frags[c] == nil {
					j := pos[c]
					r[j/64] |= 1 << (j % 64)
				}
			}
			rows[i] = r
		}
		return rows
	}
	// Pass 1: bits only.
	rows := build()
	if len(rref(rows, nil, m, words)) == 0 {
		return
	}
	// Pass 2: the same reduction, carrying the payloads.
	rows = build()
	pay := make([][]byte, len(eqs))
	for i, eq := range eqs {
		pay[i] = append([]byte(nil), eq.payload...)
	}
	for _, s := range rref(rows, pay, m, words) {
		if c := cols[s.col]; t.frags[c] == nil {
			d.learn(t, c, pay[s.row])
		}
	}
}

type solved struct{ row, col int }

// rref reduces rows (bit vectors of m columns) to reduced row echelon form,
// applying the same row operations to pay when it is not nil, and returns
// the rows left with a single bit: the columns they determine.
func rref(rows [][]uint64, pay [][]byte, m, words int) []solved {
	rank := 0
	pivots := make([]int, 0, m)
	for col := 0; col < m && rank < len(rows); col++ {
		w, b := col/64, uint64(1)<<(col%64)
		sel := -1
		for i := rank; i < len(rows); i++ {
			if rows[i][w]&b != 0 {
				sel = i
				break
			}
		}
		if sel < 0 {
			continue
		}
		rows[rank], rows[sel] = rows[sel], rows[rank]
		if pay != nil {
			pay[rank], pay[sel] = pay[sel], pay[rank]
		}
		pr := rows[rank]
		for i := range rows {
			if i != rank && rows[i][w]&b != 0 {
				ri := rows[i]
				for k := w; k < words; k++ {
					ri[k] ^= pr[k]
				}
				if pay != nil {
					xorInto(pay[i], pay[rank])
				}
			}
		}
		pivots = append(pivots, col)
		rank++
	}
	var out []solved
	for i := 0; i < rank; i++ {
		n := 0
		for _, v := range rows[i] {
			n += bits.OnesCount64(v)
		}
		if n == 1 {
			out = append(out, solved{i, pivots[i]})
		}
	}
	return out
}

// finish checks the digest of a transfer whose fragments are all known.
func (d *Decoder) finish(t *transfer) (Progress, error) {
	d.drop(t)
	data := make([]byte, 0, t.count*t.f)
	for _, f := range t.frags {
		data = append(data, f...)
	}
	msg := data[:t.msgLen:t.msgLen]
	got := sha256.Sum256(msg)
	pad := data[t.msgLen+DigestLen:]
	zero := 0
	for _, b := range pad {
		zero |= int(b)
	}
	if subtle.ConstantTimeCompare(got[:], data[t.msgLen:t.msgLen+DigestLen]) != 1 || zero != 0 {
		d.stats.Failed++
		return Progress{Transfer: t.id, MessageLen: t.msgLen, Needed: t.count},
			fmt.Errorf("%w: transfer %s: frames from different sources were mixed or forged; restart the display", ErrDigest, t.id)
	}
	d.stats.Completed++
	d.completed = append(d.completed, Message{Transfer: t.id, Data: msg})
	d.done[t.id] = struct{}{}
	d.doneOrder = append(d.doneOrder, t.id)
	if len(d.doneOrder) > MaxCompletedRemembered {
		delete(d.done, d.doneOrder[0])
		d.doneOrder = d.doneOrder[1:]
	}
	p := t.progress()
	p.Done = true
	p.Received = t.count
	p.Percent = 100
	return p, nil
}
