package storage

import (
	"encoding/hex"
	"errors"
	"fmt"
)

// Sentinel errors. Callers test with errors.Is.
var (
	// ErrNoQuorum: fewer drives than the write quorum can take writes; the
	// vault refuses new work. Nothing acknowledged is lost.
	ErrNoQuorum = errors.New("storage: not enough healthy drives for the write quorum (plug in or sync drives, see `coffre drive list`)")
	// ErrReadOnly: the drive or device is read-only.
	ErrReadOnly = errors.New("storage: drive is read-only")
	// ErrCorrupt: a structure failed its checksum or verification.
	ErrCorrupt = errors.New("storage: corrupt data")
	// ErrNotFound: no record at that index.
	ErrNotFound = errors.New("storage: no such record")
	// ErrClosed: the vault was closed.
	ErrClosed = errors.New("storage: vault is closed")
	// ErrNoSpace: the drive has no room for the record.
	ErrNoSpace = errors.New("storage: drive is full")
)

// DriveError names the drive (uuid, slot, path) and, when known, the record
// index where something went wrong.
type DriveError struct {
	UUID  [16]byte
	Slot  int
	Path  string
	Index int64 // -1 when not about one record
	Err   error
}

func (e *DriveError) Error() string {
	s := fmt.Sprintf("storage: drive %d (uuid %s, %s)", e.Slot, shortUUID(e.UUID), e.Path)
	if e.Index >= 0 {
		s += fmt.Sprintf(": record %d", e.Index)
	}
	return s + ": " + trimPrefix(e.Err.Error())
}

func (e *DriveError) Unwrap() error { return e.Err }

func trimPrefix(s string) string {
	const p = "storage: "
	if len(s) > len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}

func shortUUID(u [16]byte) string { return hex.EncodeToString(u[:]) }

// UUIDString formats a drive or vault id as 32 hex digits.
func UUIDString(u [16]byte) string { return hex.EncodeToString(u[:]) }

// ParseUUID parses 32 hex digits.
func ParseUUID(s string) ([16]byte, error) {
	var u [16]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 16 {
		return u, fmt.Errorf("storage: uuid %q: want 32 hex digits", s)
	}
	copy(u[:], b)
	return u, nil
}
