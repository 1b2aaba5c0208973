package firmware_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"coffre/firmware"
	"coffre/hsm"
	"coffre/hsm/swtpm"
)

const testPCR = 16

// appliance is an installed system on disk: a daemon binary and a config.
type appliance struct {
	dir, bin, config string
}

func newAppliance(t *testing.T, daemon []byte) *appliance {
	a := &appliance{dir: t.TempDir()}
	a.bin = filepath.Join(a.dir, "coffred")
	a.config = filepath.Join(a.dir, "coffred.conf")
	os.WriteFile(a.bin, daemon, 0o755)
	os.WriteFile(a.config, []byte("drives = 4\n"), 0o600)
	return a
}

func (a *appliance) inputs() []firmware.Input {
	return []firmware.Input{{Name: "coffred", Path: a.bin}, {Name: "config", Path: a.config}}
}

// TestUpdateOnTPM is the measured-update story on swtpm: the keys are sealed
// to the measured v1; an approved v2 update keeps them; a tampered binary,
// an under-signed bundle and a downgrade are refused; the version counter
// survives reboots.
func TestUpdateOnTPM(t *testing.T) {
	sim := swtpm.Start(t)
	ksDir := filepath.Join(t.TempDir(), "keystore")
	stage := filepath.Join(t.TempDir(), "stage")
	opts := hsm.TPMOptions{Device: sim.Socket, MeasurePCR: testPCR, PCRs: []int{testPCR}}
	keys := releaseKeys(t, 3)
	root := trustRoot(t, 2, keys)
	app := newAppliance(t, files1["coffred"])
	secret := []byte("vault record key 0123456789abcde")

	// Boot 1 (provisioning): measure, create, seal.
	bank, err := hsm.OpenPCRBank(sim.Socket, testPCR)
	if err != nil {
		t.Fatal(err)
	}
	meas, err := firmware.MeasureInto(bank, app.inputs())
	if err != nil {
		t.Fatal(err)
	}
	bank.Close()
	ks, err := hsm.CreateTPM(ksDir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := ks.Seal("record.key", secret); err != nil {
		t.Fatal(err)
	}
	if _, err := firmware.Measure(ks, app.inputs()); err == nil {
		t.Fatal("Measure twice in one boot succeeded")
	}
	// Install v1's version.
	_, b1 := release(t, 1, "1.0.0", files1, keys[0], keys[1])
	if _, err := firmware.Apply(ks, b1, root, meas, stage); err != nil {
		t.Fatalf("apply v1: %v", err)
	}
	if err := ks.Cap(); err != nil {
		t.Fatal(err)
	}

	// An update to v2 arrives while running (after Cap).
	files2 := map[string][]byte{"coffre": []byte("coffre CLI v2"), "coffred": []byte("coffred daemon v2"), "config-schema": files1["config-schema"]}
	_, under := release(t, 2, "2.0.0", files2, keys[2])
	if _, err := firmware.Apply(ks, under, root, meas, stage); !errors.Is(err, firmware.ErrSignatures) {
		t.Fatalf("under-signed bundle: %v, want ErrSignatures", err)
	}
	m2, b2 := release(t, 2, "2.0.0", files2, keys[1], keys[2])
	st, err := firmware.Apply(ks, b2, root, meas, stage)
	if err != nil {
		t.Fatalf("apply v2: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(st.Dir, "component.coffred")); !bytes.Equal(got, files2["coffred"]) {
		t.Fatal("staged coffred differs")
	}
	if v, _ := ks.Counter(firmware.VersionCounter); v != 2 {
		t.Fatalf("version counter = %d, want 2", v)
	}
	// Downgrade to v1 (validly signed) is refused.
	if _, err := firmware.Apply(ks, b1, root, meas, stage); !errors.Is(err, firmware.ErrDowngrade) {
		t.Fatalf("downgrade: %v, want ErrDowngrade", err)
	}
	ks.Close()

	// Reboot into v2 (the installer put the staged binary in place).
	os.WriteFile(app.bin, files2["coffred"], 0o755)
	sim.Restart()
	ks = openTPM(t, ksDir, opts)
	if _, err := firmware.Measure(ks, app.inputs()); err != nil {
		t.Fatal(err)
	}
	if err := firmware.CheckVersion(ks, m2); err != nil {
		t.Fatal(err)
	}
	if got, err := ks.Unseal("record.key"); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("unseal after the approved update: %v", err)
	}
	ks.Close()

	// Reboot into a tampered binary: the keys stay shut.
	os.WriteFile(app.bin, []byte("coffred daemon v2 + implant"), 0o755)
	sim.Restart()
	ks = openTPM(t, ksDir, opts)
	if _, err := firmware.Measure(ks, app.inputs()); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Unseal("record.key"); !errors.Is(err, hsm.ErrPolicy) {
		t.Fatalf("unseal under a tampered binary: %v, want ErrPolicy", err)
	}
	ks.Close()

	// Reboot into the old, validly signed v1 binary: its approval was
	// retired by the update, so the TPM refuses to unseal.
	os.WriteFile(app.bin, files1["coffred"], 0o755)
	sim.Restart()
	ks = openTPM(t, ksDir, opts)
	if _, err := firmware.Measure(ks, app.inputs()); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Unseal("record.key"); !errors.Is(err, hsm.ErrPolicy) {
		t.Fatalf("unseal under the old v1 binary: %v, want ErrPolicy", err)
	}
	// And v1's own start-up check refuses to run it.
	m1, _ := release(t, 1, "1.0.0", files1)
	if err := firmware.CheckVersion(ks, m1); !errors.Is(err, firmware.ErrDowngrade) {
		t.Fatalf("CheckVersion(v1) = %v, want ErrDowngrade", err)
	}
	ks.Close()
}

func openTPM(t *testing.T, dir string, o hsm.TPMOptions) *hsm.TPM {
	t.Helper()
	ks, err := hsm.OpenTPM(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func TestUpdateOnSoft(t *testing.T) {
	ks, err := hsm.CreateSoft(t.TempDir(), []byte("soft passphrase"), hsm.TestSoftParams)
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	keys := releaseKeys(t, 2)
	root := trustRoot(t, 2, keys)
	app := newAppliance(t, files1["coffred"])
	meas, err := firmware.Measure(ks, app.inputs())
	if err != nil || len(meas.Events) != 2 {
		t.Fatalf("Measure on soft: %v", err)
	}
	_, b3 := release(t, 3, "1.0.0", files1, keys...)
	if _, err := firmware.Apply(ks, b3, root, meas, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	_, b2 := release(t, 2, "0.9.0", files1, keys...)
	if _, err := firmware.Apply(ks, b2, root, meas, t.TempDir()); !errors.Is(err, firmware.ErrDowngrade) {
		t.Fatalf("downgrade on soft: %v", err)
	}
}
