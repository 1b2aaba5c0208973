package appliance_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"coffre/appliance"
	"coffre/storage/catalog"
)

// liveItemBodies reads the bodies of a user's live item records, by
// "item/version".
func liveItemBodies(t *testing.T, a *appliance.Appliance, user string) map[string][]byte {
	t.Helper()
	live, err := a.Catalog().Live(user)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, en := range live {
		if en.Meta.Kind != catalog.KindItem {
			continue
		}
		_, _, body, err := a.Vault().Get(en.Record)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(body)
		body.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[fmt.Sprintf("%s/%d", en.Meta.ItemID, en.Meta.Version)] = b
	}
	return out
}

// dataPacket returns what follows the key packet of a sealed item: the
// encrypted data packet.
func dataPacket(t *testing.T, item []byte) []byte {
	t.Helper()
	r := bytes.NewReader(item)
	p, err := packet.Read(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.(*packet.EncryptedKey); !ok {
		t.Fatalf("item starts with %T, not a PKESK", p)
	}
	return item[len(item)-r.Len():]
}

// TestReencapEscrowRotation runs an escrow key rotation end to end for one
// user: refused without the quorum (nothing written), planned with the
// quorum needed, then run with one bailiff's key and another bailiff's
// order signature and share card made with GnuPG. The user gets a new
// escrow key; every item version keeps its encrypted data packet byte for
// byte under a new key packet; other users are untouched; restitution
// releases every item, also one ingested after the rotation; the drives
// audit clean.
func TestReencapEscrowRotation(t *testing.T) {
	e, contents := newQuorumVault(t, 3, 2)
	v2 := []byte("second version of item1 of user0")
	e.ingestEnvelopes([]string{e.sealFast("user0", "item1", 2, v2)})
	contents["user0"]["item1/2"] = v2

	a := e.open()
	escs, recs, _ := liveState(t, a)
	oldFpr := escs["user0"].Fingerprint
	oldBodies := liveItemBodies(t, a, "user0")
	size := a.Vault().Size()
	a.Close()
	if len(oldBodies) != 3 {
		t.Fatalf("user0 has %d live items, want 3", len(oldBodies))
	}

	out, code := e.run("reencap", "run", "--state", e.state, "--kind", "escrow", "--user", "user0", "--bailiff", e.bailiffArg(1))
	if code != 1 || !strings.Contains(out, "1 valid bailiff signatures, needs 2") {
		t.Fatalf("rotation with one bailiff: exit %d\n%s", code, out)
	}
	a = e.open()
	if a.Vault().Size() != size {
		t.Fatal("a refused rotation wrote records")
	}
	a.Close()
	plan := e.coffre("reencap", "plan", "--state", e.state, "--rotate", "user0")
	if !regexp.MustCompile(`3 +escrow-rotation +yes +4 +1 `).MatchString(plan) || !strings.Contains(plan, "quorum needed: yes") {
		t.Fatalf("plan --rotate user0:\n%s", plan)
	}

	// B3 works with GnuPG only: signs the drafted order, opens their
	// share message. B1 is present with their key.
	e.coffre("reencap", "draft-order", "--state", e.state, "--kind", "escrow", "--user", "user0", "--reason", "user0 asked for a new recipient", "--out", e.path("order.txt"))
	gpg3 := e.gpgAs(3)
	gpg3("--output", e.path("order.b3.sig"), "--detach-sign", e.path("order.txt.body"))
	e.coffre("reencap", "shares", "--state", e.state, "--bailiff", e.fingerprint(3), "--user", "user0", "--out", e.path("b3-shares"))
	e.gpgCards(3, e.path("b3-shares"))
	out = e.coffre("reencap", "run", "--state", e.state, "--kind", "escrow", "--order", e.path("order.txt"), "--order-sig", e.path("order.b3.sig"),
		"--bailiff", e.bailiffArg(1), "--share-cards", e.path("b3-shares"))
	if !strings.Contains(out, "escrow-rotation done") {
		t.Fatalf("run: %s", out)
	}
	// Nothing secret reaches the console or the log.
	for _, secret := range []string{"bailiff-1-secret", "bailiff-3-secret", "COFFRE-SHARE", "secret 1 of user0"} {
		if strings.Contains(out, secret) {
			t.Fatalf("%q appears in the output of the rotation:\n%s", secret, out)
		}
	}
	if out := e.coffre("reencap", "status", "--state", e.state); !strings.Contains(out, "done, 3 of 3 items") {
		t.Fatalf("status: %s", out)
	}
	// An order is carried out once.
	if out, code := e.run("reencap", "run", "--state", e.state, "--kind", "escrow", "--order", e.path("order.txt"), "--order-sig", e.path("order.b3.sig"),
		"--bailiff", e.bailiffArg(1), "--share-cards", e.path("b3-shares")); code != 1 || !strings.Contains(out, "already carried out") {
		t.Fatalf("the same order again: exit %d\n%s", code, out)
	}

	a = e.open()
	escs2, recs2, items := liveState(t, a)
	if escs2["user0"].Fingerprint == oldFpr {
		t.Fatal("user0 kept the old escrow key")
	}
	if items["user0"] != 3 {
		t.Fatalf("user0 has %d live items after the rotation, want 3", items["user0"])
	}
	for _, u := range []string{"user1", "user2", "coffre:verify-shares"} {
		if recs2[u].Record != recs[u].Record {
			t.Fatalf("escrow of %s changed", u)
		}
	}
	newBodies := liveItemBodies(t, a, "user0")
	for k, old := range oldBodies {
		nb, ok := newBodies[k]
		if !ok {
			t.Fatalf("item %s is no longer live", k)
		}
		if bytes.Equal(nb, old) || !bytes.Equal(dataPacket(t, nb), dataPacket(t, old)) {
			t.Fatalf("item %s: want a new key packet and the same data packet", k)
		}
	}
	e.checkRestitution(a, "user0", contents["user0"], 2, 3)
	e.checkRestitution(a, "user1", contents["user1"], 1, 2)
	a.Close()
	// A new upload of user0 is sealed to the new key.
	later := []byte("written after the rotation")
	e.ingestEnvelopes([]string{e.sealFast("user0", "item9", 1, later)})
	contents["user0"]["item9/1"] = later
	a = e.open()
	e.checkRestitution(a, "user0", contents["user0"], 1, 3)
	a.Close()
	e.coffre(append([]string{"audit", "--audit-key", e.path("audit.pub")}, e.drives()...)...)
}

// TestRewrapResumesAfterKill runs twenty escrow rotations of every
// user as real processes, each killed with SIGKILL while items are being
// re-wrapped, then resumed: every cycle ends with each user's escrow
// rotated once, every item version live exactly once and re-wrapped under
// the same order as its user's live escrow; at the end restitution opens
// the items under the twentieth key and the drives audit clean.
func TestRewrapResumesAfterKill(t *testing.T) {
	const users, per = 8, 4
	e, contents := newQuorumVault(t, users, per)
	var userArgs []string
	for u := 0; u < users; u++ {
		userArgs = append(userArgs, "--user", fmt.Sprintf("user%d", u))
	}
	rng := killSeed(t.Logf)
	midJob := 0
	prev := map[string]string{} // user → reencap attribute of the live escrow
	// The rotation prepares at most 4 users ahead of its commits, so 8
	// users take at least 2 batches.
	const batches = 2
	for i := 0; i < killCycles(); i++ {
		t0 := time.Now()
		crash := pickCrash(rng, i, batches)
		e.runKilled(crash, append([]string{"reencap", "run", "--state", e.state, "--kind", "escrow", "--bailiff", e.bailiffArg(1), "--bailiff", e.bailiffArg(2)}, userArgs...)...)
		t1 := time.Now()
		inFlight, partWay := e.jobState("escrow-rotation")
		if partWay {
			midJob++
		}
		if crash.betweenBatches() && !partWay {
			t.Fatalf("cycle %d: killed at %v, but the job is not part-way", i, crash)
		}
		t2 := time.Now()
		if inFlight { // a kill inside the last batch may leave it whole on the drives
			e.coffre("reencap", "run", "--state", e.state, "--kind", "escrow", "--bailiff", e.bailiffArg(2), "--bailiff", e.bailiffArg(3))
		}
		t3 := time.Now()
		a := e.open()
		prev = checkRotationCycle(t, a, users, per, prev, i)
		a.Close()
		t.Logf("cycle %d: killed at %v after %v, status %v, resume %v, check %v", i, crash, t1.Sub(t0), t2.Sub(t1), t3.Sub(t2), time.Since(t3))
	}
	t.Logf("%d of %d kills left the job part-way (the others: before its first batch was whole)", midJob, killCycles())
	a := e.open()
	defer a.Close()
	liveState(t, a)
	for _, u := range []string{"user0", "user5"} {
		e.checkRestitution(a, u, contents[u], 1, 3)
	}
	a.Close()
	e.coffre(append([]string{"audit", "--audit-key", e.path("audit.pub")}, e.drives()...)...)
}

// checkRotationCycle checks, after a rotation of every user: one live
// escrow per user, made by a new order (not the previous cycle's); per
// live items, each re-wrapped under that same order. It returns the
// orders by user.
func checkRotationCycle(t *testing.T, a *appliance.Appliance, users, per int, prev map[string]string, cycle int) map[string]string {
	t.Helper()
	escs, err := a.Catalog().ByKind(catalog.KindEscrow)
	if err != nil {
		t.Fatal(err)
	}
	cur := map[string]string{}
	for _, en := range escs {
		if !en.Live() || strings.HasPrefix(en.Meta.UserID, "coffre:") {
			continue
		}
		if _, dup := cur[en.Meta.UserID]; dup {
			t.Fatalf("cycle %d: user %s has two live escrows", cycle, en.Meta.UserID)
		}
		o := en.Meta.Attrs["reencap"]
		if o == "" || o == prev[en.Meta.UserID] {
			t.Fatalf("cycle %d: the escrow of %s was not rotated by this job", cycle, en.Meta.UserID)
		}
		cur[en.Meta.UserID] = o
	}
	if len(cur) != users {
		t.Fatalf("cycle %d: %d live escrows, want %d (lost or doubled)", cycle, len(cur), users)
	}
	items, err := a.Catalog().ByKind(catalog.KindItem)
	if err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	seen := map[string]bool{}
	for _, en := range items {
		if !en.Live() {
			continue
		}
		k := fmt.Sprintf("%s %s/%d", en.Meta.UserID, en.Meta.ItemID, en.Meta.Version)
		if seen[k] {
			t.Fatalf("cycle %d: %s is live twice", cycle, k)
		}
		seen[k] = true
		if en.Meta.Attrs["reencap"] != cur[en.Meta.UserID] {
			t.Fatalf("cycle %d: %s is not re-wrapped under its user's live escrow", cycle, k)
		}
		n[en.Meta.UserID]++
	}
	for u := range cur {
		if n[u] != per {
			t.Fatalf("cycle %d: user %s has %d live items, want %d", cycle, u, n[u], per)
		}
	}
	return cur
}

// TestReencapStopsOnInterrupt: SIGINT in the middle of a quorum job stops
// it cleanly (no goroutine left waiting, nothing half-written, exit 1 with
// the advice to resume), and the same command resumes it.
func TestReencapStopsOnInterrupt(t *testing.T) {
	const users, per = 6, 4
	e, _ := newQuorumVault(t, users, per)
	fp3 := e.fingerprint(3)
	e.enrol(4)
	e.coffre("reencap", "draft-roster", "--state", e.state, "--remove", fp3, "--add", "B4:"+e.path("ceremony", "B4.pub.asc"), "--out", e.path("r2.txt"))
	var userArgs []string
	for u := 0; u < users; u++ {
		userArgs = append(userArgs, "--user", fmt.Sprintf("user%d", u))
	}
	for _, c := range []struct {
		kind, progress string
		start          []string
	}{
		{"escrow", "re-wrapping", userArgs},
		// One escrow a batch: the job is still running when the signal lands.
		{"roster", "re-splitting", []string{"--new-roster", e.path("r2.txt"), "--new-bailiff", e.bailiffArg(4), "--batch", "1"}},
	} {
		args := append([]string{"reencap", "run", "--state", e.state, "--kind", c.kind, "--bailiff", e.bailiffArg(1), "--bailiff", e.bailiffArg(2)}, c.start...)
		cmd := exec.Command(filepath.Join(binDir, "coffre"), args...)
		cmd.Env = append(os.Environ(), "COFFRE_PASSPHRASE="+testPass)
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var seen []byte
		buf := make([]byte, 4096)
		for !bytes.Contains(seen, []byte(c.progress)) {
			n, err := stderr.Read(buf)
			seen = append(seen, buf[:n]...)
			if err != nil {
				break
			}
		}
		cmd.Process.Signal(syscall.SIGINT)
		rest, _ := io.ReadAll(stderr)
		seen = append(seen, rest...)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("%s: the job did not stop after SIGINT", c.kind)
		}
		if cmd.ProcessState.ExitCode() == 0 {
			// It may have finished before the signal landed; then there
			// is nothing to resume.
			t.Logf("%s: finished before SIGINT", c.kind)
			continue
		} else if !strings.Contains(string(seen), "run the same command again") {
			t.Fatalf("%s: exit %d without the advice to resume:\n%s", c.kind, cmd.ProcessState.ExitCode(), seen)
		}
		out := e.coffre("reencap", "run", "--state", e.state, "--kind", c.kind, "--bailiff", e.bailiffArg(1), "--bailiff", e.bailiffArg(2))
		if !strings.Contains(out, "done") {
			t.Fatalf("%s resume: %s", c.kind, out)
		}
	}
	a := e.open()
	defer a.Close()
	_, _, items := liveState(t, a)
	for u := 0; u < users; u++ {
		if n := items[fmt.Sprintf("user%d", u)]; n != per {
			t.Fatalf("user%d has %d live items, want %d", u, n, per)
		}
	}
}

// TestReencapInProcess runs both quorum kinds inside the test process, so
// that `go test -race` watches their workers (the other tests run them as
// the coffre binary).
func TestReencapInProcess(t *testing.T) {
	const users, per = 4, 3
	e, contents := newQuorumVault(t, users, per)
	e.enrol(4)
	secret := func(i int) appliance.BailiffSecret {
		sec, _ := os.ReadFile(e.path("ceremony", fmt.Sprintf("B%d.sec.asc", i)))
		pass, _ := os.ReadFile(e.path(fmt.Sprintf("pass%d", i)))
		return appliance.BailiffSecret{Label: fmt.Sprint(i), SecretKey: sec, Passphrase: bytes.TrimSpace(pass)}
	}
	var ids []string
	for u := 0; u < users; u++ {
		ids = append(ids, fmt.Sprintf("user%d", u))
	}
	a := e.open()
	defer a.Close()
	job, err := a.RotateEscrows(t.Context(), appliance.RotationOptions{Users: ids, Max: -1, Unlock: appliance.QuorumUnlock{Bailiffs: []appliance.BailiffSecret{secret(1), secret(2)}}})
	if err != nil || job.Status != "done" || job.Total != users*per {
		t.Fatalf("rotation: %+v %v", job, err)
	}
	pub, _ := os.ReadFile(e.path("ceremony", "B4.pub.asc"))
	next, err := a.DraftRoster(0, []string{e.fingerprint(3)}, []appliance.ImportedBailiff{{Name: "B4", Public: pub}})
	if err != nil {
		t.Fatal(err)
	}
	job, err = a.RosterChange(t.Context(), appliance.RosterChangeOptions{NewRoster: next.Marshal(), NewBailiffs: []appliance.BailiffSecret{secret(4)}, Max: -1,
		Unlock: appliance.QuorumUnlock{Bailiffs: []appliance.BailiffSecret{secret(1), secret(2)}}})
	if err != nil || job.Status != "done" || job.Total != users {
		t.Fatalf("roster change: %+v %v", job, err)
	}
	escs, _, items := liveState(t, a)
	for u, esc := range escs {
		if esc.RosterDigest != next.Digest() {
			t.Fatalf("escrow of %s is not under the new roster", u)
		}
		if !strings.HasPrefix(u, "coffre:") && items[u] != per {
			t.Fatalf("user %s has %d live items", u, items[u])
		}
	}
	for _, u := range ids {
		e.checkRestitution(a, u, contents[u], 1, 4)
	}
}
