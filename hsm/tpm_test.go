package hsm_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"coffre/hsm"
	"coffre/hsm/hsmtest"
	"coffre/hsm/swtpm"
)

const testPCR = 16 // the debug PCR: fine for tests, never for production

func tpmOpts(sim *swtpm.Sim, pin []byte) hsm.TPMOptions {
	return hsm.TPMOptions{Device: sim.Socket, MeasurePCR: testPCR, PCRs: []int{testPCR}, PIN: pin}
}

// measure extends the test PCR like firmware.Measure does at boot, when it
// is still in its reset state.
func measure(t *testing.T, sim *swtpm.Sim, what string) {
	t.Helper()
	bank, err := hsm.OpenPCRBank(sim.Socket, testPCR)
	if err != nil {
		t.Fatal(err)
	}
	defer bank.Close()
	v, err := bank.PCRs(testPCR)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v[testPCR], make([]byte, 32)) {
		return
	}
	d := sha256.Sum256([]byte(what))
	if err := bank.Extend(testPCR, d[:]); err != nil {
		t.Fatal(err)
	}
}

func TestTPMRefusesUnmeasured(t *testing.T) {
	sim := swtpm.Start(t)
	if _, err := hsm.CreateTPM(t.TempDir(), tpmOpts(sim, nil)); !errors.Is(err, hsm.ErrUnmeasured) {
		t.Fatalf("CreateTPM before measuring = %v, want ErrUnmeasured", err)
	}
}

func TestTPMConformance(t *testing.T) {
	sim := swtpm.Start(t)
	measure(t, sim, "firmware")
	for _, tc := range []struct {
		name string
		pin  []byte
	}{{"NoPIN", nil}, {"PIN", []byte("246810")}} {
		t.Run(tc.name, func(t *testing.T) {
			b := hsmtest.Backend{
				Create: func(t *testing.T) (hsm.Keystore, func(t *testing.T) hsm.Keystore) {
					dir := filepath.Join(t.TempDir(), "ks")
					ks, err := hsm.CreateTPM(dir, tpmOpts(sim, tc.pin))
					if err != nil {
						t.Fatal(err)
					}
					return ks, func(t *testing.T) hsm.Keystore {
						ks, err := hsm.OpenTPM(dir, tpmOpts(sim, tc.pin))
						if err != nil {
							t.Fatal(err)
						}
						return ks
					}
				},
			}
			if tc.pin != nil {
				b.ReopenWrong = func(t *testing.T, ks hsm.Keystore, name string) error {
					dir := ks.(*hsm.TPM).Dir()
					ks.Close()
					ks2, err := hsm.OpenTPM(dir, tpmOpts(sim, []byte("999999")))
					if err != nil {
						return err
					}
					defer ks2.Close()
					_, err = ks2.Unseal(name)
					if err != nil && !errors.Is(err, hsm.ErrWrongPIN) {
						t.Errorf("wrong PIN gave %v, want ErrWrongPIN", err)
					}
					return err
				}
			}
			hsmtest.Run(t, b)
		})
	}
}

func extend(t *testing.T, ks *hsm.TPM, what string) {
	t.Helper()
	d := sha256.Sum256([]byte(what))
	if err := ks.Extend(testPCR, d[:]); err != nil {
		t.Fatal(err)
	}
}

// TestTPMMeasuredBoot walks the measured-boot story on swtpm: secrets bound
// to a measured state; a changed measurement cannot unseal; Cap closes the
// window; a reboot with the same measurement restores it; an approved new
// state opens the keys; an unapproved one does not.
func TestTPMMeasuredBoot(t *testing.T) {
	sim := swtpm.Start(t)
	dir := filepath.Join(t.TempDir(), "ks")
	opts := tpmOpts(sim, nil)

	boot := func(measure string) *hsm.TPM {
		t.Helper()
		sim.Restart()
		ks, err := hsm.OpenTPM(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		extend(t, ks, measure)
		return ks
	}

	// First boot: measure v1, create the keystore, seal.
	measure(t, sim, "firmware v1")
	ks, err := hsm.CreateTPM(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("vault record key: 32 bytes long!")
	if err := ks.Seal("record.key", secret); err != nil {
		t.Fatal(err)
	}
	if got, err := ks.Unseal("record.key"); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("unseal in the measured state: %v", err)
	}
	// Cap: nothing unseals until reboot.
	if err := ks.Cap(); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Unseal("record.key"); !errors.Is(err, hsm.ErrPolicy) {
		t.Fatalf("unseal after Cap = %v, want ErrPolicy", err)
	}
	// Seal still works after Cap (it needs no unsealing).
	if err := ks.Seal("after-cap", []byte("x")); err != nil {
		t.Fatal(err)
	}
	ks.Close()

	// Keep v1's approval file: restoring it later must not help.
	v1Files, _ := filepath.Glob(filepath.Join(dir, "pcr-*.pol"))
	v1Saved := map[string][]byte{}
	for _, f := range v1Files {
		v1Saved[f], _ = os.ReadFile(f)
	}

	// Reboot with the same measurement: unseals again.
	ks = boot("firmware v1")
	if got, err := ks.Unseal("record.key"); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("unseal after reboot with the same measurement: %v", err)
	}
	// Approve firmware v2 while running v1 (what firmware.Apply does).
	zero := make([]byte, 32)
	v2 := sha256.Sum256([]byte("firmware v2"))
	if err := ks.Cap(); err != nil {
		t.Fatal(err)
	}
	if err := ks.Approve(map[int][]byte{testPCR: hsm.ExtendValue(zero, v2[:])}); err != nil {
		t.Fatalf("Approve after Cap (signer kept in memory): %v", err)
	}
	ks.Close()

	// Reboot into an unapproved binary: the keys stay shut.
	ks = boot("tampered firmware")
	if _, err := ks.Unseal("record.key"); !errors.Is(err, hsm.ErrPolicy) {
		t.Fatalf("unseal under a changed measurement = %v, want ErrPolicy", err)
	}
	evil := sha256.Sum256([]byte("evil"))
	if err := ks.Approve(map[int][]byte{testPCR: hsm.ExtendValue(zero, evil[:])}); err == nil || errors.Is(err, hsm.ErrUnmeasured) {
		t.Fatal("an unapproved state could approve another state")
	}
	ks.Close()

	// Reboot into the approved v2: the keys move with the update.
	ks = boot("firmware v2")
	if got, err := ks.Unseal("record.key"); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("unseal under approved v2: %v", err)
	}
	ks.Close()
	// Approving v2 retired v1's approval (the epoch counter moved past
	// it): the old firmware no longer opens the keys, even with its
	// approval file restored.
	for f, b := range v1Saved {
		os.WriteFile(f, b, 0o600)
	}
	ks = boot("firmware v1")
	if _, err := ks.Unseal("record.key"); !errors.Is(err, hsm.ErrPolicy) {
		t.Fatalf("unseal under retired v1 = %v, want ErrPolicy", err)
	} else {
		t.Logf("retired v1: %v", err)
	}
	ks.Close()
}

// A forged approval (signed by another key) does not open the secrets.
func TestTPMForgedApproval(t *testing.T) {
	sim := swtpm.Start(t)
	measure(t, sim, "firmware")
	opts := tpmOpts(sim, nil)
	dirA := filepath.Join(t.TempDir(), "a")
	dirB := filepath.Join(t.TempDir(), "b")
	a, err := hsm.CreateTPM(dirA, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.Seal("s", []byte("secret A")); err != nil {
		t.Fatal(err)
	}
	extend(t, a, "evil")
	// Keystore B (another signer) approves the evil state; its approval
	// file is copied into A.
	b, err := hsm.CreateTPM(dirB, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ents, _ := filepath.Glob(filepath.Join(dirB, "pcr-*.pol"))
	for _, e := range ents {
		data, _ := os.ReadFile(e)
		os.WriteFile(filepath.Join(dirA, filepath.Base(e)), data, 0o600)
	}
	if _, err := a.Unseal("s"); !errors.Is(err, hsm.ErrPolicy) {
		t.Fatalf("unseal with a foreign approval = %v, want ErrPolicy", err)
	}
}

func TestTPMCounters(t *testing.T) {
	sim := swtpm.Start(t)
	measure(t, sim, "firmware")
	dir := filepath.Join(t.TempDir(), "ks")
	ks, err := hsm.CreateTPM(dir, tpmOpts(sim, nil))
	if err != nil {
		t.Fatal(err)
	}
	if v, err := ks.Counter("checkpoint"); err != nil || v != 0 {
		t.Fatalf("new counter = %d, %v; want 0", v, err)
	}
	v1, err := ks.Increment("checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	v2, err := ks.Increment("checkpoint")
	if err != nil || v2 != v1+1 {
		t.Fatalf("second Increment = %d, %v; want %d", v2, err, v1+1)
	}
	ks.Close()
	// A simulated reboot keeps NV; a restored (rolled-back) keystore
	// directory cannot roll the counter back.
	sim.Restart()
	ks, err = hsm.OpenTPM(dir, tpmOpts(sim, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	if v, err := ks.Counter("checkpoint"); err != nil || v != v2 {
		t.Fatalf("counter after reboot = %d, %v; want %d", v, err, v2)
	}
	if v, err := ks.Counter("other"); err != nil || v != 0 {
		t.Fatalf("another counter = %d, %v; want 0", v, err)
	}
}

func TestTPMWrongTPM(t *testing.T) {
	simA := swtpm.Start(t)
	simB := swtpm.Start(t)
	measure(t, simA, "firmware")
	dir := filepath.Join(t.TempDir(), "ks")
	ks, err := hsm.CreateTPM(dir, tpmOpts(simA, nil))
	if err != nil {
		t.Fatal(err)
	}
	ks.Close()
	if _, err := hsm.OpenTPM(dir, tpmOpts(simB, nil)); err == nil {
		t.Fatal("a keystore opened on another TPM")
	}
}

func TestOpenConfigTPM(t *testing.T) {
	sim := swtpm.Start(t)
	measure(t, sim, "firmware")
	dir := filepath.Join(t.TempDir(), "ks")
	ks, err := hsm.CreateTPM(dir, tpmOpts(sim, nil))
	if err != nil {
		t.Fatal(err)
	}
	ks.Close()
	k, err := hsm.Open(hsm.Config{Backend: hsm.BackendTPM, Dir: dir, Production: true, TPM: tpmOpts(sim, nil)})
	if err != nil {
		t.Fatalf("Open(tpm, production): %v", err)
	}
	defer k.Close()
	if k.Backend() != hsm.BackendTPM {
		t.Fatalf("Backend = %q", k.Backend())
	}
	if _, err := hsm.Open(hsm.Config{Backend: hsm.BackendSoft, Dir: dir, Passphrase: testPass}); err == nil {
		t.Fatal("a TPM keystore opened as a soft one")
	}
	if _, err := hsm.Open(hsm.Config{Backend: "hsm9000", Dir: dir}); err == nil {
		t.Fatal("unknown backend accepted")
	}
}
