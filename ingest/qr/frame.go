package qr

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
)

// Errors returned for rejected frames. They are wrapped with details; test
// with errors.Is.
var (
	// ErrNotFrame: the text is not a Coffre frame (wrong prefix or not
	// alphanumeric); another QR code was in view.
	ErrNotFrame = errors.New("qr: not a coffre frame")
	// ErrCorrupt: the frame is malformed or fails its checksum.
	ErrCorrupt = errors.New("qr: corrupt frame")
	// ErrVersion: the frame has a format version this build does not read.
	ErrVersion = errors.New("qr: unsupported frame version")
	// ErrLimit: the header announces more than the limits allow.
	ErrLimit = errors.New("qr: frame exceeds limits")
	// ErrForeign: the frame belongs to another transfer than the one
	// followed, or disagrees with the header of its transfer; it was
	// ignored and counted.
	ErrForeign = errors.New("qr: frame of another transfer")
	// ErrDigest: every fragment was rebuilt but the message digest does not
	// match; the transfer was dropped.
	ErrDigest = errors.New("qr: message digest mismatch")
)

// TransferID names one transfer.
type TransferID [8]byte

// String returns the id in lowercase hex.
func (id TransferID) String() string { return hex.EncodeToString(id[:]) }

// Frame is one parsed frame.
type Frame struct {
	Transfer      TransferID
	MessageLen    int // bytes of the message (without its digest)
	FragmentSize  int
	FragmentCount int
	Seq           int    // sequence number; < FragmentCount means systematic
	Payload       []byte // FragmentSize bytes
}

var crcTable = crc32.MakeTable(crc32.IEEE)

// fragmentCount is the number of fragments of a message of n bytes plus its
// digest cut into pieces of f bytes.
func fragmentCount(n, f int) int { return (n + DigestLen + f - 1) / f }

// checkHeader validates header fields against the format's hard limits and
// the given message cap. It allocates nothing.
func checkHeader(msgLen, fragSize, count, seq, maxMsg int) error {
	switch {
	case msgLen < 0 || msgLen > maxMsg:
		return fmt.Errorf("%w: message length %d (limit %d)", ErrLimit, msgLen, maxMsg)
	case fragSize < MinFragmentSize || fragSize > MaxFragmentSize:
		return fmt.Errorf("%w: fragment size %d (allowed %d to %d)", ErrLimit, fragSize, MinFragmentSize, MaxFragmentSize)
	case count < 1 || count > MaxFragmentCount:
		return fmt.Errorf("%w: fragment count %d (limit %d)", ErrLimit, count, MaxFragmentCount)
	case count != fragmentCount(msgLen, fragSize):
		return fmt.Errorf("%w: fragment count %d does not match length %d and fragment size %d", ErrCorrupt, count, msgLen, fragSize)
	case seq < 0 || seq > MaxSeq:
		return fmt.Errorf("%w: sequence number %d", ErrLimit, seq)
	}
	return nil
}

// MarshalBinary returns the binary frame: header, payload, CRC-32.
func (f *Frame) MarshalBinary() ([]byte, error) {
	if err := checkHeader(f.MessageLen, f.FragmentSize, f.FragmentCount, f.Seq, MaxMessageLen); err != nil {
		return nil, err
	}
	if len(f.Payload) != f.FragmentSize {
		return nil, fmt.Errorf("qr: payload is %d bytes, fragment size is %d", len(f.Payload), f.FragmentSize)
	}
	b := make([]byte, HeaderLen, HeaderLen+f.FragmentSize+ChecksumLen)
	b[0] = FormatVersion
	b[1] = 0
	copy(b[2:10], f.Transfer[:])
	binary.BigEndian.PutUint32(b[10:14], uint32(f.MessageLen))
	binary.BigEndian.PutUint16(b[14:16], uint16(f.FragmentSize))
	binary.BigEndian.PutUint32(b[16:20], uint32(f.FragmentCount))
	binary.BigEndian.PutUint32(b[20:24], uint32(f.Seq))
	b = append(b, f.Payload...)
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
	return b, nil
}

// Text returns the frame text: Prefix followed by base45 of the binary frame.
func (f *Frame) Text() (string, error) {
	b, err := f.MarshalBinary()
	if err != nil {
		return "", err
	}
	return Prefix + Base45Encode(b), nil
}

// ParseFrame parses a frame text, enforcing the hard limits and maxMessage
// (0 means MaxMessageLen). It never allocates more than the text's size and
// never panics.
func ParseFrame(text string, maxMessage int) (*Frame, error) {
	if maxMessage <= 0 || maxMessage > MaxMessageLen {
		maxMessage = MaxMessageLen
	}
	if len(text) > MaxFrameText {
		return nil, fmt.Errorf("%w: text of %d characters (limit %d)", ErrNotFrame, len(text), MaxFrameText)
	}
	if !strings.HasPrefix(text, Prefix) {
		return nil, fmt.Errorf("%w: missing %q prefix", ErrNotFrame, Prefix)
	}
	body := text[len(Prefix):]
	if !IsAlphanumeric(body) {
		return nil, fmt.Errorf("%w: text is not alphanumeric", ErrNotFrame)
	}
	b, err := Base45Decode(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if len(b) < HeaderLen+ChecksumLen {
		return nil, fmt.Errorf("%w: %d bytes is shorter than a header", ErrCorrupt, len(b))
	}
	if b[0] != FormatVersion {
		return nil, fmt.Errorf("%w: version %d (this build reads %d; update the appliance or re-encode the frames)", ErrVersion, b[0], FormatVersion)
	}
	n := len(b) - ChecksumLen
	if got, want := crc32.Checksum(b[:n], crcTable), binary.BigEndian.Uint32(b[n:]); got != want {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	if b[1] != 0 {
		return nil, fmt.Errorf("%w: reserved byte is %#x", ErrCorrupt, b[1])
	}
	f := &Frame{
		MessageLen:    int(binary.BigEndian.Uint32(b[10:14])),
		FragmentSize:  int(binary.BigEndian.Uint16(b[14:16])),
		FragmentCount: int(binary.BigEndian.Uint32(b[16:20])),
		Seq:           int(binary.BigEndian.Uint32(b[20:24])),
	}
	copy(f.Transfer[:], b[2:10])
	if err := checkHeader(f.MessageLen, f.FragmentSize, f.FragmentCount, f.Seq, maxMessage); err != nil {
		return nil, err
	}
	if n-HeaderLen != f.FragmentSize {
		return nil, fmt.Errorf("%w: payload is %d bytes, header says %d", ErrCorrupt, n-HeaderLen, f.FragmentSize)
	}
	f.Payload = b[HeaderLen:n:n]
	return f, nil
}
