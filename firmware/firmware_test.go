package firmware_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"coffre/firmware"
	"coffre/internal/testenv"

	"github.com/ProtonMail/go-crypto/openpgp"
)

var files1 = map[string][]byte{
	"coffre":        []byte("coffre CLI binary v1"),
	"coffred":       []byte("coffred daemon binary v1"),
	"config-schema": []byte(`{"schema": 1}`),
}

func TestManifestRoundTrip(t *testing.T) {
	m, _ := release(t, 7, "1.2.0-rc.1", files1)
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	m2, err := firmware.ParseManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := m2.Marshal()
	if !bytes.Equal(b, b2) || m2.Version != 7 || m2.SemVer != "1.2.0-rc.1" || len(m2.Components) != 3 {
		t.Fatalf("round trip changed the manifest:\n%s\n%s", b, b2)
	}
	if c, ok := m2.Component("coffred"); !ok || c.Size != int64(len(files1["coffred"])) {
		t.Fatal("Component(coffred) lookup failed")
	}
}

func TestManifestRejects(t *testing.T) {
	m, _ := release(t, 7, "1.2.0", files1)
	good, _ := m.Marshal()
	s := string(good)
	cases := map[string]string{
		"empty":          "",
		"no final LF":    strings.TrimSuffix(s, "\n"),
		"CRLF":           strings.ReplaceAll(s, "\n", "\r\n"),
		"bad magic":      strings.Replace(s, "v1", "v2", 1),
		"leading zero":   strings.Replace(s, "version 7", "version 07", 1),
		"version 0":      strings.Replace(s, "version 7", "version 0", 1),
		"plus sign":      strings.Replace(s, "version 7", "version +7", 1),
		"bad semver":     strings.Replace(s, "semver 1.2.0", "semver 1.2", 1),
		"upper hex":      upperFirstHex(s),
		"unsorted":       swapComponentLines(s),
		"duplicate":      s + lastLine(s),
		"extra space":    strings.Replace(s, "product coffre", "product  coffre", 1),
		"trailing blank": s + "\n",
		"bad name":       strings.Replace(s, "component coffre ", "component Coffre ", 1),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := firmware.ParseManifest([]byte(in)); !errors.Is(err, firmware.ErrManifest) {
				t.Fatalf("ParseManifest = %v, want ErrManifest", err)
			}
		})
	}
}

func upperFirstHex(s string) string {
	i := strings.Index(s, "component ")
	j := i + strings.Index(s[i:], " ")
	j += strings.Index(s[j+1:], " ") + 1
	j += strings.Index(s[j+1:], " ") + 2
	// find the first lowercase hex letter after j
	for k := j; k < len(s); k++ {
		if s[k] >= 'a' && s[k] <= 'f' {
			return s[:k] + strings.ToUpper(s[k:k+1]) + s[k+1:]
		}
	}
	return s
}

func swapComponentLines(s string) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	lines[4], lines[5] = lines[5], lines[4]
	return strings.Join(lines, "\n") + "\n"
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	return lines[len(lines)-1] + "\n"
}

func TestVerifyThreshold(t *testing.T) {
	keys := releaseKeys(t, 4)
	root := trustRoot(t, 2, keys[:3]) // keys[3] is not a release key
	tests := []struct {
		name    string
		signers []*openpgp.Entity
		wantErr error
	}{
		{"2 of 3", keys[:2], nil},
		{"3 of 3", keys[:3], nil},
		{"1 of 3", keys[:1], firmware.ErrSignatures},
		{"same key twice", []*openpgp.Entity{keys[0], keys[0]}, firmware.ErrSignatures},
		{"one release key and a stranger", []*openpgp.Entity{keys[0], keys[3]}, firmware.ErrSignatures},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, bundle := release(t, 3, "1.0.0", files1, tc.signers...)
			m, err := firmware.Verify(bundle, root)
			if !errors.Is(err, tc.wantErr) || (err == nil && m.Version != 3) {
				t.Fatalf("Verify = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestVerifyTampered(t *testing.T) {
	keys := releaseKeys(t, 2)
	root := trustRoot(t, 2, keys)
	m, bundle := release(t, 3, "1.0.0", files1, keys...)
	b, err := firmware.ParseBundle(bundle)
	if err != nil {
		t.Fatal(err)
	}
	// A component swapped for other bytes.
	b.Files["coffred"] = []byte("coffred daemon binary v1 + backdoor")
	if _, err := b.Verify(root); err == nil {
		t.Fatal("a changed component verified")
	}
	// A manifest edited after signing (digest replaced to match the bad file).
	m.Components[1] = firmware.NewComponent("coffred", b.Files["coffred"])
	mb, _ := m.Marshal()
	b.Manifest = mb
	if _, err := b.Verify(root); !errors.Is(err, firmware.ErrSignatures) {
		t.Fatalf("edited manifest: Verify = %v, want ErrSignatures", err)
	}
	// A flipped byte anywhere in the bundle never verifies.
	for i := 0; i < len(bundle); i += 97 {
		c := bytes.Clone(bundle)
		c[i] ^= 0x20
		if _, err := firmware.Verify(c, root); err == nil {
			t.Fatalf("bundle with byte %d flipped verified", i)
		}
	}
}

func TestBundleRoundTrip(t *testing.T) {
	keys := releaseKeys(t, 2)
	_, bundle := release(t, 3, "1.0.0", files1, keys...)
	b, err := firmware.ParseBundle(bundle)
	if err != nil {
		t.Fatal(err)
	}
	again, err := b.Marshal()
	if err != nil || !bytes.Equal(again, bundle) {
		t.Fatalf("bundle re-encodes differently: %v", err)
	}
	if _, err := firmware.ParseBundle(append(bytes.Clone(bundle), 0)); !errors.Is(err, firmware.ErrBundle) {
		t.Fatalf("trailing byte: %v", err)
	}
	if _, err := firmware.ParseBundle(bundle[:len(bundle)-1]); !errors.Is(err, firmware.ErrBundle) {
		t.Fatalf("truncated: %v", err)
	}
}

func TestTrustRootFile(t *testing.T) {
	keys := releaseKeys(t, 3)
	root := trustRoot(t, 2, keys)
	b, err := root.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	r2, err := firmware.ParseTrustRoot(b)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Threshold != 2 || len(r2.Keys) != 3 {
		t.Fatalf("trust root = %d of %d", r2.Threshold, len(r2.Keys))
	}
	for _, bad := range []string{
		strings.Replace(string(b), "threshold 2", "threshold 4", 1),
		strings.Replace(string(b), "threshold 2", "threshold 0", 1),
		strings.Replace(string(b), "threshold 2", "threshold 02", 1),
		strings.Replace(string(b), "v1", "v9", 1),
	} {
		if _, err := firmware.ParseTrustRoot([]byte(bad)); err == nil {
			t.Errorf("ParseTrustRoot accepted %q", bad[:60])
		}
	}
	if _, err := firmware.NewTrustRoot(1, openpgp.EntityList{keys[0]}); err == nil {
		t.Error("a trust root with a private key was accepted")
	}
}

// A release key held in GnuPG (a real peer) signs the manifest; Coffre
// counts its signature toward the threshold.
func TestGnuPGReleaseSigner(t *testing.T) {
	gpg := testenv.RequireTool(t, "gpg", "gnupg")
	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(home)
	run := func(stdin []byte, args ...string) []byte {
		t.Helper()
		cmd := exec.Command(gpg, append([]string{"--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""}, args...)...)
		cmd.Stdin = bytes.NewReader(stdin)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("gpg %v: %v\n%s", args, err, stderr.String())
		}
		return out
	}
	run(nil, "--quick-gen-key", "GnuPG Release <gpg-release@coffre.test>", "ed25519", "sign", "never")
	pub := run(nil, "--armor", "--export", "gpg-release@coffre.test")
	el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(pub))
	if err != nil {
		t.Fatal(err)
	}
	goKeys := releaseKeys(t, 1)
	root, err := firmware.NewTrustRoot(2, append(el, publicOnly(t, goKeys)...))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := release(t, 5, "2.0.0", files1)
	mb, _ := m.Marshal()
	gpgSig := run(mb, "--detach-sign", "--digest-algo", "SHA512", "-u", "gpg-release@coffre.test")
	goSig, err := firmware.SignManifest(mb, goKeys[0])
	if err != nil {
		t.Fatal(err)
	}
	b := &firmware.Bundle{Manifest: mb, Signatures: [][]byte{gpgSig, goSig}, Files: files1}
	bundle, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := firmware.Verify(bundle, root); err != nil {
		t.Fatalf("GnuPG + Go signatures: %v", err)
	}
	b.Signatures = [][]byte{gpgSig}
	bundle, _ = b.Marshal()
	if _, err := firmware.Verify(bundle, root); !errors.Is(err, firmware.ErrSignatures) {
		t.Fatalf("GnuPG signature alone: %v, want ErrSignatures", err)
	}
	// And GnuPG verifies our signature over the same manifest.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "manifest"), mb, 0o600)
	os.WriteFile(filepath.Join(dir, "manifest.sig"), goSig, 0o600)
	var kb bytes.Buffer
	goKeys[0].Serialize(&kb)
	run(kb.Bytes(), "--import")
	run(nil, "--verify", filepath.Join(dir, "manifest.sig"), filepath.Join(dir, "manifest"))
}
