package storage

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"golang.org/x/mod/sumdb/tlog"
)

const (
	hdrMagic   = "CFRC"
	hdrVersion = 1
	// FlagClear marks a record whose payload is stored in the clear
	// (checkpoints).
	FlagClear = 1
	hdrAADEnd = 72 // header[0:72] is bound into the AEAD associated data
	hdrSumOff = 128
)

// Header is the clear header of one record.
type Header struct {
	Type       RecordType
	Flags      uint16
	Index      uint64
	KeyEpoch   uint32
	MetaLen    uint32
	Nonce      [16]byte
	Prev       tlog.Hash // leaf hash of record Index-1, zero for record 0
	BodyLen    uint64    // plaintext body length
	PayloadLen uint64    // bytes stored after the header
	PayloadSum [32]byte  // SHA-256 of the payload
	// Offset is where the record starts on the drive (not encoded).
	Offset int64 `json:"-"`
}

// Clear reports whether the payload is stored unencrypted.
func (h *Header) Clear() bool { return h.Flags&FlagClear != 0 }

// RecordLen is the on-drive length of the record, padded to BlockSize.
func (h *Header) RecordLen() int64 {
	return roundUp(int64(HeaderSize) + int64(h.PayloadLen))
}

func roundUp(n int64) int64 { return (n + BlockSize - 1) / BlockSize * BlockSize }

// encode returns the HeaderSize-byte encoding with its checksum.
func (h *Header) encode() []byte {
	b := make([]byte, HeaderSize)
	h.put(b)
	return b
}

func (h *Header) put(b []byte) {
	copy(b[0:4], hdrMagic)
	b[4] = hdrVersion
	b[5] = byte(h.Type)
	binary.BigEndian.PutUint16(b[6:], h.Flags)
	binary.BigEndian.PutUint64(b[8:], h.Index)
	binary.BigEndian.PutUint32(b[16:], h.KeyEpoch)
	binary.BigEndian.PutUint32(b[20:], h.MetaLen)
	copy(b[24:40], h.Nonce[:])
	copy(b[40:72], h.Prev[:])
	binary.BigEndian.PutUint64(b[72:], h.BodyLen)
	binary.BigEndian.PutUint64(b[80:], h.PayloadLen)
	copy(b[88:120], h.PayloadSum[:])
	clear(b[120:128])
	sum := sha256.Sum256(b[:hdrSumOff])
	copy(b[hdrSumOff:HeaderSize], sum[:])
}

// aad is the associated data of every STREAM chunk of the record.
func (h *Header) aad(vault [16]byte) []byte {
	b := make([]byte, HeaderSize)
	h.put(b)
	return append(vault[:], b[:hdrAADEnd]...)
}

// chunks is the number of STREAM chunks for a plaintext of n bytes.
func chunks(n uint64) uint64 {
	if n == 0 {
		return 1
	}
	return (n + ChunkSize - 1) / ChunkSize
}

// parseHeader decodes and validates a record header (the first HeaderSize
// bytes of b).
func parseHeader(b []byte) (*Header, error) {
	if len(b) < HeaderSize {
		return nil, fmt.Errorf("storage: record header: %d bytes, want %d: %w", len(b), HeaderSize, ErrCorrupt)
	}
	b = b[:HeaderSize]
	if string(b[0:4]) != hdrMagic {
		return nil, fmt.Errorf("storage: record header: bad magic: %w", ErrCorrupt)
	}
	sum := sha256.Sum256(b[:hdrSumOff])
	if !bytes.Equal(sum[:], b[hdrSumOff:]) {
		return nil, fmt.Errorf("storage: record header: checksum mismatch: %w", ErrCorrupt)
	}
	if b[4] != hdrVersion {
		return nil, fmt.Errorf("storage: record header: version %d not supported: %w", b[4], ErrCorrupt)
	}
	h := &Header{
		Type:       RecordType(b[5]),
		Flags:      binary.BigEndian.Uint16(b[6:]),
		Index:      binary.BigEndian.Uint64(b[8:]),
		KeyEpoch:   binary.BigEndian.Uint32(b[16:]),
		MetaLen:    binary.BigEndian.Uint32(b[20:]),
		BodyLen:    binary.BigEndian.Uint64(b[72:]),
		PayloadLen: binary.BigEndian.Uint64(b[80:]),
	}
	copy(h.Nonce[:], b[24:40])
	copy(h.Prev[:], b[40:72])
	copy(h.PayloadSum[:], b[88:120])
	if err := h.check(); err != nil {
		return nil, err
	}
	for _, c := range b[120:128] {
		if c != 0 {
			return nil, fmt.Errorf("storage: record header: reserved bytes set: %w", ErrCorrupt)
		}
	}
	return h, nil
}

func (h *Header) check() error {
	switch {
	case h.Type == 0:
		return fmt.Errorf("storage: record header: type 0: %w", ErrCorrupt)
	case h.Flags&^FlagClear != 0:
		return fmt.Errorf("storage: record header: unknown flags %#x: %w", h.Flags, ErrCorrupt)
	case (h.Type == TypeCheckpoint) != h.Clear():
		return fmt.Errorf("storage: record header: clear flag must be set exactly on checkpoints: %w", ErrCorrupt)
	case h.MetaLen > MaxMetaSize:
		return fmt.Errorf("storage: record header: meta of %d bytes exceeds %d: %w", h.MetaLen, MaxMetaSize, ErrCorrupt)
	case h.BodyLen > MaxBodySize:
		return fmt.Errorf("storage: record header: body of %d bytes exceeds %d: %w", h.BodyLen, uint64(MaxBodySize), ErrCorrupt)
	case h.Index == 0 && h.Prev != (tlog.Hash{}):
		return fmt.Errorf("storage: record header: record 0 with a previous hash: %w", ErrCorrupt)
	}
	plain := uint64(h.MetaLen) + h.BodyLen
	want := plain
	if h.Clear() {
		if h.KeyEpoch != 0 || h.Nonce != ([16]byte{}) {
			return fmt.Errorf("storage: record header: clear record with key epoch or nonce: %w", ErrCorrupt)
		}
		if h.Type == TypeCheckpoint && (h.MetaLen < resumeMin || h.MetaLen > resumeMax || (h.MetaLen-resumeMin)%32 != 0 || h.BodyLen > MaxCheckpointSize) {
			return fmt.Errorf("storage: record header: checkpoint with a resume point of %d bytes and a note of %d bytes: %w", h.MetaLen, h.BodyLen, ErrCorrupt)
		}
	} else {
		want = plain + chunks(plain)*16
	}
	if h.PayloadLen != want {
		return fmt.Errorf("storage: record header: payload length %d, want %d: %w", h.PayloadLen, want, ErrCorrupt)
	}
	return nil
}

// leafHash is the RFC 6962 leaf hash of the record: SHA-256(0x00 || header).
func (h *Header) leafHash() tlog.Hash { return tlog.RecordHash(h.encode()) }
