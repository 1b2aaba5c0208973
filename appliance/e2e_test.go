package appliance_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"coffre/appliance"
	"coffre/appliance/receipt"
	"coffre/ingest/usb"
	"coffre/internal/testenv"
)

// The end-to-end tests drive the real binaries: courier → frames / USB
// image → coffred → drives → coffre audit → restitution → gpg --decrypt.

// binDir holds the binaries as shipped; crashBinDir the same built with
// crash points (internal/crashpoint), for the kill tests.
var binDir, crashBinDir string

func TestMain(m *testing.M) {
	usb.RunChildIfRequested()
	dir, err := testenv.BuildCommands()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	crashDir, err := testenv.BuildCommands("crashpoints")
	if err != nil {
		os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir, crashBinDir = dir, crashDir
	code := m.Run()
	os.RemoveAll(dir)
	os.RemoveAll(crashDir)
	os.Exit(code)
}

const testPass = "e2e-keystore-passphrase"

type env struct {
	t     *testing.T
	dir   string
	state string
}

func (e *env) coffre(args ...string) string {
	e.t.Helper()
	out, code := e.run(args...)
	if code != 0 {
		e.t.Fatalf("coffre %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

func (e *env) run(args ...string) (string, int) {
	cmd := exec.Command(filepath.Join(binDir, "coffre"), args...)
	cmd.Env = append(os.Environ(), "COFFRE_PASSPHRASE="+testPass)
	cmd.Dir = e.dir
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatal(err)
	}
	return string(out), code
}

func (e *env) path(p ...string) string { return filepath.Join(append([]string{e.dir}, p...)...) }

// newVault provisions a vault with four image drives, three bailiffs (2 of
// 3) and a pinned courier.
func newVault(t *testing.T) *env { return newVaultSize(t, 64<<20) }

func newVaultSize(t *testing.T, driveSize int64) *env { return newVaultImages(t, driveSize, false) }

// newVaultImages makes the vault's four drive images of driveSize bytes;
// written says whether to write them whole (with zeros) first, as a
// benchmark wants: a real drive has no unwritten extents to convert on
// first write, and the peer a bench compares with may write where we
// already did.
func newVaultImages(t *testing.T, driveSize int64, written bool) *env {
	e := &env{t: t, dir: t.TempDir()}
	e.state = e.path("state")
	e.coffre("init", "--state", e.state, "--fast-kdf")
	for i := 1; i <= 4; i++ {
		if written {
			img := e.path(fmt.Sprintf("drive%d.img", i))
			if out, err := exec.Command("dd", "if=/dev/zero", "of="+img, "bs=1M", fmt.Sprintf("count=%d", driveSize>>20),
				"conv=fdatasync", "status=none").CombinedOutput(); err != nil {
				t.Fatalf("dd: %v %s", err, out)
			}
		}
		e.coffre("drive", "format", "--state", e.state, "--slot", fmt.Sprint(i), "--size", fmt.Sprint(driveSize), e.path(fmt.Sprintf("drive%d.img", i)))
	}
	var gens []string
	for i := 1; i <= 3; i++ {
		pf := e.path(fmt.Sprintf("pass%d", i))
		os.WriteFile(pf, []byte(fmt.Sprintf("bailiff-%d-secret\n", i)), 0o600)
		gens = append(gens, "--generate", fmt.Sprintf("B%d:b%d@example.invalid:%s", i, i, pf))
	}
	e.coffre(append([]string{"ceremony", "genesis", "--state", e.state, "--threshold", "2", "--out", e.path("ceremony")}, gens...)...)
	e.coffre("courier", "keygen", "--out", e.path("courier.sec.asc"), "--pub", e.path("courier.pub.asc"))
	e.coffre("courier", "pin", "--state", e.state, e.path("courier.pub.asc"))
	id, err := appliance.LoadIdentity(e.state)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(e.path("ingest.pub.asc"), []byte(id.IngestKey), 0o644)
	os.WriteFile(e.path("audit.pub"), []byte(id.AuditKey+"\n"), 0o644)
	return e
}

func (e *env) seal(name, user, item string, version int, content []byte) string {
	in := e.path(name + ".plain")
	os.WriteFile(in, content, 0o600)
	out := e.path(name + ".env")
	e.coffre("courier", "seal", "--ingest-key", e.path("ingest.pub.asc"), "--courier-key", e.path("courier.sec.asc"),
		"--user", user, "--item", item, "--version", fmt.Sprint(version), "--kind", "letter", "--out", out, in)
	return out
}

// auditVerifier is what an auditor holds: the vault's audit key and origin.
func (e *env) auditVerifier() (note.Verifier, string) {
	e.t.Helper()
	id, err := appliance.LoadIdentity(e.state)
	if err != nil {
		e.t.Fatal(err)
	}
	v, err := note.NewVerifier(id.AuditKey)
	if err != nil {
		e.t.Fatal(err)
	}
	return v, id.Origin
}

func (e *env) drives() []string {
	var d []string
	for i := 1; i <= 4; i++ {
		d = append(d, e.path(fmt.Sprintf("drive%d.img", i)))
	}
	return d
}

func (e *env) writeConfig(qrDir, usbDir string) string {
	cfg := map[string]any{
		"state":    e.state,
		"keystore": map[string]any{"backend": "soft", "passphrase_file": e.path("kspass")},
		"drives":   e.drives(),
		"sources": map[string]any{"qr_dirs": []string{qrDir}, "usb_dirs": []string{usbDir}, "poll": "100ms",
			// No camera is plugged in here: the daemon must say so and go on.
			"cameras": []map[string]any{{"device": e.path("video9")}}},
		"socket": e.path("control.sock"),
	}
	os.WriteFile(e.path("kspass"), []byte(testPass+"\n"), 0o600)
	b, _ := json.MarshalIndent(cfg, "", " ")
	p := e.path("coffred.json")
	os.WriteFile(p, b, 0o600)
	return p
}

type daemon struct {
	cmd  *exec.Cmd
	logs *bytes.Buffer
	done chan error
}

func (e *env) startDaemon(cfg string) *daemon {
	cmd := exec.Command(filepath.Join(binDir, "coffred"), "--config", cfg)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	d := &daemon{cmd: cmd, logs: &logs, done: make(chan error, 1)}
	go func() { d.done <- cmd.Wait() }()
	return d
}

func (e *env) status() (appliance.Status, error) {
	var st appliance.Status
	err := appliance.Call(e.path("control.sock"), "status", nil, &st)
	return st, err
}

func (e *env) waitStored(d *daemon, n int, timeout time.Duration) appliance.Status {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		st, err := e.status()
		if err == nil && st.Stored+st.Replays >= n {
			return st
		}
		if err == nil && st.Rejected > 0 {
			e.t.Fatalf("coffred rejected %d upload(s): %+v", st.Rejected, st.LastErrors)
		}
		select {
		case err := <-d.done:
			e.t.Fatalf("coffred exited: %v\n%s", err, d.logs)
		case <-time.After(100 * time.Millisecond):
		}
	}
	st, err := e.status()
	e.t.Fatalf("timed out waiting for %d uploads: %+v %v\n%s", n, st, err, d.logs)
	return st
}

func TestEndToEnd(t *testing.T) {
	gpg := testenv.RequireTool(t, "gpg", "gnupg")
	e := newVault(t)
	contents := map[string][]byte{
		"a1": []byte("alice's password: correct horse battery staple\n"),
		"a2": bytes.Repeat([]byte("alice's letter. "), 5000),
		"b1": []byte("bob's seed phrase: abandon ability able\n"),
	}
	envA1 := e.seal("a1", "alice", "password", 1, contents["a1"])
	envA2 := e.seal("a2", "alice", "letter", 1, contents["a2"])
	envB1 := e.seal("b1", "bob", "seed", 1, contents["b1"])

	// Online side: frames for a1 and b1, a USB image for a2.
	qrSpool, usbSpool := e.path("spool-qr"), e.path("spool-usb")
	os.MkdirAll(qrSpool, 0o755)
	os.MkdirAll(usbSpool, 0o755)
	e.coffre("courier", "qr", "--out", e.path("frames-a1"), "--html", e.path("a1.html"), envA1)
	e.coffre("courier", "qr", "--out", e.path("frames-b1"), envB1)
	e.coffre("courier", "usb", "--image", "--out", e.path("stick.img"), envA2)

	d := e.startDaemon(e.writeConfig(qrSpool, usbSpool))
	defer d.cmd.Process.Kill()
	// The camera drops a1's frames into the spool as pictures; b1 arrives as
	// a screen recording (H.264, as a stand-alone camera would make it).
	ents, _ := os.ReadDir(e.path("frames-a1"))
	for _, f := range ents {
		b, _ := os.ReadFile(e.path("frames-a1", f.Name()))
		os.WriteFile(filepath.Join(qrSpool, "frames-a1-"+f.Name()), b, 0o644)
	}
	video := e.path("b1.mp4")
	ffmpeg := exec.Command(testenv.RequireTool(t, "ffmpeg", "ffmpeg"), "-nostdin", "-v", "error", "-framerate", "5",
		"-i", e.path("frames-b1", "frame-%05d.png"), "-vf", "pad=ceil(iw/2)*2+64:ceil(ih/2)*2+64:32:32:white",
		"-c:v", "libx264", "-crf", "20", "-pix_fmt", "yuv420p", video)
	if out, err := ffmpeg.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	testenv.RequireTool(t, "ffprobe", "ffmpeg")
	if err := os.Rename(video, filepath.Join(qrSpool, "b1.mp4")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(e.path("stick.img"))
	os.WriteFile(filepath.Join(usbSpool, "stick.img"), b, 0o644)
	st := e.waitStored(d, 3, 90*time.Second)
	if st.Stored != 3 || st.Rejected != 0 {
		t.Fatalf("status %+v\n%s", st, d.logs)
	}

	camReported := false
	for _, ev := range st.LastErrors {
		camReported = camReported || (ev.Source == e.path("video9") && strings.Contains(ev.Advice, "camera"))
	}
	if !camReported {
		t.Fatalf("the missing camera is not on the console: %+v", st.LastErrors)
	}

	// Nothing but unix sockets.
	checkNoInetSockets(t, d.cmd.Process.Pid)
	// The control socket is 0600.
	fi, err := os.Stat(e.path("control.sock"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode: %v %v", fi, err)
	}

	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("coffred exit after SIGTERM: %v\n%s", err, d.logs)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("coffred did not stop after SIGTERM")
	}
	if strings.Contains(d.logs.String(), string(contents["a1"][:20])) {
		t.Fatal("plaintext reached the daemon's log")
	}

	// Receipts verify against the audit key.
	rs, _ := filepath.Glob(filepath.Join(e.state, "receipts", "*.tlog-proof"))
	if len(rs) != 3 {
		t.Fatalf("%d receipts, want 3", len(rs))
	}
	id, _ := appliance.LoadIdentity(e.state)
	v, _ := note.NewVerifier(id.AuditKey)
	for _, p := range rs {
		data, _ := os.ReadFile(p)
		r, err := receipt.Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Verify(v, id.Origin); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}

	// The auditor, with the public key only.
	out := e.coffre(append([]string{"audit", "--audit-key", e.path("audit.pub"), "--keep", e.path("kept.cp")}, e.drives()...)...)
	t.Logf("audit:\n%s", out)

	// Restitution of alice to a beneficiary made with GnuPG.
	home := t.TempDir()
	gpgRun := func(args ...string) []byte {
		cmd := exec.Command(gpg, append([]string{"--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("gpg %v: %v", args, err)
		}
		return out
	}
	params := e.path("claire.params")
	os.WriteFile(params, []byte("Key-Type: ECDSA\nKey-Curve: nistp521\nSubkey-Type: ECDH\nSubkey-Curve: nistp521\nName-Real: Claire\nName-Email: claire@example.invalid\nExpire-Date: 0\n%no-protection\n%commit\n"), 0o600)
	gpgRun("--gen-key", params)
	os.WriteFile(e.path("claire.pub.asc"), gpgRun("--armor", "--export", "claire@example.invalid"), 0o644)
	e.coffre("restitute", "--state", e.state, "--user", "alice", "--to", e.path("claire.pub.asc"),
		"--reference", "Succession 2026/1", "--out", e.path("restitution"),
		"--bailiff", e.path("ceremony", "B1.sec.asc")+":"+e.path("pass1"),
		"--bailiff", e.path("ceremony", "B3.sec.asc")+":"+e.path("pass3"))
	items, _ := filepath.Glob(e.path("restitution", "items", "*"))
	if len(items) != 2 {
		t.Fatalf("restitution has %d items, want alice's 2: %v", len(items), items)
	}
	got := map[[32]byte]bool{}
	for _, it := range items {
		got[sha256.Sum256(gpgRun("--decrypt", it))] = true
	}
	for _, k := range []string{"a1", "a2"} {
		if !got[sha256.Sum256(contents[k])] {
			t.Fatalf("gpg did not recover %s from the package", k)
		}
	}
	if got[sha256.Sum256(contents["b1"])] {
		t.Fatal("bob's item was released in alice's restitution")
	}
	// The drives still audit clean and append-only since the kept checkpoint.
	e.coffre(append([]string{"audit", "--audit-key", e.path("audit.pub"), "--since", e.path("kept.cp")}, e.drives()...)...)
}

// checkNoInetSockets fails if the process holds any TCP, UDP or raw socket.
func checkNoInetSockets(t *testing.T, pid int) {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	if len(inodes) == 0 {
		t.Fatal("coffred holds no socket at all: the control socket should be one (the check would prove nothing)")
	}
	unixFound := false
	for _, table := range []string{"tcp", "tcp6", "udp", "udp6", "raw", "raw6", "unix"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue
		}
		col := 9 // inode column of tcp, udp and raw
		if table == "unix" {
			col = 6
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) <= col || !inodes[fields[col]] {
				continue
			}
			if table == "unix" {
				unixFound = true
			} else {
				t.Errorf("coffred holds a %s socket: %s", table, sc.Text())
			}
		}
		f.Close()
	}
	if !unixFound {
		t.Error("coffred's control socket was not found among its unix sockets")
	}
}
