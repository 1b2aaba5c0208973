package appliance_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"coffre/appliance"
	"coffre/hsm"
	"coffre/ingest/envelope"
)

// TestBadInputChangesNothing feeds the pipeline hostile and broken
// envelopes: each is refused with its named error and the drives, the
// catalog and the receipts are exactly as before.
func TestBadInputChangesNothing(t *testing.T) {
	e := newVault(t)
	good := e.seal("g", "alice", "pw", 1, []byte("a secret"))
	other := e.seal("o", "alice", "pw2", 1, []byte("another secret"))
	a, err := appliance.Open(e.state, appliance.OpenOptions{Keystore: hsm.Config{Backend: "soft", Passphrase: []byte(testPass)}, Drives: e.drives()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx := context.Background()
	if _, err := a.IngestFile(ctx, good); err != nil {
		t.Fatal(err)
	}
	gb, _ := os.ReadFile(good)
	ob, _ := os.ReadFile(other)

	// An envelope from a courier the appliance does not know.
	rogue, _ := envelope.GenerateCourierKey("rogue", envelope.CourierEd25519)
	id, _ := appliance.LoadIdentity(e.state)
	ing, _ := envelope.ReadKeys(bytes.NewReader([]byte(id.IngestKey)))
	p := e.path("rogue.env")
	if err := appliance.SealEnvelope(p, ing[0], rogue, envelope.Manifest{UserID: "alice", ItemID: "x", Version: 1, Kind: "password", ContentType: "text/plain"}, envelope.NewUploadID(), bytes.NewReader([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	rb, _ := os.ReadFile(p)
	flipped := bytes.Clone(ob)
	flipped[len(flipped)-40] ^= 1

	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"replay", gb, nil}, // accepted as a replay, nothing written
		{"unknown courier", rb, envelope.ErrUnknownCourier},
		{"truncated", ob[:len(ob)/2], envelope.ErrTruncated},
		{"flipped ciphertext byte", flipped, nil},
		{"empty", nil, nil},
		{"garbage", bytes.Repeat([]byte("x"), 500), envelope.ErrFormat},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := a.Vault().Size()
			st := a.Status()
			res, err := a.Ingest(ctx, bytes.NewReader(tc.data))
			switch {
			case tc.name == "replay":
				if err != nil || !res.Replay {
					t.Fatalf("replay: %+v %v", res, err)
				}
			case err == nil:
				t.Fatalf("accepted: %+v", res)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if a.Vault().Size() != before {
				t.Fatalf("the log grew from %d to %d records", before, a.Vault().Size())
			}
			if a.Status().Records != st.Records {
				t.Fatal("status changed")
			}
		})
	}
	// A version never overwrites: the same version of the same item, in a
	// new upload, is refused and nothing is written.
	again := e.seal("g2", "alice", "pw", 1, []byte("a different secret"))
	before := a.Vault().Size()
	o, err := a.IngestFile(ctx, again)
	if err != nil {
		t.Fatal(err)
	}
	if o.Error == "" || !strings.Contains(o.Error, "already stored") {
		t.Fatalf("a second version 1 was not refused: %+v", o)
	}
	if a.Vault().Size() != before {
		t.Fatalf("the log grew from %d to %d records", before, a.Vault().Size())
	}
}
