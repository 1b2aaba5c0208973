// Package swtpm runs the swtpm TPM 2.0 emulator (Debian package swtpm) for
// tests: a real TPM implementation listening on a unix socket, started by the
// test, stopped in t.Cleanup. Restart simulates a reboot: PCRs reset, NV
// and seeds kept.
package swtpm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"coffre/internal/testenv"

	"golang.org/x/sys/unix"
)

// Sim is a running swtpm.
type Sim struct {
	t        testing.TB
	bin      string
	StateDir string
	Socket   string // pass as hsm.TPMOptions.Device
	ctrl     string
	cmd      *exec.Cmd
}

// Start starts swtpm with its state in a fresh directory.
func Start(t testing.TB) *Sim {
	t.Helper()
	bin := testenv.RequireTool(t, "swtpm", "swtpm")
	// Unix socket paths are limited to 108 bytes: keep them short.
	dir, err := os.MkdirTemp("", "swtpm")
	if err != nil {
		t.Fatal(err)
	}
	s := &Sim{t: t, bin: bin, StateDir: filepath.Join(dir, "state"), Socket: filepath.Join(dir, "tpm.sock"), ctrl: filepath.Join(dir, "ctrl.sock")}
	if err := os.Mkdir(s.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		os.RemoveAll(dir)
	})
	s.start()
	return s
}

func (s *Sim) start() {
	s.t.Helper()
	os.Remove(s.Socket)
	os.Remove(s.ctrl)
	cmd := exec.Command(s.bin, "socket", "--tpm2",
		"--server", "type=unixio,path="+s.Socket,
		"--ctrl", "type=unixio,path="+s.ctrl,
		"--tpmstate", "dir="+s.StateDir,
		"--flags", "not-need-init,startup-clear")
	out, err := os.Create(filepath.Join(filepath.Dir(s.StateDir), "swtpm.log"))
	if err != nil {
		s.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("swtpm: start: %v", err)
	}
	out.Close()
	s.cmd = cmd
	for range 500 {
		if listening(s.Socket) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(filepath.Dir(s.StateDir), "swtpm.log"))
	s.Stop()
	s.t.Fatalf("swtpm: socket %s did not appear: %s", s.Socket, log)
}

// listening reports whether a unix stream socket at path accepts a
// connection (swtpm binds before it listens). Raw system calls keep package
// net out of hsm.
func listening(path string) bool {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return unix.Connect(fd, &unix.SockaddrUnix{Name: path}) == nil
}

// Stop stops swtpm (idempotent).
func (s *Sim) Stop() {
	if s.cmd == nil {
		return
	}
	// SIGTERM lets swtpm save its volatile state cleanly; kill it if it
	// does not exit.
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
	s.cmd = nil
}

// Restart stops swtpm and starts it again on the same state directory: a
// simulated reboot (PCRs reset to zero, NV indices and hierarchy seeds kept).
func (s *Sim) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// String describes the simulator for test logs.
func (s *Sim) String() string { return fmt.Sprintf("swtpm(%s)", s.Socket) }
