package appliance_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"coffre/appliance"
	"coffre/appliance/receipt"
	"coffre/hsm"
	"coffre/storage/catalog"
)

// crashCycles is how many times coffred is SIGKILLed in `make test`; the
// soak target raises it with COFFRE_CRASH_CYCLES.
func crashCycles() int {
	if n, err := strconv.Atoi(os.Getenv("COFFRE_CRASH_CYCLES")); err == nil && n > 0 {
		return n
	}
	return 50
}

// TestCrashCampaign kills coffred at random moments while it ingests a
// bundle of uploads, restarts it, and at the end checks that every upload
// whose receipt was issued is stored, that nothing is stored twice, that
// every stored item reads back whole, and that the four replicas agree.
func TestCrashCampaign(t *testing.T) {
	e := newVault(t)
	const uploads = 12
	usbSpool := e.path("spool-usb")
	os.MkdirAll(usbSpool, 0o755)
	var envs []string
	ids := map[string]string{} // upload id → user
	for i := 0; i < uploads; i++ {
		id := fmt.Sprintf("%032x", i+1)
		user := fmt.Sprintf("user%d", i%3)
		in := e.path(fmt.Sprintf("c%d.plain", i))
		content := []byte(fmt.Sprintf("secret number %d ", i))
		for len(content) < 2000*(i+1) {
			content = append(content, content...)
		}
		os.WriteFile(in, content, 0o600)
		out := e.path(fmt.Sprintf("c%02d.env", i))
		e.coffre("courier", "seal", "--ingest-key", e.path("ingest.pub.asc"), "--courier-key", e.path("courier.sec.asc"),
			"--user", user, "--item", fmt.Sprintf("item%d", i), "--upload-id", id, "--out", out, in)
		envs = append(envs, out)
		ids[id] = user
	}
	e.coffre(append([]string{"courier", "usb", "--out", filepath.Join(usbSpool, "bundle")}, envs...)...)
	cfg := e.writeConfig(e.path("no-qr"), usbSpool)
	os.MkdirAll(e.path("no-qr"), 0o755)

	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	cycles := crashCycles()
	for i := 0; i < cycles; i++ {
		d := e.startDaemon(cfg)
		time.Sleep(time.Duration(20+rng.IntN(900)) * time.Millisecond)
		d.cmd.Process.Signal(syscall.SIGKILL)
		<-d.done
	}
	// A last, undisturbed run finishes whatever is left.
	d := e.startDaemon(cfg)
	st := e.waitStored(d, uploads, 120*time.Second)
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-d.done; err != nil {
		t.Fatalf("final coffred: %v\n%s", err, d.logs)
	}
	t.Logf("after %d SIGKILLs: final run stored %d, replays %d, rejected %d", cycles, st.Stored, st.Replays, st.Rejected)

	a, err := appliance.Open(e.state, appliance.OpenOptions{
		Keystore: hsm.Config{Backend: "soft", Passphrase: []byte(testPass)},
		Drives:   e.drives(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	cat := a.Catalog()
	// Every upload stored exactly once.
	perUser := map[string]int{}
	for id, user := range ids {
		if _, found, err := cat.Upload(id); err != nil || !found {
			t.Errorf("upload %s is not stored (err %v)", id, err)
		}
		perUser[user]++
	}
	for user, want := range perUser {
		entries, err := cat.Items(user)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, en := range entries {
			if en.Meta.Kind != catalog.KindItem {
				continue
			}
			n++
			_, _, body, err := a.Vault().Get(en.Record)
			if err != nil {
				t.Fatalf("record %d: %v", en.Record, err)
			}
			if _, err := io.Copy(io.Discard, body); err != nil {
				t.Fatalf("record %d does not read back whole: %v", en.Record, err)
			}
			body.Close()
		}
		if n != want {
			t.Errorf("user %s has %d item records, want %d (a duplicate or a loss)", user, n, want)
		}
	}
	// Every issued receipt names a stored record of its upload.
	rs, _ := filepath.Glob(filepath.Join(e.state, "receipts", "*.tlog-proof"))
	if len(rs) != uploads {
		t.Errorf("%d receipts, want %d", len(rs), uploads)
	}
	for _, p := range rs {
		data, _ := os.ReadFile(p)
		r, err := receipt.Parse(data)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		idx, found, err := cat.Upload(r.Extra.UploadID)
		if err != nil || !found || int64(idx) != r.Index {
			t.Errorf("receipt %s names record %d, the catalog has %d (found %v, %v)", p, r.Index, idx, found, err)
		}
		leaf, err := a.Vault().LeafHash(idx)
		if err != nil || leaf != r.Extra.Leaf {
			t.Errorf("receipt %s: leaf hash differs from the stored record's", p)
		}
	}
	a.Close()
	e.coffre(append([]string{"audit", "--audit-key", e.path("audit.pub")}, e.drives()...)...)
}
