package shamir

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Magic opens every binary share.
const Magic = "CSH1"

const headerLen = 4 + SplitIDLen + 1 + 1 + 2

// ErrFormat is wrapped by every parse error.
var ErrFormat = errors.New("shamir: malformed share")

// MarshalBinary encodes the share (docs/formats/shares.md). The result holds
// secret material.
func (s *Share) MarshalBinary() ([]byte, error) {
	if s.Threshold < MinThreshold || s.Threshold > MaxShares || s.Index < 1 || s.Index > MaxShares {
		return nil, fmt.Errorf("shamir: share %d: threshold or index out of range", s.Index)
	}
	if len(s.Value) <= TagLen || len(s.Value) > MaxSecretLen+TagLen {
		return nil, fmt.Errorf("shamir: share %d: value length %d out of range", s.Index, len(s.Value))
	}
	b := make([]byte, 0, headerLen+len(s.Value)+ChecksumLen)
	b = append(b, Magic...)
	b = append(b, s.SplitID[:]...)
	b = append(b, byte(s.Threshold), byte(s.Index))
	b = binary.BigEndian.AppendUint16(b, uint16(len(s.Value)))
	b = append(b, s.Value...)
	sum := sha256.Sum256(b)
	b = append(b, sum[:ChecksumLen]...)
	return b, nil
}

// ParseShare decodes a binary share, checking its length, ranges and
// checksum. It never panics on any input.
func ParseShare(b []byte) (Share, error) {
	if len(b) < headerLen+TagLen+1+ChecksumLen {
		return Share{}, fmt.Errorf("%w: %d bytes is too short", ErrFormat, len(b))
	}
	if string(b[:4]) != Magic {
		return Share{}, fmt.Errorf("%w: bad magic", ErrFormat)
	}
	var s Share
	copy(s.SplitID[:], b[4:4+SplitIDLen])
	s.Threshold = int(b[20])
	s.Index = int(b[21])
	l := int(binary.BigEndian.Uint16(b[22:24]))
	if l <= TagLen || l > MaxSecretLen+TagLen {
		return Share{}, fmt.Errorf("%w: value length %d out of range", ErrFormat, l)
	}
	if len(b) != headerLen+l+ChecksumLen {
		return Share{}, fmt.Errorf("%w: length %d does not match declared value length %d", ErrFormat, len(b), l)
	}
	sum := sha256.Sum256(b[:headerLen+l])
	if subtle.ConstantTimeCompare(sum[:ChecksumLen], b[headerLen+l:]) != 1 {
		return Share{}, fmt.Errorf("%w: share %d: checksum mismatch (mistyped or damaged share)", ErrFormat, s.Index)
	}
	if s.Threshold < MinThreshold {
		return Share{}, fmt.Errorf("%w: share %d: threshold %d below %d", ErrFormat, s.Index, s.Threshold, MinThreshold)
	}
	if s.Index < 1 {
		return Share{}, fmt.Errorf("%w: index 0 is not allowed", ErrFormat)
	}
	s.Value = bytes.Clone(b[headerLen : headerLen+l])
	return s, nil
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

const cardHeader = "COFFRE-SHARE V1"

// CardText returns the printable share card: a header line, a line naming the
// split, index and threshold, and the base32 body (RFC 4648 alphabet, no
// padding) in groups of four characters, eight groups per line. Every
// character is in the QR alphanumeric set except the line feeds. The text is
// secret material.
func (s *Share) CardText() (string, error) {
	bin, err := s.MarshalBinary()
	if err != nil {
		return "", err
	}
	defer clear(bin)
	body := b32.EncodeToString(bin)
	var sb strings.Builder
	sb.WriteString(cardHeader + "\n")
	fmt.Fprintf(&sb, "SPLIT %s SHARE %d THRESHOLD %d\n", strings.ToUpper(hex.EncodeToString(s.SplitID[:])), s.Index, s.Threshold)
	for i := 0; i < len(body); i += 4 {
		end := min(i+4, len(body))
		sb.WriteString(body[i:end])
		switch {
		case end == len(body):
			sb.WriteByte('\n')
		case (i/4)%8 == 7:
			sb.WriteByte('\n')
		default:
			sb.WriteByte(' ')
		}
	}
	return sb.String(), nil
}

// ParseCard decodes share card text as written by CardText. It is lenient
// only where people retyping a card err harmlessly: case, spaces, hyphens,
// tabs, carriage returns and blank lines in the body. The header and the
// split line must agree with the body.
func ParseCard(text string) (Share, error) {
	if len(text) > MaxCardLen {
		return Share{}, fmt.Errorf("%w: card text longer than %d bytes", ErrFormat, MaxCardLen)
	}
	lines := strings.Split(strings.ReplaceAll(text, "\r", ""), "\n")
	var kept []string
	for _, l := range lines {
		if t := strings.TrimSpace(l); t != "" {
			kept = append(kept, t)
		}
	}
	if len(kept) < 3 {
		return Share{}, fmt.Errorf("%w: card has %d lines, want at least 3", ErrFormat, len(kept))
	}
	if strings.ToUpper(kept[0]) != cardHeader {
		return Share{}, fmt.Errorf("%w: card does not start with %q", ErrFormat, cardHeader)
	}
	f := strings.Fields(strings.ToUpper(kept[1]))
	if len(f) != 6 || f[0] != "SPLIT" || f[2] != "SHARE" || f[4] != "THRESHOLD" {
		return Share{}, fmt.Errorf("%w: second line must be SPLIT <id> SHARE <n> THRESHOLD <k>", ErrFormat)
	}
	var body strings.Builder
	for _, l := range kept[2:] {
		for _, r := range l {
			switch {
			case r == ' ' || r == '-' || r == '\t':
			case r >= 'a' && r <= 'z':
				body.WriteRune(r - 'a' + 'A')
			case (r >= 'A' && r <= 'Z') || (r >= '2' && r <= '7'):
				body.WriteRune(r)
			default:
				return Share{}, fmt.Errorf("%w: character %q is not in the card alphabet", ErrFormat, r)
			}
		}
	}
	bin, err := b32.DecodeString(body.String())
	if err != nil {
		return Share{}, fmt.Errorf("%w: body is not base32", ErrFormat)
	}
	defer clear(bin)
	s, err := ParseShare(bin)
	if err != nil {
		return Share{}, err
	}
	if f[1] != strings.ToUpper(hex.EncodeToString(s.SplitID[:])) || f[3] != strconv.Itoa(s.Index) || f[5] != strconv.Itoa(s.Threshold) {
		s.Wipe()
		return Share{}, fmt.Errorf("%w: card header disagrees with the card body", ErrFormat)
	}
	return s, nil
}
