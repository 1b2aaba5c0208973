package policy

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"coffre/bailiff"
)

func day(s string) time.Time {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err)
	}
	return t
}

// itemP521 is what bailiff.SealItem records today.
var itemP521 = []string{bailiff.AlgKey, bailiff.AlgPKESK, bailiff.AlgData, "sha256"}

// itemPQ is the upgrade target.
var itemPQ = []string{AlgKeyPQ, AlgPKESKPQ, AlgDataPQ, "sha256"}

func TestDefaultIsValid(t *testing.T) {
	p := Default()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, alg := range []string{bailiff.AlgKey, bailiff.AlgPKESK, bailiff.AlgPKESKNamed, bailiff.AlgData, bailiff.AlgSignature,
		bailiff.AlgS2K, bailiff.AlgEscrowAEAD, AlgShamir, AlgCheckpoint, AlgRecordAEAD} {
		if p.Rule(alg) == nil {
			t.Errorf("default policy has no rule for %s, which the vault records", alg)
		}
	}
	for _, alg := range itemPQ {
		if r := p.Rule(alg); r == nil || r.Status != Preferred {
			t.Errorf("%s: want preferred, got %+v", alg, r)
		}
	}
}

func TestCheckDates(t *testing.T) {
	p := Default()
	cases := []struct {
		at          string
		algs        []string
		ok, warn    bool
		failing     []string
		replacement map[string]string
	}{
		{"2026-11-23", itemP521, true, false, nil, nil},
		{"2029-12-31", itemP521, true, false, nil, nil},
		{"2030-01-01", itemP521, true, true, nil, map[string]string{bailiff.AlgKey: AlgKeyPQ, bailiff.AlgPKESK: AlgPKESKPQ}},
		{"2035-12-31", itemP521, true, true, nil, nil},
		{"2036-01-01", itemP521, false, false, []string{bailiff.AlgKey, bailiff.AlgPKESK}, map[string]string{bailiff.AlgKey: AlgKeyPQ, bailiff.AlgPKESK: AlgPKESKPQ}},
		{"2060-01-01", itemPQ, true, false, nil, nil},
		{"2036-01-01", []string{AlgKeyPQv4, AlgPKESKPQv4, bailiff.AlgData}, false, false, []string{AlgKeyPQv4}, nil},
		{"2026-11-23", []string{"sha1", "sha256"}, false, false, []string{"sha1"}, map[string]string{"sha1": "sha256"}},
		{"2026-11-23", []string{AlgCheckpoint, AlgRecordAEAD, KeyEpoch(0)}, true, false, nil, nil},
		{"2031-06-01", []string{AlgCheckpoint}, true, true, nil, map[string]string{AlgCheckpoint: AlgCheckpointPQ}},
	}
	for _, c := range cases {
		v := p.Check(c.algs, day(c.at))
		if v.OK != c.ok || v.Warn != c.warn || !slices.Equal(v.Failing, c.failing) {
			t.Errorf("%s %v: got ok=%v warn=%v failing=%v (%v), want ok=%v warn=%v failing=%v", c.at, c.algs, v.OK, v.Warn, v.Failing, v.Reasons, c.ok, c.warn, c.failing)
		}
		for a, r := range c.replacement {
			if v.Replacement[a] != r {
				t.Errorf("%s: replacement of %s = %q, want %q", c.at, a, v.Replacement[a], r)
			}
		}
		if !v.OK && len(v.Reasons) < len(v.Failing) {
			t.Errorf("%s: %d failing but %d reasons", c.at, len(v.Failing), len(v.Reasons))
		}
	}
}

func TestCheckFailsClosed(t *testing.T) {
	p := Default()
	now := day("2026-11-23")
	for name, algs := range map[string][]string{
		"unknown":   {bailiff.AlgKey, "openpgp-v4-rot13"},
		"malformed": {"AES 256"},
		"empty":     {},
		"too many":  slices.Repeat([]string{"sha256"}, MaxCheckAlgorithms+1),
		"forbidden": {"md5"},
	} {
		v := p.Check(algs, now)
		if v.OK || len(v.Reasons) == 0 {
			t.Errorf("%s: %v passed: %+v", name, algs, v)
		}
	}
	v := p.Check([]string{"openpgp-v4-rot13"}, now)
	if len(v.Failing) != 1 || !strings.Contains(v.Reasons[0], "unknown") || !strings.Contains(v.Reasons[0], "fail closed") {
		t.Errorf("unknown algorithm: %+v", v)
	}
}

func TestKeyEpoch(t *testing.T) {
	p := Default()
	p.MinKeyEpoch = 3
	now := day("2026-11-23")
	if v := p.Check([]string{AlgRecordAEAD, KeyEpoch(2)}, now); v.OK || !slices.Equal(v.Failing, []string{"key-epoch-2"}) {
		t.Errorf("epoch 2 < 3 passed: %+v", v)
	}
	if v := p.Check([]string{AlgRecordAEAD, KeyEpoch(3)}, now); !v.OK {
		t.Errorf("epoch 3 failed: %+v", v)
	}
	if v := p.Check([]string{"key-epoch-03"}, now); v.OK {
		t.Errorf("non-canonical epoch passed: %+v", v)
	}
}

func objects() []Object {
	var objs []Object
	for i := range 10 {
		objs = append(objs, Object{Record: uint64(100 + i), Kind: KindItem, UserID: []string{"u1", "u2"}[i%2], Size: 1000, Algorithms: itemP521})
	}
	objs = append(objs,
		Object{Record: 5, Kind: KindEscrow, UserID: "u1", Size: 300, Algorithms: []string{bailiff.AlgKey, bailiff.AlgEscrowAEAD, AlgShamir, bailiff.AlgPKESKNamed}},
		Object{Record: 1, Kind: KindRoster, Size: 50, Algorithms: []string{bailiff.AlgKey, bailiff.AlgSignature}},
		Object{Record: 2, Kind: KindRecord, Size: 4096, Algorithms: []string{AlgRecordAEAD, KeyEpoch(1), AlgCheckpoint}},
	)
	return objs
}

func TestPlan(t *testing.T) {
	p := Default()
	if r := Plan(p, objects(), day("2026-11-23")); !r.Empty() || r.Warned != 0 {
		t.Errorf("2026: plan not empty:\n%s", r)
	}
	r := Plan(p, objects(), day("2031-01-01"))
	if !r.Empty() || r.Warned != 13 {
		t.Errorf("2031: want empty plan with 13 warned objects:\n%s", r)
	}
	if !strings.Contains(r.String(), "warning: 13 objects") {
		t.Errorf("2031: table lacks the warning:\n%s", r)
	}
	r = Plan(p, objects(), day("2036-01-01"))
	g := r.Group(AlgorithmUpgrade)
	if g == nil || g.Objects != 11 || !g.Quorum || g.Bytes != 10*1000+300 || g.Users != 2 {
		t.Fatalf("2036: algorithm upgrade group %+v\n%s", g, r)
	}
	if g.Failing[bailiff.AlgKey] != 11 || g.Replacement[bailiff.AlgKey] != AlgKeyPQ {
		t.Errorf("2036: failing %v replacement %v", g.Failing, g.Replacement)
	}
	if g.Records[0] != 5 || !slices.IsSorted(g.Records) {
		t.Errorf("records %v", g.Records)
	}
	if g := r.Group(RosterChange); g == nil || g.Objects != 1 || !g.Quorum {
		t.Errorf("2036: roster group %+v", g)
	}
	if g := r.Group(RecordRekey); g == nil || g.Objects != 1 || g.Quorum || g.Failing[AlgCheckpoint] != 1 {
		t.Errorf("2036: record group %+v", g)
	}
	if r.Group(EscrowRotation) != nil {
		t.Error("plan chose escrow rotation, which is for explicit recipient changes only")
	}
	out := r.String()
	for _, want := range []string{"algorithm-upgrade", "record-rekey", "roster-change", bailiff.AlgKey + " (11) -> " + AlgKeyPQ} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// TestPlanPQTargetIsEmpty: the objects as the appliance records them once
// every user is upgraded (kind 4) and the roster holds post-quantum bailiff
// keys (kind 2): nothing to do, ever, under the default policy. With the
// bailiffs still on P-521 the escrows' share messages and the roster go to
// a roster change, and nothing else.
func TestPlanPQTargetIsEmpty(t *testing.T) {
	p := Default()
	escrowPQ := []string{AlgKeyPQ, bailiff.AlgEscrowAEAD, AlgShamir, AlgPKESKPQNamed}
	objs := []Object{
		{Record: 1, Kind: KindItem, UserID: "u1", Size: 10, Algorithms: itemPQ},
		{Record: 2, Kind: KindEscrow, UserID: "u1", Size: 10, Algorithms: escrowPQ},
		{Record: 3, Kind: KindRoster, Size: 10, Algorithms: []string{AlgSignaturePQ, AlgKeyPQ}},
		{Record: 4, Kind: KindRecord, Size: 10, Algorithms: []string{AlgRecordAEAD, KeyEpoch(7), AlgCheckpointPQ}},
	}
	for _, at := range []string{"2036-01-01", "2099-12-31"} {
		if r := Plan(p, objs, day(at)); !r.Empty() || r.Warned != 0 {
			t.Errorf("%s: PQ objects need work:\n%s", at, r)
		}
	}
	classical := slices.Clone(objs)
	classical[1].Algorithms = []string{AlgKeyPQ, bailiff.AlgEscrowAEAD, AlgShamir, bailiff.AlgPKESKNamed}
	classical[2].Algorithms = []string{bailiff.AlgSignature, bailiff.AlgKey}
	r := Plan(p, classical, day("2036-01-01"))
	if g := r.Group(RosterChange); len(r.Groups) != 1 || g == nil || !slices.Equal(g.Records, []uint64{2, 3}) || g.Replacement[bailiff.AlgPKESKNamed] != AlgPKESKPQNamed {
		t.Errorf("bailiffs on P-521 after the upgrade:\n%s", r)
	}
}

func TestPlanKinds(t *testing.T) {
	p := Default()
	p.Rules[slices.IndexFunc(p.Rules, func(r Rule) bool { return r.Algorithm == AlgShamir })].Status = Forbidden
	p.MinKeyEpoch = 2
	now := day("2026-11-23")
	objs := []Object{
		{Record: 1, Kind: KindEscrow, UserID: "u1", Algorithms: []string{bailiff.AlgKey, bailiff.AlgEscrowAEAD, AlgShamir}},
		{Record: 2, Kind: KindEscrow, UserID: "u2", Algorithms: []string{bailiff.AlgKey, "mystery-aead", AlgShamir}},
		{Record: 3, Kind: KindRecord, Algorithms: []string{AlgRecordAEAD, KeyEpoch(1)}},
		{Record: 4, Kind: "thing", Algorithms: []string{"sha256"}},
		{Record: 5, Kind: KindItem, Algorithms: nil},
	}
	r := Plan(p, objs, now)
	want := map[WorkKind][]uint64{RosterChange: {1}, AlgorithmUpgrade: {2, 5}, RecordRekey: {3}}
	for k, recs := range want {
		if g := r.Group(k); g == nil || !slices.Equal(g.Records, recs) {
			t.Errorf("%s: got %+v, want records %v\n%s", k, g, recs, r)
		}
	}
	if len(r.Groups) != 3 {
		t.Errorf("groups: %s", r)
	}
}

func TestMarshalParseRoundTrip(t *testing.T) {
	p := Default()
	p.Version = 7
	p.MinKeyEpoch = 4
	p.VaultID[0], p.RosterDigest[31] = 0xaa, 0x55
	p.Signatures = map[string][]byte{strings.Repeat("ab", 20): {1, 2, 3}, strings.Repeat("0f", 20): {4}}
	b := p.Marshal()
	q, err := Parse(b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if !bytes.Equal(q.Marshal(), b) || q.Version != 7 || q.MinKeyEpoch != 4 || len(q.Rules) != len(p.Rules) || len(q.Signatures) != 2 {
		t.Errorf("round trip differs:\n%s\n%s", b, q.Marshal())
	}
	if !slices.EqualFunc(p.Rules, q.Rules, func(a, b Rule) bool {
		return a.Algorithm == b.Algorithm && a.Class == b.Class && a.Status == b.Status && a.WarnFrom.Equal(b.WarnFrom) && a.Until.Equal(b.Until) && a.Replacement == b.Replacement
	}) {
		t.Error("rules differ after round trip")
	}
}

func TestParseRejects(t *testing.T) {
	good := string(Default().Marshal())
	mut := map[string]string{
		"crlf":             strings.ReplaceAll(good, "\n", "\r\n"),
		"no final newline": strings.TrimSuffix(good, "\n"),
		"version 0":        strings.Replace(good, "version 1\n", "version 0\n", 1),
		"version 01":       strings.Replace(good, "version 1\n", "version 01\n", 1),
		"format v2":        strings.Replace(good, Magic+" v1", Magic+" v2", 1),
		"status":           strings.Replace(good, " preferred ", " recommended ", 1),
		"class":            strings.Replace(good, " hash ", " digest ", 1),
		"forbidden dated":  strings.Replace(good, "rule md5 hash forbidden - -", "rule md5 hash forbidden 2030-01-01T00:00:00Z -", 1),
		"time":             strings.Replace(good, "2035-12-31T23:59:59Z", "2035-12-31T23:59:59+00:00", 1),
		"replacement":      strings.Replace(good, "forbidden - - sha256", "forbidden - - sha3-256", 1),
		"unsorted":         strings.Replace(strings.Replace(good, "rule md5 ", "rule zz5 ", 1), "rule md5", "rule zz5", 1),
		"trailing":         good + "extra 1\n",
		"rule count":       strings.Replace(good, "rules 28\n", "rules 29\n", 1),
		"double space":     strings.Replace(good, "rule md5 hash", "rule md5  hash", 1),
		"uppercase alg":    strings.Replace(good, "rule md5 ", "rule MD5 ", 1),
	}
	for name, s := range mut {
		if s == good {
			t.Errorf("%s: mutation did not apply", name)
			continue
		}
		if _, err := Parse([]byte(s)); err == nil || !errors.Is(err, ErrFormat) {
			t.Errorf("%s: Parse = %v, want an ErrFormat error", name, err)
		}
	}
	if _, err := Parse([]byte(good)); err != nil {
		t.Fatal(err)
	}
}

func TestSignVerify(t *testing.T) {
	v := getVault(t)
	r := v.roster
	p := v.signedPolicy(t, Default(), 0)
	if err := p.Verify(r); err == nil || !strings.Contains(err.Error(), "1 valid bailiff signatures, needs 2") {
		t.Fatalf("k-1 signatures: Verify = %v", err)
	}
	k := v.openKey(t, 2)
	if err := p.Sign(r, k, time.Now()); err != nil {
		t.Fatal(err)
	}
	bailiff.WipeKey(k)
	if err := p.Verify(r); err != nil {
		t.Fatalf("k signatures: %v", err)
	}
	// the file round-trips and still verifies
	q, err := Parse(p.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Verify(r); err != nil {
		t.Fatalf("parsed: %v", err)
	}

	t.Run("outsider", func(t *testing.T) {
		q, _ := Parse(p.Marshal())
		k := v.openKey(t, -1)
		defer bailiff.WipeKey(k)
		if err := q.Sign(r, k, time.Now()); err == nil {
			t.Fatal("a key not on the roster signed")
		}
		sig, err := bailiff.SignDetached(k, q.Body(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := q.AddSignature(r, sig); err == nil {
			t.Fatal("AddSignature accepted an outsider's signature")
		}
		q.Signatures[bailiff.Fingerprint(k)] = sig
		if err := q.Verify(r); err == nil || !strings.Contains(err.Error(), "not on the roster") {
			t.Fatalf("Verify with an outsider signature = %v", err)
		}
	})
	t.Run("tampered", func(t *testing.T) {
		q, _ := Parse(p.Marshal())
		q.Rule("md5").Status = Acceptable
		q.Rule("md5").Replacement = ""
		if err := q.Verify(r); err == nil || !strings.Contains(err.Error(), "invalid") {
			t.Fatalf("tampered rule: Verify = %v", err)
		}
		q, _ = Parse(p.Marshal())
		q.Version++
		if err := q.Verify(r); err == nil {
			t.Fatal("tampered version verified")
		}
	})
	t.Run("swapped signature", func(t *testing.T) {
		q, _ := Parse(p.Marshal())
		fprs := []string{r.Bailiffs[0].Fingerprint, r.Bailiffs[2].Fingerprint}
		q.Signatures[fprs[0]], q.Signatures[fprs[1]] = q.Signatures[fprs[1]], q.Signatures[fprs[0]]
		if err := q.Verify(r); err == nil {
			t.Fatal("signatures attributed to the wrong bailiffs verified")
		}
	})
	t.Run("other roster", func(t *testing.T) {
		q, _ := Parse(p.Marshal())
		q.RosterDigest[0] ^= 1
		if err := q.Verify(r); !errors.Is(err, ErrWrongVault) {
			t.Fatalf("Verify = %v, want ErrWrongVault", err)
		}
		q, _ = Parse(p.Marshal())
		q.VaultID[0] ^= 1
		if err := q.Verify(r); !errors.Is(err, ErrWrongVault) {
			t.Fatalf("Verify = %v, want ErrWrongVault", err)
		}
	})
	t.Run("unbound", func(t *testing.T) {
		k := v.openKey(t, 0)
		defer bailiff.WipeKey(k)
		if err := Default().Sign(r, k, time.Now()); !errors.Is(err, ErrWrongVault) {
			t.Fatalf("signing an unbound policy: %v", err)
		}
	})
	t.Run("armored", func(t *testing.T) {
		q, _ := Parse(p.Marshal())
		fpr := r.Bailiffs[0].Fingerprint
		sig := q.Signatures[fpr]
		delete(q.Signatures, fpr)
		arm := armorSig(t, sig)
		b, err := q.AddSignature(r, arm)
		if err != nil || b.Fingerprint != fpr {
			t.Fatalf("armored signature: %v %v", b, err)
		}
	})
}

func TestLayering(t *testing.T) {
	// Compile-time view: the package's imports (checked by go list in
	// bailiff's TestLayering for coffre/bailiff/...); here the direct ones.
	for _, bad := range []string{"coffre/storage", "coffre/ingest", "coffre/appliance"} {
		for _, imp := range directImports(t) {
			if imp == bad || strings.HasPrefix(imp, bad+"/") {
				t.Errorf("policy imports %s", imp)
			}
		}
	}
}

func TestPlanRotation(t *testing.T) {
	p := Default()
	objs := []Object{
		{Record: 1, Kind: KindItem, UserID: "u1", Size: 10, Algorithms: itemP521},
		{Record: 2, Kind: KindItem, UserID: "u1", Size: 20, Algorithms: []string{bailiff.AlgKey, "md5"}},
		{Record: 3, Kind: KindEscrow, UserID: "u1", Size: 30, Algorithms: []string{bailiff.AlgKey, bailiff.AlgEscrowAEAD, AlgShamir}},
		{Record: 4, Kind: KindItem, UserID: "u2", Size: 40, Algorithms: itemP521},
		{Record: 5, Kind: KindRecord, UserID: "u1", Size: 50, Algorithms: []string{AlgRecordAEAD}},
	}
	r := PlanRotation(p, objs, "u1", day("2026-11-23"))
	if g := r.Group(EscrowRotation); g == nil || !slices.Equal(g.Records, []uint64{1, 3}) || !g.Quorum || g.Bytes != 40 || len(g.Failing) != 0 {
		t.Errorf("rotation group %+v\n%s", g, r)
	}
	if g := r.Group(AlgorithmUpgrade); g == nil || !slices.Equal(g.Records, []uint64{2}) {
		t.Errorf("a policy-failing item was only re-wrapped: %+v", g)
	}
	if len(r.Groups) != 2 {
		t.Errorf("groups:\n%s", r)
	}
	if !strings.Contains(r.String(), "escrow-rotation") {
		t.Errorf("table:\n%s", r)
	}
}

func TestSupersedes(t *testing.T) {
	cur := Default()
	cur.Version = 3
	next := Default()
	next.Version = 4
	if err := next.Supersedes(cur); err != nil {
		t.Fatal(err)
	}
	if err := next.Supersedes(nil); err != nil {
		t.Fatal(err)
	}
	for _, v := range []int{2, 3} {
		old := Default()
		old.Version = v
		if err := old.Supersedes(cur); !errors.Is(err, ErrRollback) {
			t.Errorf("version %d over 3: %v", v, err)
		}
	}
	next.VaultID[0] = 1
	if err := next.Supersedes(cur); !errors.Is(err, ErrWrongVault) {
		t.Errorf("other vault: %v", err)
	}
}
