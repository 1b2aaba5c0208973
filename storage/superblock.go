package storage

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

const (
	sbMagic      = "COFFRESB"
	sbVersion    = 1
	sbSumOffset  = SuperblockSize - sha256.Size
	sbRosterOff  = 100
	sbKeysOff    = sbRosterOff + MaxSlots*17
	memberEmpty  = 0
	memberActive = 1
	memberRetire = 2
)

// WrappedKey is the vault record key of one epoch, wrapped for the
// appliance keystore. The bytes are opaque to storage.
type WrappedKey struct {
	Epoch uint32
	Key   []byte
}

// Member is one entry of the drive roster a superblock carries.
type Member struct {
	UUID    [16]byte
	Retired bool
}

// superblock is the decoded form of one superblock copy.
type superblock struct {
	Seq        uint64
	VaultID    [16]byte
	UUID       [16]byte
	Slot       int // 1..MaxSlots
	Size       int64
	DataEnd    int64
	TreeSize   uint64 // records durable when this copy was written
	LogEnd     int64  // byte offset after the last of those records
	Roster     [MaxSlots]*Member
	Keys       []WrappedKey
	Checkpoint []byte // latest signed checkpoint note, may be empty
}

func backupOffset(size int64) int64 { return size - SuperblockSize }

// encodeSuperblock returns the 4096-byte encoding, or an error when a field
// is beyond a limit.
func encodeSuperblock(s *superblock) ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	b := make([]byte, SuperblockSize)
	copy(b[0:8], sbMagic)
	binary.BigEndian.PutUint16(b[8:], sbVersion)
	binary.BigEndian.PutUint32(b[12:], BlockSize)
	binary.BigEndian.PutUint64(b[16:], s.Seq)
	copy(b[24:40], s.VaultID[:])
	copy(b[40:56], s.UUID[:])
	b[56] = byte(s.Slot)
	binary.BigEndian.PutUint64(b[60:], uint64(s.Size))
	binary.BigEndian.PutUint64(b[68:], DataStart)
	binary.BigEndian.PutUint64(b[76:], uint64(s.DataEnd))
	binary.BigEndian.PutUint64(b[84:], s.TreeSize)
	binary.BigEndian.PutUint64(b[92:], uint64(s.LogEnd))
	for i, m := range s.Roster {
		o := sbRosterOff + i*17
		if m == nil {
			continue
		}
		copy(b[o:o+16], m.UUID[:])
		b[o+16] = memberActive
		if m.Retired {
			b[o+16] = memberRetire
		}
	}
	o := sbKeysOff
	b[o] = byte(len(s.Keys))
	o++
	for _, k := range s.Keys {
		binary.BigEndian.PutUint32(b[o:], k.Epoch)
		binary.BigEndian.PutUint16(b[o+4:], uint16(len(k.Key)))
		o += 6
		o += copy(b[o:], k.Key)
	}
	binary.BigEndian.PutUint16(b[o:], uint16(len(s.Checkpoint)))
	o += 2
	o += copy(b[o:], s.Checkpoint)
	if o > sbSumOffset {
		return nil, fmt.Errorf("storage: superblock: contents exceed %d bytes", sbSumOffset)
	}
	sum := sha256.Sum256(b[:sbSumOffset])
	copy(b[sbSumOffset:], sum[:])
	return b, nil
}

func (s *superblock) check() error {
	switch {
	case s.Seq == 0:
		return fmt.Errorf("storage: superblock: sequence number 0")
	case s.Slot < 1 || s.Slot > MaxSlots:
		return fmt.Errorf("storage: superblock: slot %d not in 1..%d", s.Slot, MaxSlots)
	case s.Size < MinDriveSize || s.Size%BlockSize != 0:
		return fmt.Errorf("storage: superblock: drive size %d not a multiple of %d of at least %d", s.Size, BlockSize, MinDriveSize)
	case s.DataEnd != backupOffset(s.Size):
		return fmt.Errorf("storage: superblock: data end %d, want %d", s.DataEnd, backupOffset(s.Size))
	case s.LogEnd < DataStart || s.LogEnd > s.DataEnd || s.LogEnd%BlockSize != 0:
		return fmt.Errorf("storage: superblock: log end %d outside the data area", s.LogEnd)
	case s.TreeSize > uint64(s.LogEnd-DataStart)/BlockSize:
		return fmt.Errorf("storage: superblock: tree size %d does not fit the log", s.TreeSize)
	case len(s.Keys) < 1 || len(s.Keys) > MaxKeyEpochs:
		return fmt.Errorf("storage: superblock: %d wrapped keys, want 1..%d", len(s.Keys), MaxKeyEpochs)
	case len(s.Checkpoint) > MaxCheckpointSize:
		return fmt.Errorf("storage: superblock: checkpoint of %d bytes exceeds %d", len(s.Checkpoint), MaxCheckpointSize)
	}
	for i, k := range s.Keys {
		if len(k.Key) < 1 || len(k.Key) > MaxWrappedKeySize {
			return fmt.Errorf("storage: superblock: wrapped key %d: %d bytes, want 1..%d", k.Epoch, len(k.Key), MaxWrappedKeySize)
		}
		if i > 0 && k.Epoch <= s.Keys[i-1].Epoch {
			return fmt.Errorf("storage: superblock: key epochs not increasing")
		}
	}
	seen := map[[16]byte]bool{}
	for _, m := range s.Roster {
		if m == nil {
			continue
		}
		if m.UUID == ([16]byte{}) || seen[m.UUID] {
			return fmt.Errorf("storage: superblock: roster holds a zero or repeated uuid")
		}
		seen[m.UUID] = true
	}
	return nil
}

// parseSuperblock decodes and validates one superblock copy. It is strict:
// reserved bytes and the tail must be zero, and re-encoding must give the
// same bytes.
func parseSuperblock(b []byte) (*superblock, error) {
	if len(b) != SuperblockSize {
		return nil, fmt.Errorf("storage: superblock: %d bytes, want %d: %w", len(b), SuperblockSize, ErrCorrupt)
	}
	if string(b[0:8]) != sbMagic {
		return nil, fmt.Errorf("storage: superblock: bad magic (not a coffre drive?): %w", ErrCorrupt)
	}
	sum := sha256.Sum256(b[:sbSumOffset])
	if !bytes.Equal(sum[:], b[sbSumOffset:]) {
		return nil, fmt.Errorf("storage: superblock: checksum mismatch: %w", ErrCorrupt)
	}
	if v := binary.BigEndian.Uint16(b[8:]); v != sbVersion {
		return nil, fmt.Errorf("storage: superblock: format version %d not supported (this build reads %d)", v, sbVersion)
	}
	if binary.BigEndian.Uint16(b[10:]) != 0 || b[57] != 0 || b[58] != 0 || b[59] != 0 {
		return nil, fmt.Errorf("storage: superblock: reserved bits set: %w", ErrCorrupt)
	}
	if bs := binary.BigEndian.Uint32(b[12:]); bs != BlockSize {
		return nil, fmt.Errorf("storage: superblock: block size %d, want %d: %w", bs, BlockSize, ErrCorrupt)
	}
	if ds := binary.BigEndian.Uint64(b[68:]); ds != DataStart {
		return nil, fmt.Errorf("storage: superblock: data start %d, want %d: %w", ds, DataStart, ErrCorrupt)
	}
	s := &superblock{
		Seq:      binary.BigEndian.Uint64(b[16:]),
		Slot:     int(b[56]),
		TreeSize: binary.BigEndian.Uint64(b[84:]),
	}
	copy(s.VaultID[:], b[24:40])
	copy(s.UUID[:], b[40:56])
	size, dend, lend := binary.BigEndian.Uint64(b[60:]), binary.BigEndian.Uint64(b[76:]), binary.BigEndian.Uint64(b[92:])
	if size > 1<<62 || dend > 1<<62 || lend > 1<<62 {
		return nil, fmt.Errorf("storage: superblock: geometry out of range: %w", ErrCorrupt)
	}
	s.Size, s.DataEnd, s.LogEnd = int64(size), int64(dend), int64(lend)
	for i := range s.Roster {
		o := sbRosterOff + i*17
		var m Member
		copy(m.UUID[:], b[o:o+16])
		switch b[o+16] {
		case memberEmpty:
			if m.UUID != ([16]byte{}) {
				return nil, fmt.Errorf("storage: superblock: roster slot %d: uuid in an empty entry: %w", i+1, ErrCorrupt)
			}
			continue
		case memberActive:
		case memberRetire:
			m.Retired = true
		default:
			return nil, fmt.Errorf("storage: superblock: roster slot %d: state %d: %w", i+1, b[o+16], ErrCorrupt)
		}
		s.Roster[i] = &m
	}
	o := sbKeysOff
	n := int(b[o])
	o++
	if n < 1 || n > MaxKeyEpochs {
		return nil, fmt.Errorf("storage: superblock: %d wrapped keys, want 1..%d: %w", n, MaxKeyEpochs, ErrCorrupt)
	}
	for i := 0; i < n; i++ {
		ep := binary.BigEndian.Uint32(b[o:])
		l := int(binary.BigEndian.Uint16(b[o+4:]))
		o += 6
		if l < 1 || l > MaxWrappedKeySize || o+l > sbSumOffset-2 {
			return nil, fmt.Errorf("storage: superblock: wrapped key length %d: %w", l, ErrCorrupt)
		}
		s.Keys = append(s.Keys, WrappedKey{Epoch: ep, Key: bytes.Clone(b[o : o+l])})
		o += l
	}
	cl := int(binary.BigEndian.Uint16(b[o:]))
	o += 2
	if cl > MaxCheckpointSize || o+cl > sbSumOffset {
		return nil, fmt.Errorf("storage: superblock: checkpoint length %d: %w", cl, ErrCorrupt)
	}
	if cl > 0 {
		s.Checkpoint = bytes.Clone(b[o : o+cl])
	}
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("%w: %w", err, ErrCorrupt)
	}
	// Canonical: re-encode and compare (catches non-zero tails).
	re, err := encodeSuperblock(s)
	if err != nil || !bytes.Equal(re, b) {
		return nil, fmt.Errorf("storage: superblock: non-canonical encoding: %w", ErrCorrupt)
	}
	return s, nil
}
