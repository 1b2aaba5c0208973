package bailiff

import (
	"bytes"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
)

// testVault is a 2-of-3 vault made by a genesis ceremony with keys
// generated on the appliance; shared by tests (key generation and S2K are
// slow-ish).
type testVault struct {
	roster  *Roster
	check   *Escrow
	secrets [][]byte // armored protected secret keys, by roster order
	pass    []string // passphrases, by roster order
	result  *GenesisResult
	genKeys []*GeneratedKey
}

var (
	vaultOnce sync.Once
	vault     *testVault
	vaultErr  error
)

func getVault(t *testing.T) *testVault {
	t.Helper()
	vaultOnce.Do(func() { vault, vaultErr = makeVault() })
	if vaultErr != nil {
		t.Fatal(vaultErr)
	}
	return vault
}

func makeVault() (*testVault, error) {
	g, err := NewGenesis(2, nil)
	if err != nil {
		return nil, err
	}
	names := []string{"Alice Martin", "Bruno Keller", "Chloé Dubois"}
	passes := map[string]string{}
	secrets := map[string][]byte{}
	var gks []*GeneratedKey
	for i, n := range names {
		p := "passphrase-of-" + n
		gk, err := g.GenerateBailiff(n, "b"+string(rune('a'+i))+"@example.org", []byte(p))
		if err != nil {
			return nil, err
		}
		passes[gk.Key.Fingerprint] = p
		secrets[gk.Key.Fingerprint] = gk.ArmoredSecret
		gks = append(gks, gk)
	}
	r, err := g.FixRoster()
	if err != nil {
		return nil, err
	}
	res, err := g.Finish()
	if err != nil {
		return nil, err
	}
	v := &testVault{roster: r, check: res.Check, result: res, genKeys: gks}
	for _, b := range r.Bailiffs {
		v.secrets = append(v.secrets, secrets[b.Fingerprint])
		v.pass = append(v.pass, passes[b.Fingerprint])
	}
	return v, nil
}

// openKey opens bailiff i's key.
func (v *testVault) openKey(t *testing.T, i int) *openpgp.Entity {
	t.Helper()
	k, err := OpenBailiffKey(v.secrets[i], []byte(v.pass[i]))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// beneficiary makes a v4 P-521 key pair for a beneficiary.
func newBeneficiary(t *testing.T) (*openpgp.Entity, []byte) {
	t.Helper()
	e, err := newP521Entity("Beneficiary", "heir@example.org", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := publicBytes(e)
	if err != nil {
		t.Fatal(err)
	}
	return e, pub
}

// signedOrder drafts an order and has bailiffs idx sign it.
func (v *testVault) signedOrder(t *testing.T, user string, benPub []byte, idx ...int) *Order {
	t.Helper()
	o, err := NewOrder(v.roster, user, "Tribunal judiciaire de Paris, RG 26/01234", benPub, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range idx {
		k := v.openKey(t, i)
		if err := o.Sign(v.roster, k, time.Now()); err != nil {
			t.Fatal(err)
		}
		WipeKey(k)
	}
	return o
}

func sealBytes(t *testing.T, e *Escrow, pt []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := e.Seal(&b, bytes.NewReader(pt)); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func source(id string, ver int, sealed []byte) ItemSource {
	return ItemSource{ItemID: id, Version: ver, Open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(sealed)), nil
	}}
}
