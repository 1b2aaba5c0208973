package shamir

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// vector is one file of testdata/shares/ (docs/formats/shares.md, "Test
// vectors").
type vector struct {
	Description string   `json:"description"`
	Shares      []string `json:"shares_hex,omitempty"` // binary shares, hex
	Cards       []string `json:"cards,omitempty"`      // card texts
	Expect      string   `json:"expect"`               // ok | format | too-few | digest | bad-share
	BadIndex    int      `json:"bad_index,omitempty"`  // for bad-share
	Secret      string   `json:"secret_hex,omitempty"` // for ok
}

const vectorDir = "../../testdata/shares"

func TestVectors(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(vectorDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no vectors in %s (regenerate with COFFRE_WRITE_VECTORS=1): %v", vectorDir, err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".json"), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var v vector
			if err := json.Unmarshal(b, &v); err != nil {
				t.Fatal(err)
			}
			var shares []Share
			var perr error
			for _, h := range v.Shares {
				bin, err := hex.DecodeString(h)
				if err != nil {
					t.Fatal(err)
				}
				s, err := ParseShare(bin)
				if err != nil {
					perr = err
					break
				}
				shares = append(shares, s)
			}
			for _, c := range v.Cards {
				s, err := ParseCard(c)
				if err != nil {
					perr = err
					break
				}
				shares = append(shares, s)
			}
			if perr != nil {
				if v.Expect != "format" {
					t.Fatalf("parse failed (%v), want %s", perr, v.Expect)
				}
				if !errors.Is(perr, ErrFormat) {
					t.Fatalf("parse error %v does not wrap ErrFormat", perr)
				}
				return
			}
			secret, err := Combine(shares)
			var bad *BadShareError
			switch v.Expect {
			case "ok":
				if err != nil {
					t.Fatal(err)
				}
				if hex.EncodeToString(secret) != v.Secret {
					t.Fatalf("secret %x, want %s", secret, v.Secret)
				}
			case "too-few":
				if !errors.Is(err, ErrTooFewShares) {
					t.Fatalf("err = %v, want too-few", err)
				}
			case "digest":
				if !errors.Is(err, ErrDigest) {
					t.Fatalf("err = %v, want digest", err)
				}
			case "bad-share":
				if !errors.As(err, &bad) || bad.Index != v.BadIndex {
					t.Fatalf("err = %v, want bad share %d", err, v.BadIndex)
				}
			default:
				t.Fatalf("vector declares unknown outcome %q (or parse should have failed)", v.Expect)
			}
		})
	}
}

// TestWriteVectors regenerates testdata/shares/ deterministically when
// COFFRE_WRITE_VECTORS=1; otherwise it checks the committed files are what
// the generator produces, so spec, code and vectors cannot drift.
func TestWriteVectors(t *testing.T) {
	vs := genVectors(t)
	write := os.Getenv("COFFRE_WRITE_VECTORS") == "1"
	for name, v := range vs {
		b, _ := json.MarshalIndent(v, "", "  ")
		b = append(b, '\n')
		p := filepath.Join(vectorDir, name+".json")
		if write {
			os.MkdirAll(vectorDir, 0o755)
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("%s differs from the generator; regenerate with COFFRE_WRITE_VECTORS=1", p)
		}
	}
}

func genVectors(t *testing.T) map[string]vector {
	rnd := rand.NewChaCha8([32]byte{'c', 'o', 'f', 'f', 'r', 'e'})
	secret := []byte("coffre test vector secret 32byte")
	shares, err := Split(secret, 3, 5, rnd)
	if err != nil {
		t.Fatal(err)
	}
	bin := func(s Share) string { b, _ := s.MarshalBinary(); return hex.EncodeToString(b) }
	card := func(s Share) string { c, _ := s.CardText(); return c }
	hexs := func(ss ...Share) []string {
		var out []string
		for _, s := range ss {
			out = append(out, bin(s))
		}
		return out
	}
	sec := hex.EncodeToString(secret)
	vs := map[string]vector{
		"ok-3of5-first3":   {Description: "shares 1,2,3 of a 3-of-5 split", Shares: hexs(shares[0], shares[1], shares[2]), Expect: "ok", Secret: sec},
		"ok-3of5-last3":    {Description: "shares 5,3,4 in any order", Shares: hexs(shares[4], shares[2], shares[3]), Expect: "ok", Secret: sec},
		"ok-3of5-all":      {Description: "all five shares", Shares: hexs(shares...), Expect: "ok", Secret: sec},
		"ok-cards":         {Description: "three share cards", Cards: []string{card(shares[0]), card(shares[3]), card(shares[4])}, Expect: "ok", Secret: sec},
		"too-few-2of3":     {Description: "two shares of a 3-of-5 split", Shares: hexs(shares[0], shares[1]), Expect: "too-few"},
		"format-checksum":  {Description: "share 1 with its last checksum byte flipped", Shares: []string{flipLast(bin(shares[0])), bin(shares[1]), bin(shares[2])}, Expect: "format"},
		"format-magic":     {Description: "share with magic CSH2", Shares: []string{"43534832" + bin(shares[0])[8:]}, Expect: "format"},
		"format-truncated": {Description: "share cut short", Shares: []string{bin(shares[0])[:40]}, Expect: "format"},
	}
	// tampered value with a recomputed checksum: only the digest can catch it
	tampered := shares[1]
	tampered.Value = bytes.Clone(tampered.Value)
	tampered.Value[0] ^= 0x01
	vs["digest-tampered-k"] = vector{Description: "share 2 altered with a valid checksum, exactly k shares", Shares: hexs(shares[0], tampered, shares[2]), Expect: "digest"}
	vs["bad-share-named"] = vector{Description: "share 2 altered with a valid checksum among four shares", Shares: hexs(shares[0], tampered, shares[2], shares[3]), Expect: "bad-share", BadIndex: 2}
	other, _ := Split(secret, 3, 5, rnd)
	vs["bad-share-foreign-split"] = vector{Description: "share 3 from another split", Shares: hexs(shares[0], shares[1], other[2]), Expect: "bad-share", BadIndex: 3}
	dup := hexs(shares[0], shares[1], shares[1])
	vs["bad-share-duplicate"] = vector{Description: "share 2 given twice", Shares: dup, Expect: "bad-share", BadIndex: 2}
	badCard := strings.Replace(card(shares[0]), "SHARE 1", "SHARE 4", 1)
	vs["format-card-header"] = vector{Description: "card whose header line disagrees with its body", Cards: []string{badCard}, Expect: "format"}
	return vs
}

func flipLast(h string) string {
	b, _ := hex.DecodeString(h)
	b[len(b)-1] ^= 0xff
	return fmt.Sprintf("%x", b)
}
