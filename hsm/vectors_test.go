package hsm_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"coffre/hsm"
)

var update = flag.Bool("update", false, "regenerate testdata/keystore vectors")

// vector is testdata/keystore/<name>/expect.json.
type vector struct {
	Comment    string `json:"comment"`
	Passphrase string `json:"passphrase"`
	Name       string `json:"name"`
	// Outcome is one of: ok, wrong-passphrase, bad-header, auth-fail, not-found.
	Outcome   string `json:"outcome"`
	SecretHex string `json:"secret_hex,omitempty"`
}

const vecDir = "../testdata/keystore"
const vecPass = "coffre test vector passphrase"

var vecSecret = []byte("0123456789abcdef0123456789abcdef")

func TestKeystoreVectors(t *testing.T) {
	if *update {
		generateVectors(t)
	}
	ents, err := os.ReadDir(vecDir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		n++
		t.Run(e.Name(), func(t *testing.T) {
			src := filepath.Join(vecDir, e.Name())
			raw, err := os.ReadFile(filepath.Join(src, "expect.json"))
			if err != nil {
				t.Fatal(err)
			}
			var v vector
			if err := json.Unmarshal(raw, &v); err != nil {
				t.Fatal(err)
			}
			// Work on a copy: the vectors stay untouched.
			dir := t.TempDir()
			files, _ := os.ReadDir(src)
			for _, f := range files {
				if f.Name() == "expect.json" {
					continue
				}
				b, _ := os.ReadFile(filepath.Join(src, f.Name()))
				os.WriteFile(filepath.Join(dir, f.Name()), b, 0o600)
			}
			ks, err := hsm.OpenSoft(dir, []byte(v.Passphrase))
			switch v.Outcome {
			case "wrong-passphrase":
				if !errors.Is(err, hsm.ErrWrongPassphrase) {
					t.Fatalf("OpenSoft = %v, want ErrWrongPassphrase", err)
				}
				return
			case "bad-header":
				if err == nil || errors.Is(err, hsm.ErrWrongPassphrase) {
					t.Fatalf("OpenSoft = %v, want a header error", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("OpenSoft: %v", err)
			}
			defer ks.Close()
			got, err := ks.Unseal(v.Name)
			switch v.Outcome {
			case "ok":
				want, _ := hex.DecodeString(v.SecretHex)
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("Unseal = %x, %v; want %s", got, err, v.SecretHex)
				}
			case "auth-fail":
				if err == nil || errors.Is(err, hsm.ErrNotFound) {
					t.Fatalf("Unseal = %v, want an authentication failure", err)
				}
			case "not-found":
				if !errors.Is(err, hsm.ErrNotFound) {
					t.Fatalf("Unseal = %v, want ErrNotFound", err)
				}
			default:
				t.Fatalf("unknown outcome %q", v.Outcome)
			}
		})
	}
	if n < 6 {
		t.Fatalf("only %d vectors in %s", n, vecDir)
	}
}

func generateVectors(t *testing.T) {
	os.RemoveAll(vecDir)
	base := t.TempDir()
	ks, err := hsm.CreateSoft(base, []byte(vecPass), hsm.TestSoftParams)
	if err != nil {
		t.Fatal(err)
	}
	if err := ks.Seal("record", vecSecret); err != nil {
		t.Fatal(err)
	}
	ks.Close()
	hdr, _ := os.ReadFile(filepath.Join(base, "keystore.hdr"))
	sec, _ := os.ReadFile(filepath.Join(base, "record.key"))
	write := func(name string, v vector, files map[string][]byte) {
		d := filepath.Join(vecDir, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for f, b := range files {
			os.WriteFile(filepath.Join(d, f), b, 0o644)
		}
		b, _ := json.MarshalIndent(v, "", "  ")
		os.WriteFile(filepath.Join(d, "expect.json"), append(b, '\n'), 0o644)
	}
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 1; return c }
	sv := hex.EncodeToString(vecSecret)
	write("ok", vector{Comment: "a soft keystore (t=1, m=64 KiB, p=1) holding the secret \"record\" (file record.key)", Passphrase: vecPass, Name: "record", Outcome: "ok", SecretHex: sv},
		map[string][]byte{"keystore.hdr": hdr, "record.key": sec})
	write("wrong-passphrase", vector{Comment: "the ok keystore opened with another passphrase", Passphrase: "not the passphrase", Name: "record", Outcome: "wrong-passphrase"},
		map[string][]byte{"keystore.hdr": hdr, "record.key": sec})
	write("header-salt-flipped", vector{Comment: "one bit of the salt flipped: the check value no longer matches", Passphrase: vecPass, Outcome: "wrong-passphrase"},
		map[string][]byte{"keystore.hdr": flip(hdr, 40)})
	write("header-bad-magic", vector{Comment: "magic CFKS changed", Passphrase: vecPass, Outcome: "bad-header"},
		map[string][]byte{"keystore.hdr": flip(hdr, 0)})
	big := bytes.Clone(hdr)
	copy(big[28:32], []byte{0x40, 0, 0, 0}) // memory = 1 TiB in KiB
	write("header-memory-too-large", vector{Comment: "Argon2id memory 0x40000000 KiB, above the limit: refused before any derivation", Passphrase: vecPass, Outcome: "bad-header"},
		map[string][]byte{"keystore.hdr": big})
	write("header-truncated", vector{Comment: "header cut by one byte", Passphrase: vecPass, Outcome: "bad-header"},
		map[string][]byte{"keystore.hdr": hdr[:len(hdr)-1]})
	write("header-long", vector{Comment: "one trailing byte after the header", Passphrase: vecPass, Outcome: "bad-header"},
		map[string][]byte{"keystore.hdr": append(bytes.Clone(hdr), 0)})
	write("secret-flipped", vector{Comment: "last tag byte of record.key flipped", Passphrase: vecPass, Name: "record", Outcome: "auth-fail"},
		map[string][]byte{"keystore.hdr": hdr, "record.key": flip(sec, len(sec)-1)})
	write("secret-renamed", vector{Comment: "record.key copied to audit.key and unsealed as \"audit\": the name is associated data", Passphrase: vecPass, Name: "audit", Outcome: "auth-fail"},
		map[string][]byte{"keystore.hdr": hdr, "audit.key": sec})
	write("secret-missing", vector{Comment: "no such secret", Passphrase: vecPass, Name: "catalog", Outcome: "not-found"},
		map[string][]byte{"keystore.hdr": hdr, "record.key": sec})
}
