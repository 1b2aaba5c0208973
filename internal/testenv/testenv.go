// Package testenv gives tests the real peers they need (gpg, sq, rnp, swtpm,
// zbarimg, qrencode, mkfs.vfat, mtools, losetup, …). A test that needs a
// tool calls RequireTool: the tool is installed from Debian's packages when it
// is missing, and the test fails — it never skips — when that cannot be done.
package testenv

import (
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

var aptMu sync.Mutex
var aptUpdated bool

// RequireTool returns the path of the named command, installing the Debian
// package pkg when the command is not on PATH. It fails the test when the
// tool cannot be had.
func RequireTool(t testing.TB, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil && installed(pkg) {
		return p
	}
	if err := aptInstall(pkg); err != nil {
		t.Fatalf("testenv: %s is missing and apt-get install %s failed: %v", name, pkg, err)
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("testenv: %s still missing after installing %s", name, pkg)
	}
	return p
}

// installed reports whether dpkg knows pkg as installed. A command found on
// PATH is not enough: some machines carry a stand-in of the same name (a
// `convert` that is not ImageMagick). Without dpkg (not Debian) the command
// on PATH is trusted.
func installed(pkg string) bool {
	dpkg, err := exec.LookPath("dpkg-query")
	if err != nil {
		return true
	}
	out, err := exec.Command(dpkg, "-W", "-f=${Status}", pkg).Output()
	return err == nil && strings.HasSuffix(strings.TrimSpace(string(out)), "ok installed")
}

func aptInstall(pkg string) error {
	aptMu.Lock()
	defer aptMu.Unlock()
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if !aptUpdated {
		cmd := exec.Command("apt-get", "update", "-qq")
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			return &cmdError{"apt-get update", err, out}
		}
		aptUpdated = true
	}
	cmd := exec.Command("apt-get", "install", "-y", "-qq", "--no-install-recommends", pkg)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		return &cmdError{"apt-get install " + pkg, err, out}
	}
	return nil
}

// RequireRoot fails the test when it does not run as root (CI runs as root;
// loop devices need it).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("testenv: this test needs root (loop devices); CI runs as root")
	}
}

type cmdError struct {
	what string
	err  error
	out  []byte
}

func (e *cmdError) Error() string {
	out := e.out
	if len(out) > 2000 {
		out = out[len(out)-2000:]
	}
	return e.what + ": " + e.err.Error() + "\n" + string(out)
}

// BuildCommands builds the coffre and coffred binaries into a new temporary
// directory for tests that drive the real programs (call it from TestMain;
// remove the directory afterwards), with the build tags given (the kill
// tests use "crashpoints", see internal/crashpoint).
func BuildCommands(tags ...string) (string, error) {
	dir, err := os.MkdirTemp("", "coffre-bin")
	if err != nil {
		return "", err
	}
	args := []string{"build", "-o", dir}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	out, err := exec.Command("go", append(args, "coffre/cmd/coffre", "coffre/cmd/coffred")...).CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		return "", &cmdError{"go build", err, out}
	}
	return dir, nil
}
