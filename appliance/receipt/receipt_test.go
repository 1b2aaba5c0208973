package receipt

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// memTree is an in-memory RFC 6962 tree for tests.
type memTree struct{ hashes []tlog.Hash }

func (m *memTree) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		out[i] = m.hashes[x]
	}
	return out, nil
}

func (m *memTree) add(n int64, data []byte) tlog.Hash {
	h, err := tlog.StoredHashes(n, data, m)
	if err != nil {
		panic(err)
	}
	m.hashes = append(m.hashes, h...)
	return tlog.RecordHash(data)
}

const origin = "coffre.test/vault/0001"

// fixture builds a tree of size records, signs a checkpoint, and returns a
// receipt for record idx.
func fixture(t testing.TB, size, idx int64, seed byte) (*Receipt, note.Verifier) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{seed}, 32)), origin)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	verifier, _ := note.NewVerifier(vkey)
	tree := &memTree{}
	var leaves []tlog.Hash
	for i := int64(0); i < size; i++ {
		leaves = append(leaves, tree.add(i, []byte(fmt.Sprintf("record %d", i))))
	}
	root, err := tlog.TreeHash(size, tree)
	if err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf("%s\n%d\n%s\n", origin, size, base64.StdEncoding.EncodeToString(root[:]))
	cp, err := note.Sign(&note.Note{Text: body}, signer)
	if err != nil {
		t.Fatal(err)
	}
	proof, err := tlog.ProveRecord(size, idx, tree)
	if err != nil {
		t.Fatal(err)
	}
	r := &Receipt{
		Extra:      Extra{UploadID: strings.Repeat("ab", 16), UserID: "alice", ItemID: "pw-1", Version: 1, Leaf: leaves[idx]},
		Index:      idx,
		Proof:      proof,
		Checkpoint: cp,
	}
	return r, verifier
}

func TestRoundTripAndVerify(t *testing.T) {
	for _, tc := range []struct{ size, idx int64 }{{1, 0}, {2, 1}, {7, 3}, {100, 99}, {1025, 512}} {
		t.Run(fmt.Sprintf("size%d_idx%d", tc.size, tc.idx), func(t *testing.T) {
			r, v := fixture(t, tc.size, tc.idx, 7)
			b, err := r.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			p, err := Parse(b)
			if err != nil {
				t.Fatalf("parse: %v\n%s", err, b)
			}
			b2, _ := p.Marshal()
			if !bytes.Equal(b, b2) {
				t.Fatalf("re-encoding differs:\n%s\n---\n%s", b, b2)
			}
			cp, err := p.Verify(v, origin)
			if err != nil {
				t.Fatal(err)
			}
			if cp.Size != tc.size {
				t.Fatalf("checkpoint size %d, want %d", cp.Size, tc.size)
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	r, v := fixture(t, 20, 5, 1)
	_, other := fixture(t, 20, 5, 2)
	cases := map[string]func() (*Receipt, note.Verifier, string){
		"wrong key":    func() (*Receipt, note.Verifier, string) { return r, other, origin },
		"wrong origin": func() (*Receipt, note.Verifier, string) { return r, v, "coffre.test/other" },
		"wrong leaf": func() (*Receipt, note.Verifier, string) {
			c := *r
			c.Extra.Leaf = sha256.Sum256([]byte("forged"))
			return &c, v, origin
		},
		"wrong index": func() (*Receipt, note.Verifier, string) {
			c := *r
			c.Index = 6
			return &c, v, origin
		},
		"index beyond tree": func() (*Receipt, note.Verifier, string) {
			c := *r
			c.Index = 20
			return &c, v, origin
		},
		"tampered proof": func() (*Receipt, note.Verifier, string) {
			c := *r
			c.Proof = append(tlog.RecordProof(nil), r.Proof...)
			c.Proof[0][0] ^= 1
			return &c, v, origin
		},
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			rr, vv, o := mk()
			if _, err := rr.Verify(vv, o); err == nil {
				t.Fatal("verified, want an error")
			}
		})
	}
}

// TestVectors replays testdata/receipt: *.tlog-proof files with the verifier
// key in vault.vkey; names starting with "bad-" must fail to parse or verify.
func TestVectors(t *testing.T) {
	dir := filepath.Join("..", "..", "testdata", "receipt")
	if os.Getenv("COFFRE_UPDATE_VECTORS") != "" {
		writeVectors(t, dir)
	}
	vk, err := os.ReadFile(filepath.Join(dir, "vault.vkey"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(vk)))
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.tlog-proof"))
	if len(files) < 3 {
		t.Fatalf("only %d vectors in %s", len(files), dir)
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			data, _ := os.ReadFile(f)
			r, err := Parse(data)
			if err == nil {
				_, err = r.Verify(v, origin)
			}
			wantBad := strings.HasPrefix(name, "bad-")
			if wantBad && err == nil {
				t.Fatal("accepted a bad vector")
			}
			if !wantBad && err != nil {
				t.Fatalf("rejected a good vector: %v", err)
			}
		})
	}
}

func writeVectors(t *testing.T, dir string) {
	os.MkdirAll(dir, 0o755)
	r, _ := fixture(t, 13, 4, 9)
	_, vkey, _ := note.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{9}, 32)), origin)
	os.WriteFile(filepath.Join(dir, "vault.vkey"), []byte(vkey+"\n"), 0o644)
	good, _ := r.Marshal()
	os.WriteFile(filepath.Join(dir, "good-13-4.tlog-proof"), good, 0o644)
	r1, _ := fixture(t, 1, 0, 9)
	g1, _ := r1.Marshal()
	os.WriteFile(filepath.Join(dir, "good-1-0.tlog-proof"), g1, 0o644)
	os.WriteFile(filepath.Join(dir, "bad-index.tlog-proof"), bytes.Replace(good, []byte("index 4"), []byte("index 5"), 1), 0o644)
	os.WriteFile(filepath.Join(dir, "bad-leading-zero.tlog-proof"), bytes.Replace(good, []byte("index 4"), []byte("index 04"), 1), 0o644)
	os.WriteFile(filepath.Join(dir, "bad-no-checkpoint.tlog-proof"), good[:bytes.Index(good, []byte("\n\n"))+1], 0o644)
	r2, _ := fixture(t, 13, 4, 10)
	other, _ := r2.Marshal()
	os.WriteFile(filepath.Join(dir, "bad-other-key.tlog-proof"), other, 0o644)
}

func FuzzParse(f *testing.F) {
	r, _ := fixture(f, 9, 3, 3)
	b, _ := r.Marshal()
	f.Add(b)
	f.Add([]byte(header + "\nextra e30=\nindex 0\n\nx\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			return
		}
		// Whatever parses re-encodes to the same bytes (canonical form).
		out, err := p.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if p2, err := Parse(out); err != nil || p2.Index != p.Index || len(p2.Proof) != len(p.Proof) {
			t.Fatalf("re-parse: %v", err)
		}
	})
}
