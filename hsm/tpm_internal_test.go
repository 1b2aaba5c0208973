package hsm

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"coffre/hsm/swtpm"

	"github.com/google/go-tpm/tpm2"
)

// The sealed objects open only through the policy: a plain password (or
// HMAC) session with the right auth value is refused by the TPM.
func TestTPMObjectNeedsPolicy(t *testing.T) {
	sim := swtpm.Start(t)
	bank, err := OpenPCRBank(sim.Socket, 16)
	if err != nil {
		t.Fatal(err)
	}
	bank.Extend(16, make([]byte, 32))
	bank.Close()
	dir := t.TempDir()
	ks, err := CreateTPM(dir, TPMOptions{Device: sim.Socket, MeasurePCR: 16, PCRs: []int{16}})
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	if err := ks.Seal("s", []byte("policy only")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "s.key"))
	sf, err := parseSecretFile(b)
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, _, err := parseTPMBlob(sf.body)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := tpm2.Load{ParentHandle: ks.srkAuth(), InPrivate: *priv, InPublic: *pub}.Execute(ks.tpm)
	if err != nil {
		t.Fatal(err)
	}
	defer ks.flush(obj.ObjectHandle)
	for name, auth := range map[string]tpm2.Session{
		"password": tpm2.PasswordAuth(nil),
		"hmac":     tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.Auth(nil)),
	} {
		_, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: obj.ObjectHandle, Name: obj.Name, Auth: auth}}.Execute(ks.tpm)
		if err == nil {
			t.Fatalf("%s session unsealed a policy-only object", name)
		}
		if !errors.Is(err, tpm2.TPMRCAuthUnavailable) {
			t.Logf("%s session refused with %v", name, err)
		}
	}
}

// A crash mid-write leaves a .tmp- file: it is ignored, and nothing
// half-written is ever visible under a secret's name.
func TestStrayTempFileIgnored(t *testing.T) {
	dir := t.TempDir()
	ks, err := CreateSoft(dir, []byte("passphrase for tmp test"), TestSoftParams)
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	os.WriteFile(filepath.Join(dir, ".tmp-0011223344556677"), []byte("CFKE\x01\x01half"), 0o600)
	os.WriteFile(filepath.Join(dir, "record.key.tmp"), []byte("junk"), 0o600)
	if err := ks.Seal("record", []byte("whole")); err != nil {
		t.Fatal(err)
	}
	names, err := ks.Names()
	if err != nil || len(names) != 1 || names[0] != "record" {
		t.Fatalf("Names = %v, %v; want [record]", names, err)
	}
}
