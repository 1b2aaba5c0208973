package qr

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"sync"

	qrcode "github.com/skip2/go-qrcode"
)

// Options choose the frames' size and look. Zero fields take the defaults.
type Options struct {
	// FragmentSize is the payload bytes per frame; 0 picks the largest that
	// fits Version and ECC in alphanumeric mode.
	FragmentSize int
	// Redundancy is the number of mixed frames Encode emits beyond the
	// systematic ones, as a ratio of the fragment count (default 0.5).
	// Negative means none.
	Redundancy float64
	// ECC is the QR error-correction level: "L", "M" (default), "Q", "H".
	ECC string
	// Version is the QR version, 1 to 40 (default 20; 10 to 25 suit
	// cameras).
	Version int
	// ModulePx is the pixels per module in rendered images (default 6;
	// cameras want at least 5). The quiet zone is always 4 modules.
	ModulePx int
	// Transfer fixes the transfer id; zero derives it from the message.
	Transfer TransferID
}

// Defaults for Options.
const (
	DefaultVersion    = 20
	DefaultECC        = "M"
	DefaultModulePx   = 6
	DefaultRedundancy = 0.5
	QuietZoneModules  = 4
)

func (o Options) withDefaults() (Options, error) {
	if o.Version == 0 {
		o.Version = DefaultVersion
	}
	if o.Version < 1 || o.Version > 40 {
		return o, fmt.Errorf("qr: version %d out of range 1..40", o.Version)
	}
	if o.ECC == "" {
		o.ECC = DefaultECC
	}
	if _, err := eccLevel(o.ECC); err != nil {
		return o, err
	}
	if o.ModulePx == 0 {
		o.ModulePx = DefaultModulePx
	}
	if o.ModulePx < 1 || o.ModulePx > 64 {
		return o, fmt.Errorf("qr: %d pixels per module out of range 1..64", o.ModulePx)
	}
	if o.Redundancy == 0 {
		o.Redundancy = DefaultRedundancy
	}
	if math.IsNaN(o.Redundancy) || o.Redundancy > 100 {
		return o, fmt.Errorf("qr: redundancy %v out of range", o.Redundancy)
	}
	if o.FragmentSize == 0 {
		f, err := FragmentSizeFor(o.Version, o.ECC)
		if err != nil {
			return o, err
		}
		o.FragmentSize = f
	}
	if o.FragmentSize < MinFragmentSize || o.FragmentSize > MaxFragmentSize {
		return o, fmt.Errorf("qr: fragment size %d out of range %d..%d", o.FragmentSize, MinFragmentSize, MaxFragmentSize)
	}
	return o, nil
}

func eccLevel(s string) (qrcode.RecoveryLevel, error) {
	switch s {
	case "L":
		return qrcode.Low, nil
	case "M":
		return qrcode.Medium, nil
	case "Q":
		return qrcode.High, nil
	case "H":
		return qrcode.Highest, nil
	}
	return 0, fmt.Errorf("qr: error-correction level %q is not one of L, M, Q, H", s)
}

// frameTextLen is the length of the text of a frame with f payload bytes.
func frameTextLen(f int) int {
	return len(Prefix) + Base45EncodedLen(HeaderLen+f+ChecksumLen)
}

// capacityMargin characters are kept free so that the mode segmentation of
// an unlucky text (numeric runs) still fits.
const capacityMargin = 8

var capCache sync.Map // "version/ecc" -> int

// FragmentSizeFor returns the largest fragment size whose frames fit a QR
// code of the given version and ECC level in alphanumeric mode.
func FragmentSizeFor(version int, ecc string) (int, error) {
	lvl, err := eccLevel(ecc)
	if err != nil {
		return 0, err
	}
	if version < 1 || version > 40 {
		return 0, fmt.Errorf("qr: version %d out of range 1..40", version)
	}
	key := fmt.Sprintf("%d/%s", version, ecc)
	if v, ok := capCache.Load(key); ok {
		return v.(int), nil
	}
	fits := func(n int) bool {
		b := make([]byte, n)
		for i := range b {
			b[i] = 'A'
		}
		_, err := qrcode.NewWithForcedVersion(string(b), version, lvl)
		return err == nil
	}
	lo, hi := 0, MaxFrameText+1 // fits(lo) true, fits(hi) false
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if fits(mid) {
			lo = mid
		} else {
			hi = mid
		}
	}
	chars := lo - capacityMargin
	f := MaxFragmentSize
	for f >= MinFragmentSize && frameTextLen(f) > chars {
		f--
	}
	if f < MinFragmentSize {
		return 0, fmt.Errorf("qr: version %d-%s holds no frame; pick a larger version or a lower ECC level", version, ecc)
	}
	capCache.Store(key, f)
	return f, nil
}

// DeriveTransferID is the default transfer id of a message: the first 8
// bytes of SHA-256("coffre qr transfer v1\x00" || msg).
func DeriveTransferID(msg []byte) TransferID {
	h := sha256.New()
	h.Write([]byte("coffre qr transfer v1\x00"))
	h.Write(msg)
	var id TransferID
	copy(id[:], h.Sum(nil))
	return id
}

// Encoder makes the frames of one message, systematic and mixed, for any
// sequence number: a display may loop over Encode's frames or keep drawing
// fresh mixed frames forever.
type Encoder struct {
	id     TransferID
	msgLen int
	f      int
	count  int
	data   []byte // msg || sha256(msg) || zero padding, count*f bytes
	mu     sync.Mutex
	buf    []int
}

// NewEncoder prepares the frames of msg.
func NewEncoder(msg []byte, o Options) (*Encoder, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if len(msg) > MaxMessageLen {
		return nil, fmt.Errorf("qr: message of %d bytes exceeds the %d byte limit; send it on a USB bundle", len(msg), MaxMessageLen)
	}
	count := fragmentCount(len(msg), o.FragmentSize)
	if count > MaxFragmentCount {
		return nil, fmt.Errorf("qr: message of %d bytes needs %d fragments of %d bytes (limit %d); use a larger QR version or fragment size", len(msg), count, o.FragmentSize, MaxFragmentCount)
	}
	e := &Encoder{id: o.Transfer, msgLen: len(msg), f: o.FragmentSize, count: count}
	if e.id == (TransferID{}) {
		e.id = DeriveTransferID(msg)
	}
	e.data = make([]byte, count*o.FragmentSize)
	copy(e.data, msg)
	d := sha256.Sum256(msg)
	copy(e.data[len(msg):], d[:])
	return e, nil
}

// Transfer returns the transfer id.
func (e *Encoder) Transfer() TransferID { return e.id }

// Count returns the number of fragments: the minimum number of frames a
// receiver needs.
func (e *Encoder) Count() int { return e.count }

// FragmentSize returns the payload bytes per frame.
func (e *Encoder) FragmentSize() int { return e.f }

// Frame returns the text of frame seq (0 <= seq <= MaxSeq). Frames below
// Count() are systematic.
func (e *Encoder) Frame(seq int) (string, error) {
	if seq < 0 || seq > MaxSeq {
		return "", fmt.Errorf("qr: sequence number %d out of range 0..%d", seq, MaxSeq)
	}
	e.mu.Lock()
	idx := mixIndices(e.id, seq, e.count, e.buf)
	if len(e.buf) < e.count {
		e.buf = make([]int, e.count)
	}
	e.mu.Unlock()
	payload := make([]byte, e.f)
	for _, i := range idx {
		xorInto(payload, e.data[i*e.f:(i+1)*e.f])
	}
	fr := Frame{Transfer: e.id, MessageLen: e.msgLen, FragmentSize: e.f, FragmentCount: e.count, Seq: seq, Payload: payload}
	return fr.Text()
}

// Encode returns the frame texts of msg: Count() systematic frames followed
// by ceil(Count()*Redundancy) mixed frames.
func Encode(msg []byte, o Options) ([]string, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	e, err := NewEncoder(msg, o)
	if err != nil {
		return nil, err
	}
	extra := 0
	if o.Redundancy > 0 {
		extra = int(math.Ceil(float64(e.count) * o.Redundancy))
	}
	if e.count+extra > MaxSeq {
		return nil, errors.New("qr: too many frames requested; lower the redundancy")
	}
	out := make([]string, 0, e.count+extra)
	for seq := 0; seq < e.count+extra; seq++ {
		t, err := e.Frame(seq)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}
