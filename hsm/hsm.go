package hsm

import (
	"errors"
	"fmt"
)

// Keystore holds the appliance's named secrets. Implementations are safe for
// concurrent use.
type Keystore interface {
	// Backend names the implementation: "soft" or "tpm".
	Backend() string
	// Seal stores a new secret under name; ErrExists if name is taken.
	Seal(name string, secret []byte) error
	// Unseal returns the secret stored under name; ErrNotFound if none.
	Unseal(name string) ([]byte, error)
	// Has reports whether a secret is stored under name.
	Has(name string) bool
	// Names lists the stored secret names, sorted.
	Names() ([]string, error)
	// Delete removes a secret; ErrNotFound if none.
	Delete(name string) error
	// Close releases the keystore; further calls fail with ErrClosed.
	Close() error
}

// Counters are monotonic counters (anti-rollback). The TPM backend keeps them
// in TPM NV indices of type TPM_NT_COUNTER; the soft backend keeps them in
// files (development only: a copied-back directory rolls them back).
type Counters interface {
	// Counter returns the current value of the named counter, creating it
	// when absent (a new TPM counter starts at its first increment, see
	// docs/formats/keystore.md).
	Counter(name string) (uint64, error)
	// Increment adds one to the named counter and returns the new value.
	Increment(name string) (uint64, error)
}

// Backend names.
const (
	BackendSoft = "soft"
	BackendTPM  = "tpm"
)

// Sentinel errors. Callers test them with errors.Is.
var (
	ErrExists           = errors.New("hsm: secret already exists")
	ErrNotFound         = errors.New("hsm: secret not found")
	ErrClosed           = errors.New("hsm: keystore is closed")
	ErrWrongPassphrase  = errors.New("hsm: wrong passphrase or altered keystore header")
	ErrSoftInProduction = errors.New("hsm: software keystore refused in production: configure the TPM backend")
	ErrPolicy           = errors.New("hsm: TPM policy not satisfied (measurements changed, wrong PIN, or no approved policy)")
	ErrWrongPIN         = errors.New("hsm: wrong operator PIN")
	ErrBadName          = errors.New("hsm: invalid secret name")
	ErrNoKeystore       = errors.New("hsm: no keystore in directory")
)

// ValidName reports whether name is a valid secret or counter name:
// 1..MaxNameLen bytes of [a-z0-9._-], starting with [a-z0-9].
func ValidName(name string) bool {
	if len(name) == 0 || len(name) > MaxNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

func checkName(name string) error {
	if !ValidName(name) {
		return fmt.Errorf("%w %q: use 1-%d characters of a-z 0-9 . _ - starting with a letter or digit", ErrBadName, truncate(name, MaxNameLen+8), MaxNameLen)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// Config selects and opens a keystore (see Open).
type Config struct {
	// Backend is BackendSoft or BackendTPM.
	Backend string
	// Dir is the keystore directory.
	Dir string
	// Production refuses the soft backend.
	Production bool
	// Passphrase unlocks the soft backend.
	Passphrase []byte
	// TPM options, used when Backend is BackendTPM.
	TPM TPMOptions
}

// Open opens an existing keystore as cfg says. It refuses the software
// backend when cfg.Production is set.
func Open(cfg Config) (Keystore, error) {
	switch cfg.Backend {
	case BackendSoft:
		if cfg.Production {
			return nil, ErrSoftInProduction
		}
		return OpenSoft(cfg.Dir, cfg.Passphrase)
	case BackendTPM:
		return OpenTPM(cfg.Dir, cfg.TPM)
	default:
		return nil, fmt.Errorf("hsm: unknown keystore backend %q: use %q or %q", cfg.Backend, BackendSoft, BackendTPM)
	}
}

// Measured is implemented by keystores whose secrets are bound to measured
// state (the TPM backend). firmware.Measure and firmware.Apply use it.
type Measured interface {
	// MeasurePCR is the PCR firmware measurements are extended into.
	MeasurePCR() int
	// PCRSelection is the PCR set secrets are bound to.
	PCRSelection() []int
	// PCRs reads current PCR values (SHA-256 bank).
	PCRs(pcrs ...int) (map[int][]byte, error)
	// Extend extends a PCR with a 32-byte digest.
	Extend(pcr int, digest []byte) error
	// Approve moves the secrets to the state where the PCRs hold exactly
	// values, retiring every earlier approval.
	Approve(values map[int][]byte) error
	// Cap closes unsealing until the next boot.
	Cap() error
}

var _ Measured = (*TPM)(nil)
