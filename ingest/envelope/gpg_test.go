package envelope

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"coffre/internal/testenv"
	"github.com/ProtonMail/go-crypto/openpgp"
)

// gnupg is a throwaway GnuPG home.
type gnupg struct {
	t    *testing.T
	bin  string
	home string
}

func newGnuPG(t *testing.T) *gnupg {
	t.Helper()
	bin := testenv.RequireTool(t, "gpg", "gnupg")
	g := &gnupg{t: t, bin: bin, home: t.TempDir()}
	t.Cleanup(func() { exec.Command("gpgconf", "--homedir", g.home, "--kill", "all").Run() })
	return g
}

func (g *gnupg) run(stdin []byte, args ...string) []byte {
	g.t.Helper()
	out, stderr, err := g.try(stdin, args...)
	if err != nil {
		g.t.Fatalf("gpg %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

func (g *gnupg) try(stdin []byte, args ...string) ([]byte, []byte, error) {
	cmd := exec.Command(g.bin, append([]string{"--homedir", g.home, "--batch", "--yes", "--no-tty", "--pinentry-mode", "loopback", "--trust-model", "always"}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.Bytes(), errb.Bytes(), err
}

func (g *gnupg) importKey(e *openpgp.Entity, secret bool) {
	g.t.Helper()
	var b bytes.Buffer
	var err error
	if secret {
		err = WritePrivateKey(&b, e)
	} else {
		err = WritePublicKey(&b, e)
	}
	if err != nil {
		g.t.Fatal(err)
	}
	g.run(b.Bytes(), "--import")
}

// TestGnuPGSealedAccepted: a sealed part made by `gpg --encrypt` to the
// ingest public key exported from Go, with the item layout as plaintext, is
// accepted once the courier binds it.
func TestGnuPGSealedAccepted(t *testing.T) {
	k := getKeys(t)
	g := newGnuPG(t)
	g.importKey(k.ingest, false)
	content := bytes.Repeat([]byte("a letter to my children. "), 4000) // compressible: gpg compresses by default
	m := testManifest(content)
	item, err := EncodeItem(m)
	if err != nil {
		t.Fatal(err)
	}
	plaintext := append(item, content...)
	fpr := hexs(k.ingest.PrimaryKey.Fingerprint)
	for _, v := range []struct {
		name string
		args []string
	}{
		{"default", nil},
		{"no compression", []string{"--compress-algo", "none"}},
		{"hidden recipient", []string{"--throw-keyids"}},
		{"armored", []string{"--armor"}},
	} {
		t.Run(v.name, func(t *testing.T) {
			args := append([]string{"--encrypt", "--recipient", fpr, "--output", "-"}, v.args...)
			sealed := g.run(plaintext, args...)
			if v.name == "armored" {
				// Armor is not part of the format: Bind refuses it, the
				// client must send binary.
				err := Bind(new(bytes.Buffer), k.courier, m.UserID, NewUploadID(), bytes.NewReader(sealed))
				if !errors.Is(err, ErrFormat) {
					t.Fatalf("armored sealed part: Bind gave %v, want ErrFormat", err)
				}
				return
			}
			env := bind(t, k.courier, m.UserID, NewUploadID(), sealed)
			up, got, err := openAll(env, params(k))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, content) || up.Manifest.Digest != sha256.Sum256(got) {
				t.Fatal("content differs")
			}
		})
	}
}

// TestGnuPGDecryptsOurs: what SealItem writes decrypts with `gpg --decrypt`
// (GnuPG 2.2 profile), and GnuPG reports SEIPD v1 with MDC and AES-256.
func TestGnuPGDecryptsOurs(t *testing.T) {
	k := getKeys(t)
	g := newGnuPG(t)
	g.importKey(k.ingest, true)
	content := []byte("my wallet seed: abandon abandon abandon")
	m := testManifest(content)
	sealed := seal(t, k.ingest, m, content)
	out, stderr, err := g.try(sealed, "--status-fd", "2", "--decrypt")
	if err != nil {
		t.Fatalf("gpg --decrypt: %v\n%s", err, stderr)
	}
	item, _ := EncodeItem(m)
	if !bytes.Equal(out, append(item, content...)) {
		t.Fatalf("gpg output differs from the item layout")
	}
	status := string(stderr)
	// DECRYPTION_INFO <mdc_method> <sym_algo> [<aead_algo>]: 2 = SHA-1 MDC, 9 = AES-256, 0 = no AEAD.
	if !strings.Contains(status, "[GNUPG:] DECRYPTION_INFO 2 9") || strings.Contains(status, "DECRYPTION_INFO 2 9 1") ||
		!strings.Contains(status, "[GNUPG:] DECRYPTION_OKAY") || !strings.Contains(status, "[GNUPG:] GOODMDC") {
		t.Fatalf("unexpected gpg status:\n%s", status)
	}
	// The public key exported from Go lists as P-521 in GnuPG.
	pub := g.run(nil, "--with-colons", "--list-keys")
	if !strings.Contains(string(pub), ":521:19:") || !strings.Contains(string(pub), ":521:18:") {
		t.Fatalf("gpg does not see a P-521 ECDSA key with an ECDH subkey:\n%s", pub)
	}
}
