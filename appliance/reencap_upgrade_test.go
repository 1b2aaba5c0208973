package appliance_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"coffre/appliance"
	"coffre/bailiff"
	"coffre/bailiff/policy"
	"coffre/ingest/envelope"
	"coffre/internal/testenv"
	"coffre/storage/catalog"
)

var day2036 = time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC)

// bailiffArgs are the --bailiff flags of bailiffs idx (1-based).
func (e *env) bailiffArgs(idx ...int) []string {
	var out []string
	for _, i := range idx {
		out = append(out, "--bailiff", e.path("ceremony", fmt.Sprintf("B%d.sec.asc", i))+":"+e.path(fmt.Sprintf("pass%d", i)))
	}
	return out
}

func (e *env) bailiffSecrets(idx ...int) []appliance.BailiffSecret {
	var out []appliance.BailiffSecret
	for _, i := range idx {
		sec, _ := os.ReadFile(e.path("ceremony", fmt.Sprintf("B%d.sec.asc", i)))
		pass, _ := os.ReadFile(e.path(fmt.Sprintf("pass%d", i)))
		out = append(out, appliance.BailiffSecret{Label: fmt.Sprint(i), SecretKey: sec, Passphrase: bytes.TrimRight(pass, "\n")})
	}
	return out
}

// sealAll makes envelopes in-process (the online side) and ingests them
// from one USB bundle.
func (e *env) ingestItems(items map[string][]byte, userOf func(name string) string) {
	e.t.Helper()
	id, _ := appliance.LoadIdentity(e.state)
	ing, err := envelope.ReadKeys(strings.NewReader(id.IngestKey))
	if err != nil {
		e.t.Fatal(err)
	}
	cb, _ := os.ReadFile(e.path("courier.sec.asc"))
	cour, _ := envelope.ReadKeys(bytes.NewReader(cb))
	names := slices.Sorted(mapsKeys(items))
	var paths []string
	for _, n := range names {
		p := e.path(n + ".env")
		m := envelope.Manifest{UserID: userOf(n), ItemID: n, Version: 1, Kind: "letter", ContentType: "application/octet-stream"}
		if err := appliance.SealEnvelope(p, ing[0], cour[0], m, envelope.NewUploadID(), bytes.NewReader(items[n])); err != nil {
			e.t.Fatal(err)
		}
		paths = append(paths, p)
	}
	for len(paths) > 0 { // a USB bundle holds at most 1024 files
		n := min(len(paths), 1000)
		bundle := e.path(fmt.Sprintf("bundle-%d", rand.IntN(1<<30)))
		e.coffre(append([]string{"courier", "usb", "--out", bundle}, paths[:n]...)...)
		e.coffre("ingest", "usb", "--state", e.state, bundle)
		paths = paths[n:]
	}
}

func mapsKeys(m map[string][]byte) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// userState is what the catalog says of one user.
type userState struct {
	liveItems, pqItems int
	escrows            []*bailiff.Escrow // live
	doubled            []string          // item versions with more than one live record
}

func readState(t *testing.T, a *appliance.Appliance, user string) userState {
	t.Helper()
	var s userState
	live, err := a.Catalog().Live(user)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, en := range live {
		if en.Meta.Kind != catalog.KindItem {
			continue
		}
		s.liveItems++
		if slices.Equal(en.Meta.Algorithms, []string{bailiff.AlgKeyPQ, bailiff.AlgPKESKPQ, bailiff.AlgDataPQ}) {
			s.pqItems++
		}
		k := fmt.Sprintf("%s v%d", en.Meta.ItemID, en.Meta.Version)
		if seen[k]++; seen[k] == 2 {
			s.doubled = append(s.doubled, k)
		}
	}
	all, err := a.Catalog().ByKind(catalog.KindEscrow)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range all {
		if en.Meta.UserID == user && en.Live() {
			s.escrows = append(s.escrows, readEscrow(t, a, en.Record))
		}
	}
	return s
}

func readEscrow(t *testing.T, a *appliance.Appliance, idx uint64) *bailiff.Escrow {
	t.Helper()
	b := readBody(t, a, idx)
	esc, err := bailiff.ParseEscrow(b, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return esc
}

func readBody(t *testing.T, a *appliance.Appliance, idx uint64) []byte {
	t.Helper()
	_, _, body, err := a.Vault().Get(idx)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	b, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAlgorithmUpgradeEndToEnd: kind 4 through the real binary under a
// quorum — every user moves to a post-quantum escrow key, every item is
// re-encrypted afresh and supersedes its old record; the old escrow key
// does not open the new records; the plan at 2036 has no kind 4 work left;
// new uploads are sealed post-quantum; restitution of the upgraded items
// opens with gpg; verify-shares still works; a quorum retires the old
// records; the drives audit clean throughout.
func TestAlgorithmUpgradeEndToEnd(t *testing.T) {
	gpg := testenv.RequireTool(t, "gpg", "gnupg")
	e := newVault(t)
	big := bytes.Repeat([]byte("a long letter that goes on. "), 60000) // 1.6 MiB: streamed into its batch
	contents := map[string][]byte{
		"a-password": []byte("alice: correct horse battery staple\n"),
		"a-letter":   big,
		"a-seed":     []byte("abandon ability able about above absent\n"),
		"b-password": []byte("bob: hunter2\n"),
		"b-note":     []byte("bob's note\n"),
		"c-will":     []byte("carol's will\n"),
	}
	owner := func(n string) string {
		return map[byte]string{'a': "alice", 'b': "bob", 'c': "carol", 'd': "dave"}[n[0]]
	}
	e.ingestItems(contents, owner)

	plan := func(at string) *policy.PlanResult {
		out := e.coffre("reencap", "plan", "--state", e.state, "--at", at, "--json")
		var p policy.PlanResult
		if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &p); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return &p
	}
	if p := plan("2026-12-01"); !p.Empty() {
		t.Fatalf("plan today not empty: %+v", p)
	}
	before := plan("2036-01-01")
	if g := before.Group(policy.AlgorithmUpgrade); g == nil || g.Users != 4 || g.Objects != 6+4 {
		t.Fatalf("2036 before: kind 4 group %+v (want 6 items and 4 escrows of alice, bob, carol and the verify-shares check)", g)
	}

	// Remember the old records.
	a := e.open()
	oldEscrow := readState(t, a, "alice").escrows[0]
	oldItems, _ := a.Catalog().Live("alice")
	a.Close()

	// One bailiff is not a quorum: nothing happens.
	if out, code := e.run(append([]string{"reencap", "run", "--state", e.state, "--kind", "upgrade", "--at", "2036-01-01"}, e.bailiffArgs(1)...)...); code == 0 {
		t.Fatalf("upgrade with one bailiff succeeded:\n%s", out)
	}
	out := e.coffre(append([]string{"reencap", "run", "--state", e.state, "--kind", "upgrade", "--at", "2036-01-01", "--batch", "2"}, e.bailiffArgs(1, 3)...)...)
	t.Logf("upgrade: %s", out)
	if !strings.Contains(out, "algorithm upgrade done: 4 users") {
		t.Fatalf("upgrade output: %s", out)
	}
	// Again: nothing left to do.
	if out := e.coffre(append([]string{"reencap", "run", "--state", e.state, "--kind", "upgrade", "--at", "2036-01-01"}, e.bailiffArgs(1, 2)...)...); !strings.Contains(out, "nothing to upgrade") {
		t.Fatalf("second run: %s", out)
	}

	a = e.open()
	want := map[string]int{"alice": 3, "bob": 2, "carol": 1, "coffre:verify-shares": 0}
	for u, n := range want {
		s := readState(t, a, u)
		if s.liveItems != n || s.pqItems != n || len(s.doubled) > 0 || len(s.escrows) != 1 || !s.escrows[0].PQ() {
			t.Fatalf("%s after the upgrade: %d live items, %d post-quantum (want %d), doubled %v, %d live escrows", u, s.liveItems, s.pqItems, n, s.doubled, len(s.escrows))
		}
	}
	newEscrow := readState(t, a, "alice").escrows[0]

	// The plan past 2035: nothing for kind 4. What remains is the bailiff
	// layer — the roster's P-521 keys and the share messages to them — which
	// is kind 2 (roster change) and needs bailiff keys GnuPG 2.2 cannot read.
	r, err := a.ReencapPlan(nil, day2036)
	if err != nil {
		t.Fatal(err)
	}
	if g := r.Group(policy.AlgorithmUpgrade); g != nil {
		t.Fatalf("2036 after: kind 4 work left:\n%s", r)
	}
	for _, g := range r.Groups {
		for alg := range g.Failing {
			if alg != bailiff.AlgKey && alg != bailiff.AlgSignature && alg != bailiff.AlgPKESKNamed {
				t.Errorf("2036 after: %s fails on %s, which the upgrade should have replaced", g.Kind, alg)
			}
		}
	}
	t.Logf("plan at 2036 after the upgrade:\n%s", r)

	// The old escrow key does not open the new records (it still opens
	// the old ones, which stay until retirement).
	checkOldKey(t, e, a, oldEscrow, newEscrow, oldItems)

	// Every batch has a signed step record naming the order.
	steps, _ := a.Catalog().ByKind(catalog.KindReencap)
	id, _ := appliance.LoadIdentity(e.state)
	ingPub, _ := openpgp.ReadArmoredKeyRing(strings.NewReader(id.IngestKey))
	nsteps, stepItems := 0, 0
	for _, st := range steps {
		if st.Meta.Attrs["step"] != "upgrade" {
			continue
		}
		s, err := bailiff.ParseReencapStep(readBody(t, a, st.Record))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Verify(ingPub[0]); err != nil {
			t.Fatal(err)
		}
		nsteps++
		stepItems += len(s.Items)
	}
	if stepItems != 6 || nsteps < 5 { // alice 2 batches, bob 1, carol 1, check 1
		t.Fatalf("%d step records covering %d items", nsteps, stepItems)
	}
	a.Close()

	// A new version uploaded after the upgrade is sealed post-quantum, and
	// a new user gets a post-quantum escrow from the start.
	e.ingestItems(map[string][]byte{"a-late": []byte("written after the upgrade\n"), "d-first": []byte("dave's first item\n")}, owner)
	a = e.open()
	if s := readState(t, a, "alice"); s.liveItems != 4 || s.pqItems != 4 {
		t.Fatalf("alice after a new upload: %+v", s)
	}
	if s := readState(t, a, "dave"); s.liveItems != 1 || s.pqItems != 1 || len(s.escrows) != 1 || !s.escrows[0].PQ() {
		t.Fatalf("new user after the upgrade: %+v", s)
	}
	if r, err := a.ReencapPlan(nil, day2036); err != nil || r.Group(policy.AlgorithmUpgrade) != nil {
		t.Fatalf("2036 after new uploads: %v\n%s", err, r)
	}
	a.Close()
	contents["a-late"] = []byte("written after the upgrade\n")

	// Restitution of the upgraded items to a beneficiary made with GnuPG.
	home := t.TempDir()
	gpgRun := func(args ...string) []byte {
		cmd := exec.Command(gpg, append([]string{"--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("gpg %v: %v", args, err)
		}
		return out
	}
	params := e.path("heir.params")
	os.WriteFile(params, []byte("Key-Type: ECDSA\nKey-Curve: nistp521\nSubkey-Type: ECDH\nSubkey-Curve: nistp521\nName-Real: Heir\nName-Email: heir@example.invalid\nExpire-Date: 0\n%no-protection\n%commit\n"), 0o600)
	gpgRun("--gen-key", params)
	os.WriteFile(e.path("heir.pub.asc"), gpgRun("--armor", "--export", "heir@example.invalid"), 0o644)
	restitute := func(dir string) {
		e.coffre(append([]string{"restitute", "--state", e.state, "--user", "alice", "--to", e.path("heir.pub.asc"),
			"--reference", "Succession 2036/7", "--out", e.path(dir)}, e.bailiffArgs(2, 3)...)...)
		files, _ := filepath.Glob(e.path(dir, "items", "*"))
		if len(files) != 4 {
			t.Fatalf("%s: %d items, want alice's 4", dir, len(files))
		}
		got := map[[32]byte]bool{}
		for _, f := range files {
			got[sha256.Sum256(gpgRun("--decrypt", f))] = true
		}
		for n, c := range contents {
			if got[sha256.Sum256(c)] != (owner(n) == "alice") {
				t.Fatalf("%s: item %s released=%v", dir, n, got[sha256.Sum256(c)])
			}
		}
		gpgRun("--import", e.path(dir, "signer.asc"))
		gpgRun("--verify", e.path(dir, "manifest.txt.sig"), e.path(dir, "manifest.txt"))
	}
	restitute("restitution")
	e.coffre(append([]string{"audit", "--audit-key", e.path("audit.pub"), "--keep", e.path("kept.cp")}, e.drives()...)...)
	// verify-shares runs on the upgraded (post-quantum) vault check.
	e.coffre(append([]string{"ceremony", "verify-shares", "--state", e.state}, e.bailiffArgs(1, 2, 3)...)...)

	// Retirement: a dry run lists, one bailiff cannot, a quorum does.
	dry := e.coffre("reencap", "retire", "--state", e.state, "--dry-run")
	if !strings.Contains(dry, "can be retired, 0 cannot") {
		t.Fatalf("dry run: %s", dry)
	}
	if out, code := e.run(append([]string{"reencap", "retire", "--state", e.state}, e.bailiffArgs(2)...)...); code == 0 {
		t.Fatalf("retirement by one bailiff: %s", out)
	}
	out = e.coffre(append([]string{"reencap", "retire", "--state", e.state}, e.bailiffArgs(1, 2)...)...)
	t.Logf("retire: %s", out)
	a = e.open()
	retired, err := a.Retired()
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range oldItems {
		if _, ok := retired[it.Record]; !ok {
			t.Errorf("old item record %d not retired", it.Record)
		}
	}
	if c, refused, _ := a.RetireCandidates(); len(c) != 0 || len(refused) != 0 {
		t.Errorf("after retirement: %d candidates, refused %v", len(c), refused)
	}
	a.Close()
	if out := e.coffre(append([]string{"reencap", "retire", "--state", e.state}, e.bailiffArgs(1, 2)...)...); !strings.Contains(out, "nothing to retire") {
		t.Fatalf("second retirement: %s", out)
	}
	// Restitution and audit still work after retirement.
	restitute("restitution-2")
	e.coffre(append([]string{"audit", "--audit-key", e.path("audit.pub"), "--since", e.path("kept.cp")}, e.drives()...)...)
	st := e.coffre("reencap", "status", "--state", e.state)
	if !strings.Contains(st, "algorithm upgrade to "+bailiff.AlgKeyPQ) || !strings.Contains(st, "done") {
		t.Errorf("status: %s", st)
	}
}

// checkOldKey opens alice's old (P-521) escrow with a quorum and checks it
// does not open any of her upgraded records, while it still opens the old
// records.
func checkOldKey(t *testing.T, e *env, a *appliance.Appliance, oldEsc, newEsc *bailiff.Escrow, oldItems []catalog.Entry) {
	t.Helper()
	if oldEsc.PQ() || !newEsc.PQ() || oldEsc.Fingerprint == newEsc.Fingerprint {
		t.Fatal("escrows are not old P-521 and new PQ")
	}
	r, err := a.Roster()
	if err != nil {
		t.Fatal(err)
	}
	o, err := bailiff.NewReencapOrder(r, bailiff.ActionUpgrade, [32]byte{}, day2036, bailiff.AlgKeyPQ, []string{"alice"}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	q, err := bailiff.NewQuorum(r, signAndOpen(t, e, r, o), bailiff.UnlockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for _, s := range e.bailiffSecrets(1, 2) {
		k, err := bailiff.OpenBailiffKey(s.SecretKey, s.Passphrase)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := q.AddKey(k); err != nil {
			t.Fatal(err)
		}
	}
	oldKey, err := q.OpenEscrow(oldEsc)
	if err != nil {
		t.Fatal(err)
	}
	defer oldKey.Close()
	newKey, err := q.OpenEscrow(newEsc)
	if err != nil {
		t.Fatal(err)
	}
	defer newKey.Close()
	live, _ := a.Catalog().Live("alice")
	opened := func(k *bailiff.EscrowKey, idx uint64) bool {
		r, err := k.Open(bytes.NewReader(readBody(t, a, idx)))
		if err != nil {
			return false
		}
		_, err = io.Copy(io.Discard, r)
		return err == nil
	}
	for _, en := range live {
		if en.Meta.Kind != catalog.KindItem {
			continue
		}
		if opened(oldKey, en.Record) {
			t.Errorf("the old escrow key opens upgraded record %d (%s)", en.Record, en.Meta.ItemID)
		}
		if !opened(newKey, en.Record) {
			t.Errorf("the new escrow key does not open upgraded record %d", en.Record)
		}
	}
	for _, en := range oldItems {
		if !opened(oldKey, en.Record) {
			t.Errorf("the old escrow key no longer opens its own record %d", en.Record)
		}
	}
}

// signAndOpen has bailiffs 1 and 2 sign o.
func signAndOpen(t *testing.T, e *env, r *bailiff.Roster, o *bailiff.ReencapOrder) *bailiff.ReencapOrder {
	t.Helper()
	for _, s := range e.bailiffSecrets(1, 2) {
		k, err := bailiff.OpenBailiffKey(s.SecretKey, s.Passphrase)
		if err != nil {
			t.Fatal(err)
		}
		err = o.Sign(r, k, time.Now())
		bailiff.WipeKey(k)
		if err != nil {
			t.Fatal(err)
		}
	}
	return o
}

// TestAlgorithmUpgradeResumesAfterKill runs the algorithm upgrade as a real
// process killed 20 times at random moments, one user per job, several
// batches per user: each resumed job completes, no item is lost or doubled,
// every user ends with one live escrow, the users not yet reached are
// untouched, and restitution and audit work at the end.
func TestAlgorithmUpgradeResumesAfterKill(t *testing.T) {
	const users, perUser = 20, 16
	e := newVault(t)
	items := map[string][]byte{}
	for u := 0; u < users; u++ {
		for i := 0; i < perUser; i++ {
			items[fmt.Sprintf("u%02d-i%d", u, i)] = []byte(fmt.Sprintf("secret %d of user %d\n", i, u))
		}
	}
	e.ingestItems(items, func(n string) string { return "user" + n[1:3] })
	check := func(cycle, upgraded int) {
		t.Helper()
		a := e.open()
		defer a.Close()
		for u := 0; u < users; u++ {
			name := fmt.Sprintf("user%02d", u)
			s := readState(t, a, name)
			if s.liveItems != perUser || len(s.doubled) > 0 {
				t.Fatalf("cycle %d: %s has %d live items (want %d), doubled %v: lost or doubled", cycle, name, s.liveItems, perUser, s.doubled)
			}
			wantPQ := 0
			if u < upgraded {
				wantPQ = perUser
			}
			if s.pqItems != wantPQ || len(s.escrows) != 1 || s.escrows[0].PQ() != (u < upgraded) {
				t.Fatalf("cycle %d: %s has %d post-quantum items (want %d) and %d live escrows", cycle, name, s.pqItems, wantPQ, len(s.escrows))
			}
		}
	}
	rng := killSeed(t.Logf)
	midJob := 0
	// Batches of 2 items: 8 batches per user.
	const batches = perUser / 2
	for i := 0; i < users; i++ {
		user := fmt.Sprintf("user%02d", i)
		args := append([]string{"reencap", "run", "--state", e.state, "--kind", "upgrade", "--at", "2036-01-01", "--user", user, "--batch", "2"}, e.bailiffArgs(1, 2)...)
		crash := pickCrash(rng, i, batches)
		e.runKilled(crash, args...)
		a := e.open()
		s := readState(t, a, user)
		if len(s.escrows) == 2 && s.pqItems > 0 && s.pqItems < perUser {
			midJob++ // killed between two batches of the user: both escrows live
		} else if crash.betweenBatches() {
			t.Fatalf("cycle %d: killed at %v, but %s has %d escrows and %d of %d items upgraded: not part-way", i, crash, user, len(s.escrows), s.pqItems, perUser)
		}
		// Status counts the items the drives hold upgraded, whatever the
		// saved state had time to record.
		if j, ok, err := a.UpgradeStatus(); err != nil {
			t.Fatal(err)
		} else if ok && j.Status == "running" && (j.Total != perUser || j.Done != s.pqItems) {
			t.Fatalf("cycle %d: status says %d of %d items, the drives hold %d of %d upgraded", i, j.Done, j.Total, s.pqItems, perUser)
		}
		// A restitution of a user left half-way is refused, not partial.
		if len(s.escrows) == 2 {
			_, err := a.Restitute(context.Background(), appliance.RestituteOptions{UserID: user, Beneficiary: mustRead(t, e.path("ceremony", "B1.pub.asc")), Reference: "test",
				Bailiffs: e.bailiffSecrets(1, 2), OutDir: e.path(fmt.Sprintf("halfway-%d", i))})
			if err == nil || !strings.Contains(err.Error(), "interrupted") {
				t.Fatalf("cycle %d: restitution of a half-upgraded user: %v", i, err)
			}
		}
		a.Close()
		e.coffre(args...)
		check(i, i+1)
	}
	t.Logf("%d of %d kills left a user part-way (the others: before the user's first batch was whole)", midJob, users)
	// Restitution of upgraded users, and the drives audit clean.
	a := e.open()
	for _, u := range []string{"user03", "user17"} {
		res, err := a.Restitute(context.Background(), appliance.RestituteOptions{UserID: u, Beneficiary: mustRead(t, e.path("ceremony", "B1.pub.asc")), Reference: "test",
			Bailiffs: e.bailiffSecrets(2, 3), OutDir: e.path("rest-" + u)})
		if err != nil {
			t.Fatal(err)
		}
		if res.Items != perUser {
			t.Fatalf("restitution of %s released %d items, want %d", u, res.Items, perUser)
		}
	}
	if j, ok, _ := a.UpgradeStatus(); !ok || j.Status != "done" {
		t.Fatalf("job %+v", j)
	}
	a.Close()
	e.coffre(append([]string{"audit", "--audit-key", e.path("audit.pub")}, e.drives()...)...)
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
