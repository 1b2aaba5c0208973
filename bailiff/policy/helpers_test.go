package policy

import (
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"coffre/bailiff"
)

// testVault is a 2-of-3 roster made by a genesis ceremony, with the
// bailiffs' protected secret keys, and an outsider's key; shared by tests
// (P-521 key generation and S2K are slow-ish).
type testVault struct {
	roster   *bailiff.Roster
	secrets  [][]byte // armored protected secret keys, by roster order
	pass     []string
	outsider []byte // armored protected secret key not on the roster
}

var (
	vaultOnce sync.Once
	vault     *testVault
	vaultErr  error
)

func getVault(t testing.TB) *testVault {
	t.Helper()
	vaultOnce.Do(func() { vault, vaultErr = makeVault() })
	if vaultErr != nil {
		t.Fatal(vaultErr)
	}
	return vault
}

func makeVault() (*testVault, error) {
	g, err := bailiff.NewGenesis(2, nil)
	if err != nil {
		return nil, err
	}
	secrets := map[string][]byte{}
	for i, n := range []string{"Alice Martin", "Bruno Keller", "Chloé Dubois"} {
		gk, err := g.GenerateBailiff(n, "b"+string(rune('a'+i))+"@example.org", []byte(passFor(n)))
		if err != nil {
			return nil, err
		}
		secrets[gk.Key.Fingerprint] = gk.ArmoredSecret
	}
	r, err := g.FixRoster()
	if err != nil {
		return nil, err
	}
	v := &testVault{roster: r}
	for _, b := range r.Bailiffs {
		v.secrets = append(v.secrets, secrets[b.Fingerprint])
		v.pass = append(v.pass, passFor(b.Name))
	}
	out, err := bailiff.GenerateBailiffKey("Mallory Outsider", "m@example.org", []byte(passFor("Mallory")), time.Now())
	if err != nil {
		return nil, err
	}
	v.outsider = out.ArmoredSecret
	out.Wipe()
	return v, nil
}

func passFor(name string) string { return "passphrase-of-" + name }

// openKey opens bailiff i's key (-1: the outsider).
func (v *testVault) openKey(t testing.TB, i int) *openpgp.Entity {
	t.Helper()
	sec, pass := v.outsider, passFor("Mallory")
	if i >= 0 {
		sec, pass = v.secrets[i], v.pass[i]
	}
	k, err := bailiff.OpenBailiffKey(sec, []byte(pass))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signedPolicy binds p to the roster and has bailiffs idx sign it.
func (v *testVault) signedPolicy(t testing.TB, p *Policy, idx ...int) *Policy {
	t.Helper()
	p.Bind(v.roster)
	for _, i := range idx {
		k := v.openKey(t, i)
		if err := p.Sign(v.roster, k, time.Now()); err != nil {
			t.Fatal(err)
		}
		bailiff.WipeKey(k)
	}
	return p
}
