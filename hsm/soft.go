package hsm

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"
)

// SoftWarning is logged (slog.Warn) every time a software keystore is
// created or opened.
const SoftWarning = "software keystore: development only, keys are protected by a passphrase, not by hardware"

// SoftParams are the Argon2id parameters of a soft keystore. They are stored
// in the keystore header.
type SoftParams struct {
	Time      uint32 // passes
	MemoryKiB uint32 // memory in KiB
	Threads   uint8  // lanes
}

// DefaultSoftParams follows RFC 9106's second recommended option (t=3,
// m=64 MiB, p=4).
var DefaultSoftParams = SoftParams{Time: 3, MemoryKiB: 64 << 10, Threads: 4}

// TestSoftParams are cheap parameters for tests and the demo only.
var TestSoftParams = SoftParams{Time: 1, MemoryKiB: 64, Threads: 1}

func (p SoftParams) check() error {
	if p.Time < MinArgonTime || p.Time > MaxArgonTime ||
		p.MemoryKiB < MinArgonMemory || p.MemoryKiB > MaxArgonMemory ||
		p.Threads < MinArgonThreads || p.Threads > MaxArgonThreads ||
		p.MemoryKiB < 8*uint32(p.Threads) {
		return fmt.Errorf("hsm: argon2id parameters t=%d m=%dKiB p=%d out of bounds (t %d-%d, m %d-%d KiB and >= 8*p, p %d-%d)",
			p.Time, p.MemoryKiB, p.Threads, MinArgonTime, MaxArgonTime, MinArgonMemory, MaxArgonMemory, MinArgonThreads, MaxArgonThreads)
	}
	return nil
}

// Soft is the software keystore: a directory of files, each secret
// encrypted with XChaCha20-Poly1305 under a key derived from a passphrase by
// Argon2id. It is for development and tests only.
type Soft struct {
	mu      sync.Mutex
	dir     string
	id      [idLen]byte
	wrapKey []byte // nil once closed
}

var _ Keystore = (*Soft)(nil)
var _ Counters = (*Soft)(nil)

// CreateSoft creates a new software keystore in dir (created 0700 if absent;
// it must not already hold a keystore).
func CreateSoft(dir string, passphrase []byte, p SoftParams) (*Soft, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	if len(passphrase) < MinPassphraseLen || len(passphrase) > MaxPassphraseLen {
		return nil, fmt.Errorf("hsm: passphrase must be %d to %d bytes", MinPassphraseLen, MaxPassphraseLen)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("hsm: create keystore directory %s: %w", dir, err)
	}
	h := &header{backend: backendCodeSoft}
	sb := &softBody{params: p}
	if _, err := rand.Read(h.id[:]); err != nil {
		return nil, err
	}
	if _, err := rand.Read(sb.salt[:]); err != nil {
		return nil, err
	}
	checkKey, wrapKey := softKeys(passphrase, h.id, sb)
	h.body = sb.marshal()
	copy(sb.check[:], softCheck(checkKey, h.marshal()))
	h.body = sb.marshal()
	if err := writeNew(dir, headerFile, h.marshal()); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("hsm: %s already holds a keystore: open it, or choose an empty directory", dir)
		}
		return nil, err
	}
	slog.Warn(SoftWarning, "dir", dir)
	return &Soft{dir: dir, id: h.id, wrapKey: wrapKey}, nil
}

// OpenSoft opens the software keystore in dir. A wrong passphrase (or an
// altered header) gives ErrWrongPassphrase.
func OpenSoft(dir string, passphrase []byte) (*Soft, error) {
	if len(passphrase) > MaxPassphraseLen {
		return nil, ErrWrongPassphrase
	}
	hb, err := readBounded(filepath.Join(dir, headerFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w %s: create one with `coffre init`", ErrNoKeystore, dir)
		}
		return nil, err
	}
	h, err := parseHeader(hb)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, filepath.Join(dir, headerFile))
	}
	if h.backend != backendCodeSoft {
		return nil, fmt.Errorf("hsm: keystore %s is a TPM keystore, not a software one", dir)
	}
	sb, err := parseSoftBody(h.body)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, filepath.Join(dir, headerFile))
	}
	checkKey, wrapKey := softKeys(passphrase, h.id, sb)
	want := sb.check
	clear(sb.check[:])
	h.body = sb.marshal()
	got := softCheck(checkKey, h.marshal())
	if subtle.ConstantTimeCompare(got, want[:]) != 1 {
		return nil, fmt.Errorf("%w (%s): retry with the right passphrase", ErrWrongPassphrase, dir)
	}
	slog.Warn(SoftWarning, "dir", dir)
	return &Soft{dir: dir, id: h.id, wrapKey: wrapKey}, nil
}

// softKeys derives the check key and the wrapping key from the passphrase:
// master = Argon2id(passphrase, salt, t, m, p, 32); each key is
// HKDF-SHA256(master, salt=id, info=label).
func softKeys(passphrase []byte, id [idLen]byte, sb *softBody) (checkKey, wrapKey []byte) {
	master := argon2.IDKey(passphrase, sb.salt[:], sb.params.Time, sb.params.MemoryKiB, sb.params.Threads, 32)
	defer clear(master)
	derive := func(label string) []byte {
		k := make([]byte, 32)
		if _, err := io.ReadFull(hkdf.New(sha256.New, master, id[:], []byte(label)), k); err != nil {
			panic(err) // cannot happen: 32 bytes is far below HKDF's limit
		}
		return k
	}
	return derive("coffre keystore v1 check"), derive("coffre keystore v1 wrap")
}

// softCheck is HMAC-SHA256(checkKey, header with a zero check field).
func softCheck(checkKey, hdr []byte) []byte {
	m := hmac.New(sha256.New, checkKey)
	m.Write(hdr)
	return m.Sum(nil)
}

// Backend returns "soft".
func (s *Soft) Backend() string { return BackendSoft }

// Dir returns the keystore directory.
func (s *Soft) Dir() string { return s.dir }

func (s *Soft) aead() (cipherAEAD, error) {
	if s.wrapKey == nil {
		return nil, ErrClosed
	}
	return chacha20poly1305.NewX(s.wrapKey)
}

type cipherAEAD interface {
	Seal(dst, nonce, plaintext, additionalData []byte) []byte
	Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error)
}

func (s *Soft) encrypt(kind, name string, plain []byte) ([]byte, error) {
	a, err := s.aead()
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, nonceLen, nonceLen+len(plain)+tagLen)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	body := a.Seal(nonce, nonce, plain, secretAD(kind, s.id, name))
	return (&secretFile{backend: backendCodeSoft, body: body}).marshal(), nil
}

func (s *Soft) decrypt(kind, name, path string, b []byte) ([]byte, error) {
	a, err := s.aead()
	if err != nil {
		return nil, err
	}
	sf, err := parseSecretFile(b)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	if sf.backend != backendCodeSoft || len(sf.body) < nonceLen+tagLen || len(sf.body) > nonceLen+MaxSecretLen+tagLen {
		return nil, fmt.Errorf("hsm: %s is not a soft keystore %s of valid size", path, kind)
	}
	plain, err := a.Open(nil, sf.body[:nonceLen], sf.body[nonceLen:], secretAD(kind, s.id, name))
	if err != nil {
		return nil, fmt.Errorf("hsm: %s failed authentication (altered, renamed or from another keystore): restore it from backup", path)
	}
	return plain, nil
}

// Seal stores a new secret; ErrExists if the name is taken.
func (s *Soft) Seal(name string, secret []byte) error {
	if err := checkName(name); err != nil {
		return err
	}
	if len(secret) == 0 || len(secret) > MaxSecretLen {
		return fmt.Errorf("hsm: secret %q is %d bytes: must be 1 to %d", name, len(secret), MaxSecretLen)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	names, err := listNames(s.dir, secretSuffix)
	if err != nil {
		return err
	}
	if len(names) >= MaxSecrets {
		return fmt.Errorf("hsm: keystore %s already holds %d secrets (the limit): delete unused ones", s.dir, MaxSecrets)
	}
	b, err := s.encrypt("secret", name, secret)
	if err != nil {
		return err
	}
	if err := writeNew(s.dir, name+secretSuffix, b); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %q in %s", ErrExists, name, s.dir)
		}
		return err
	}
	return nil
}

// Unseal returns the secret; ErrNotFound if absent.
func (s *Soft) Unseal(name string) ([]byte, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wrapKey == nil {
		return nil, ErrClosed
	}
	path := filepath.Join(s.dir, name+secretSuffix)
	b, err := readBounded(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %q in %s", ErrNotFound, name, s.dir)
		}
		return nil, err
	}
	return s.decrypt("secret", name, path, b)
}

// Has reports whether the secret exists.
func (s *Soft) Has(name string) bool {
	if !ValidName(name) {
		return false
	}
	fi, err := os.Stat(filepath.Join(s.dir, name+secretSuffix))
	return err == nil && fi.Mode().IsRegular()
}

// Names lists the secrets, sorted.
func (s *Soft) Names() ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wrapKey == nil {
		return nil, ErrClosed
	}
	return listNames(s.dir, secretSuffix)
}

// Delete removes a secret.
func (s *Soft) Delete(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wrapKey == nil {
		return ErrClosed
	}
	if err := removeSynced(s.dir, name+secretSuffix); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %q in %s", ErrNotFound, name, s.dir)
		}
		return fmt.Errorf("hsm: delete %q in %s: %w", name, s.dir, err)
	}
	return nil
}

// Close forgets the wrapping key.
func (s *Soft) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.wrapKey)
	s.wrapKey = nil
	return nil
}

// Counter returns the named counter (0 if it was never incremented).
func (s *Soft) Counter(name string) (uint64, error) {
	if err := checkName(name); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counterLocked(name)
}

func (s *Soft) counterLocked(name string) (uint64, error) {
	if s.wrapKey == nil {
		return 0, ErrClosed
	}
	path := filepath.Join(s.dir, name+counterSuffix)
	b, err := readBounded(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	v, err := s.decrypt("counter", name, path, b)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("hsm: counter %s holds %d bytes, want 8", path, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// Increment adds one to the named counter and returns the new value.
func (s *Soft) Increment(name string) (uint64, error) {
	if err := checkName(name); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.counterLocked(name)
	if err != nil {
		return 0, err
	}
	v++
	b, err := s.encrypt("counter", name, binary.BigEndian.AppendUint64(nil, v))
	if err != nil {
		return 0, err
	}
	if err := writeReplace(s.dir, name+counterSuffix, b); err != nil {
		return 0, err
	}
	return v, nil
}
