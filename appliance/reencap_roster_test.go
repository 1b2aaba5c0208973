package appliance_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"coffre/appliance"
	"coffre/bailiff"
	"coffre/bailiff/policy"
	"coffre/hsm"
	"coffre/ingest/envelope"
	"coffre/internal/testenv"
	"coffre/storage/catalog"
)

// Helpers shared by the quorum re-encapsulation tests (kinds 2 and 3).

// newQuorumVault is newVault with items of several users ingested:
// users × per items, sealed in this process (faster than one coffre
// courier seal per item) and ingested from a USB bundle. It returns the
// contents by user, then "item/version".
func newQuorumVault(t *testing.T, users, per int) (*env, map[string]map[string][]byte) {
	e := newVault(t)
	contents := map[string]map[string][]byte{}
	var envs []string
	for u := 0; u < users; u++ {
		user := fmt.Sprintf("user%d", u)
		contents[user] = map[string][]byte{}
		for i := 0; i < per; i++ {
			c := []byte(fmt.Sprintf("secret %d of %s ", i, user))
			if i == 0 && u == 0 {
				c = bytes.Repeat(c, 100000) // one item above the 1 MiB in-memory limit: it streams
			}
			envs = append(envs, e.sealFast(user, fmt.Sprintf("item%d", i), 1, c))
			contents[user][fmt.Sprintf("item%d/1", i)] = c
		}
	}
	e.ingestEnvelopes(envs)
	return e, contents
}

// sealFast seals one upload in this process and returns the envelope path.
func (e *env) sealFast(user, item string, version uint32, content []byte) string {
	e.t.Helper()
	id, err := appliance.LoadIdentity(e.state)
	if err != nil {
		e.t.Fatal(err)
	}
	ing, err := envelope.ReadKeys(strings.NewReader(id.IngestKey))
	if err != nil {
		e.t.Fatal(err)
	}
	cb, _ := os.ReadFile(e.path("courier.sec.asc"))
	cour, err := envelope.ReadKeys(bytes.NewReader(cb))
	if err != nil {
		e.t.Fatal(err)
	}
	p := e.path(fmt.Sprintf("%s-%s-%d-%d.env", user, item, version, time.Now().UnixNano()))
	m := envelope.Manifest{UserID: user, ItemID: item, Version: version, Kind: "letter", ContentType: "text/plain"}
	if err := appliance.SealEnvelope(p, ing[0], cour[0], m, envelope.NewUploadID(), bytes.NewReader(content)); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// ingestEnvelopes ingests envelopes from USB bundles (at most 1000 a
// bundle: the format's limit is 1024 files).
func (e *env) ingestEnvelopes(envs []string) {
	e.t.Helper()
	for len(envs) > 0 {
		n := min(len(envs), 1000)
		b := e.path(fmt.Sprintf("bundle-%d", time.Now().UnixNano()))
		e.coffre(append([]string{"courier", "usb", "--out", b}, envs[:n]...)...)
		e.coffre("ingest", "usb", "--state", e.state, b)
		envs = envs[n:]
	}
}

func (e *env) open() *appliance.Appliance {
	e.t.Helper()
	a, err := appliance.Open(e.state, appliance.OpenOptions{Keystore: hsm.Config{Backend: "soft", Passphrase: []byte(testPass)}, Drives: e.drives()})
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

// bailiffArg is the --bailiff value of test bailiff i.
func (e *env) bailiffArg(i int) string {
	return e.path("ceremony", fmt.Sprintf("B%d.sec.asc", i)) + ":" + e.path(fmt.Sprintf("pass%d", i))
}

// enrol makes bailiff i's key with `coffre ceremony enrol` and returns its
// fingerprint.
func (e *env) enrol(i int) string {
	e.t.Helper()
	pf := e.path(fmt.Sprintf("pass%d", i))
	os.WriteFile(pf, []byte(fmt.Sprintf("bailiff-%d-secret\n", i)), 0o600)
	e.coffre("ceremony", "enrol", "--name", fmt.Sprintf("B%d", i), "--email", fmt.Sprintf("b%d@example.invalid", i), "--passphrase-file", pf, "--out", e.path("ceremony"))
	return e.fingerprint(i)
}

func (e *env) fingerprint(i int) string {
	e.t.Helper()
	pub, err := os.ReadFile(e.path("ceremony", fmt.Sprintf("B%d.pub.asc", i)))
	if err != nil {
		e.t.Fatal(err)
	}
	k, err := bailiff.ImportBailiffKey(fmt.Sprintf("B%d", i), pub, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return k.Fingerprint
}

// liveState reads every user's live escrow and counts their live item
// versions, failing on anything doubled: two live escrows of a user, or two
// live records of one item version.
func liveState(t *testing.T, a *appliance.Appliance) (map[string]*bailiff.Escrow, map[string]catalog.Entry, map[string]int) {
	t.Helper()
	escs, err := a.Catalog().ByKind(catalog.KindEscrow)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*bailiff.Escrow{}
	recs := map[string]catalog.Entry{}
	for _, en := range escs {
		if !en.Live() {
			continue
		}
		if _, dup := out[en.Meta.UserID]; dup {
			t.Fatalf("user %s has two live escrows", en.Meta.UserID)
		}
		_, _, body, err := a.Vault().Get(en.Record)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(body)
		body.Close()
		esc, err := bailiff.ParseEscrow(b, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		out[en.Meta.UserID], recs[en.Meta.UserID] = esc, en
	}
	items := map[string]int{}
	for u := range out {
		if strings.HasPrefix(u, "coffre:") {
			continue
		}
		live, err := a.Catalog().Live(u)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, en := range live {
			if en.Meta.Kind != catalog.KindItem {
				continue
			}
			k := fmt.Sprintf("%s/%d", en.Meta.ItemID, en.Meta.Version)
			if seen[k] {
				t.Fatalf("user %s: item version %s is live twice", u, k)
			}
			seen[k] = true
			items[u]++
		}
	}
	return out, recs, items
}

// checkRestitution releases a user's items under the bailiffs given (they
// sign the order and open their shares) to B1's key as beneficiary, opens
// the package and compares with want.
func (e *env) checkRestitution(a *appliance.Appliance, user string, want map[string][]byte, bailiffs ...int) {
	t := e.t
	t.Helper()
	var present []appliance.BailiffSecret
	for _, i := range bailiffs {
		sec, _ := os.ReadFile(e.path("ceremony", fmt.Sprintf("B%d.sec.asc", i)))
		pass, _ := os.ReadFile(e.path(fmt.Sprintf("pass%d", i)))
		present = append(present, appliance.BailiffSecret{Label: fmt.Sprint(i), SecretKey: sec, Passphrase: bytes.TrimSpace(pass)})
	}
	bpub, _ := os.ReadFile(e.path("ceremony", "B1.pub.asc"))
	out := e.path(fmt.Sprintf("rest-%s-%d", user, time.Now().UnixNano()))
	res, err := a.Restitute(t.Context(), appliance.RestituteOptions{UserID: user, Beneficiary: bpub, Reference: "test", Bailiffs: present, OutDir: out})
	if err != nil {
		t.Fatalf("restitution of %s: %v", user, err)
	}
	if res.Items != len(want) {
		t.Fatalf("restitution of %s released %d items, want %d", user, res.Items, len(want))
	}
	sec, _ := os.ReadFile(e.path("ceremony", "B1.sec.asc"))
	pass, _ := os.ReadFile(e.path("pass1"))
	ben, err := bailiff.OpenBailiffKey(sec, bytes.TrimSpace(pass))
	if err != nil {
		t.Fatal(err)
	}
	defer bailiff.WipeKey(ben)
	got := map[[32]byte]bool{}
	files, _ := filepath.Glob(filepath.Join(out, "items", "*.pgp"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		md, err := openpgp.ReadMessage(bytes.NewReader(b), openpgp.EntityList{ben}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		pt, err := io.ReadAll(md.UnverifiedBody)
		if err != nil {
			t.Fatal(err)
		}
		got[sha256.Sum256(pt)] = true
	}
	for k, c := range want {
		if !got[sha256.Sum256(c)] {
			t.Fatalf("restitution of %s: %s missing or different", user, k)
		}
	}
}

// gpgAs returns a function running GnuPG as test bailiff i, with their
// secret key imported in a fresh home.
func (e *env) gpgAs(i int) func(args ...string) {
	t := e.t
	t.Helper()
	gpg := testenv.RequireTool(t, "gpg", "gnupg")
	home := t.TempDir()
	run := func(args ...string) {
		cmd := exec.Command(gpg, append([]string{"--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase-file", e.path(fmt.Sprintf("pass%d", i))}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("gpg %v: %v\n%s", args, err, out)
		}
	}
	run("--import", e.path("ceremony", fmt.Sprintf("B%d.sec.asc", i)))
	return run
}

// gpgCards opens share messages with GnuPG, as a bailiff with their own
// tools does: the messages `coffre reencap shares` wrote in dir become
// .card files beside them.
func (e *env) gpgCards(i int, dir string) {
	run := e.gpgAs(i)
	msgs, _ := filepath.Glob(filepath.Join(dir, "*.pgp"))
	if len(msgs) == 0 {
		e.t.Fatalf("no share messages in %s", dir)
	}
	for _, m := range msgs {
		run("--output", strings.TrimSuffix(m, ".pgp")+".card", "--decrypt", m)
	}
}

// TestReencapRosterChange runs a roster change end to end: B3 leaves, B4
// joins. A new roster not signed by every new bailiff, or an order without
// the old quorum, is refused with nothing written; the order and the new
// roster are recorded first (the plan then shows the work left, quorum
// needed); the escrows are re-split under the old quorum (one bailiff by
// key, one by share cards opened with GnuPG); then only the new roster's
// bailiffs open anything, restitution releases every item, and the drives
// audit clean.
func TestReencapRosterChange(t *testing.T) {
	e, contents := newQuorumVault(t, 4, 2)
	fp3 := e.fingerprint(3)
	fp4 := e.enrol(4)
	e.coffre("reencap", "draft-roster", "--state", e.state, "--remove", fp3, "--add", "B4:"+e.path("ceremony", "B4.pub.asc"), "--out", e.path("roster2.txt"))

	a := e.open()
	size := a.Vault().Size()
	oldRoster, _ := a.Roster()
	a.Close()
	run := func(args ...string) (string, int) {
		return e.run(append([]string{"reencap", "run", "--state", e.state, "--kind", "roster"}, args...)...)
	}
	out, code := run("--new-roster", e.path("roster2.txt"), "--bailiff", e.bailiffArg(1), "--bailiff", e.bailiffArg(2))
	if code != 1 || !strings.Contains(out, "not signed by every bailiff") || !strings.Contains(out, fp4) {
		t.Fatalf("new roster without B4's signature: exit %d\n%s", code, out)
	}
	// B2 signs the new roster with GnuPG; the order still has one old
	// bailiff's signature only.
	e.gpgAs(2)("--output", e.path("b2.sig"), "--detach-sign", e.path("roster2.txt.body"))
	out, code = run("--new-roster", e.path("roster2.txt"), "--roster-sig", e.path("b2.sig"), "--new-bailiff", e.bailiffArg(4), "--bailiff", e.bailiffArg(1))
	if code != 1 || !strings.Contains(out, "1 valid bailiff signatures, needs 2") {
		t.Fatalf("order with one old bailiff: exit %d\n%s", code, out)
	}
	a = e.open()
	if a.Vault().Size() != size {
		t.Fatal("a refused roster change wrote records")
	}
	a.Close()

	// Approve only: the order, the new roster and the verify-shares escrow.
	e.coffre("reencap", "run", "--state", e.state, "--kind", "roster", "--new-roster", e.path("roster2.txt"), "--new-bailiff", e.bailiffArg(4),
		"--bailiff", e.bailiffArg(1), "--bailiff", e.bailiffArg(2), "--max", "0")
	plan := e.coffre("reencap", "plan", "--state", e.state)
	if !regexp.MustCompile(`roster-change +yes +4 +4`).MatchString(plan) || !strings.Contains(plan, "quorum needed: yes") {
		t.Fatalf("plan during the roster change:\n%s", plan)
	}
	if out := e.coffre("reencap", "status", "--state", e.state); !strings.Contains(out, "roster-change") || !strings.Contains(out, "0 of 4 escrows") {
		t.Fatalf("status: %s", out)
	}
	// B3 (leaving) unlocks with their key; B2 opens their share messages
	// with GnuPG and brings the cards.
	e.coffre("reencap", "shares", "--state", e.state, "--bailiff", e.fingerprint(2), "--out", e.path("b2-shares"))
	e.gpgCards(2, e.path("b2-shares"))
	out = e.coffre("reencap", "run", "--state", e.state, "--kind", "roster", "--bailiff", e.bailiffArg(3), "--share-cards", e.path("b2-shares"))
	if !strings.Contains(out, "roster-change done") {
		t.Fatalf("run: %s", out)
	}
	if out := e.coffre("reencap", "status", "--state", e.state); !strings.Contains(out, "done, 4 of 4 escrows") {
		t.Fatalf("status: %s", out)
	}
	if plan := e.coffre("reencap", "plan", "--state", e.state); strings.Contains(plan, "roster-change") {
		t.Fatalf("plan after the roster change:\n%s", plan)
	}

	a = e.open()
	defer a.Close()
	r, err := a.Roster()
	if err != nil {
		t.Fatal(err)
	}
	if r.Bailiff(fp4) == nil || r.Bailiff(fp3) != nil || r.Digest() == oldRoster.Digest() {
		t.Fatal("the roster in force is not the new one")
	}
	escs, _, items := liveState(t, a)
	if len(escs) != 5 { // four users and the verify-shares escrow
		t.Fatalf("%d live escrows, want 5", len(escs))
	}
	for u, esc := range escs {
		if esc.RosterDigest != r.Digest() {
			t.Fatalf("escrow of %s is not under the new roster", u)
		}
		if u != "coffre:verify-shares" && items[u] != 2 {
			t.Fatalf("user %s has %d live items, want 2", u, items[u])
		}
	}
	for u, want := range contents {
		e.checkRestitution(a, u, want, 2, 4)
	}
	a.Close()
	// Only the new roster's bailiffs hold shares.
	e.coffre("ceremony", "verify-shares", "--state", e.state, "--bailiff", e.bailiffArg(4), "--bailiff", e.bailiffArg(1))
	if out, code := e.run("ceremony", "verify-shares", "--state", e.state, "--bailiff", e.bailiffArg(3)); code == 0 {
		t.Fatalf("B3 left but still opens a share:\n%s", out)
	}
	e.coffre(append([]string{"audit", "--audit-key", e.path("audit.pub")}, e.drives()...)...)
}

// TestRosterChangeResumesAfterKill runs twenty roster changes (B3 and B4
// take turns on the roster) as real processes, each killed with SIGKILL
// while escrows are being re-split, then resumed: every cycle ends with
// every escrow under the new roster, one live escrow per user, every item
// still live once; at the end the new quorum restitutes and the drives
// audit clean.
func TestRosterChangeResumesAfterKill(t *testing.T) {
	const users = 16
	e, contents := newQuorumVault(t, users, 1)
	fps := map[int]string{3: e.fingerprint(3), 4: e.enrol(4)}
	pubs := map[int][]byte{}
	for _, i := range []int{3, 4} {
		pubs[i], _ = os.ReadFile(e.path("ceremony", fmt.Sprintf("B%d.pub.asc", i)))
	}
	rng := killSeed(t.Logf)
	midJob := 0
	in, out := 3, 4 // B3 is on the roster, B4 joins
	// draft writes the next roster (as `coffre reencap draft-roster` does,
	// here with the appliance already open for the checks).
	draft := func(a *appliance.Appliance, i int) string {
		next, err := a.DraftRoster(0, []string{fps[in]}, []appliance.ImportedBailiff{{Name: fmt.Sprintf("B%d", out), Public: pubs[out]}})
		if err != nil {
			t.Fatal(err)
		}
		rf := e.path(fmt.Sprintf("roster-%d.txt", i))
		os.WriteFile(rf, next.Marshal(), 0o644)
		return rf
	}
	a := e.open()
	rf := draft(a, 0)
	a.Close()
	// Batches of 4 escrows: at least 4 batches of the job's own, so that
	// each crash point fires before the job ends.
	const batch, batches = 4, users / 4
	for i := 0; i < killCycles(); i++ {
		t0 := time.Now()
		crash := pickCrash(rng, i, batches)
		e.runKilled(crash, "reencap", "run", "--state", e.state, "--kind", "roster", "--new-roster", rf, "--batch", strconv.Itoa(batch),
			"--new-bailiff", e.bailiffArg(out), "--bailiff", e.bailiffArg(1), "--bailiff", e.bailiffArg(2))
		t1 := time.Now()
		inFlight, partWay := e.jobState("roster-change")
		if partWay {
			midJob++
		}
		if crash.betweenBatches() && !partWay {
			t.Fatalf("cycle %d: killed at %v, but the job is not part-way", i, crash)
		}
		t2 := time.Now()
		if inFlight { // a kill inside the last batch may leave it whole on the drives
			e.coffre("reencap", "run", "--state", e.state, "--kind", "roster", "--bailiff", e.bailiffArg(1), "--bailiff", e.bailiffArg(2))
		}
		t3 := time.Now()
		a := e.open()
		r, err := a.Roster()
		if err != nil {
			t.Fatal(err)
		}
		if r.Bailiff(fps[out]) == nil || r.Bailiff(fps[in]) != nil {
			t.Fatalf("cycle %d: the roster in force is not the new one", i)
		}
		checkRosterCycle(t, a, r, users, i)
		in, out = out, in
		rf = draft(a, i+1)
		a.Close()
		t.Logf("cycle %d: killed at %v after %v, status %v, resume %v, check %v", i, crash, t1.Sub(t0), t2.Sub(t1), t3.Sub(t2), time.Since(t3))
	}
	t.Logf("%d of %d kills left the job part-way (the others: before its first batch was whole)", midJob, killCycles())
	a = e.open()
	defer a.Close()
	liveState(t, a) // the full parse of every bundle
	for _, u := range []string{"user0", "user7"} {
		e.checkRestitution(a, u, contents[u], 2, in)
	}
	a.Close()
	e.coffre(append([]string{"audit", "--audit-key", e.path("audit.pub")}, e.drives()...)...)
}

// checkRosterCycle checks, after a roster change, one live escrow per
// user, each bundle naming the new roster (read from the bundle's roster
// line; liveState's full parse is for the end), and one live item per
// user.
func checkRosterCycle(t *testing.T, a *appliance.Appliance, r *bailiff.Roster, users, cycle int) {
	t.Helper()
	escs, err := a.Catalog().ByKind(catalog.KindEscrow)
	if err != nil {
		t.Fatal(err)
	}
	d := r.Digest()
	line := []byte(fmt.Sprintf("\nroster %x\n", d[:]))
	live := map[string]bool{}
	for _, en := range escs {
		if !en.Live() {
			continue
		}
		if live[en.Meta.UserID] {
			t.Fatalf("cycle %d: user %s has two live escrows", cycle, en.Meta.UserID)
		}
		live[en.Meta.UserID] = true
		_, _, body, err := a.Vault().Get(en.Record)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(body)
		body.Close()
		if !bytes.Contains(b, line) {
			t.Fatalf("cycle %d: escrow of %s is not under the new roster", cycle, en.Meta.UserID)
		}
	}
	if len(live) != users+1 {
		t.Fatalf("cycle %d: %d live escrows, want %d (lost or doubled)", cycle, len(live), users+1)
	}
	items, err := a.Catalog().ByKind(catalog.KindItem)
	if err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, en := range items {
		if en.Live() {
			n[en.Meta.UserID]++
		}
	}
	for u := range live {
		if u != "coffre:verify-shares" && n[u] != 1 {
			t.Fatalf("cycle %d: user %s has %d live items, want 1", cycle, u, n[u])
		}
	}
}

// jobState reads `coffre reencap status --json` (a process, like the
// operator's): whether the job of kind is still to be finished (in
// flight), and whether it stopped part-way (some objects done, not all).
func (e *env) jobState(kind string) (inFlight, partWay bool) {
	e.t.Helper()
	var st struct {
		Jobs map[string]appliance.ReencapJob `json:"quorum_jobs"`
	}
	cmd := exec.Command(filepath.Join(binDir, "coffre"), "reencap", "status", "--state", e.state, "--json")
	cmd.Env = append(os.Environ(), "COFFRE_PASSPHRASE="+testPass)
	out, err := cmd.Output()
	if err != nil {
		e.t.Fatalf("coffre reencap status: %v", err)
	}
	if err := json.Unmarshal(out, &st); err != nil {
		e.t.Fatal(err)
	}
	j, ok := st.Jobs[kind]
	return ok && j.Status != "done", ok && j.Done > 0 && j.Status != "done"
}

// TestRosterChangeToPQAfterUpgrade is issue 7's last criterion at the
// appliance level (the CLI script reencap-pq-bailiffs does it through the
// binary on the demo vault): after the algorithm upgrade only the bailiff
// layer fails at 2036; a roster change to three post-quantum bailiff keys
// (run in-process, so -race watches its workers) leaves nothing to do at
// 2036 or 2099; the catalog names what really protects the roster and the
// escrows; the post-quantum quorum restitutes every user.
func TestRosterChangeToPQAfterUpgrade(t *testing.T) {
	e, contents := newQuorumVault(t, 3, 2)
	e.coffre(append([]string{"reencap", "run", "--state", e.state, "--kind", "upgrade", "--at", "2036-01-01"}, e.bailiffArgs(1, 2)...)...)
	at := time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC)
	a := e.open()
	p, err := a.ReencapPlan(nil, at)
	if err != nil {
		t.Fatal(err)
	}
	if g := p.Group(policy.RosterChange); len(p.Groups) != 1 || g == nil || g.Objects != 5 { // roster, 3 users' escrows, verify-shares
		t.Fatalf("plan at 2036 after the upgrade:\n%s", p)
	}
	a.Close()

	add := []string{"reencap", "draft-roster", "--state", e.state, "--remove", "B1", "--remove", "B2", "--remove", "B3", "--out", e.path("roster-pq.txt")}
	for i := 4; i <= 6; i++ {
		pf := e.path(fmt.Sprintf("pass%d", i))
		os.WriteFile(pf, []byte(fmt.Sprintf("pq-bailiff-%d-secret\n", i)), 0o600)
		e.coffre("ceremony", "enrol", "--pq", "--name", fmt.Sprintf("B%d", i), "--email", fmt.Sprintf("b%d@example.invalid", i), "--passphrase-file", pf, "--out", e.path("ceremony"))
		add = append(add, "--add", fmt.Sprintf("B%d:%s", i, e.path("ceremony", fmt.Sprintf("B%d.pub.asc", i))))
	}
	e.coffre(add...)
	next, err := os.ReadFile(e.path("roster-pq.txt"))
	if err != nil {
		t.Fatal(err)
	}
	a = e.open()
	defer a.Close()
	job, err := a.RosterChange(t.Context(), appliance.RosterChangeOptions{NewRoster: next, NewBailiffs: e.bailiffSecrets(4, 5, 6),
		Unlock: appliance.QuorumUnlock{Bailiffs: e.bailiffSecrets(1, 2)}, Max: -1})
	if err != nil {
		t.Fatal(err)
	}
	if job.Status != "done" || job.Done != 3 {
		t.Fatalf("roster change job: %+v", job)
	}
	for _, d := range []time.Time{at, time.Date(2099, 12, 31, 0, 0, 0, 0, time.UTC)} {
		p, err := a.ReencapPlan(nil, d)
		if err != nil {
			t.Fatal(err)
		}
		if !p.Empty() || p.Warned != 0 {
			t.Fatalf("plan at %s after the roster change to post-quantum keys:\n%s", d.Format(time.DateOnly), p)
		}
	}
	r, err := a.Roster()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range r.Bailiffs {
		if !b.PQ() {
			t.Fatalf("bailiff %s of the new roster is not post-quantum", b.Name)
		}
	}
	// No share messages are exported for GnuPG to a key it cannot use.
	if _, err := a.ShareMessages(r.Bailiffs[0].Fingerprint, nil); err == nil || !strings.Contains(err.Error(), "post-quantum") {
		t.Fatalf("share messages exported to a post-quantum bailiff: %v", err)
	}
	rs, _ := a.Catalog().ByKind(catalog.KindRoster)
	escs, metas, _ := liveState(t, a)
	for _, c := range rs {
		if c.Live() && strings.Join(c.Meta.Algorithms, " ") != bailiff.AlgSignaturePQ+" "+bailiff.AlgKeyPQ {
			t.Fatalf("live roster records %v", c.Meta.Algorithms)
		}
	}
	for u, esc := range escs {
		if !esc.PQ() || esc.RosterDigest != r.Digest() {
			t.Fatalf("escrow of %s: pq=%v, under the new roster=%v", u, esc.PQ(), esc.RosterDigest == r.Digest())
		}
		if got := metas[u].Meta.Algorithms; got[len(got)-1] != bailiff.AlgPKESKPQNamed {
			t.Fatalf("escrow of %s records %v", u, got)
		}
	}
	for u, want := range contents {
		e.checkRestitution(a, u, want, 4, 6)
	}
}
