//go:build bench

package appliance_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"coffre/appliance"
	"coffre/bailiff"
	"coffre/hsm"
	"coffre/ingest/envelope"
	"coffre/internal/benchrow"
	"coffre/storage"
	"coffre/storage/catalog"
)

// TestBenchPipeline measures sustained uploads through a running coffred
// (1 KiB items: uploads/s; 10 MiB items: MB/s) against the sum of its
// stages measured alone in the same run (envelope open, escrow re-encryption,
// replicated append): the pipeline's efficiency. Peak memory of coffred is
// reported too.
func TestBenchPipeline(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
		size int
	}{{"1KiB", 300, 1 << 10}, {"10MiB", 6, 10 << 20}} {
		t.Run(tc.name, func(t *testing.T) { benchPipeline(t, tc.n, tc.size) })
	}
}

func benchPipeline(t *testing.T, n, size int) {
	e := newVaultSize(t, int64(4*n*size+(64<<20)))
	id, _ := appliance.LoadIdentity(e.state)
	ing, err := envelope.ReadKeys(strings.NewReader(id.IngestKey))
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := os.ReadFile(e.path("courier.sec.asc"))
	cour, _ := envelope.ReadKeys(bytes.NewReader(cb))
	envs := make([][]byte, n)
	plains := make([][]byte, n)
	for i := range envs {
		plains[i] = make([]byte, size)
		rand.Read(plains[i])
		p := e.path(fmt.Sprintf("b%04d.env", i))
		m := envelope.Manifest{UserID: fmt.Sprintf("u%d", i%10), ItemID: fmt.Sprintf("i%d", i), Version: 1, Kind: "document", ContentType: "application/octet-stream"}
		if err := appliance.SealEnvelope(p, ing[0], cour[0], m, envelope.NewUploadID(), bytes.NewReader(plains[i])); err != nil {
			t.Fatal(err)
		}
		envs[i], _ = os.ReadFile(p)
	}
	// Stages alone, in the same run.
	a, err := appliance.Open(e.state, appliance.OpenOptions{Keystore: hsm.Config{Backend: "soft", Passphrase: []byte(testPass)}, Drives: e.drives()})
	if err != nil {
		t.Fatal(err)
	}
	ingPriv := appliance.IngestKeysForBench(a)
	couriers := openpgp.EntityList{cour[0]}
	t0 := time.Now()
	for _, env := range envs {
		up, err := envelope.Open(bytes.NewReader(env), envelope.OpenParams{IngestKeys: ingPriv, Couriers: couriers, Seen: func(string) (bool, error) { return false, nil }})
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, up.Content)
	}
	tOpen := time.Since(t0)
	esc, err := bailiff.NewEscrow("bench", mustRoster(t, a))
	if err != nil {
		t.Fatal(err)
	}
	sealed := make([][]byte, n)
	t0 = time.Now()
	for i, p := range plains {
		var b bytes.Buffer
		if _, err := bailiff.SealItem(&b, esc.PublicKey(), bytes.NewReader(p)); err != nil {
			t.Fatal(err)
		}
		sealed[i] = b.Bytes()
	}
	tSeal := time.Since(t0)
	meta, err := catalog.EncodeMeta(catalog.Meta{Kind: catalog.KindItem, UserID: "bench", ItemID: "x", Version: 1, UploadID: envelope.NewUploadID(), ItemKind: "document", ContentType: "application/octet-stream", Size: int64(size)})
	if err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	for _, s := range sealed {
		if _, err := a.Vault().Append(context.Background(), storage.Record{Type: storage.TypeItem, Meta: meta, Body: bytes.NewReader(s)}); err != nil {
			t.Fatal(err)
		}
	}
	tAppend := time.Since(t0)
	a.Close()
	stages := tOpen + tSeal + tAppend

	// Through coffred: the bundle appears in the spool of a running daemon.
	spool := e.path("spool")
	os.MkdirAll(spool, 0o755)
	os.MkdirAll(e.path("noqr"), 0o755)
	var list []string
	for i := range envs {
		list = append(list, e.path(fmt.Sprintf("b%04d.env", i)))
	}
	e.coffre(append([]string{"courier", "usb", "--out", e.path("bundle")}, list...)...)
	d := e.startDaemon(e.writeConfig(e.path("noqr"), spool))
	for {
		if _, err := e.status(); err == nil {
			break
		}
		select {
		case err := <-d.done:
			t.Fatalf("coffred exited: %v\n%s", err, d.logs)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t0 = time.Now()
	os.Rename(e.path("bundle"), filepath.Join(spool, "bundle"))
	e.waitStored(d, n, 30*time.Minute)
	through := time.Since(t0)
	hwm := vmHWM(d.cmd.Process.Pid)
	d.cmd.Process.Signal(syscall.SIGTERM)
	<-d.done

	if size <= 1<<10 {
		benchrow.Record(t, benchrow.Row{Name: "pipeline uploads/s, 1 KiB items through coffred", Ours: float64(n) / through.Seconds(),
			Peer: "sum of stages alone (open+re-encrypt+append)", PeerValue: float64(n) / stages.Seconds(), Unit: "uploads/s", Goal: 0.8, HigherIsBetter: true,
			Note: fmt.Sprintf("coffred peak RSS %d MiB", hwm>>20)})
	} else {
		mb := float64(n*size) / (1 << 20)
		benchrow.Record(t, benchrow.Row{Name: "pipeline MB/s, 10 MiB items through coffred", Ours: mb / through.Seconds(),
			Peer: "sum of stages alone (open+re-encrypt+append)", PeerValue: mb / stages.Seconds(), Unit: "MiB/s", Goal: 0.8, HigherIsBetter: true,
			Note: fmt.Sprintf("coffred peak RSS %d MiB", hwm>>20)})
	}
}

func mustRoster(t *testing.T, a *appliance.Appliance) *bailiff.Roster {
	r, err := a.Roster()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// vmHWM reads a process's peak resident set size.
func vmHWM(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
