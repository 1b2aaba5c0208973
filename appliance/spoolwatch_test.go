package appliance_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A bundle moved into a USB spool is taken when it arrives, not at the next
// poll: with a poll of an hour, coffred stores it all the same. A junk
// entry present at start shows that the start-up poll has run (it is
// reported on the console) before the bundle arrives.
func TestSpoolArrivalWakesDaemon(t *testing.T) {
	e := newVault(t)
	env := e.seal("w", "walt", "letter", 1, []byte("taken on arrival"))
	e.coffre("courier", "usb", "--out", e.path("bundle"), env)
	spool := e.path("spool")
	os.MkdirAll(filepath.Join(spool, "junk"), 0o755) // not a bundle: refused and reported
	os.MkdirAll(e.path("noqr"), 0o755)
	cfg := map[string]any{
		"state":    e.state,
		"keystore": map[string]any{"backend": "soft", "passphrase_file": e.path("kspass")},
		"drives":   e.drives(),
		"sources":  map[string]any{"qr_dirs": []string{e.path("noqr")}, "usb_dirs": []string{spool}, "poll": "1h"},
		"socket":   e.path("control.sock"),
	}
	os.WriteFile(e.path("kspass"), []byte(testPass+"\n"), 0o600)
	b, _ := json.Marshal(cfg)
	os.WriteFile(e.path("coffred.json"), b, 0o600)
	d := e.startDaemon(e.path("coffred.json"))
	defer func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		<-d.done
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if st, err := e.status(); err == nil && len(st.LastErrors) > 0 {
			break // the start-up poll has looked at the spool
		}
		if time.Now().After(deadline) {
			t.Fatal("the start-up poll never reported the junk entry")
		}
		select {
		case err := <-d.done:
			t.Fatalf("coffred exited: %v\n%s", err, d.logs)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := os.Rename(e.path("bundle"), filepath.Join(spool, "bundle")); err != nil {
		t.Fatal(err)
	}
	if st := e.waitStored(d, 1, 2*time.Minute); st.Stored != 1 {
		t.Fatalf("status after arrival: %+v", st)
	}
}
