package appliance_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffre/appliance"
	"coffre/hsm"
	"coffre/storage"
	"coffre/storage/catalog"
)

// TestRekeyResumesAfterKill runs the record-layer rekey (re-encapsulation
// kind 1) as a real process killed 20 times at random moments: the final
// run completes, every live record is under the new epoch, nothing is lost
// or doubled, the drives audit clean and a restitution still opens the
// re-encrypted items.
func TestRekeyResumesAfterKill(t *testing.T) {
	e := newVault(t)
	var envs []string
	for i := 0; i < 48; i++ {
		envs = append(envs, e.seal(fmt.Sprintf("r%d", i), fmt.Sprintf("user%d", i%3), fmt.Sprintf("item%d", i), 1, []byte(fmt.Sprintf("secret %d", i))))
	}
	e.coffre(append([]string{"courier", "usb", "--out", e.path("bundle")}, envs...)...)
	e.coffre("ingest", "usb", "--state", e.state, e.path("bundle"))
	openA := func() *appliance.Appliance {
		a, err := appliance.Open(e.state, appliance.OpenOptions{Keystore: hsm.Config{Backend: "soft", Passphrase: []byte(testPass)}, Drives: e.drives()})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := openA()
	before, err := a.RecordEpochs()
	if err != nil {
		t.Fatal(err)
	}
	liveItems := func(a *appliance.Appliance) int {
		n := 0
		for u := 0; u < 3; u++ {
			es, err := a.Catalog().Live(fmt.Sprintf("user%d", u))
			if err != nil {
				t.Fatal(err)
			}
			for _, en := range es {
				if en.Meta.Kind == catalog.KindItem {
					n++
				}
			}
		}
		return n
	}
	if n := liveItems(a); n != 48 {
		t.Fatalf("%d live items before, want 48", n)
	}
	a.Close()
	if before[0] == 0 || len(before) != 1 {
		t.Fatalf("records by epoch before: %v", before)
	}

	// Twenty rekey jobs, each to a fresh epoch, each killed part-way and
	// resumed: every cycle must end with all live records under the new
	// epoch and the same 48 live items (nothing lost, nothing doubled).
	rng := killSeed(t.Logf)
	midJob := 0
	for i := 0; i < 20; i++ {
		e.coffre("reencap", "run", "--state", e.state, "--kind", "record", "--new-epoch", "--max", "0")
		// Batches of 2 records: 24.
		crash := pickCrash(rng, i, 24)
		e.runKilled(crash, "reencap", "run", "--state", e.state, "--kind", "record", "--batch", "2")
		a := openA()
		// Part-way, as the drives show it: live records under both the
		// new epoch and an older one (the saved job state may lag them).
		mid, err := a.RecordEpochs()
		if err != nil {
			t.Fatal(err)
		}
		if len(mid) > 1 && mid[uint32(i+1)] > 0 {
			midJob++
		} else if crash.betweenBatches() {
			t.Fatalf("cycle %d: killed at %v, but the job is not part-way (live records by epoch %v)", i, crash, mid)
		}
		// Status counts what the drives hold, not the saved state.
		if job, ok, err := a.RekeyStatus(); err != nil || !ok || job.Epoch != uint32(i+1) {
			t.Fatalf("cycle %d: status %+v %v %v", i, job, ok, err)
		} else if left := before[0] - mid[uint32(i+1)]; job.Done != job.Total-left || (job.Status == "done") != (left == 0) {
			t.Fatalf("cycle %d: status says %d of %d done (%s), the drives %d left under older epochs", i, job.Done, job.Total, job.Status, left)
		}
		a.Close()
		e.coffre("reencap", "run", "--state", e.state, "--kind", "record")
		a = openA()
		ep, err := a.RecordEpochs()
		if err != nil {
			t.Fatal(err)
		}
		if len(ep) != 1 || ep[uint32(i+1)] != before[0] {
			t.Fatalf("cycle %d: live records by epoch %v, want all %d under epoch %d", i, ep, before[0], i+1)
		}
		if n := liveItems(a); n != 48 {
			t.Fatalf("cycle %d: %d live items, want 48 (lost or doubled)", i, n)
		}
		a.Close()
	}
	t.Logf("%d of 20 kills left the job part-way", midJob)

	a = openA()
	defer a.Close()
	after, err := a.RecordEpochs()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 1 || after[20] != before[0] {
		t.Fatalf("live records by epoch after: %v, want all %d under epoch 20", after, before[0])
	}
	if n := liveItems(a); n != 48 {
		t.Fatalf("%d live items after the rekey, want 48 (lost or doubled)", n)
	}
	job, ok, err := a.RekeyStatus()
	if err != nil || !ok || job.Status != "done" {
		t.Fatalf("job %+v %v %v", job, ok, err)
	}
	// Restitution reads the re-encrypted records.
	bpub, err := os.ReadFile(filepath.Join(e.path("ceremony"), "B1.pub.asc"))
	if err != nil {
		t.Fatal(err)
	}
	var present []appliance.BailiffSecret
	for _, i := range []int{1, 2} {
		sec, _ := os.ReadFile(e.path("ceremony", fmt.Sprintf("B%d.sec.asc", i)))
		pass, _ := os.ReadFile(e.path(fmt.Sprintf("pass%d", i)))
		present = append(present, appliance.BailiffSecret{Label: fmt.Sprint(i), SecretKey: sec, Passphrase: pass[:len(pass)-1]})
	}
	res, err := a.Restitute(context.Background(), appliance.RestituteOptions{UserID: "user1", Beneficiary: bpub, Reference: "test", Bailiffs: present, OutDir: e.path("rest")})
	if err != nil {
		t.Fatal(err)
	}
	if res.Items != 16 {
		t.Fatalf("restitution of user1 released %d items, want 16", res.Items)
	}
	a.Close()
	e.coffre(append([]string{"audit", "--audit-key", e.path("audit.pub")}, e.drives()...)...)
}

// TestRekeyStopsAtUnreadableRecord: a record damaged on every drive stops
// the rekey with an error that names it; the records before it (read
// ahead, in order, a large one streamed) are re-encrypted with their
// bodies intact, and neither it nor any record after it is touched.
func TestRekeyStopsAtUnreadableRecord(t *testing.T) {
	e := newVaultSize(t, 128<<20)
	items := map[string][]byte{}
	for i := range 10 {
		n := 1000 + 97*i
		if i == 4 {
			n = 6 << 20 // above the read-whole bound: streamed alone
		}
		b := make([]byte, n)
		rand.Read(b)
		items[fmt.Sprintf("doc%02d", i)] = b
	}
	e.ingestItems(items, func(string) string { return "alice" })

	// The live records the rekey will take, in order; the victim is the
	// seventh item, after the large one.
	a := e.open()
	var todo []uint64
	var victim uint64
	nItems := 0
	err := a.Vault().Records(0, func(r storage.RecordInfo) error {
		en, err := a.Catalog().Get(r.Index)
		if err != nil || !en.Live() || en.Meta.Kind == catalog.KindGenesis || r.Type == storage.TypeCheckpoint {
			return nil
		}
		todo = append(todo, r.Index)
		if en.Meta.Kind == catalog.KindItem {
			if nItems++; nItems == 7 {
				victim = r.Index
			}
		}
		return nil
	})
	if err != nil || victim == 0 {
		t.Fatalf("records: %v (victim %d)", err, victim)
	}
	bodies := map[uint64][]byte{}
	var victimOff int64
	for _, idx := range todo {
		h, _, body, err := a.Vault().Get(idx)
		if err != nil {
			t.Fatal(err)
		}
		if bodies[idx], err = io.ReadAll(body); err != nil {
			t.Fatal(err)
		}
		if idx == victim {
			victimOff = h.Offset
		}
	}
	a.Close()
	for _, p := range e.drives() {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("damage"), victimOff+storage.HeaderSize+200); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}

	a = e.open()
	defer a.Close()
	_, err = a.Rekey(context.Background(), appliance.RekeyOptions{NewEpoch: true, Max: -1, Batch: 1})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("record %d", victim)) {
		t.Fatalf("rekey over a record damaged everywhere: %v, want an error naming record %d", err, victim)
	}
	// Before the victim: superseded by a copy under epoch 1 with the same
	// body. The victim and after: live, untouched.
	newer := map[uint64]uint64{}
	err = a.Vault().Records(0, func(r storage.RecordInfo) error {
		en, err := a.Catalog().Get(r.Index)
		if err == nil && en.Meta.Supersedes != 0 && r.KeyEpoch == 1 {
			newer[en.Meta.Supersedes] = r.Index
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, idx := range todo {
		en, err := a.Catalog().Get(idx)
		if err != nil {
			t.Fatal(err)
		}
		n, done := newer[idx]
		if idx >= victim {
			if done || !en.Live() {
				t.Fatalf("record %d (at or after the damaged %d) was re-encrypted", idx, victim)
			}
			continue
		}
		if !done || en.Live() {
			t.Fatalf("record %d (before the damaged %d) was not re-encrypted (live %v)", idx, victim, en.Live())
		}
		h, _, body, err := a.Vault().Get(n)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(body)
		if err != nil || !bytes.Equal(got, bodies[idx]) || h.KeyEpoch != 1 {
			t.Fatalf("record %d's new copy %d: epoch %d, body equal %v, %v", idx, n, h.KeyEpoch, bytes.Equal(got, bodies[idx]), err)
		}
	}
}

// A rekey holds the drives for a run of batches; a writer that comes
// meanwhile (an ingest) gets in between two batches, not after the job.
func TestRekeyLetsWritersIn(t *testing.T) {
	e := newVaultSize(t, 128<<20)
	items := map[string][]byte{}
	for i := range 30 {
		b := make([]byte, 3000+i)
		rand.Read(b)
		items[fmt.Sprintf("doc%02d", i)] = b
	}
	e.ingestItems(items, func(string) string { return "alice" })
	a := e.open()
	defer a.Close()
	wrote := make(chan error, 1)
	var seen, total int
	progress := func(done, n int) {
		total = n
		select {
		case err := <-wrote:
			if err != nil {
				t.Errorf("write during the rekey: %v", err)
			}
			seen = done
		default:
		}
		if done == 1 {
			go func() { wrote <- appliance.BulkForBench(a, 1, nil) }()
		}
	}
	job, err := a.Rekey(context.Background(), appliance.RekeyOptions{NewEpoch: true, Max: -1, Batch: 1, Progress: progress})
	if err != nil || job.Status != "done" {
		t.Fatalf("rekey: %+v %v", job, err)
	}
	if seen == 0 || seen >= total {
		t.Fatalf("the write landed after the rekey's %dth of %d batches, want between two of them", seen, total)
	}
	epochs, err := a.RecordEpochs()
	if err != nil {
		t.Fatal(err)
	}
	// The write went in under the new epoch; every item under it too.
	if len(epochs) != 1 || epochs[job.Epoch] == 0 {
		t.Fatalf("live records by epoch %v, want all under %d", epochs, job.Epoch)
	}
}
