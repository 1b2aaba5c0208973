package firmware_test

import (
	"testing"

	"coffre/firmware"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// releaseKeys makes n OpenPGP release keys (Ed25519, v4).
func releaseKeys(t testing.TB, n int) []*openpgp.Entity {
	t.Helper()
	var out []*openpgp.Entity
	for i := range n {
		e, err := openpgp.NewEntity("release key", string(rune('A'+i)), "release@coffre.test", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func publicOnly(t testing.TB, keys []*openpgp.Entity) openpgp.EntityList {
	t.Helper()
	var el openpgp.EntityList
	for _, k := range keys {
		c := *k
		c.PrivateKey = nil
		el = append(el, &c)
	}
	return el
}

func trustRoot(t testing.TB, threshold int, keys []*openpgp.Entity) *firmware.TrustRoot {
	t.Helper()
	r, err := firmware.NewTrustRoot(threshold, publicOnly(t, keys))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// release builds a manifest for files and a bundle signed by signers.
func release(t testing.TB, version uint64, semver string, files map[string][]byte, signers ...*openpgp.Entity) (*firmware.Manifest, []byte) {
	t.Helper()
	m := &firmware.Manifest{Product: "coffre", Version: version, SemVer: semver}
	for _, name := range sortedKeys(files) {
		m.Components = append(m.Components, firmware.NewComponent(name, files[name]))
	}
	mb, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if len(signers) == 0 {
		return m, nil
	}
	b := &firmware.Bundle{Manifest: mb, Files: files}
	for _, s := range signers {
		sig, err := firmware.SignManifest(mb, s)
		if err != nil {
			t.Fatal(err)
		}
		b.Signatures = append(b.Signatures, sig)
	}
	out, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return m, out
}

func sortedKeys(m map[string][]byte) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	for i := range ks {
		for j := i + 1; j < len(ks); j++ {
			if ks[j] < ks[i] {
				ks[i], ks[j] = ks[j], ks[i]
			}
		}
	}
	return ks
}
