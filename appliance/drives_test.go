package appliance_test

import (
	"context"
	"testing"

	"coffre/appliance"
	"coffre/hsm"
)

// A drive returning from offsite (add), caught up again (sync), and
// another retired each leave a record on the drives that an auditor reading
// any replica — here a catalog rebuilt from the drive that was away — sees.
func TestDriveEventsRecorded(t *testing.T) {
	e := newVault(t)
	drives := e.drives()
	opts := appliance.OpenOptions{Keystore: hsm.Config{Backend: "soft", Passphrase: []byte(testPass)}, Drives: drives[:3]}
	a, err := appliance.Open(e.state, opts) // drive 4 is offsite
	if err != nil {
		t.Fatal(err)
	}
	defer func() { a.Close() }()
	slot := map[int]appliance.DriveReport{}
	for _, d := range a.Status().Drives {
		slot[d.Slot] = d
	}
	if slot[4].State != "missing" || slot[3].UUID == "" {
		t.Fatalf("drives: %+v", a.Status().Drives)
	}
	if err := a.AddDrive(drives[3], nil); err != nil {
		t.Fatal(err)
	}
	if err := a.SyncDrive(context.Background(), slot[4].UUID, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.RetireDrive(slot[3].UUID); err != nil {
		t.Fatal(err)
	}
	a.Close()

	opts.Drives = drives
	if _, _, err := appliance.RebuildCatalog(e.state, opts, drives[3]); err != nil {
		t.Fatal(err)
	}
	if a, err = appliance.Open(e.state, opts); err != nil {
		t.Fatal(err)
	}
	evs, err := a.DriveEvents()
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ event, slot, uuid string }{{"add", "4", slot[4].UUID}, {"sync", "4", slot[4].UUID}, {"retire", "3", slot[3].UUID}}
	var got []string
	for _, ev := range evs {
		w := ev.Meta.Attrs["drive_event"]
		if w == "" {
			continue // an anchor
		}
		if i := len(got); i < len(want) && (w != want[i].event || ev.Meta.Attrs["drive_slot"] != want[i].slot || ev.Meta.Attrs["drive_uuid"] != want[i].uuid) {
			t.Fatalf("event %d: %v, want %+v", i, ev.Meta.Attrs, want[i])
		}
		got = append(got, w)
	}
	if len(got) != len(want) {
		t.Fatalf("drive events %v, want %v", got, want)
	}
}
