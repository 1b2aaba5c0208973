package catalog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"unicode"
	"unicode/utf8"
)

// MetaKind says what a drive record is. Its numeric value is written in the
// meta encoding; values are never reused.
type MetaKind uint8

// Record kinds. A new kind is a change to docs/formats/catalog-meta.md.
const (
	KindItem        MetaKind = 1  // a user's item (one version)
	KindEscrow      MetaKind = 2  // a user's escrow key bundle
	KindRoster      MetaKind = 3  // the bailiff roster
	KindCeremony    MetaKind = 4  // a key ceremony transcript
	KindRestitution MetaKind = 5  // a restitution release
	KindReencap     MetaKind = 6  // a re-encapsulation step
	KindSupersede   MetaKind = 7  // a record that only supersedes another
	KindDriveEvent  MetaKind = 8  // a drive added, retired, synced…
	KindCheckpoint  MetaKind = 9  // a signed checkpoint
	KindGenesis     MetaKind = 10 // the genesis record (record 0)
	KindPolicy      MetaKind = 11 // a signed crypto policy
	KindVaultEscrow MetaKind = 12 // the vault record key escrowed to the quorum
	KindFirmware    MetaKind = 13 // a firmware update applied
)

var kindNames = map[MetaKind]string{
	KindItem:        "item",
	KindEscrow:      "escrow",
	KindRoster:      "roster",
	KindCeremony:    "ceremony",
	KindRestitution: "restitution",
	KindReencap:     "reencap",
	KindSupersede:   "supersede",
	KindDriveEvent:  "drive-event",
	KindCheckpoint:  "checkpoint",
	KindGenesis:     "genesis",
	KindPolicy:      "policy",
	KindVaultEscrow: "vault-escrow",
	KindFirmware:    "firmware",
}

// String returns the kind's name ("item", "drive-event", …).
func (k MetaKind) String() string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Valid reports whether k is a known kind.
func (k MetaKind) Valid() bool { _, ok := kindNames[k]; return ok }

// ParseMetaKind returns the kind with the given name.
func ParseMetaKind(name string) (MetaKind, error) {
	for k, n := range kindNames {
		if n == name {
			return k, nil
		}
	}
	return 0, fmt.Errorf("catalog: unknown record kind %q", name)
}

// Meta is the small description every drive record carries, encrypted with
// the record body. The storage layer treats its encoding as opaque bytes.
type Meta struct {
	Kind        MetaKind
	UserID      string
	ItemID      string
	Version     uint32
	UploadID    string // 32 lowercase hex characters, or empty
	ItemKind    string // password, seed-phrase, letter, document, …
	ContentType string
	Size        int64
	Digest      [32]byte // SHA-256 of the plaintext item
	Supersedes  uint64   // record index this one supersedes; 0 = none
	Algorithms  []string // what protects the object, in order
	Attrs       map[string]string
}

// ErrMalformedMeta is wrapped by every error from ParseMeta and EncodeMeta.
var ErrMalformedMeta = errors.New("malformed record meta")

const (
	metaMagic0  = 'C'
	metaMagic1  = 'M'
	metaVersion = 1
)

func metaErr(format string, args ...any) error {
	return fmt.Errorf("catalog: %w: %s", ErrMalformedMeta, fmt.Sprintf(format, args...))
}

// EncodeMeta returns the canonical encoding of m. It fails, wrapping
// ErrMalformedMeta, when m breaks a rule of the format: the same rules
// ParseMeta enforces, so ParseMeta(EncodeMeta(m)) always succeeds.
func EncodeMeta(m Meta) ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 128)
	b = append(b, metaMagic0, metaMagic1, metaVersion, byte(m.Kind))
	b = appendStr8(b, m.UserID)
	b = appendStr8(b, m.ItemID)
	b = binary.BigEndian.AppendUint32(b, m.Version)
	b = appendStr8(b, m.UploadID)
	b = appendStr8(b, m.ItemKind)
	b = appendStr8(b, m.ContentType)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Size))
	b = append(b, m.Digest[:]...)
	b = binary.BigEndian.AppendUint64(b, m.Supersedes)
	b = append(b, byte(len(m.Algorithms)))
	for _, a := range m.Algorithms {
		b = appendStr8(b, a)
	}
	keys := make([]string, 0, len(m.Attrs))
	for k := range m.Attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b = append(b, byte(len(keys)))
	for _, k := range keys {
		b = appendStr8(b, k)
		v := m.Attrs[k]
		b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
		b = append(b, v...)
	}
	return b, nil
}

func appendStr8(b []byte, s string) []byte {
	return append(append(b, byte(len(s))), s...)
}

// ParseMeta decodes a meta blob. It accepts only canonical encodings, so
// EncodeMeta(ParseMeta(b)) == b for every b it accepts. Errors wrap
// ErrMalformedMeta. An empty Algorithms list or Attrs map decodes as nil.
func ParseMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) > MaxMetaSize {
		return m, metaErr("%d bytes, more than the %d-byte limit", len(b), MaxMetaSize)
	}
	r := reader{b: b}
	hdr := r.bytes(4, "header")
	if r.err != nil {
		return m, r.err
	}
	if hdr[0] != metaMagic0 || hdr[1] != metaMagic1 {
		return m, metaErr("bad magic %x (want 434d)", hdr[:2])
	}
	if hdr[2] != metaVersion {
		return m, metaErr("unsupported format version %d (want %d)", hdr[2], metaVersion)
	}
	m.Kind = MetaKind(hdr[3])
	m.UserID = r.str8("user id")
	m.ItemID = r.str8("item id")
	m.Version = r.u32("version")
	m.UploadID = r.str8("upload id")
	m.ItemKind = r.str8("item kind")
	m.ContentType = r.str8("content type")
	m.Size = int64(r.u64("size"))
	copy(m.Digest[:], r.bytes(32, "digest"))
	m.Supersedes = r.u64("supersedes")
	if n := int(r.u8("algorithm count")); n > 0 && r.err == nil {
		if n > MaxAlgorithms {
			return Meta{}, metaErr("%d algorithms, more than %d", n, MaxAlgorithms)
		}
		m.Algorithms = make([]string, n)
		for i := range m.Algorithms {
			m.Algorithms[i] = r.str8("algorithm")
		}
	}
	if n := int(r.u8("attribute count")); n > 0 && r.err == nil {
		if n > MaxAttrs {
			return Meta{}, metaErr("%d attributes, more than %d", n, MaxAttrs)
		}
		m.Attrs = make(map[string]string, n)
		prev := ""
		for i := 0; i < n && r.err == nil; i++ {
			k := r.str8("attribute key")
			v := string(r.bytes(int(r.u16("attribute value length")), "attribute value"))
			if r.err != nil {
				break
			}
			if i > 0 && k <= prev {
				return Meta{}, metaErr("attribute %q not in strictly ascending order after %q", k, prev)
			}
			prev = k
			m.Attrs[k] = v
		}
	}
	if r.err != nil {
		return Meta{}, r.err
	}
	if len(r.b) != 0 {
		return Meta{}, metaErr("%d trailing bytes", len(r.b))
	}
	if err := m.validate(); err != nil {
		return Meta{}, err
	}
	return m, nil
}

// reader consumes b; the first error sticks and later reads return zeros.
type reader struct {
	b   []byte
	err error
}

func (r *reader) bytes(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.err = metaErr("truncated in %s (need %d bytes, %d left)", what, n, len(r.b))
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8(what string) uint8 {
	if v := r.bytes(1, what); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) u16(what string) uint16 {
	if v := r.bytes(2, what); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *reader) u32(what string) uint32 {
	if v := r.bytes(4, what); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (r *reader) u64(what string) uint64 {
	if v := r.bytes(8, what); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (r *reader) str8(what string) string {
	if r.err == nil && len(r.b) == 0 {
		// As r.u8(what + " length") would say, without building that
		// label for every field of every record.
		r.err = metaErr("truncated in %s length (need 1 bytes, 0 left)", what)
	}
	if r.err != nil {
		return ""
	}
	n := int(r.b[0])
	r.b = r.b[1:]
	return string(r.bytes(n, what))
}

// validate checks every rule of the format that is not about framing.
func (m *Meta) validate() error {
	if !m.Kind.Valid() {
		return metaErr("unknown kind %d", uint8(m.Kind))
	}
	if err := checkUserID(m.UserID); err != nil {
		return err
	}
	if err := checkID("item id", m.ItemID); err != nil {
		return err
	}
	if m.UploadID != "" {
		if len(m.UploadID) != UploadIDLen || !allBytes(m.UploadID, isLowerHex) {
			return metaErr("upload id is not %d lowercase hex characters", UploadIDLen)
		}
	}
	if len(m.ItemKind) > MaxItemKindLen || !allBytes(m.ItemKind, isKindByte) {
		return metaErr("item kind: more than %d bytes or not [a-z0-9-]", MaxItemKindLen)
	}
	if len(m.ContentType) > MaxContentTypeLen || !allBytes(m.ContentType, isPrintable) {
		return metaErr("content type: more than %d bytes or not printable ASCII", MaxContentTypeLen)
	}
	if m.Size < 0 || m.Size > MaxItemSize {
		return metaErr("size %d outside [0, %d]", m.Size, int64(MaxItemSize))
	}
	if len(m.Algorithms) > MaxAlgorithms {
		return metaErr("%d algorithms, more than %d", len(m.Algorithms), MaxAlgorithms)
	}
	for i, a := range m.Algorithms {
		if a == "" || len(a) > MaxAlgorithmLen || !allBytes(a, isAlgByte) {
			return metaErr("algorithm %d: empty, more than %d bytes or not [a-z0-9:._+-]", i, MaxAlgorithmLen)
		}
		for _, p := range m.Algorithms[:i] {
			if p == a {
				return metaErr("algorithm %q listed twice", a)
			}
		}
	}
	if len(m.Attrs) > MaxAttrs {
		return metaErr("%d attributes, more than %d", len(m.Attrs), MaxAttrs)
	}
	total := 0
	for _, v := range m.Attrs {
		total += len(v)
	}
	if total > MaxAttrsValueTotal {
		return metaErr("attribute values total %d bytes, more than %d", total, MaxAttrsValueTotal)
	}
	for k, v := range m.Attrs {
		if k == "" || len(k) > MaxAttrKeyLen || !allBytes(k, isAttrKeyByte) {
			return metaErr("attribute key %q: empty, more than %d bytes or not [a-z0-9._-]", truncate(k), MaxAttrKeyLen)
		}
		if len(v) > MaxAttrValueLen || !utf8.ValidString(v) {
			return metaErr("attribute %q: value more than %d bytes or not UTF-8", k, MaxAttrValueLen)
		}
	}
	switch m.Kind {
	case KindItem:
		switch {
		case m.UserID == "":
			return metaErr("item record without a user id")
		case m.ItemID == "":
			return metaErr("item record without an item id")
		case m.Version == 0:
			return metaErr("item record with version 0 (versions start at 1)")
		case m.UploadID == "":
			return metaErr("item record without an upload id")
		case m.ItemKind == "":
			return metaErr("item record without an item kind")
		}
	case KindEscrow:
		if m.UserID == "" {
			return metaErr("escrow record without a user id")
		}
	}
	return nil
}

// checkUserID accepts what the upload envelope accepts as a user id: valid
// UTF-8 without control characters, line/paragraph separators or bidi
// overrides and isolates, at most MaxIDLen bytes (empty allowed here; kinds
// that need a user say so).
func checkUserID(s string) error {
	if len(s) > MaxIDLen {
		return metaErr("user id: %d bytes, more than %d", len(s), MaxIDLen)
	}
	if !utf8.ValidString(s) {
		return metaErr("user id: not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) || (r >= 0x2028 && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
			return metaErr("user id: control or bidi character U+%04X", r)
		}
	}
	return nil
}

func checkID(what, s string) error {
	if len(s) > MaxIDLen {
		return metaErr("%s: %d bytes, more than %d", what, len(s), MaxIDLen)
	}
	if !allBytes(s, isIDByte) {
		return metaErr("%s: not printable ASCII without spaces", what)
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

func allBytes(s string, ok func(byte) bool) bool {
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

func isIDByte(c byte) bool      { return c > 0x20 && c < 0x7f }
func isPrintable(c byte) bool   { return c >= 0x20 && c < 0x7f }
func isLowerHex(c byte) bool    { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' }
func isLowerAlnum(c byte) bool  { return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' }
func isKindByte(c byte) bool    { return isLowerAlnum(c) || c == '-' }
func isAttrKeyByte(c byte) bool { return isLowerAlnum(c) || c == '.' || c == '_' || c == '-' }
func isAlgByte(c byte) bool {
	return isLowerAlnum(c) || c == ':' || c == '.' || c == '_' || c == '+' || c == '-'
}
