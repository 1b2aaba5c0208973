package firmware

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ErrManifest wraps every manifest parsing error.
var ErrManifest = errors.New("firmware: malformed manifest")

const manifestMagic = "coffre firmware manifest v1"

// Component is one file of a release with its digests.
type Component struct {
	Name   string
	Size   int64
	SHA256 [32]byte
	SHA512 [64]byte
}

// Manifest is a release manifest.
type Manifest struct {
	Product    string
	Version    uint64 // monotonic; compared with the NV counter
	SemVer     string
	Components []Component // sorted by name, unique
}

// NewComponent digests a component's bytes.
func NewComponent(name string, data []byte) Component {
	return Component{Name: name, Size: int64(len(data)), SHA256: sha256.Sum256(data), SHA512: sha512.Sum512(data)}
}

// Component returns the named component.
func (m *Manifest) Component(name string) (Component, bool) {
	i, ok := slices.BinarySearchFunc(m.Components, name, func(c Component, n string) int { return strings.Compare(c.Name, n) })
	if !ok {
		return Component{}, false
	}
	return m.Components[i], true
}

// Marshal returns the canonical encoding. It validates m first.
func (m *Manifest) Marshal() ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	return m.encode(), nil
}

func (m *Manifest) encode() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\nproduct %s\nversion %d\nsemver %s\n", manifestMagic, m.Product, m.Version, m.SemVer)
	for _, c := range m.Components {
		fmt.Fprintf(&b, "component %s %d %x %x\n", c.Name, c.Size, c.SHA256, c.SHA512)
	}
	return b.Bytes()
}

func (m *Manifest) validate() error {
	if !validName(m.Product) {
		return fmt.Errorf("%w: product name %q", ErrManifest, m.Product)
	}
	if m.Version == 0 || m.Version > MaxVersion {
		return fmt.Errorf("%w: version must be 1 to %d", ErrManifest, uint64(MaxVersion))
	}
	if !validSemVer(m.SemVer) {
		return fmt.Errorf("%w: semver %q is not MAJOR.MINOR.PATCH[-PRERELEASE]", ErrManifest, m.SemVer)
	}
	if len(m.Components) == 0 || len(m.Components) > MaxComponents {
		return fmt.Errorf("%w: %d components (1 to %d allowed)", ErrManifest, len(m.Components), MaxComponents)
	}
	for i, c := range m.Components {
		if !validName(c.Name) {
			return fmt.Errorf("%w: component name %q", ErrManifest, c.Name)
		}
		if i > 0 && m.Components[i-1].Name >= c.Name {
			return fmt.Errorf("%w: components not sorted and unique at %q", ErrManifest, c.Name)
		}
		if c.Size < 0 || c.Size > MaxComponentSize {
			return fmt.Errorf("%w: component %q size %d (max %d)", ErrManifest, c.Name, c.Size, MaxComponentSize)
		}
	}
	return nil
}

// ParseManifest decodes a canonical manifest strictly: every deviation
// from the encoding Marshal produces is refused.
func ParseManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestLen {
		return nil, fmt.Errorf("%w: %d bytes (max %d)", ErrManifest, len(b), MaxManifestLen)
	}
	if len(b) == 0 || b[len(b)-1] != '\n' {
		return nil, fmt.Errorf("%w: must end with a newline", ErrManifest)
	}
	lines := strings.Split(string(b[:len(b)-1]), "\n")
	if len(lines) < 5 || len(lines) > 4+MaxComponents {
		return nil, fmt.Errorf("%w: %d lines", ErrManifest, len(lines))
	}
	if lines[0] != manifestMagic {
		return nil, fmt.Errorf("%w: first line must be %q", ErrManifest, manifestMagic)
	}
	m := &Manifest{}
	field := func(line, key string) (string, error) {
		v, ok := strings.CutPrefix(line, key+" ")
		if !ok {
			return "", fmt.Errorf("%w: expected %q line", ErrManifest, key)
		}
		return v, nil
	}
	var err error
	if m.Product, err = field(lines[1], "product"); err != nil {
		return nil, err
	}
	v, err := field(lines[2], "version")
	if err != nil {
		return nil, err
	}
	if m.Version, err = parseDecimal(v); err != nil {
		return nil, fmt.Errorf("%w: version: %v", ErrManifest, err)
	}
	if m.SemVer, err = field(lines[3], "semver"); err != nil {
		return nil, err
	}
	for i, line := range lines[4:] {
		rest, err := field(line, "component")
		if err != nil {
			return nil, err
		}
		f := strings.Split(rest, " ")
		if len(f) != 4 {
			return nil, fmt.Errorf("%w: component line %d: want name size sha256 sha512", ErrManifest, i+1)
		}
		c := Component{Name: f[0]}
		size, err := parseDecimal(f[1])
		if err != nil || size > MaxComponentSize {
			return nil, fmt.Errorf("%w: component %q: bad size", ErrManifest, truncate(f[0]))
		}
		c.Size = int64(size)
		if err := unhexInto(c.SHA256[:], f[2]); err != nil {
			return nil, fmt.Errorf("%w: component %q: sha256: %v", ErrManifest, truncate(f[0]), err)
		}
		if err := unhexInto(c.SHA512[:], f[3]); err != nil {
			return nil, fmt.Errorf("%w: component %q: sha512: %v", ErrManifest, truncate(f[0]), err)
		}
		m.Components = append(m.Components, c)
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	if !bytes.Equal(m.encode(), b) {
		return nil, fmt.Errorf("%w: not in canonical form", ErrManifest)
	}
	return m, nil
}

// parseDecimal accepts 0 or a decimal without leading zeros, sign or spaces.
func parseDecimal(s string) (uint64, error) {
	if s == "" || len(s) > 19 || (len(s) > 1 && s[0] == '0') {
		return 0, errors.New("not a canonical decimal")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("not a canonical decimal")
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > MaxVersion {
		return 0, errors.New("out of range")
	}
	return v, nil
}

// unhexInto decodes lowercase hex of exactly len(dst) bytes.
func unhexInto(dst []byte, s string) error {
	if len(s) != 2*len(dst) || strings.ToLower(s) != s {
		return errors.New("want lowercase hex of the right length")
	}
	_, err := hex.Decode(dst, []byte(s))
	return err
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// validSemVer accepts MAJOR.MINOR.PATCH with optional -PRERELEASE
// (dot-separated [0-9A-Za-z-] identifiers), numbers without leading zeros.
func validSemVer(s string) bool {
	if len(s) == 0 || len(s) > MaxSemVerLen {
		return false
	}
	core, pre, hasPre := strings.Cut(s, "-")
	nums := strings.Split(core, ".")
	if len(nums) != 3 {
		return false
	}
	for _, n := range nums {
		if _, err := parseDecimal(n); err != nil {
			return false
		}
	}
	if !hasPre {
		return true
	}
	for _, id := range strings.Split(pre, ".") {
		if id == "" {
			return false
		}
		for i := 0; i < len(id); i++ {
			c := id[i]
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-') {
				return false
			}
		}
	}
	return true
}

func truncate(s string) string {
	if len(s) > MaxNameLen {
		return s[:MaxNameLen] + "…"
	}
	return s
}
