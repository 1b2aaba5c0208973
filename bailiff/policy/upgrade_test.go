package policy

import (
	"slices"
	"testing"

	"coffre/bailiff"
)

// TestPlanAfterAlgorithmUpgrade: what the algorithm upgrade (kind 4)
// leaves behind — PQ items and a PQ escrow key whose shares still go to the
// bailiffs' P-521 keys (GnuPG 2.2 profile) — needs no more kind 4 work past
// 2035. The share messages fail with the bailiff keys, so that escrow goes
// to kind 2 (roster change) with the roster itself, never back to kind 4:
// a new escrow key would send its shares to the same bailiff keys.
func TestPlanAfterAlgorithmUpgrade(t *testing.T) {
	p := Default()
	pq := bailiff.ItemAlgorithmsPQ
	objs := []Object{
		{Record: 10, Kind: KindItem, UserID: "u1", Size: 100, Algorithms: []string{pq.Key, pq.PKESK, pq.Data}},
		{Record: 11, Kind: KindEscrow, UserID: "u1", Size: 40000, Algorithms: []string{bailiff.AlgKeyPQ, bailiff.AlgEscrowAEAD, AlgShamir, bailiff.AlgPKESKNamed}},
		{Record: 1, Kind: KindRoster, Size: 50, Algorithms: []string{bailiff.AlgKey, bailiff.AlgSignature}},
	}
	r := Plan(p, objs, day("2036-01-01"))
	if r.Group(AlgorithmUpgrade) != nil {
		t.Fatalf("2036: kind 4 work after the upgrade:\n%s", r)
	}
	g := r.Group(RosterChange)
	if g == nil || !slices.Equal(g.Records, []uint64{1, 11}) {
		t.Fatalf("2036: roster change %+v\n%s", g, r)
	}
	if g.Failing[bailiff.AlgPKESKNamed] != 1 || g.Failing[bailiff.AlgKey] != 1 {
		t.Errorf("failing %v", g.Failing)
	}
	// The PQ names are go-crypto's and the policy's alike.
	for _, a := range []string{pq.Key, pq.PKESK, pq.Data} {
		if r := p.Rule(a); r == nil || r.Status != Preferred {
			t.Errorf("%s: %+v", a, r)
		}
	}
	// A P-521 escrow failing on its own key and its shares is kind 4.
	old := Object{Record: 12, Kind: KindEscrow, UserID: "u2", Algorithms: []string{bailiff.AlgKey, bailiff.AlgEscrowAEAD, AlgShamir, bailiff.AlgPKESKNamed}}
	if g := Plan(p, []Object{old}, day("2036-01-01")).Group(AlgorithmUpgrade); g == nil || g.Objects != 1 {
		t.Errorf("P-521 escrow not in kind 4: %+v", g)
	}
}
