package appliance_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"coffre/appliance"
	"coffre/firmware"
	"coffre/hsm"
	"coffre/hsm/swtpm"
)

// TestTPMKeystore provisions an appliance on swtpm: its keys are sealed to
// the measurement of coffred's binary and config, open after a reboot, not
// twice in one boot (the PCR is capped), and not when what runs changed.
func TestTPMKeystore(t *testing.T) {
	sim := swtpm.Start(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	bin := filepath.Join(binDir, "coffred")
	cfg := filepath.Join(dir, "coffred.json")
	os.WriteFile(cfg, []byte(`{"state": "state"}`), 0o600)
	inputs := []firmware.Input{{Name: "coffred", Path: bin}, {Name: "config", Path: cfg}}
	ks := hsm.Config{Backend: hsm.BackendTPM, TPM: hsm.TPMOptions{Device: sim.Socket, MeasurePCR: 16, PCRs: []int{16}}}

	id, err := appliance.Init(appliance.InitOptions{State: state, Keystore: ks, Measure: inputs})
	if err != nil {
		t.Fatal(err)
	}
	if id.Keystore != hsm.BackendTPM {
		t.Fatalf("keystore %q", id.Keystore)
	}
	open := func() (*appliance.Appliance, error) {
		return appliance.Open(state, appliance.OpenOptions{Keystore: ks, Measure: inputs, NoDrives: true})
	}

	sim.Restart() // reboot
	a, err := open()
	if err != nil {
		t.Fatalf("open after reboot: %v", err)
	}
	if st := a.Status(); st.Keystore != hsm.BackendTPM {
		t.Fatalf("status keystore %q", st.Keystore)
	}
	a.Close()
	if a, err := open(); err == nil {
		a.Close()
		t.Fatal("a second open in the same boot unsealed the keys: the PCR was not capped")
	}

	// Another config (or binary) measures differently: the keys stay sealed.
	sim.Restart()
	os.WriteFile(cfg, []byte(`{"state": "state", "log_level": "debug"}`), 0o600)
	if a, err := open(); err == nil {
		a.Close()
		t.Fatal("changed software unsealed the keys")
	} else if !errors.Is(err, hsm.ErrPolicy) {
		t.Logf("refused as expected (not ErrPolicy): %v", err)
	}
	sim.Restart()
	os.WriteFile(cfg, []byte(`{"state": "state"}`), 0o600)
	a, err = open()
	if err != nil {
		t.Fatalf("the approved software could not open after a reboot: %v", err)
	}
	a.Close()
}
