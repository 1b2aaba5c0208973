//go:build regen

package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"coffre/bailiff"
)

// TestRegenerateVectors rewrites testdata/policy/ (run with
// `go test -tags regen -run TestRegenerateVectors ./bailiff/policy`).
// It makes a fresh roster, so every signed vector changes.
func TestRegenerateVectors(t *testing.T) {
	v := getVault(t)
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(vectorDir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(vectorDir, 0o755)
	def := Default()
	good := string(def.Marshal())
	write("roster.txt", v.roster.Marshal())
	write("default.policy", []byte(good))

	signed := v.signedPolicy(t, Default(), 0, 2)
	write("signed.policy", signed.Marshal())
	write("signed-one.policy", v.signedPolicy(t, Default(), 1).Marshal())

	tam, _ := Parse(signed.Marshal())
	tam.Rule("openpgp-v4-ecdsa-p521+ecdh-p521").Until = time.Date(2045, 12, 31, 23, 59, 59, 0, time.UTC)
	write("tampered.policy", tam.Marshal())

	out, _ := Parse(signed.Marshal())
	k := v.openKey(t, -1)
	sig, err := signDetachedForTest(k, out.Body())
	if err != nil {
		t.Fatal(err)
	}
	out.Signatures[fingerprintForTest(k)] = sig
	write("outsider.policy", out.Marshal())

	oth := Default()
	oth.Bind(v.roster)
	oth.RosterDigest[0] ^= 0xff
	oth.Signatures = signed.Signatures
	write("other-roster.policy", oth.Marshal())

	bad := map[string]string{
		"bad-crlf.policy":                strings.ReplaceAll(good, "\n", "\r\n"),
		"bad-unsorted.policy":            strings.Replace(good, "rule md5 ", "rule zz5 ", 1),
		"bad-forbidden-dated.policy":     strings.Replace(good, "rule md5 hash forbidden - -", "rule md5 hash forbidden 2030-01-01T00:00:00Z -", 1),
		"bad-missing-replacement.policy": strings.Replace(good, "forbidden - - sha256", "forbidden - - sha3-256", 1),
		"bad-version-zero.policy":        strings.Replace(good, "version 1\n", "version 0\n", 1),
		"bad-trailing.policy":            good + "comment hello\n",
		"bad-warn-after-until.policy":    strings.Replace(good, "2030-01-01T00:00:00Z 2035-12-31T23:59:59Z", "2036-01-01T00:00:00Z 2035-12-31T23:59:59Z", 1),
		"bad-key-epoch-rule.policy":      strings.Replace(strings.Replace(good, "rule md5 hash", "rule key-epoch-1 hash", 1), "rules 27", "rules 27", 1),
		"bad-duplicate-signature.policy": strings.Replace(string(signed.Marshal()), "signatures 2\n", "signatures 3\n", 1) + lastLine(string(signed.Marshal())),
	}
	for name, s := range bad {
		if s == good {
			t.Fatalf("%s: mutation did not apply", name)
		}
		write(name, []byte(s))
	}
}

func lastLine(s string) string {
	s = strings.TrimSuffix(s, "\n")
	return s[strings.LastIndexByte(s, '\n')+1:] + "\n"
}

func signDetachedForTest(k *openpgp.Entity, body []byte) ([]byte, error) {
	return bailiff.SignDetached(k, body, time.Now())
}

func fingerprintForTest(k *openpgp.Entity) string { return bailiff.Fingerprint(k) }
