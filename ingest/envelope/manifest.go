package envelope

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"unicode"
	"unicode/utf8"
)

// ManifestVersion is the format version written as the manifest's first
// byte.
const ManifestVersion = 1

// Manifest describes one item. It travels inside the encrypted part, so only
// the appliance reads it.
type Manifest struct {
	// UserID must equal the user id the courier binds (user binding).
	UserID string
	// ItemID names the item for its owner; with Version it is unique.
	ItemID string
	// Version starts at 1; a new version is appended, never overwrites.
	Version uint32
	// Kind is e.g. "password", "seed-phrase", "letter", "document".
	Kind string
	// ContentType is a media type such as "text/plain; charset=utf-8".
	ContentType string
	// Size is the content size in bytes.
	Size int64
	// Digest is the SHA-256 of the content.
	Digest [32]byte
	// Beneficiaries are the user's designations, in the user's order.
	Beneficiaries []Designation
}

// Designation names one beneficiary. At least one of Name, Email and
// Fingerprint is set.
type Designation struct {
	Name        string // free text, UTF-8
	Email       string // printable ASCII, no spaces
	Fingerprint string // "" or 40 (v4) / 64 (v6) lowercase hex digits of an OpenPGP key
	Share       uint16 // basis points, 0..10000 (0: unspecified)
	Note        string // free text, UTF-8, newlines allowed
}

// MarshalBinary encodes m canonically (docs/formats/envelope.md §Manifest)
// after checking it.
func (m *Manifest) MarshalBinary() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteByte(ManifestVersion)
	putStr(&b, m.UserID)
	putStr(&b, m.ItemID)
	b.Write(binary.BigEndian.AppendUint32(nil, m.Version))
	putStr(&b, m.Kind)
	putStr(&b, m.ContentType)
	b.Write(binary.BigEndian.AppendUint64(nil, uint64(m.Size)))
	b.Write(m.Digest[:])
	b.Write(binary.BigEndian.AppendUint16(nil, uint16(len(m.Beneficiaries))))
	for _, d := range m.Beneficiaries {
		putStr(&b, d.Name)
		putStr(&b, d.Email)
		putStr(&b, d.Fingerprint)
		b.Write(binary.BigEndian.AppendUint16(nil, d.Share))
		putStr(&b, d.Note)
	}
	if b.Len() > MaxManifest {
		return nil, errorf(ErrTooLarge, "manifest is %d bytes, limit %d", b.Len(), MaxManifest)
	}
	return b.Bytes(), nil
}

func putStr(b *bytes.Buffer, s string) {
	b.Write(binary.BigEndian.AppendUint16(nil, uint16(len(s))))
	b.WriteString(s)
}

// ParseManifest decodes and checks an encoded manifest. It accepts only the
// canonical encoding: every byte is consumed and every field is valid.
func ParseManifest(b []byte) (Manifest, error) {
	var m Manifest
	if len(b) > MaxManifest {
		return m, errorf(ErrTooLarge, "manifest is %d bytes, limit %d", len(b), MaxManifest)
	}
	p := parser{b: b}
	v := p.u8("manifest version")
	if p.err == nil && v != ManifestVersion {
		return m, errorf(ErrFormat, "manifest version %d, this appliance reads version %d: update the appliance firmware", v, ManifestVersion)
	}
	m.UserID = p.str("user id", MaxUserID)
	m.ItemID = p.str("item id", MaxItemID)
	m.Version = p.u32("version")
	m.Kind = p.str("kind", MaxKind)
	m.ContentType = p.str("content type", MaxContentType)
	size := p.u64("size")
	copy(m.Digest[:], p.bytes("digest", 32))
	n := p.u16("beneficiary count")
	if p.err == nil && n > MaxBeneficiaries {
		return Manifest{}, errorf(ErrTooLarge, "manifest: %d beneficiaries, limit %d", n, MaxBeneficiaries)
	}
	for i := 0; i < int(n) && p.err == nil; i++ {
		var d Designation
		d.Name = p.str("beneficiary name", MaxDesignationName)
		d.Email = p.str("beneficiary email", MaxDesignationEmail)
		d.Fingerprint = p.str("beneficiary fingerprint", 64)
		d.Share = p.u16("beneficiary share")
		d.Note = p.str("beneficiary note", MaxDesignationNote)
		m.Beneficiaries = append(m.Beneficiaries, d)
	}
	if p.err != nil {
		return Manifest{}, p.err
	}
	if len(p.b) != 0 {
		return Manifest{}, errorf(ErrFormat, "manifest: %d trailing bytes", len(p.b))
	}
	if size > math.MaxInt64 {
		return Manifest{}, errorf(ErrTooLarge, "manifest: size %d", size)
	}
	m.Size = int64(size)
	if err := m.Validate(); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// Validate checks every field against the format's rules and limits.
func (m *Manifest) Validate() error {
	if err := m.validate(); err != nil {
		return prefix(err, "manifest")
	}
	return nil
}

func (m *Manifest) validate() error {
	if err := checkUserID(m.UserID); err != nil {
		return err
	}
	if err := checkLen("item id", m.ItemID, 1, MaxItemID); err != nil {
		return err
	}
	for _, c := range []byte(m.ItemID) {
		if !isAlnum(c) && c != '.' && c != '_' && c != '-' && c != ':' {
			return errorf(ErrFormat, "item id: byte 0x%02x not in [A-Za-z0-9._:-]", c)
		}
	}
	if m.Version == 0 {
		return errorf(ErrFormat, "version 0 (versions start at 1)")
	}
	if err := checkLen("kind", m.Kind, 1, MaxKind); err != nil {
		return err
	}
	for _, c := range []byte(m.Kind) {
		if !(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9') && c != '-' {
			return errorf(ErrFormat, "kind: byte 0x%02x not in [a-z0-9-]", c)
		}
	}
	if err := checkLen("content type", m.ContentType, 1, MaxContentType); err != nil {
		return err
	}
	for _, c := range []byte(m.ContentType) {
		if c < 0x20 || c > 0x7e {
			return errorf(ErrFormat, "content type: byte 0x%02x is not printable ASCII", c)
		}
	}
	if m.ContentType[0] == ' ' || m.ContentType[len(m.ContentType)-1] == ' ' {
		return errorf(ErrFormat, "content type has leading or trailing space")
	}
	if m.Size < 0 {
		return errorf(ErrFormat, "negative size")
	}
	if len(m.Beneficiaries) > MaxBeneficiaries {
		return errorf(ErrTooLarge, "%d beneficiaries, limit %d", len(m.Beneficiaries), MaxBeneficiaries)
	}
	for i, d := range m.Beneficiaries {
		if err := d.validate(); err != nil {
			return prefix(err, fmt.Sprintf("beneficiary %d", i+1))
		}
	}
	return nil
}

func (d Designation) validate() error {
	if d.Name == "" && d.Email == "" && d.Fingerprint == "" {
		return errorf(ErrFormat, "no name, email or fingerprint")
	}
	if err := checkText("name", d.Name, MaxDesignationName, false); err != nil {
		return err
	}
	if err := checkLen("email", d.Email, 0, MaxDesignationEmail); err != nil {
		return err
	}
	for _, c := range []byte(d.Email) {
		if c <= 0x20 || c > 0x7e {
			return errorf(ErrFormat, "email: byte 0x%02x is not printable ASCII", c)
		}
	}
	switch len(d.Fingerprint) {
	case 0, 40, 64:
	default:
		return errorf(ErrFormat, "fingerprint has %d hex digits, want 40 or 64", len(d.Fingerprint))
	}
	for _, c := range []byte(d.Fingerprint) {
		if !(c >= '0' && c <= '9') && !(c >= 'a' && c <= 'f') {
			return errorf(ErrFormat, "fingerprint: byte 0x%02x is not a lowercase hex digit", c)
		}
	}
	if d.Share > MaxShare {
		return errorf(ErrFormat, "share %d basis points, limit %d", d.Share, MaxShare)
	}
	return checkText("note", d.Note, MaxDesignationNote, true)
}

func checkUserID(s string) error {
	return checkText("user id", s, MaxUserID, false, 1)
}

func checkLen(what, s string, min, max int) error {
	if len(s) > max {
		return errorf(ErrTooLarge, "%s is %d bytes, limit %d", what, len(s), max)
	}
	if len(s) < min {
		return errorf(ErrFormat, "%s is empty", what)
	}
	return nil
}

// checkText: valid UTF-8, no control characters (newline allowed when
// newlines is set), at least min bytes (default 0).
func checkText(what, s string, max int, newlines bool, min ...int) error {
	lo := 0
	if len(min) > 0 {
		lo = min[0]
	}
	if err := checkLen(what, s, lo, max); err != nil {
		return err
	}
	if !utf8.ValidString(s) {
		return errorf(ErrFormat, "%s is not valid UTF-8", what)
	}
	for _, r := range s {
		if r == '\n' && newlines {
			continue
		}
		if unicode.IsControl(r) || r == utf8.RuneError || (r >= 0x2028 && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
			return errorf(ErrFormat, "%s contains control or bidi character U+%04X", what, r)
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// parser reads big-endian fields; the first error sticks.
type parser struct {
	b   []byte
	err error
}

func (p *parser) bytes(what string, n int) []byte {
	if p.err != nil {
		return nil
	}
	if len(p.b) < n {
		p.err = errorf(ErrTruncated, "manifest ends inside %s", what)
		return nil
	}
	v := p.b[:n]
	p.b = p.b[n:]
	return v
}

func (p *parser) u8(what string) uint8 {
	if b := p.bytes(what, 1); b != nil {
		return b[0]
	}
	return 0
}

func (p *parser) u16(what string) uint16 {
	if b := p.bytes(what, 2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (p *parser) u32(what string) uint32 {
	if b := p.bytes(what, 4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (p *parser) u64(what string) uint64 {
	if b := p.bytes(what, 8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (p *parser) str(what string, max int) string {
	n := int(p.u16(what + " length"))
	if p.err != nil {
		return ""
	}
	if n > max {
		p.err = errorf(ErrTooLarge, "manifest: %s is %d bytes, limit %d", what, n, max)
		return ""
	}
	return string(p.bytes(what, n))
}
