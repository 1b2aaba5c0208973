//go:build bench

package policy

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"coffre/bailiff"
	"coffre/internal/benchrow"
)

// TestBenchVerifyPolicy: parsing and verifying a 2-of-3 signed policy
// (two P-521 signatures) on the appliance, against `gpg --verify` of the
// same two signatures over the same body (keys already imported). Best of
// five alternated runs each.
func TestBenchVerifyPolicy(t *testing.T) {
	v := getVault(t)
	r := v.roster
	p := v.signedPolicy(t, Default(), 0, 1)
	file := p.Marshal()
	g := newGPG(t)
	dir := t.TempDir()
	body := filepath.Join(dir, "body")
	os.WriteFile(body, p.Body(), 0o600)
	var sigs []string
	for i, b := range r.Bailiffs[:2] {
		pub, _ := b.ArmoredPublic()
		g.run(pub, "--import")
		s := filepath.Join(dir, "sig"+string(rune('0'+i)))
		os.WriteFile(s, p.Signatures[b.Fingerprint], 0o600)
		sigs = append(sigs, s)
	}
	best := func(d, cur time.Duration) time.Duration {
		if cur == 0 || d < cur {
			return d
		}
		return cur
	}
	var ours, peer time.Duration
	for range 5 {
		bailiff.ForgetVerifiedSignatures() // as a policy file signed elsewhere
		start := time.Now()
		q, err := Parse(file)
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Verify(r); err != nil {
			t.Fatal(err)
		}
		ours = best(time.Since(start), ours)
		start = time.Now()
		for _, s := range sigs {
			g.run(nil, "--verify", s, body)
		}
		peer = best(time.Since(start), peer)
	}
	benchrow.Record(t, benchrow.Row{
		Name: "policy: parse + verify 2-of-3 signed policy", Ours: float64(ours.Microseconds()) / 1000,
		Peer: "gpg --verify (2 signatures)", PeerValue: float64(peer.Microseconds()) / 1000,
		Unit: "ms", Goal: 1, HigherIsBetter: false,
	})
}

// TestBenchPlan: planning a million-object catalogue at a date where every
// item fails, against Go's own sort of the same records (the floor any
// grouping pays). Best of three.
func TestBenchPlan(t *testing.T) {
	p := Default()
	objs := make([]Object, 1_000_000)
	for i := range objs {
		objs[i] = Object{Record: uint64(len(objs) - i), Kind: KindItem, UserID: "u" + string(rune('a'+i%26)), Size: 4096, Algorithms: itemP521}
	}
	at := time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC)
	var ours time.Duration
	for range 3 {
		start := time.Now()
		res := Plan(p, objs, at)
		d := time.Since(start)
		if g := res.Group(AlgorithmUpgrade); g == nil || g.Objects != len(objs) {
			t.Fatalf("plan: %s", res)
		}
		if ours == 0 || d < ours {
			ours = d
		}
	}
	rate := float64(len(objs)) / ours.Seconds()
	benchrow.Record(t, benchrow.Row{
		Name: "policy: plan objects per second (1M items, all failing)", Ours: rate,
		Peer: "", PeerValue: 0, Unit: "objects/s", Goal: 0, HigherIsBetter: true,
		Note: "no peer tool plans re-encryption; recorded for regressions",
	})
}
