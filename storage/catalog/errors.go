package catalog

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Errors from this package are wrapped with context (the
// catalog directory, the record index) and the next step to take.
var (
	// ErrWrongKey: the key does not open this catalog.
	ErrWrongKey = errors.New("wrong catalog key")
	// ErrNotFound: no such record, job or drive in the catalog.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a record index is already indexed with different meta,
	// which means the catalog disagrees with the drives.
	ErrConflict = errors.New("record already indexed with different meta")
	// ErrClosed: the catalog was closed.
	ErrClosed = errors.New("catalog closed")
)

// prefixed wraps err under a longer "catalog: …" prefix without repeating
// the package prefix err already carries.
type prefixed struct {
	prefix string
	err    error
}

func (e *prefixed) Error() string {
	return e.prefix + ": " + strings.TrimPrefix(e.err.Error(), "catalog: ")
}

func (e *prefixed) Unwrap() error { return e.err }

func withPrefix(err error, format string, args ...any) error {
	return &prefixed{fmt.Sprintf(format, args...), err}
}
