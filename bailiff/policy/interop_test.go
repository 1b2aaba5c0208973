package policy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coffre/bailiff"
	"coffre/internal/testenv"
)

// gpg runs GnuPG in a throw-away home with loopback pinentry.
type gpg struct {
	t    *testing.T
	bin  string
	home string
}

func newGPG(t *testing.T) *gpg {
	t.Helper()
	bin := testenv.RequireTool(t, "gpg", "gnupg")
	home := t.TempDir()
	os.Chmod(home, 0o700)
	os.WriteFile(filepath.Join(home, "gpg-agent.conf"), []byte("default-cache-ttl 0\nmax-cache-ttl 0\nallow-loopback-pinentry\n"), 0o600)
	t.Cleanup(func() { exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run() })
	return &gpg{t: t, bin: bin, home: home}
}

func (g *gpg) try(stdin []byte, args ...string) ([]byte, string, error) {
	full := append([]string{"--homedir", g.home, "--batch", "--no-tty", "--pinentry-mode", "loopback"}, args...)
	cmd := exec.Command(g.bin, full...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.Bytes(), errb.String(), err
}

func (g *gpg) run(stdin []byte, args ...string) []byte {
	g.t.Helper()
	out, stderr, err := g.try(stdin, args...)
	if err != nil {
		g.t.Fatalf("gpg %s: %v: %s", strings.Join(args, " "), err, stderr)
	}
	return out
}

// TestInteropGnuPG: a bailiff signs the policy body with
// `gpg --detach-sign` (as the bailiff guide says), the appliance accepts
// it; GnuPG verifies the appliance-made signature of another bailiff; the
// two make the quorum. A gpg signature over another body is refused.
func TestInteropGnuPG(t *testing.T) {
	v := getVault(t)
	r := v.roster
	g := newGPG(t)
	dir := t.TempDir()

	p := Default()
	p.Bind(r)
	body := filepath.Join(dir, "policy-body.txt")
	if err := os.WriteFile(body, p.Body(), 0o600); err != nil {
		t.Fatal(err)
	}
	// bailiff 0 signs with gpg
	g.run(v.secrets[0], "--passphrase", v.pass[0], "--import")
	fpr0 := r.Bailiffs[0].Fingerprint
	sig := g.run(nil, "--passphrase", v.pass[0], "--local-user", fpr0, "--armor", "--detach-sign", "--output", "-", body)
	b, err := p.AddSignature(r, sig)
	if err != nil {
		t.Fatalf("gpg signature refused: %v", err)
	}
	if b.Fingerprint != fpr0 {
		t.Fatalf("gpg signature attributed to %s, want %s", b.Fingerprint, fpr0)
	}
	if err := p.Verify(r); err == nil {
		t.Fatal("one signature made a quorum of 2")
	}

	// bailiff 1 signs on the appliance; gpg verifies it
	k := v.openKey(t, 1)
	if err := p.Sign(r, k, time.Now()); err != nil {
		t.Fatal(err)
	}
	bailiff.WipeKey(k)
	pub1, err := r.Bailiffs[1].ArmoredPublic()
	if err != nil {
		t.Fatal(err)
	}
	g.run(pub1, "--import")
	sigFile := filepath.Join(dir, "policy-body.txt.sig")
	os.WriteFile(sigFile, p.Signatures[r.Bailiffs[1].Fingerprint], 0o600)
	_, stderr, err := g.try(nil, "--status-fd", "2", "--verify", sigFile, body)
	if err != nil || !strings.Contains(stderr, "VALIDSIG "+strings.ToUpper(r.Bailiffs[1].Fingerprint)) {
		t.Fatalf("gpg --verify of the appliance signature: %v\n%s", err, stderr)
	}
	if err := p.Verify(r); err != nil {
		t.Fatalf("gpg + appliance quorum: %v", err)
	}
	q, err := Parse(p.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Verify(r); err != nil {
		t.Fatalf("parsed gpg-signed policy: %v", err)
	}

	// a gpg signature over a different body is refused
	other := Default()
	other.Version = 2
	other.Bind(r)
	if _, err := other.AddSignature(r, sig); err == nil {
		t.Fatal("a signature over version 1 was accepted for version 2")
	}
}

// TestInteropSequoia: Sequoia verifies the appliance-made signature too.
func TestInteropSequoia(t *testing.T) {
	v := getVault(t)
	r := v.roster
	sq := testenv.RequireTool(t, "sq", "sq")
	dir := t.TempDir()
	p := v.signedPolicy(t, Default(), 2)
	fpr := r.Bailiffs[2].Fingerprint
	files := map[string][]byte{"body": p.Body(), "sig": p.Signatures[fpr], "cert": r.Bailiffs[2].Public}
	for n, b := range files {
		os.WriteFile(filepath.Join(dir, n), b, 0o600)
	}
	cmd := exec.Command(sq, "verify", "--signer-cert", filepath.Join(dir, "cert"), "--detached", filepath.Join(dir, "sig"), filepath.Join(dir, "body"))
	cmd.Env = append(os.Environ(), "HOME="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sq verify: %v\n%s", err, out)
	}
	// and refuses it over a tampered body
	os.WriteFile(filepath.Join(dir, "body"), append(p.Body(), "x\n"...), 0o600)
	cmd = exec.Command(sq, "verify", "--signer-cert", filepath.Join(dir, "cert"), "--detached", filepath.Join(dir, "sig"), filepath.Join(dir, "body"))
	cmd.Env = append(os.Environ(), "HOME="+dir)
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("sq verified a tampered body:\n%s", out)
	}
}
