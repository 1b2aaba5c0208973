package catalog

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/catalog/meta-vectors.json from the generator")

const vectorsFile = "../../testdata/catalog/meta-vectors.json"

// vectorMeta is Meta as written in the vectors file.
type vectorMeta struct {
	Kind        string            `json:"kind"`
	UserID      string            `json:"user_id"`
	ItemID      string            `json:"item_id"`
	Version     uint32            `json:"version"`
	UploadID    string            `json:"upload_id"`
	ItemKind    string            `json:"item_kind"`
	ContentType string            `json:"content_type"`
	Size        int64             `json:"size"`
	Digest      string            `json:"digest"`
	Supersedes  uint64            `json:"supersedes"`
	Algorithms  []string          `json:"algorithms"`
	Attrs       map[string]string `json:"attrs"`
}

type vector struct {
	Name  string      `json:"name"`
	Hex   string      `json:"hex"`
	Valid bool        `json:"valid"`
	Meta  *vectorMeta `json:"meta,omitempty"`
	Error string      `json:"error,omitempty"`
}

func toVectorMeta(m Meta) *vectorMeta {
	return &vectorMeta{m.Kind.String(), m.UserID, m.ItemID, m.Version, m.UploadID, m.ItemKind,
		m.ContentType, m.Size, hex.EncodeToString(m.Digest[:]), m.Supersedes, m.Algorithms, m.Attrs}
}

func fromVectorMeta(t *testing.T, v *vectorMeta) Meta {
	t.Helper()
	k, err := ParseMetaKind(v.Kind)
	if err != nil {
		t.Fatal(err)
	}
	m := Meta{Kind: k, UserID: v.UserID, ItemID: v.ItemID, Version: v.Version, UploadID: v.UploadID,
		ItemKind: v.ItemKind, ContentType: v.ContentType, Size: v.Size, Supersedes: v.Supersedes,
		Algorithms: v.Algorithms, Attrs: v.Attrs}
	d, err := hex.DecodeString(v.Digest)
	if err != nil || len(d) != 32 {
		t.Fatalf("bad digest %q in vector", v.Digest)
	}
	copy(m.Digest[:], d)
	return m
}

// exampleItem is the worked example of docs/formats/catalog-meta.md.
func exampleItem() Meta {
	return Meta{
		Kind: KindItem, UserID: "alice", ItemID: "pw-1", Version: 1,
		UploadID: "00112233445566778899aabbccddeeff", ItemKind: "password",
		ContentType: "text/plain", Size: 12, Digest: sha256.Sum256([]byte("hello world\n")),
		Algorithms: []string{"openpgp:p521-ecdh", "aes256", "seipdv1"},
		Attrs:      map[string]string{"label": "bank"},
	}
}

func mustEncode(t *testing.T, m Meta) []byte {
	t.Helper()
	b, err := EncodeMeta(m)
	if err != nil {
		t.Fatalf("EncodeMeta: %v", err)
	}
	return b
}

// generateVectors builds the vector list; -update writes it to the file.
func generateVectors(t *testing.T) []vector {
	var vs []vector
	valid := func(name string, m Meta) {
		b := mustEncode(t, m)
		vs = append(vs, vector{Name: name, Hex: hex.EncodeToString(b), Valid: true, Meta: toVectorMeta(m)})
	}
	invalid := func(name string, b []byte, errSub string) {
		vs = append(vs, vector{Name: name, Hex: hex.EncodeToString(b), Valid: false, Error: errSub})
	}
	ex := exampleItem()
	valid("item-example", ex)
	v2 := ex
	v2.Version, v2.Supersedes, v2.Attrs, v2.UploadID = 2, 7, nil, "ffeeddccbbaa99887766554433221100"
	valid("item-v2-supersedes", v2)
	valid("escrow", Meta{Kind: KindEscrow, UserID: "bob@example.org", Algorithms: []string{"openpgp:p521-ecdh", "shamir:gf256"}})
	valid("genesis-empty", Meta{Kind: KindGenesis})
	valid("checkpoint", Meta{Kind: KindCheckpoint, Attrs: map[string]string{"origin": "coffre.example/vault", "size": "812"}})
	valid("supersede-only", Meta{Kind: KindSupersede, Supersedes: 1})
	valid("drive-event-utf8-attr", Meta{Kind: KindDriveEvent, Attrs: map[string]string{"note": "tiroir n°3 — bureau"}})
	valid("item-utf8-user-id", Meta{Kind: KindItem, UserID: "José García", ItemID: "letter:2026", Version: 3,
		UploadID: uploadID(99), ItemKind: "letter", ContentType: "text/plain; charset=utf-8", Size: 1})
	maxed := Meta{Kind: KindItem, UserID: strings.Repeat("é", MaxIDLen/2), ItemID: strings.Repeat("~", MaxIDLen),
		Version: 0xffffffff, UploadID: strings.Repeat("f", 32), ItemKind: strings.Repeat("z", MaxItemKindLen),
		ContentType: strings.Repeat(" ", MaxContentTypeLen), Size: MaxItemSize, Supersedes: 1<<64 - 1, Attrs: map[string]string{}}
	for i := range maxed.Digest {
		maxed.Digest[i] = 0xff
	}
	for i := 0; i < MaxAlgorithms; i++ {
		maxed.Algorithms = append(maxed.Algorithms, strings.Repeat(string(rune('a'+i)), MaxAlgorithmLen))
	}
	for i := 0; i < MaxAttrs; i++ {
		maxed.Attrs[strings.Repeat(string(rune('a'+i)), MaxAttrKeyLen)] = strings.Repeat("é", MaxAttrsValueTotal/MaxAttrs/2)
	}
	valid("every-field-at-its-limit", maxed)

	good := mustEncode(t, ex)
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte{}, good...)) }
	invalid("empty", nil, "truncated in header")
	invalid("truncated-header", good[:3], "truncated in header")
	invalid("truncated-last-byte", good[:len(good)-1], "truncated in attribute value")
	invalid("trailing-byte", append(append([]byte{}, good...), 0), "1 trailing bytes")
	invalid("bad-magic", mut(func(b []byte) []byte { b[0] = 'X'; return b }), "bad magic")
	invalid("format-2", mut(func(b []byte) []byte { b[2] = 2; return b }), "unsupported format version 2")
	invalid("kind-0", mut(func(b []byte) []byte { b[3] = 0; return b }), "unknown kind 0")
	invalid("kind-14", mut(func(b []byte) []byte { b[3] = 14; return b }), "unknown kind 14")
	invalid("user-id-with-control-char", mut(func(b []byte) []byte { b[5] = 0x01; return b }), "user id: control")
	invalid("user-id-not-utf8", mut(func(b []byte) []byte { b[5] = 0xc3; return b }), "user id: not valid UTF-8")
	invalid("user-id-bidi-override", mustRaw(t, func(m *Meta) { m.UserID = "al\u202eice" }), "user id: control or bidi")
	invalid("item-id-with-space", mustRaw(t, func(m *Meta) { m.ItemID = "pw 1" }), "item id: not printable")
	invalid("user-id-length-overruns", mut(func(b []byte) []byte { b[4] = 0xff; return b }), "")
	off := 4 + 6 + 5 + 4 // start of the upload id str8
	invalid("upload-id-uppercase", mut(func(b []byte) []byte { b[off+1] = 'A'; return b }), "upload id is not 32 lowercase hex")
	invalid("item-version-0", mustRaw(t, func(m *Meta) { m.Version = 0 }), "version 0")
	invalid("item-without-upload-id", mustRaw(t, func(m *Meta) { m.UploadID = "" }), "without an upload id")
	invalid("item-without-user", mustRaw(t, func(m *Meta) { m.UserID = "" }), "without a user id")
	invalid("negative-size", mustRaw(t, func(m *Meta) { m.Size = -1 }), "size -1 outside")
	invalid("size-above-limit", mustRaw(t, func(m *Meta) { m.Size = MaxItemSize + 1 }), "outside")
	invalid("algorithm-twice", mustRaw(t, func(m *Meta) { m.Algorithms = []string{"aes256", "aes256"} }), "listed twice")
	invalid("algorithm-empty", mustRaw(t, func(m *Meta) { m.Algorithms = []string{""} }), "algorithm 0")
	invalid("algorithm-uppercase", mustRaw(t, func(m *Meta) { m.Algorithms = []string{"AES256"} }), "algorithm 0")
	invalid("attrs-out-of-order", rawAttrs(t, [][2]string{{"b", "1"}, {"a", "2"}}), "strictly ascending")
	invalid("attrs-duplicate", rawAttrs(t, [][2]string{{"a", "1"}, {"a", "2"}}), "strictly ascending")
	invalid("attr-value-not-utf8", rawAttrs(t, [][2]string{{"a", "\xff"}}), "not UTF-8")
	invalid("attr-key-uppercase", rawAttrs(t, [][2]string{{"A", "x"}}), "attribute key")
	invalid("too-long", make([]byte, MaxMetaSize+1), "more than the")
	invalid("attr-values-over-total", rawAttrs(t, [][2]string{{"a", strings.Repeat("x", MaxAttrValueLen)}, {"b", "y"}}), "attribute values total")
	invalid("attr-value-over-limit", rawAttrs(t, [][2]string{{"a", strings.Repeat("x", MaxAttrValueLen+1)}}), "")
	return vs
}

// mustRaw encodes the example item with edit applied, bypassing validation,
// so that vectors can hold inputs EncodeMeta refuses to produce.
func mustRaw(t *testing.T, edit func(*Meta)) []byte {
	m := exampleItem()
	edit(&m)
	return rawEncode(m, nil)
}

func rawAttrs(t *testing.T, attrs [][2]string) []byte {
	m := exampleItem()
	m.Attrs = nil
	return rawEncode(m, attrs)
}

// rawEncode writes the layout of docs/formats/catalog-meta.md without any
// checks; attrs (in the given order) replace m.Attrs when non-nil.
func rawEncode(m Meta, attrs [][2]string) []byte {
	b := []byte{'C', 'M', 1, byte(m.Kind)}
	s8 := func(s string) { b = append(append(b, byte(len(s))), s...) }
	s8(m.UserID)
	s8(m.ItemID)
	b = binary.BigEndian.AppendUint32(b, m.Version)
	s8(m.UploadID)
	s8(m.ItemKind)
	s8(m.ContentType)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Size))
	b = append(b, m.Digest[:]...)
	b = binary.BigEndian.AppendUint64(b, m.Supersedes)
	b = append(b, byte(len(m.Algorithms)))
	for _, a := range m.Algorithms {
		s8(a)
	}
	if attrs == nil {
		for k, v := range m.Attrs {
			attrs = append(attrs, [2]string{k, v})
		}
	}
	b = append(b, byte(len(attrs)))
	for _, kv := range attrs {
		s8(kv[0])
		b = binary.BigEndian.AppendUint16(b, uint16(len(kv[1])))
		b = append(b, kv[1]...)
	}
	return b
}

func TestMetaVectors(t *testing.T) {
	if *update {
		vs := generateVectors(t)
		b, err := json.MarshalIndent(vs, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(vectorsFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorsFile, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatalf("%v (regenerate with go test -run TestMetaVectors -update)", err)
	}
	var vs []vector
	if err := json.Unmarshal(raw, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) < 30 {
		t.Fatalf("only %d vectors in %s", len(vs), vectorsFile)
	}
	for _, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			b, err := hex.DecodeString(v.Hex)
			if err != nil {
				t.Fatal(err)
			}
			m, err := ParseMeta(b)
			if !v.Valid {
				if err == nil {
					t.Fatalf("ParseMeta accepted an invalid vector: %+v", m)
				}
				if !strings.Contains(err.Error(), v.Error) || !strings.HasPrefix(err.Error(), "catalog: malformed record meta: ") {
					t.Fatalf("error %q, want it to contain %q", err, v.Error)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseMeta: %v", err)
			}
			want := fromVectorMeta(t, v.Meta)
			if !metaEqual(m, want) {
				t.Fatalf("parsed %+v\nwant   %+v", m, want)
			}
			if re := mustEncode(t, want); !bytes.Equal(re, b) {
				t.Fatalf("re-encoding gives %x\nwant %x", re, b)
			}
		})
	}
}

// metaEqual compares metas treating nil and empty slices/maps alike.
func metaEqual(a, b Meta) bool {
	if len(a.Algorithms) == 0 {
		a.Algorithms = nil
	}
	if len(b.Algorithms) == 0 {
		b.Algorithms = nil
	}
	if len(a.Attrs) == 0 {
		a.Attrs = nil
	}
	if len(b.Attrs) == 0 {
		b.Attrs = nil
	}
	return reflect.DeepEqual(a, b)
}

// TestParseMetaTruncated: every proper prefix of a valid meta is refused as
// truncated, naming the field it ends in.
func TestParseMetaTruncated(t *testing.T) {
	m := item("alice", "pw-1", 1, 5, 0)
	m.Attrs = map[string]string{"label": "bank"}
	b, err := EncodeMeta(m)
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(b); n++ {
		_, err := ParseMeta(b[:n])
		if !errors.Is(err, ErrMalformedMeta) || !strings.Contains(err.Error(), "truncated in ") {
			t.Fatalf("prefix of %d bytes: %v", n, err)
		}
	}
	want := map[int]string{
		4:  "truncated in user id length (need 1 bytes, 0 left)",
		5:  "truncated in user id (need 5 bytes, 0 left)",
		10: "truncated in item id length (need 1 bytes, 0 left)",
	}
	for n, w := range want {
		if _, err := ParseMeta(b[:n]); err == nil || !strings.HasSuffix(err.Error(), w) {
			t.Errorf("prefix of %d bytes: %v, want …%s", n, err, w)
		}
	}
}
