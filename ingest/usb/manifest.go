package usb

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	manifestMagic = "coffre-usb-bundle 1"
	timeLayout    = "2006-01-02T15:04:05Z"
)

// Entry is one envelope of a bundle.
type Entry struct {
	Name   string
	Size   int64
	SHA256 [32]byte
}

// Manifest is the parsed MANIFEST of a bundle. Entries are sorted by name
// (byte order).
type Manifest struct {
	ID      string    // 32 lowercase hex digits (16 random bytes)
	Created time.Time // UTC, whole seconds
	Entries []Entry
}

// TotalSize is the sum of the entry sizes.
func (m *Manifest) TotalSize() int64 {
	var n int64
	for _, e := range m.Entries {
		n += e.Size
	}
	return n
}

// Encode returns the canonical MANIFEST bytes. It checks the manifest against
// the format limits.
func (m *Manifest) Encode() ([]byte, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString(manifestMagic + "\n")
	b.WriteString("id " + m.ID + "\n")
	b.WriteString("created " + m.Created.UTC().Format(timeLayout) + "\n")
	for _, e := range m.Entries {
		fmt.Fprintf(&b, "file %s %d %s\n", e.Name, e.Size, hex.EncodeToString(e.SHA256[:]))
	}
	sum := sha256.Sum256(b.Bytes())
	b.WriteString("sum " + hex.EncodeToString(sum[:]) + "\n")
	if b.Len() > MaxManifestSize {
		return nil, fmt.Errorf("%w: manifest is %d bytes, more than %d", ErrLimit, b.Len(), MaxManifestSize)
	}
	return b.Bytes(), nil
}

func (m *Manifest) check() error {
	if !isLowerHex(m.ID, 32) {
		return fmt.Errorf("%w: bundle id %q is not 32 lowercase hex digits", ErrManifest, m.ID)
	}
	if !m.Created.Equal(m.Created.Truncate(time.Second)) || m.Created.Year() < 2000 || m.Created.Year() > 9999 {
		return fmt.Errorf("%w: created time must be whole seconds between years 2000 and 9999", ErrManifest)
	}
	if len(m.Entries) > MaxFiles {
		return fmt.Errorf("%w: %d files, more than %d", ErrLimit, len(m.Entries), MaxFiles)
	}
	var total int64
	seen := make(map[string]bool, len(m.Entries))
	for i, e := range m.Entries {
		if err := CheckName(e.Name); err != nil {
			return err
		}
		if i > 0 && m.Entries[i-1].Name >= e.Name {
			return fmt.Errorf("%w: file %q is out of order (names must be sorted and unique)", ErrManifest, e.Name)
		}
		folded := strings.ToLower(e.Name)
		if seen[folded] {
			return fmt.Errorf("%w: file %q differs from another only by case (FAT cannot hold both)", ErrManifest, e.Name)
		}
		seen[folded] = true
		if e.Size < 1 {
			return fmt.Errorf("%w: file %q is empty (an envelope never is)", ErrManifest, e.Name)
		}
		if e.Size > MaxFileSize {
			return fmt.Errorf("%w: file %q is %d bytes, more than %d", ErrLimit, e.Name, e.Size, MaxFileSize)
		}
		total += e.Size
		if total > MaxTotalSize {
			return fmt.Errorf("%w: bundle holds more than %d bytes", ErrLimit, int64(MaxTotalSize))
		}
	}
	return nil
}

// ParseManifest parses MANIFEST bytes strictly: the encoding must be exactly
// the canonical one that Encode produces, within the format limits.
func ParseManifest(b []byte) (Manifest, error) {
	var m Manifest
	if len(b) > MaxManifestSize {
		return m, fmt.Errorf("%w: manifest is %d bytes, more than %d", ErrLimit, len(b), MaxManifestSize)
	}
	if len(b) == 0 || b[len(b)-1] != '\n' {
		return m, fmt.Errorf("%w: manifest does not end with a newline", ErrManifest)
	}
	lines := strings.Split(string(b[:len(b)-1]), "\n")
	if len(lines) < 4 {
		return m, fmt.Errorf("%w: manifest has %d lines, fewer than 4", ErrManifest, len(lines))
	}
	if lines[0] != manifestMagic {
		return m, fmt.Errorf("%w: first line is not %q", ErrManifest, manifestMagic)
	}
	id, ok := strings.CutPrefix(lines[1], "id ")
	if !ok || !isLowerHex(id, 32) {
		return m, fmt.Errorf("%w: line 2 is not \"id <32 lowercase hex digits>\"", ErrManifest)
	}
	m.ID = id
	created, ok := strings.CutPrefix(lines[2], "created ")
	if !ok {
		return m, fmt.Errorf("%w: line 3 is not \"created <time>\"", ErrManifest)
	}
	t, err := time.Parse(timeLayout, created)
	if err != nil || t.Format(timeLayout) != created {
		return m, fmt.Errorf("%w: line 3: created time %q is not YYYY-MM-DDTHH:MM:SSZ", ErrManifest, created)
	}
	m.Created = t
	fileLines := lines[3 : len(lines)-1]
	if len(fileLines) > MaxFiles {
		return m, fmt.Errorf("%w: manifest lists %d files, more than %d", ErrLimit, len(fileLines), MaxFiles)
	}
	m.Entries = make([]Entry, 0, len(fileLines))
	for i, l := range fileLines {
		e, err := parseFileLine(l)
		if err != nil {
			return Manifest{}, fmt.Errorf("%w (line %d)", err, i+4)
		}
		m.Entries = append(m.Entries, e)
	}
	last := lines[len(lines)-1]
	sumHex, ok := strings.CutPrefix(last, "sum ")
	if !ok || !isLowerHex(sumHex, 64) {
		return Manifest{}, fmt.Errorf("%w: last line is not \"sum <64 lowercase hex digits>\"", ErrManifest)
	}
	body := b[:len(b)-len(last)-1]
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != sumHex {
		return Manifest{}, fmt.Errorf("%w: checksum line does not match the manifest (damaged copy)", ErrManifest)
	}
	if err := m.check(); err != nil {
		return Manifest{}, err
	}
	again, err := m.Encode()
	if err != nil || !bytes.Equal(again, b) {
		return Manifest{}, fmt.Errorf("%w: not in canonical form", ErrManifest)
	}
	return m, nil
}

func parseFileLine(l string) (Entry, error) {
	var e Entry
	rest, ok := strings.CutPrefix(l, "file ")
	if !ok {
		return e, fmt.Errorf("%w: expected \"file <name> <size> <sha256>\"", ErrManifest)
	}
	f := strings.Split(rest, " ")
	if len(f) != 3 {
		return e, fmt.Errorf("%w: file line has %d fields, want 3", ErrManifest, len(f))
	}
	if err := CheckName(f[0]); err != nil {
		return e, err
	}
	e.Name = f[0]
	if len(f[1]) == 0 || len(f[1]) > 10 || (f[1][0] == '0' && len(f[1]) > 1) || strings.Trim(f[1], "0123456789") != "" {
		return e, fmt.Errorf("%w: file %q: size %q is not a canonical decimal", ErrManifest, e.Name, f[1])
	}
	size, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || size > MaxFileSize {
		return e, fmt.Errorf("%w: file %q: size %s is more than %d", ErrLimit, e.Name, f[1], MaxFileSize)
	}
	e.Size = size
	if !isLowerHex(f[2], 64) {
		return e, fmt.Errorf("%w: file %q: sha256 is not 64 lowercase hex digits", ErrManifest, e.Name)
	}
	hex.Decode(e.SHA256[:], []byte(f[2]))
	return e, nil
}

// CheckName reports whether name may be an envelope name: 1 to MaxNameLen
// bytes of [A-Za-z0-9._-], not starting or ending with '.', and not the
// manifest's name (in any case).
func CheckName(name string) error {
	if len(name) == 0 || len(name) > MaxNameLen {
		return fmt.Errorf("%w: %q: names are 1 to %d bytes", ErrBadName, name, MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: %q: only A-Z a-z 0-9 . _ - are allowed", ErrBadName, name)
		}
	}
	if name[0] == '.' || name[len(name)-1] == '.' {
		return fmt.Errorf("%w: %q: names may not start or end with '.'", ErrBadName, name)
	}
	if strings.EqualFold(name, ManifestName) {
		return fmt.Errorf("%w: %q is reserved for the manifest", ErrBadName, name)
	}
	return nil
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func sortEntries(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int { return strings.Compare(a.Name, b.Name) })
}
