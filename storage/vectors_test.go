package storage

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Vectors live in testdata/drive/ at the repository root. Regenerate with
// COFFRE_UPDATE_VECTORS=1 go test -run TestVectors ./storage/ (and the fuzz
// seed corpus with COFFRE_UPDATE_CORPUS=1).

const vectorDir = "../testdata/drive"

// memDevice is an in-memory device for encoding vectors with the real
// writer.
type memDevice struct{ b []byte }

func (m *memDevice) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > int64(len(m.b)) {
		return 0, io.ErrUnexpectedEOF
	}
	return copy(p, m.b[off:]), nil
}
func (m *memDevice) ReadCached(p []byte, off int64) (int, error) { return m.ReadAt(p, off) }
func (m *memDevice) WriteAt(p []byte, off int64) (int, error)    { return copy(m.b[off:], p), nil }
func (m *memDevice) Sync() error                                 { return nil }
func (m *memDevice) Size() int64                                 { return int64(len(m.b)) }
func (m *memDevice) ReadOnly() bool                              { return false }
func (m *memDevice) Close() error                                { return nil }

type superblockVector struct {
	Name    string `json:"name"`
	Comment string `json:"comment,omitempty"`
	Hex     string `json:"hex"`
	Expect  string `json:"expect"` // "ok" or "error"
	// For "ok": the decoded fields.
	Seq        uint64 `json:"seq,omitempty"`
	VaultID    string `json:"vault_id,omitempty"`
	UUID       string `json:"uuid,omitempty"`
	Slot       int    `json:"slot,omitempty"`
	Size       int64  `json:"size,omitempty"`
	TreeSize   uint64 `json:"tree_size,omitempty"`
	LogEnd     int64  `json:"log_end,omitempty"`
	Checkpoint string `json:"checkpoint,omitempty"`
	Keys       []struct {
		Epoch uint32 `json:"epoch"`
		Hex   string `json:"hex"`
	} `json:"keys,omitempty"`
}

type recordVector struct {
	Name    string `json:"name"`
	Comment string `json:"comment,omitempty"`
	Key     string `json:"key"`      // record key, hex
	VaultID string `json:"vault_id"` // hex
	Record  string `json:"record"`   // the record bytes as on the drive, hex
	Expect  string `json:"expect"`   // "ok", "header-error", "payload-error" or "auth-error"
	// For "ok":
	Index   uint64 `json:"index"`
	Type    uint8  `json:"type"`
	Meta    string `json:"meta,omitempty"`      // hex
	BodySHA string `json:"body_sha256"`         // hex
	BodyLen uint64 `json:"body_len"`            //
	Leaf    string `json:"leaf_hash,omitempty"` // RFC 6962 leaf hash, hex
}

type checkpointVector struct {
	Name     string `json:"name"`
	Comment  string `json:"comment,omitempty"`
	Verifier string `json:"verifier_key"`
	Note     string `json:"note"`
	Expect   string `json:"expect"` // "ok" or "error"
	Origin   string `json:"origin,omitempty"`
	Size     uint64 `json:"size,omitempty"`
	Root     string `json:"root,omitempty"` // base64
}

func fixedKey() []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

func fixedVault() (v [16]byte) {
	for i := range v {
		v[i] = 0xa0 + byte(i)
	}
	return
}

// sealVectorRecord encodes one record with the real batch writer into
// memory.
func sealVectorRecord(t testing.TB, h *Header, meta, body []byte) []byte {
	h.MetaLen = uint32(len(meta))
	mem := &memDevice{b: make([]byte, 64<<20)}
	d := &drive{dev: mem, sb: &superblock{DataEnd: int64(len(mem.b))}}
	w := newBatchWriter([]*drive{d}, DataStart, 1)
	defer w.release()
	aead, err := newAEAD(fixedKey())
	if err != nil {
		t.Fatal(err)
	}
	if h.Type == TypeCheckpoint {
		err = writeClear(w, h, meta, body)
	} else {
		err = writeEncrypted(t.Context(), w, h, aead, fixedVault(), meta, bytes.NewReader(body))
	}
	if err != nil {
		t.Fatal(err)
	}
	w.commit()
	return bytes.Clone(mem.b[DataStart : DataStart+h.RecordLen()])
}

func vectorSigner(t testing.TB) (note.Signer, string) {
	seed := bytes.Repeat([]byte{7}, 32)
	skey, vkey, err := note.GenerateKey(bytes.NewReader(seed), "coffre-vector-audit")
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return s, vkey
}

func genVectors(t *testing.T) {
	vault := fixedVault()
	// Superblocks.
	base := &superblock{Seq: 7, VaultID: vault, Slot: 2, Size: 1 << 20, DataEnd: 1<<20 - SuperblockSize,
		TreeSize: 3, LogEnd: DataStart + 3*BlockSize,
		Keys:       []WrappedKey{{Epoch: 0, Key: []byte("wrapped record key, epoch 0")}, {Epoch: 1, Key: []byte("epoch 1")}},
		Checkpoint: []byte("coffre.test/vault\n2\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— x AAAA\n")}
	for i := range base.UUID {
		base.UUID[i] = byte(0x10 + i)
	}
	base.Roster[1] = &Member{UUID: base.UUID}
	base.Roster[3] = &Member{UUID: [16]byte{0xee, 1}, Retired: true}
	good, err := encodeSuperblock(base)
	if err != nil {
		t.Fatal(err)
	}
	var sbs []superblockVector
	okv := superblockVector{Name: "valid", Hex: hex.EncodeToString(good), Expect: "ok", Seq: 7,
		VaultID: UUIDString(vault), UUID: UUIDString(base.UUID), Slot: 2, Size: 1 << 20, TreeSize: 3,
		LogEnd: DataStart + 3*BlockSize, Checkpoint: string(base.Checkpoint)}
	for _, k := range base.Keys {
		okv.Keys = append(okv.Keys, struct {
			Epoch uint32 `json:"epoch"`
			Hex   string `json:"hex"`
		}{k.Epoch, hex.EncodeToString(k.Key)})
	}
	sbs = append(sbs, okv)
	bad := func(name string, mut func(b []byte), fixSum bool) {
		b := bytes.Clone(good)
		mut(b)
		if fixSum {
			s := sha256.Sum256(b[:sbSumOffset])
			copy(b[sbSumOffset:], s[:])
		}
		sbs = append(sbs, superblockVector{Name: name, Hex: hex.EncodeToString(b), Expect: "error"})
	}
	bad("bad-checksum", func(b []byte) { b[100] ^= 1 }, false)
	bad("bad-magic", func(b []byte) { b[0] = 'X' }, true)
	bad("version-2", func(b []byte) { b[9] = 2 }, true)
	bad("slot-5", func(b []byte) { b[56] = 5 }, true)
	bad("nonzero-tail", func(b []byte) { b[4000] = 1 }, true)
	bad("tree-size-too-big", func(b []byte) { b[91] = 9 }, true)
	bad("log-end-unaligned", func(b []byte) { b[99] = 1 }, true)
	bad("zero-keys", func(b []byte) { b[sbKeysOff] = 0 }, true)
	bad("roster-bad-state", func(b []byte) { b[sbRosterOff+16] = 3 }, true)
	bad("sequence-zero", func(b []byte) { clear(b[16:24]) }, true)
	writeJSON(t, "superblocks.json", sbs)

	// Records.
	var recs []recordVector
	add := func(name string, h *Header, meta, body []byte) []byte {
		rb := sealVectorRecord(t, h, meta, body)
		bs := sha256.Sum256(body)
		ph, _ := parseHeader(rb)
		recs = append(recs, recordVector{Name: name, Key: hex.EncodeToString(fixedKey()), VaultID: hex.EncodeToString(vault[:]),
			Record: hex.EncodeToString(rb), Expect: "ok", Index: h.Index, Type: uint8(h.Type), Meta: hex.EncodeToString(meta),
			BodySHA: hex.EncodeToString(bs[:]), BodyLen: uint64(len(body)), Leaf: fmt.Sprintf("%x", ph.leafHash())})
		return rb
	}
	nonce := [16]byte{0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f}
	first := add("item-small", &Header{Type: TypeItem, Index: 0, MetaLen: 5, Nonce: nonce}, []byte("hello"), []byte("a small body"))
	prev, _ := parseHeader(first)
	add("empty", &Header{Type: TypeEscrow, Index: 1, Nonce: nonce, Prev: prev.leafHash()}, nil, nil)
	body := bytes.Repeat([]byte("0123456789abcdef"), ChunkSize/16+10) // two chunks
	two := add("two-chunks", &Header{Type: TypeItem, Index: 2, MetaLen: 3, Nonce: nonce, Prev: tlog.Hash{1}}, []byte("two"), body)
	add("exact-chunk", &Header{Type: TypeItem, Index: 3, Nonce: nonce, Prev: tlog.Hash{2}}, nil, body[:ChunkSize])
	add("unknown-type", &Header{Type: 200, Index: 4, Nonce: nonce, Prev: tlog.Hash{3}}, []byte("m"), []byte("kept, not interpreted"))
	// A checkpoint record at index 5 whose batch began at record 3: its
	// meta is that resume point (index 3, offset, the two subtree roots of
	// the tree of records 0..2).
	var fr3 frontier
	for i := range 3 {
		fr3.add(tlog.RecordHash([]byte(fmt.Sprintf("leaf %d", i))))
	}
	resume3 := resume{index: 3, off: DataStart + 3*BlockSize, fr: fr3}.encode()
	note5 := []byte("coffre.test/vault\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— k AAAA\n")
	add("checkpoint-clear", &Header{Type: TypeCheckpoint, Flags: FlagClear, Index: 5, Prev: tlog.Hash{4}}, resume3, note5)
	for name, meta := range map[string][]byte{
		"checkpoint-without-resume-point": nil,
		"checkpoint-resume-point-ragged":  append(bytes.Clone(resume3), 1),
	} {
		rb := sealVectorRecord(t, &Header{Type: TypeCheckpoint, Flags: FlagClear, Index: 5, Prev: tlog.Hash{4}}, meta, note5)
		recs = append(recs, recordVector{Name: name, Key: hex.EncodeToString(fixedKey()), VaultID: hex.EncodeToString(vault[:]),
			Record: hex.EncodeToString(rb), Expect: "header-error"})
	}
	mut := func(name, expect string, src []byte, f func(b []byte)) {
		b := bytes.Clone(src)
		f(b)
		recs = append(recs, recordVector{Name: name, Key: hex.EncodeToString(fixedKey()), VaultID: hex.EncodeToString(vault[:]),
			Record: hex.EncodeToString(b), Expect: expect})
	}
	resum := func(b []byte) {
		s := sha256.Sum256(b[:hdrSumOff])
		copy(b[hdrSumOff:HeaderSize], s[:])
	}
	mut("header-checksum", "header-error", first, func(b []byte) { b[8] ^= 1 })
	mut("payload-flipped", "payload-error", two, func(b []byte) { b[HeaderSize+65600] ^= 1 })
	mut("wrong-index-in-aad", "auth-error", first, func(b []byte) { b[15] ^= 1; resum(b) })
	mut("chunk-swap", "auth-error", two, func(b []byte) {
		// swap the first bytes of the two chunks and fix the payload hash
		p := b[HeaderSize:]
		p[0], p[ChunkSize+16] = p[ChunkSize+16], p[0]
		h, _ := parseHeader(b)
		s := sha256.Sum256(p[:h.PayloadLen])
		copy(b[88:120], s[:])
		resum(b)
	})
	mut("clear-flag-on-item", "header-error", first, func(b []byte) { b[7] = 1; resum(b) })
	mut("payload-length-mismatch", "header-error", first, func(b []byte) { b[87]++; resum(b) })
	writeJSON(t, "records.json", recs)

	// Checkpoints.
	s, vkey := vectorSigner(t)
	var cps []checkpointVector
	root := tlog.Hash(sha256.Sum256([]byte("root")))
	sign := func(text string) string {
		b, err := note.Sign(&note.Note{Text: text}, s)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	c := Checkpoint{Origin: "coffre.test/vault", Size: 42, Hash: root}
	cps = append(cps, checkpointVector{Name: "valid", Verifier: vkey, Note: sign(c.Text()), Expect: "ok",
		Origin: c.Origin, Size: 42, Root: strings.TrimSpace(strings.Split(c.Text(), "\n")[2])})
	good2 := sign(c.Text())
	cps = append(cps, checkpointVector{Name: "bad-signature", Verifier: vkey, Note: strings.Replace(good2, "\n42\n", "\n43\n", 1), Expect: "error"})
	for name, text := range map[string]string{
		"leading-zero-size":  "coffre.test/vault\n042\n" + base64Root(root) + "\n",
		"extension-line":     c.Text() + "extra\n",
		"short-hash":         "coffre.test/vault\n42\nAAAA\n",
		"space-in-origin":    "coffre test\n42\n" + base64Root(root) + "\n",
		"missing-final-line": "coffre.test/vault\n42\n",
	} {
		cps = append(cps, checkpointVector{Name: name, Verifier: vkey, Note: sign(text), Expect: "error"})
	}
	_, otherV := func() (string, string) {
		_, v, _ := note.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{8}, 32)), "coffre-vector-audit")
		return "", v
	}()
	cps = append(cps, checkpointVector{Name: "other-key-same-name", Verifier: otherV, Note: good2, Expect: "error"})
	writeJSON(t, "checkpoints.json", cps)
}

func base64Root(h tlog.Hash) string {
	return strings.Split(Checkpoint{Origin: "x", Hash: h}.Text(), "\n")[2]
}

func writeJSON(t *testing.T, name string, v any) {
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vectorDir, name), append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

func loadJSON(t *testing.T, name string, v any) {
	b, err := os.ReadFile(filepath.Join(vectorDir, name))
	if err != nil {
		t.Fatalf("%v (regenerate with COFFRE_UPDATE_VECTORS=1)", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func TestVectors(t *testing.T) {
	if os.Getenv("COFFRE_UPDATE_VECTORS") == "1" {
		genVectors(t)
	}
	t.Run("superblock", func(t *testing.T) {
		var vs []superblockVector
		loadJSON(t, "superblocks.json", &vs)
		for _, v := range vs {
			t.Run(v.Name, func(t *testing.T) {
				b, _ := hex.DecodeString(v.Hex)
				s, err := parseSuperblock(b)
				if v.Expect != "ok" {
					if err == nil {
						t.Fatalf("parsed, want %s", v.Expect)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if s.Seq != v.Seq || UUIDString(s.VaultID) != v.VaultID || UUIDString(s.UUID) != v.UUID || s.Slot != v.Slot ||
					s.Size != v.Size || s.TreeSize != v.TreeSize || s.LogEnd != v.LogEnd || string(s.Checkpoint) != v.Checkpoint || len(s.Keys) != len(v.Keys) {
					t.Fatalf("decoded %+v, want %+v", s, v)
				}
				for i, k := range v.Keys {
					if s.Keys[i].Epoch != k.Epoch || hex.EncodeToString(s.Keys[i].Key) != k.Hex {
						t.Fatalf("key %d", i)
					}
				}
			})
		}
	})
	t.Run("record", func(t *testing.T) {
		var vs []recordVector
		loadJSON(t, "records.json", &vs)
		for _, v := range vs {
			t.Run(v.Name, func(t *testing.T) { replayRecord(t, v) })
		}
	})
	t.Run("checkpoint", func(t *testing.T) {
		var vs []checkpointVector
		loadJSON(t, "checkpoints.json", &vs)
		for _, v := range vs {
			t.Run(v.Name, func(t *testing.T) {
				ver, err := note.NewVerifier(v.Verifier)
				if err != nil {
					t.Fatal(err)
				}
				c, err := OpenCheckpoint([]byte(v.Note), ver, "")
				if v.Expect != "ok" {
					if err == nil {
						t.Fatalf("verified, want %s", v.Expect)
					}
					return
				}
				if err != nil || c.Origin != v.Origin || c.Size != v.Size || base64Root(c.Hash) != v.Root {
					t.Fatalf("%+v %v", c, err)
				}
			})
		}
	})
}

func replayRecord(t *testing.T, v recordVector) {
	rb, _ := hex.DecodeString(v.Record)
	key, _ := hex.DecodeString(v.Key)
	vb, _ := hex.DecodeString(v.VaultID)
	var vault [16]byte
	copy(vault[:], vb)
	h, err := parseHeader(rb)
	if v.Expect == "header-error" {
		if err == nil {
			t.Fatal("header parsed, want header-error")
		}
		return
	}
	if err != nil {
		t.Fatalf("header: %v", err)
	}
	if int64(len(rb)) != h.RecordLen() {
		t.Fatalf("record is %d bytes, header says %d", len(rb), h.RecordLen())
	}
	mem := &memDevice{b: rb}
	r := newBlockReader(mem, int64(len(rb)), 1<<20)
	sec := newSection(r, HeaderSize, int64(h.PayloadLen))
	aead, err := newAEAD(key)
	if err != nil {
		t.Fatal(err)
	}
	meta, body, err := openPayload(h, aead, vault, sec)
	var got []byte
	if err == nil {
		got, err = io.ReadAll(body)
	}
	switch v.Expect {
	case "ok":
		if err != nil {
			t.Fatal(err)
		}
		bs := sha256.Sum256(got)
		if h.Index != v.Index || uint8(h.Type) != v.Type || hex.EncodeToString(meta) != v.Meta || hex.EncodeToString(bs[:]) != v.BodySHA ||
			uint64(len(got)) != v.BodyLen || fmt.Sprintf("%x", h.leafHash()) != v.Leaf {
			t.Fatalf("decoded index %d type %d meta %x body %d bytes", h.Index, h.Type, meta, len(got))
		}
	case "payload-error":
		if err == nil || !strings.Contains(err.Error(), "hash") && !strings.Contains(err.Error(), "authentication") {
			t.Fatalf("got %v, want a payload error", err)
		}
	case "auth-error":
		if err == nil || !strings.Contains(err.Error(), "authentication") {
			t.Fatalf("got %v, want an authentication error", err)
		}
	default:
		t.Fatalf("unknown expectation %q", v.Expect)
	}
}
