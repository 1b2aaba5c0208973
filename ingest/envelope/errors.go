package envelope

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by this package wraps exactly one of
// them (test with errors.Is) and carries a detail naming what failed and, when
// it helps, what to do next. No error carries key material or plaintext.
var (
	// ErrUnknownCourier: the envelope is signed by a key that is not pinned.
	ErrUnknownCourier = errors.New("unknown courier key")
	// ErrBadSignature: the courier signature does not verify.
	ErrBadSignature = errors.New("bad courier signature")
	// ErrReplay: the upload id was already seen.
	ErrReplay = errors.New("upload id already seen (replay)")
	// ErrWrongIngestKey: the sealed part is not encrypted to any ingest key
	// held, or is not encrypted at all.
	ErrWrongIngestKey = errors.New("not sealed to this appliance's ingest key")
	// ErrTruncated: the input ended before the lengths it declares.
	ErrTruncated = errors.New("truncated")
	// ErrTooLarge: a length is above its limit, or content runs past the
	// manifest size.
	ErrTooLarge = errors.New("too large")
	// ErrDigestMismatch: a SHA-256 digest (content, or sealed part) or the
	// OpenPGP integrity check does not match.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrUserMismatch: the user id in the manifest is not the one the courier
	// bound.
	ErrUserMismatch = errors.New("user id in manifest differs from courier binding")
	// ErrFormat: the bytes do not follow the format; the detail says where.
	ErrFormat = errors.New("malformed")
)

// errorf builds "envelope: <detail>: <kind>" wrapping kind.
func errorf(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Detail: fmt.Sprintf(format, args...)}
}

// Error is the error type of this package: Kind is one of the sentinels,
// Detail says where and what to do next.
type Error struct {
	Kind   error
	Detail string
	Err    error // underlying cause (from the OpenPGP library or the reader), may be nil
}

func (e *Error) Error() string {
	s := "envelope: " + e.Detail + ": " + e.Kind.Error()
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the sentinel and the cause.
func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}

func wrapf(kind, cause error, format string, args ...any) error {
	return &Error{Kind: kind, Detail: fmt.Sprintf(format, args...), Err: cause}
}

// prefix adds context in front of an *Error's detail, keeping its kind.
func prefix(err error, context string) error {
	var e *Error
	if errors.As(err, &e) {
		return &Error{Kind: e.Kind, Detail: context + ": " + e.Detail, Err: e.Err}
	}
	return wrapf(ErrFormat, err, "%s", context)
}
