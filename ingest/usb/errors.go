package usb

import (
	"errors"
	"fmt"
)

// Sentinel errors; every error returned by this package wraps one of them.
var (
	ErrNotFAT32     = errors.New("usb: not a FAT32 volume")
	ErrBootSector   = errors.New("usb: bad FAT32 boot sector")
	ErrChildFailed  = errors.New("usb: filesystem reader failed")
	ErrStream       = errors.New("usb: bad child stream")
	ErrLimit        = errors.New("usb: limit exceeded")
	ErrManifest     = errors.New("usb: bad manifest")
	ErrHashMismatch = errors.New("usb: sha-256 mismatch")
	ErrSizeMismatch = errors.New("usb: size differs from manifest")
	ErrBadName      = errors.New("usb: bad file name")
	ErrMissingFile  = errors.New("usb: file missing")
	ErrExtraFile    = errors.New("usb: unexpected file")
)

// ChildError reports a filesystem-reader child that did not finish: killed by
// one of its limits, timed out, or failed on the image. It wraps
// ErrChildFailed.
type ChildError struct {
	Source string // the image or device
	Reason string // "memory limit", "cpu limit", "timed out", "exit status 3: …"
	Limit  bool   // true when the child was stopped by a limit (memory, cpu, wall clock)
}

func (e *ChildError) Error() string {
	return fmt.Sprintf("usb: %s: filesystem reader failed (%s): the image is damaged or hostile; do not ingest it, ask the courier for a new stick", e.Source, e.Reason)
}

func (e *ChildError) Unwrap() error { return ErrChildFailed }
