// Package canon reads and writes the canonical line encoding shared by the
// bailiff formats (roster, escrow bundle, restitution order and manifest,
// ceremony transcript): UTF-8 text, one "field SP value" per line, LF line
// endings, fields in a fixed order, no blank lines, no carriage returns, no
// control characters. Every value has exactly one accepted spelling, so a
// parser can re-encode what it read and compare (docs/formats/roster.md,
// "Canonical lines").
package canon

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrSyntax is wrapped by every error of this package.
var ErrSyntax = errors.New("not canonical")

// TimeLayout is the only accepted time spelling: UTC, seconds.
const TimeLayout = "2006-01-02T15:04:05Z"

// Writer builds canonical bytes.
type Writer struct{ b []byte }

// Line appends "field v1 v2 ...\n".
func (w *Writer) Line(field string, values ...string) {
	w.b = append(w.b, field...)
	for _, v := range values {
		w.b = append(w.b, ' ')
		w.b = append(w.b, v...)
	}
	w.b = append(w.b, '\n')
}

// Bytes returns the bytes written so far.
func (w *Writer) Bytes() []byte { return w.b }

// Len returns the number of bytes written so far.
func (w *Writer) Len() int { return len(w.b) }

// Reader reads canonical lines in order.
type Reader struct {
	what  string
	lines []string
	offs  []int
	pos   int
}

// NewReader checks the byte-level rules (size, UTF-8, LF endings, no control
// characters, no blank lines) and splits b into lines. what names the
// document in errors ("roster", "escrow bundle").
func NewReader(what string, b []byte, maxLen int) (*Reader, error) {
	if len(b) > maxLen {
		return nil, fmt.Errorf("%s: %w: %d bytes exceeds the limit of %d", what, ErrSyntax, len(b), maxLen)
	}
	if len(b) == 0 || b[len(b)-1] != '\n' {
		return nil, fmt.Errorf("%s: %w: must end with a line feed", what, ErrSyntax)
	}
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("%s: %w: not valid UTF-8", what, ErrSyntax)
	}
	for i, c := range b {
		if (c < 0x20 && c != '\n') || c == 0x7f {
			return nil, fmt.Errorf("%s: %w: control character at byte %d", what, ErrSyntax, i)
		}
	}
	r := &Reader{what: what}
	off := 0
	for off < len(b) {
		i := bytes.IndexByte(b[off:], '\n')
		line := string(b[off : off+i])
		if line == "" {
			return nil, fmt.Errorf("%s: %w: blank line %d", what, ErrSyntax, len(r.lines)+1)
		}
		r.lines = append(r.lines, line)
		r.offs = append(r.offs, off)
		off += i + 1
	}
	r.offs = append(r.offs, len(b))
	return r, nil
}

func (r *Reader) errf(format string, a ...any) error {
	return fmt.Errorf("%s: line %d: %w: %s", r.what, r.pos+1, ErrSyntax, fmt.Sprintf(format, a...))
}

// Offset returns the byte offset of the next unread line.
func (r *Reader) Offset() int { return r.offs[r.pos] }

// Peek returns the field name of the next line, or "" at the end.
func (r *Reader) Peek() string {
	if r.pos >= len(r.lines) {
		return ""
	}
	f, _, _ := strings.Cut(r.lines[r.pos], " ")
	return f
}

// Fields reads the next line, which must be field followed by exactly n
// values separated by single spaces.
func (r *Reader) Fields(field string, n int) ([]string, error) {
	if r.pos >= len(r.lines) {
		return nil, fmt.Errorf("%s: %w: missing %q line at the end", r.what, ErrSyntax, field)
	}
	parts := strings.Split(r.lines[r.pos], " ")
	if parts[0] != field {
		return nil, r.errf("want field %q, found %q", field, truncate(parts[0]))
	}
	if len(parts)-1 != n {
		return nil, r.errf("field %q wants %d values, has %d", field, n, len(parts)-1)
	}
	for _, p := range parts[1:] {
		if p == "" {
			return nil, r.errf("field %q has an empty value (double space?)", field)
		}
	}
	r.pos++
	return parts[1:], nil
}

// Field reads a line with exactly one value.
func (r *Reader) Field(field string) (string, error) {
	v, err := r.Fields(field, 1)
	if err != nil {
		return "", err
	}
	return v[0], nil
}

// Text reads a line whose value is free text (may contain single spaces;
// no leading, trailing or double spaces), at most max bytes.
func (r *Reader) Text(field string, max int) (string, error) {
	if r.pos >= len(r.lines) {
		return "", fmt.Errorf("%s: %w: missing %q line at the end", r.what, ErrSyntax, field)
	}
	f, v, ok := strings.Cut(r.lines[r.pos], " ")
	if f != field || !ok {
		return "", r.errf("want text field %q", field)
	}
	if err := CheckText(v, max); err != nil {
		return "", r.errf("field %q: %v", field, err)
	}
	r.pos++
	return v, nil
}

// End fails unless every line was read.
func (r *Reader) End() error {
	if r.pos != len(r.lines) {
		return r.errf("unexpected trailing line %q", truncate(r.Peek()))
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}

// CheckText checks a free-text value: 1..max bytes, no leading, trailing or
// double spaces (control characters are already excluded).
func CheckText(v string, max int) error {
	if v == "" || len(v) > max {
		return fmt.Errorf("length %d outside 1..%d", len(v), max)
	}
	if strings.TrimSpace(v) != v || strings.Contains(v, "  ") || strings.ContainsAny(v, "\n\r\t") {
		return errors.New("leading, trailing or double spaces")
	}
	if !utf8.ValidString(v) {
		return errors.New("not valid UTF-8")
	}
	for _, c := range v {
		if c < 0x20 || c == 0x7f {
			return errors.New("control character")
		}
	}
	return nil
}

// CheckID checks an identifier (user id, item id): 1..max bytes of
// A-Z a-z 0-9 and . _ - @ + :
func CheckID(v string, max int) error {
	if v == "" || len(v) > max {
		return fmt.Errorf("length %d outside 1..%d", len(v), max)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._-@+:", c) >= 0
		if !ok {
			return fmt.Errorf("character %q not allowed (A-Z a-z 0-9 . _ - @ + :)", c)
		}
	}
	return nil
}

// Uint parses a canonical decimal (no sign, no leading zeros) in [min,max].
func Uint(v string, min, max int) (int, error) {
	if v == "" || v[0] < '0' || v[0] > '9' {
		return 0, fmt.Errorf("%w: %q is not a decimal in %d..%d", ErrSyntax, truncate(v), min, max)
	}
	n, err := strconv.Atoi(v)
	if err != nil || strconv.Itoa(n) != v || n < min || n > max {
		return 0, fmt.Errorf("%w: %q is not a decimal in %d..%d", ErrSyntax, truncate(v), min, max)
	}
	return n, nil
}

// Hex parses lowercase hex of exactly n bytes.
func Hex(v string, n int) ([]byte, error) {
	b, err := hex.DecodeString(v)
	if err != nil || len(b) != n || hex.EncodeToString(b) != v {
		return nil, fmt.Errorf("%w: want %d bytes of lowercase hex", ErrSyntax, n)
	}
	return b, nil
}

// Fingerprint checks an OpenPGP fingerprint: lowercase hex of a v4 key
// (20 bytes, 40 digits) or a v6 key (32 bytes, 64 digits).
func Fingerprint(v string) error {
	if len(v) == 64 {
		_, err := Hex(v, 32)
		return err
	}
	if _, err := Hex(v, 20); err != nil {
		return fmt.Errorf("%w: want a fingerprint: 40 (v4) or 64 (v6) lowercase hex digits", ErrSyntax)
	}
	return nil
}

// B64 parses canonical standard base64 with padding, at most max decoded
// bytes.
func B64(v string, max int) ([]byte, error) {
	if base64.StdEncoding.DecodedLen(len(v)) > max+2 {
		return nil, fmt.Errorf("%w: base64 value longer than %d bytes", ErrSyntax, max)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(v)
	if err != nil || len(b) == 0 || len(b) > max || base64.StdEncoding.EncodeToString(b) != v {
		return nil, fmt.Errorf("%w: not canonical base64 of 1..%d bytes", ErrSyntax, max)
	}
	return b, nil
}

// EncB64 encodes b as standard base64 with padding.
func EncB64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// Time parses a UTC time in TimeLayout.
func Time(v string) (time.Time, error) {
	t, err := time.Parse(TimeLayout, v)
	if err != nil || t.Format(TimeLayout) != v {
		return time.Time{}, fmt.Errorf("%w: time %q is not YYYY-MM-DDTHH:MM:SSZ", ErrSyntax, truncate(v))
	}
	return t, nil
}

// EncTime formats t in TimeLayout (UTC, seconds).
func EncTime(t time.Time) string { return t.UTC().Format(TimeLayout) }
