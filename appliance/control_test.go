package appliance

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"coffre/internal/testenv"
)

// A peer process started by TestControlSocketPeers: it connects to the
// socket named in COFFRE_TEST_PEER and prints the first response line (or
// the connect error).
func init() {
	if sock := os.Getenv("COFFRE_TEST_PEER"); sock != "" {
		c, err := net.Dial("unix", sock)
		if err != nil {
			os.Stdout.WriteString("dial: " + err.Error() + "\n")
			os.Exit(0)
		}
		c.Write([]byte(`{"op":"status"}` + "\n"))
		line, _ := bufio.NewReader(c).ReadString('\n')
		os.Stdout.WriteString("response: " + line)
		os.Exit(0)
	}
}

func TestControlSocketPeers(t *testing.T) {
	testenv.RequireRoot(t)
	// A directory another uid can traverse (t.TempDir's parent is private).
	dir, err := os.MkdirTemp("", "coffre-control-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	sock := filepath.Join(dir, "control.sock")
	srv, err := ListenControl(sock, map[string]HandlerFunc{
		"status": func(context.Context, json.RawMessage) (any, error) { return "fine", nil },
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v (%v), want 0600", fi.Mode(), err)
	}
	var st string
	if err := Call(sock, "status", nil, &st); err != nil || st != "fine" {
		t.Fatalf("root peer: %q %v", st, err)
	}
	if err := Call(sock, "no-such-op", nil, nil); err == nil || !strings.Contains(err.Error(), "unknown op") {
		t.Fatalf("unknown op: %v", err)
	}

	// The peer runs as nobody: give it a copy of this test binary it can
	// execute (the build directory is private).
	self, _ := os.Executable()
	exe := filepath.Join(dir, "peer.test")
	bin, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	peer := func() string {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), "COFFRE_TEST_PEER="+sock)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("peer process: %v", err)
		}
		return string(out)
	}
	// Mode 0600: another user cannot even connect.
	if out := peer(); !strings.Contains(out, "permission denied") || !strings.HasPrefix(out, "dial:") {
		t.Fatalf("another uid connected through a 0600 socket: %q", out)
	}
	// Even if the mode were loosened, the peer credential check refuses.
	os.Chmod(sock, 0o666)
	deadline := time.Now().Add(5 * time.Second)
	out := peer()
	for !strings.HasPrefix(out, "response:") && time.Now().Before(deadline) {
		out = peer()
	}
	if !strings.Contains(out, "permission denied") || strings.Contains(out, "fine") {
		t.Fatalf("another uid was served: %q", out)
	}
}
