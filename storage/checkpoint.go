package storage

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Checkpoint is the body of a C2SP tlog-checkpoint: origin, tree size and
// root hash.
type Checkpoint struct {
	Origin string
	Size   uint64
	Hash   tlog.Hash
}

// Text returns the checkpoint body: "origin\nsize\nbase64(root)\n".
func (c Checkpoint) Text() string {
	return fmt.Sprintf("%s\n%d\n%s\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Hash[:]))
}

func checkOrigin(o string) error {
	if o == "" || len(o) > MaxOriginSize || strings.ContainsAny(o, "\n\r\t ") || !isPrint(o) {
		return fmt.Errorf("storage: checkpoint origin %q: want 1..%d printable characters without spaces", o, MaxOriginSize)
	}
	return nil
}

func isPrint(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// ParseCheckpointText parses a checkpoint body strictly (no extension
// lines, canonical decimal, canonical base64).
func ParseCheckpointText(text string) (Checkpoint, error) {
	var c Checkpoint
	lines := strings.SplitAfter(text, "\n")
	if len(lines) != 4 || lines[3] != "" {
		return c, fmt.Errorf("storage: checkpoint: want exactly 3 lines: %w", ErrCorrupt)
	}
	origin := strings.TrimSuffix(lines[0], "\n")
	if err := checkOrigin(origin); err != nil {
		return c, fmt.Errorf("%w: %w", err, ErrCorrupt)
	}
	ss := strings.TrimSuffix(lines[1], "\n")
	n, err := strconv.ParseUint(ss, 10, 64)
	if err != nil || strconv.FormatUint(n, 10) != ss || n > 1<<62 {
		return c, fmt.Errorf("storage: checkpoint: bad tree size %q: %w", ss, ErrCorrupt)
	}
	hs := strings.TrimSuffix(lines[2], "\n")
	h, err := base64.StdEncoding.Strict().DecodeString(hs)
	if err != nil || len(h) != 32 || base64.StdEncoding.EncodeToString(h) != hs {
		return c, fmt.Errorf("storage: checkpoint: bad root hash: %w", ErrCorrupt)
	}
	c.Origin, c.Size = origin, n
	copy(c.Hash[:], h)
	return c, nil
}

// signCheckpoint returns the signed note.
func signCheckpoint(c Checkpoint, s note.Signer) ([]byte, error) {
	msg, err := note.Sign(&note.Note{Text: c.Text()}, s)
	if err != nil {
		return nil, fmt.Errorf("storage: signing checkpoint: %w", err)
	}
	if len(msg) > MaxCheckpointSize {
		return nil, fmt.Errorf("storage: signed checkpoint of %d bytes exceeds %d", len(msg), MaxCheckpointSize)
	}
	return msg, nil
}

// OpenCheckpoint verifies a signed checkpoint note with v and parses it.
// When origin is not empty the checkpoint must name it.
func OpenCheckpoint(msg []byte, v note.Verifier, origin string) (Checkpoint, error) {
	if len(msg) > MaxCheckpointSize {
		return Checkpoint{}, fmt.Errorf("storage: checkpoint of %d bytes exceeds %d: %w", len(msg), MaxCheckpointSize, ErrCorrupt)
	}
	if v == nil {
		return Checkpoint{}, fmt.Errorf("storage: no checkpoint verifier key given (pass --audit-key)")
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("storage: checkpoint signature: %w", err)
	}
	c, err := ParseCheckpointText(n.Text)
	if err != nil {
		return c, err
	}
	if origin != "" && c.Origin != origin {
		return c, fmt.Errorf("storage: checkpoint names origin %q, want %q", c.Origin, origin)
	}
	return c, nil
}
