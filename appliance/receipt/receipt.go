// Package receipt encodes and verifies upload receipts: the proof, readable
// offline by the online side, that an upload is in the vault's log. A receipt
// is a C2SP tlog-proof (c2sp.org/tlog-proof@v1): the record's index, its
// RFC 6962 inclusion proof and the signed checkpoint it was proved against,
// with the upload's identity as the proof's extra data. The format is
// specified in docs/formats/receipt.md.
package receipt

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const header = "c2sp.org/tlog-proof@v1"

// Limits on what ParseProof accepts.
const (
	MaxReceiptBytes = 64 << 10
	MaxProofHashes  = 64
	MaxExtraBytes   = 4 << 10
)

// Extra is the upload identity a receipt carries as the proof's extra data.
type Extra struct {
	UploadID string `json:"upload_id"`
	UserID   string `json:"user_id"`
	ItemID   string `json:"item_id"`
	Version  uint32 `json:"version"`
	// Leaf is the RFC 6962 leaf hash of the record (base64 in JSON).
	Leaf tlog.Hash `json:"leaf"`
}

// Receipt is a parsed tlog-proof.
type Receipt struct {
	Extra      Extra
	Index      int64
	Proof      tlog.RecordProof
	Checkpoint []byte // the signed note, verbatim
}

var errFormat = errors.New("receipt: malformed")

// Marshal encodes r in the c2sp.org/tlog-proof@v1 text form.
func (r *Receipt) Marshal() ([]byte, error) {
	extra, err := json.Marshal(r.Extra)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString(header + "\n")
	b.WriteString("extra " + base64.StdEncoding.EncodeToString(extra) + "\n")
	fmt.Fprintf(&b, "index %d\n", r.Index)
	for _, h := range r.Proof {
		b.WriteString(base64.StdEncoding.EncodeToString(h[:]) + "\n")
	}
	b.WriteString("\n")
	b.Write(r.Checkpoint)
	return b.Bytes(), nil
}

// Parse decodes a receipt strictly; it does not verify it.
func Parse(data []byte) (*Receipt, error) {
	if len(data) > MaxReceiptBytes {
		return nil, fmt.Errorf("%w: %d bytes is over the %d-byte limit", errFormat, len(data), MaxReceiptBytes)
	}
	head, cp, ok := bytes.Cut(data, []byte("\n\n"))
	if !ok || len(cp) == 0 {
		return nil, fmt.Errorf("%w: no checkpoint after the proof", errFormat)
	}
	lines := strings.Split(string(head), "\n")
	if len(lines) < 3 || lines[0] != header {
		return nil, fmt.Errorf("%w: first line is not %q", errFormat, header)
	}
	r := &Receipt{Checkpoint: append([]byte(nil), cp...)}
	if !strings.HasPrefix(lines[1], "extra ") {
		return nil, fmt.Errorf("%w: missing extra line", errFormat)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(strings.TrimPrefix(lines[1], "extra "))
	if err != nil || len(raw) > MaxExtraBytes {
		return nil, fmt.Errorf("%w: bad extra data", errFormat)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r.Extra); err != nil {
		return nil, fmt.Errorf("%w: extra data: %v", errFormat, err)
	}
	idx, ok := strings.CutPrefix(lines[2], "index ")
	if !ok {
		return nil, fmt.Errorf("%w: missing index line", errFormat)
	}
	n, err := strconv.ParseInt(idx, 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != idx {
		return nil, fmt.Errorf("%w: bad index %q", errFormat, idx)
	}
	r.Index = n
	hashes := lines[3:]
	if len(hashes) > MaxProofHashes {
		return nil, fmt.Errorf("%w: %d proof hashes (limit %d)", errFormat, len(hashes), MaxProofHashes)
	}
	for _, l := range hashes {
		h, err := base64.StdEncoding.Strict().DecodeString(l)
		if err != nil || len(h) != tlog.HashSize {
			return nil, fmt.Errorf("%w: bad proof hash %q", errFormat, l)
		}
		r.Proof = append(r.Proof, tlog.Hash(h))
	}
	return r, nil
}

// Checkpoint is a parsed C2SP tlog-checkpoint body.
type Checkpoint struct {
	Origin string
	Size   int64
	Root   tlog.Hash
}

// ParseCheckpointBody parses the note text of a checkpoint (three lines).
func ParseCheckpointBody(text string) (Checkpoint, error) {
	lines := strings.SplitN(text, "\n", 4)
	if len(lines) < 4 || lines[0] == "" {
		return Checkpoint{}, errors.New("receipt: checkpoint body has fewer than three lines")
	}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != lines[1] {
		return Checkpoint{}, fmt.Errorf("receipt: checkpoint size %q is not a canonical decimal", lines[1])
	}
	h, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(h) != tlog.HashSize {
		return Checkpoint{}, fmt.Errorf("receipt: checkpoint root %q is not a base64 SHA-256", lines[2])
	}
	return Checkpoint{Origin: lines[0], Size: n, Root: tlog.Hash(h)}, nil
}

// Verify checks the checkpoint's signature with v, its origin, and the
// inclusion of the receipt's leaf at its index. It returns the checkpoint.
func (r *Receipt) Verify(v note.Verifier, origin string) (Checkpoint, error) {
	n, err := note.Open(r.Checkpoint, note.VerifierList(v))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("receipt: checkpoint signature: %w", err)
	}
	cp, err := ParseCheckpointBody(n.Text)
	if err != nil {
		return Checkpoint{}, err
	}
	if origin != "" && cp.Origin != origin {
		return Checkpoint{}, fmt.Errorf("receipt: checkpoint origin %q is not this vault's %q", cp.Origin, origin)
	}
	if r.Index >= cp.Size {
		return Checkpoint{}, fmt.Errorf("receipt: index %d is outside the checkpoint's tree of size %d", r.Index, cp.Size)
	}
	if err := tlog.CheckRecord(r.Proof, cp.Size, cp.Root, r.Index, r.Extra.Leaf); err != nil {
		return Checkpoint{}, fmt.Errorf("receipt: inclusion proof of record %d: %w", r.Index, err)
	}
	return cp, nil
}
