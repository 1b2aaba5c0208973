package qr

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

// The vectors live in testdata/qr at the repository root:
//   frames.json   frame texts with the expected parse result;
//   messages.json messages with their options, the exact frames an encoder
//                 must produce, and the frame subsets that must rebuild them;
//   *.png + *.txt rendered frames and the text they must decode to.
// COFFRE_QR_REGEN=1 go test -run TestVectors rewrites them.

const vectorDir = "../../testdata/qr"

type frameVector struct {
	Name          string `json:"name"`
	Text          string `json:"text"`
	Expect        string `json:"expect"` // ok, not-frame, corrupt, version, limit
	Transfer      string `json:"transfer,omitempty"`
	MessageLen    int    `json:"message_len,omitempty"`
	FragmentSize  int    `json:"fragment_size,omitempty"`
	FragmentCount int    `json:"fragment_count,omitempty"`
	Seq           int    `json:"seq,omitempty"`
	PayloadHex    string `json:"payload_hex,omitempty"`
}

type messageVector struct {
	Name         string   `json:"name"`
	MessageHex   string   `json:"message_hex"`
	FragmentSize int      `json:"fragment_size"`
	Transfer     string   `json:"transfer"`
	Frames       []string `json:"frames"`       // frames 0..len-1, exactly
	Indices      [][]int  `json:"indices"`      // fragments XORed into each frame
	RebuildFrom  []int    `json:"rebuild_from"` // a subset of Frames (by seq) that must rebuild the message
	Expect       string   `json:"expect"`       // ok, or digest when the subset is tampered
}

var expectErr = map[string]error{"not-frame": ErrNotFrame, "corrupt": ErrCorrupt, "version": ErrVersion, "limit": ErrLimit}

func rawFrameText(b []byte, fixCRC bool) string {
	if fixCRC {
		b = fixChecksum(b)
	}
	return Prefix + Base45Encode(b)
}

func fixChecksum(b []byte) []byte {
	b = append([]byte(nil), b...)
	n := len(b) - ChecksumLen
	c := crc32ieee(b[:n])
	b[n], b[n+1], b[n+2], b[n+3] = byte(c>>24), byte(c>>16), byte(c>>8), byte(c)
	return b
}

func genFrameVectors(t *testing.T) []frameVector {
	msg := []byte("Coffre QR transport test vector: a short message.")
	e, err := NewEncoder(msg, Options{FragmentSize: 16})
	if err != nil {
		t.Fatal(err)
	}
	good, _ := e.Frame(1)
	mix, _ := e.Frame(e.Count() + 2)
	gf, _ := ParseFrame(good, 0)
	raw, _ := gf.MarshalBinary()
	mutate := func(f func(b []byte)) []byte { b := append([]byte(nil), raw...); f(b); return b }
	var vs []frameVector
	add := func(name, text, expect string) {
		v := frameVector{Name: name, Text: text, Expect: expect}
		if expect == "ok" {
			fr, err := ParseFrame(text, 0)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			v.Transfer, v.MessageLen, v.FragmentSize, v.FragmentCount, v.Seq = fr.Transfer.String(), fr.MessageLen, fr.FragmentSize, fr.FragmentCount, fr.Seq
			v.PayloadHex = hex.EncodeToString(fr.Payload)
		}
		vs = append(vs, v)
	}
	add("systematic", good, "ok")
	add("mixed", mix, "ok")
	add("empty", "", "not-frame")
	add("no-prefix", good[2:], "not-frame")
	add("lowercase", "cq"+good[2:], "not-frame")
	add("byte-mode-char", good+"a", "not-frame")
	add("base45-overflow", Prefix+"GGW"+good[5:], "corrupt")
	add("base45-dangling", good+"0", "corrupt")
	add("truncated", good[:len(good)-3], "corrupt")
	add("short", Prefix+Base45Encode(raw[:20]), "corrupt")
	add("crc-flip", rawFrameText(mutate(func(b []byte) { b[30] ^= 1 }), false), "corrupt")
	add("version-2", rawFrameText(mutate(func(b []byte) { b[0] = 2 }), true), "version")
	add("reserved-set", rawFrameText(mutate(func(b []byte) { b[1] = 1 }), true), "corrupt")
	add("huge-length", rawFrameText(mutate(func(b []byte) { b[10], b[11], b[12], b[13] = 0xff, 0xff, 0xff, 0xff }), true), "limit")
	add("huge-count", rawFrameText(mutate(func(b []byte) { b[16], b[17] = 0x7f, 0xff }), true), "limit")
	add("count-mismatch", rawFrameText(mutate(func(b []byte) { b[19]++ }), true), "corrupt")
	add("fragment-too-small", rawFrameText(mutate(func(b []byte) { b[14], b[15] = 0, 8 }), true), "limit")
	add("seq-over-limit", rawFrameText(mutate(func(b []byte) { b[20] = 0x80 }), true), "limit")
	add("payload-length-mismatch", rawFrameText(append(append([]byte(nil), raw[:HeaderLen+8]...), 0, 0, 0, 0), true), "corrupt")
	return vs
}

func genMessageVectors(t *testing.T) []messageVector {
	var vs []messageVector
	for _, tc := range []struct {
		name string
		msg  []byte
		f    int
		drop []int
	}{
		{"empty", nil, 16, nil},
		{"one-fragment", []byte("hi"), 64, nil},
		{"lossy", bytes.Repeat([]byte("coffre-"), 20), 16, []int{0, 3, 5}},
	} {
		e, err := NewEncoder(tc.msg, Options{FragmentSize: tc.f})
		if err != nil {
			t.Fatal(err)
		}
		v := messageVector{Name: tc.name, MessageHex: hex.EncodeToString(tc.msg), FragmentSize: tc.f, Transfer: e.Transfer().String(), Expect: "ok"}
		n := e.Count() + 4*len(tc.drop) + 4
		for seq := 0; seq < n; seq++ {
			s, _ := e.Frame(seq)
			v.Frames = append(v.Frames, s)
			v.Indices = append(v.Indices, mixIndices(e.Transfer(), seq, e.Count(), nil))
		}
		// The subset: every frame but the dropped ones, then only as many
		// mixes as a reference decoder needs.
		drop := map[int]bool{}
		for _, i := range tc.drop {
			drop[i] = true
		}
		d := NewDecoder(Limits{})
		for seq := 0; seq < n; seq++ {
			if drop[seq] {
				continue
			}
			v.RebuildFrom = append(v.RebuildFrom, seq)
			if p, err := d.AddFrame(v.Frames[seq]); err != nil || p.Done {
				break
			}
		}
		if d.Stats().Completed != 1 {
			t.Fatalf("vector %s: %d frames do not rebuild the message", tc.name, n)
		}
		vs = append(vs, v)
	}
	// A tampered subset: a forged systematic frame with a valid CRC.
	e, _ := NewEncoder([]byte("tamper me please, this is long enough"), Options{FragmentSize: 16})
	v := messageVector{Name: "forged-fragment", MessageHex: hex.EncodeToString([]byte("tamper me please, this is long enough")), FragmentSize: 16, Transfer: e.Transfer().String(), Expect: "digest"}
	for seq := 0; seq < e.Count(); seq++ {
		s, _ := e.Frame(seq)
		if seq == 1 {
			fr, _ := ParseFrame(s, 0)
			fr.Payload[0] ^= 0x20
			s, _ = fr.Text()
		}
		v.Frames = append(v.Frames, s)
		v.Indices = append(v.Indices, []int{seq})
		v.RebuildFrom = append(v.RebuildFrom, seq)
	}
	return append(vs, v)
}

func writeJSON(t *testing.T, name string, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vectorDir, name), append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readJSON(t *testing.T, name string, v any) {
	b, err := os.ReadFile(filepath.Join(vectorDir, name))
	if err != nil {
		t.Fatalf("%v (regenerate with COFFRE_QR_REGEN=1)", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

var pngVectors = []struct {
	name string
	o    Options
}{
	{"v10-L-5px", Options{Version: 10, ECC: "L", ModulePx: 5}},
	{"v20-M-6px", Options{}},
}

func TestVectors(t *testing.T) {
	if os.Getenv("COFFRE_QR_REGEN") == "1" {
		if err := os.MkdirAll(vectorDir, 0o755); err != nil {
			t.Fatal(err)
		}
		writeJSON(t, "frames.json", genFrameVectors(t))
		writeJSON(t, "messages.json", genMessageVectors(t))
		for _, pv := range pngVectors {
			frames, err := Encode([]byte("Coffre PNG vector "+pv.name), pv.o)
			if err != nil {
				t.Fatal(err)
			}
			b, err := RenderPNG(frames[0], pv.o)
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(vectorDir, pv.name+".png"), b, 0o644)
			os.WriteFile(filepath.Join(vectorDir, pv.name+".txt"), []byte(frames[0]+"\n"), 0o644)
		}
	}
	t.Run("frames", func(t *testing.T) {
		var vs []frameVector
		readJSON(t, "frames.json", &vs)
		if len(vs) < 10 {
			t.Fatalf("only %d frame vectors", len(vs))
		}
		for _, v := range vs {
			t.Run(v.Name, func(t *testing.T) {
				fr, err := ParseFrame(v.Text, 0)
				if v.Expect == "ok" {
					if err != nil {
						t.Fatal(err)
					}
					if fr.Transfer.String() != v.Transfer || fr.MessageLen != v.MessageLen || fr.FragmentSize != v.FragmentSize ||
						fr.FragmentCount != v.FragmentCount || fr.Seq != v.Seq || hex.EncodeToString(fr.Payload) != v.PayloadHex {
						t.Fatalf("parsed %+v", fr)
					}
					if re, _ := fr.Text(); re != v.Text {
						t.Fatal("re-encoding differs")
					}
					return
				}
				want, ok := expectErr[v.Expect]
				if !ok {
					t.Fatalf("unknown expectation %q", v.Expect)
				}
				if !errors.Is(err, want) {
					t.Fatalf("err = %v, want %v", err, want)
				}
			})
		}
	})
	t.Run("messages", func(t *testing.T) {
		var vs []messageVector
		readJSON(t, "messages.json", &vs)
		for _, v := range vs {
			t.Run(v.Name, func(t *testing.T) {
				msg, _ := hex.DecodeString(v.MessageHex)
				if v.Expect == "ok" {
					e, err := NewEncoder(msg, Options{FragmentSize: v.FragmentSize})
					if err != nil {
						t.Fatal(err)
					}
					if e.Transfer().String() != v.Transfer {
						t.Fatalf("transfer id %s, want %s", e.Transfer(), v.Transfer)
					}
					for seq, want := range v.Frames {
						if got, _ := e.Frame(seq); got != want {
							t.Fatalf("frame %d differs from the vector", seq)
						}
						idx := mixIndices(e.Transfer(), seq, e.Count(), nil)
						if !equalInts(idx, v.Indices[seq]) {
							t.Fatalf("frame %d mixes %v, vector says %v", seq, idx, v.Indices[seq])
						}
					}
				}
				d := NewDecoder(Limits{})
				var last error
				for _, seq := range v.RebuildFrom {
					_, last = d.AddFrame(v.Frames[seq])
				}
				switch v.Expect {
				case "ok":
					msgs := d.Completed()
					if last != nil || len(msgs) != 1 || !bytes.Equal(msgs[0].Data, msg) {
						t.Fatalf("not rebuilt: %v, stats %+v", last, d.Stats())
					}
				case "digest":
					if !errors.Is(last, ErrDigest) || len(d.Completed()) != 0 {
						t.Fatalf("err = %v, want ErrDigest", last)
					}
				default:
					t.Fatalf("unknown expectation %q", v.Expect)
				}
			})
		}
	})
	t.Run("png", func(t *testing.T) {
		for _, pv := range pngVectors {
			t.Run(pv.name, func(t *testing.T) {
				want, err := os.ReadFile(filepath.Join(vectorDir, pv.name+".txt"))
				if err != nil {
					t.Fatal(err)
				}
				f, err := os.Open(filepath.Join(vectorDir, pv.name+".png"))
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				img, err := png.Decode(f)
				if err != nil {
					t.Fatal(err)
				}
				texts, err := DecodeImage(img)
				if err != nil || len(texts) != 1 || texts[0] != string(bytes.TrimSpace(want)) {
					t.Fatalf("decoded %v, %v", len(texts), err)
				}
				// Our renderer is deterministic: the same frame renders to
				// the same pixels.
				b, _ := RenderPNG(texts[0], pv.o)
				img2, _ := png.Decode(bytes.NewReader(b))
				if sha256.Sum256(lumaOf(t, img2)) != sha256.Sum256(lumaOf(t, img)) {
					t.Fatal("rendering changed")
				}
			})
		}
	})
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
