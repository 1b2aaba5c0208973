package appliance_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"coffre/appliance"
	"coffre/hsm"
)

// TestRollbackRefused swaps the four drives for an older copy of
// themselves — every record genuine and signed, the recent ones missing —
// and checks that the appliance refuses them thanks to the keystore's
// monotonic counter, while tolerating the one-step gap a crash leaves.
func TestRollbackRefused(t *testing.T) {
	e := newVault(t) // genesis anchored the drives at 1
	old := map[string][]byte{}
	for _, d := range e.drives() {
		b, err := os.ReadFile(d)
		if err != nil {
			t.Fatal(err)
		}
		old[d] = b
	}
	restore := func() {
		for d, b := range old {
			if err := os.WriteFile(d, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	opts := appliance.OpenOptions{Keystore: hsm.Config{Backend: "soft", Passphrase: []byte(testPass)}, Drives: e.drives()}
	anchor := func(n int) {
		a, err := appliance.Open(e.state, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		for i := 0; i < n; i++ {
			if err := a.Anchor(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A crash between the counter's increment and the anchor record leaves
	// the counter one ahead of the drives: accepted.
	ks, err := hsm.OpenSoft(e.state+"/keystore", []byte(testPass))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Increment("vault.anchor"); err != nil {
		t.Fatal(err)
	}
	ks.Close()
	a, err := appliance.Open(e.state, opts)
	if err != nil {
		t.Fatalf("a one-step gap (crash between increment and append) was refused: %v", err)
	}
	a.Close()
	// Two more anchors, then the old copy of the drives: refused — first
	// because the catalog has seen more records than the drives hold …
	anchor(2)
	restore()
	if a, err := appliance.Open(e.state, opts); err == nil {
		a.Close()
		t.Fatal("an old copy of the drives was accepted")
	} else if !errors.Is(err, appliance.ErrRolledBack) {
		t.Fatalf("error %v, want ErrRolledBack", err)
	}
	// … and, with the catalog rebuilt from the old drives themselves, by
	// the keystore's monotonic counter alone.
	if _, _, err := appliance.RebuildCatalog(e.state, opts, e.drives()[0]); err != nil {
		t.Fatal(err)
	}
	if a, err := appliance.Open(e.state, opts); err == nil {
		a.Close()
		t.Fatal("an old copy of the drives was accepted after a catalog rebuild")
	} else if !errors.Is(err, appliance.ErrRolledBack) || !strings.Contains(err.Error(), "counter") {
		t.Fatalf("error %v, want ErrRolledBack from the counter", err)
	}
}
