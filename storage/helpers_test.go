package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"coffre/internal/testenv"

	"golang.org/x/mod/sumdb/note"
)

// testKeys are the keys a test vault runs with.
type testKeys struct {
	signer   note.Signer
	verifier note.Verifier
	vkey     string
	key      []byte
	vault    [16]byte
}

func newTestKeys(t testing.TB) *testKeys {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, "coffre-test-audit")
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	k := &testKeys{signer: s, verifier: v, vkey: vkey, key: make([]byte, 32)}
	rand.Read(k.key)
	rand.Read(k.vault[:])
	return k
}

func (k *testKeys) opts(quorum int) Options {
	return Options{
		RecordKey:   k.recordKey,
		Signer:      k.signer,
		Verifier:    k.verifier,
		Origin:      "coffre.test/vault",
		WriteQuorum: quorum,
	}
}

func (k *testKeys) recordKey(epoch uint32) ([]byte, error) {
	if epoch != 0 {
		return nil, fmt.Errorf("no key for epoch %d", epoch)
	}
	return k.key, nil
}

// backend makes drives: image files or loop devices over image files.
type backend struct {
	name  string
	drive func(t testing.TB, size int64) string // returns a path ready to Format with Size 0
}

var backends = []backend{
	{"file", func(t testing.TB, size int64) string {
		p := filepath.Join(t.TempDir(), "drive.img")
		if err := ensureImage(p, size); err != nil {
			t.Fatal(err)
		}
		return p
	}},
	{"loop", func(t testing.TB, size int64) string {
		p := filepath.Join(t.TempDir(), "drive.img")
		if err := ensureImage(p, size); err != nil {
			t.Fatal(err)
		}
		return losetup(t, p, false)
	}},
}

// losetup attaches img to a free loop device (read-only with ro) and
// detaches it when the test ends.
func losetup(t testing.TB, img string, ro bool) string {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "losetup", "mount")
	args := []string{"-f", "--show"}
	if ro {
		args = append(args, "-r")
	}
	out, err := exec.Command("losetup", append(args, img)...).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup %s: %v: %s", img, err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { detach(dev) })
	return dev
}

func detach(dev string) {
	exec.Command("losetup", "-d", dev).Run()
}

// formatDrives formats n drives of a vault (slots 1..n) on backend b.
func formatDrives(t testing.TB, k *testKeys, b backend, n int, size int64) []string {
	t.Helper()
	var paths []string
	for i := 1; i <= n; i++ {
		p := b.drive(t, size)
		if _, err := Format(p, FormatOptions{VaultID: k.vault, Slot: i, WrappedRecordKey: []byte("wrapped-key"), Force: true}); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

func imageDrives(t testing.TB, k *testKeys, n int, size int64) []string {
	return formatDrives(t, k, backends[0], n, size)
}

func openVault(t testing.TB, k *testKeys, paths []string, quorum int) *Vault {
	t.Helper()
	v, err := Open(paths, k.opts(quorum))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// item is a record a test wrote, to check later.
type item struct {
	meta []byte
	sum  [32]byte
	size int64
}

func randBytes(r *mrand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func appendItems(t testing.TB, v *Vault, r *mrand.Rand, sizes ...int) map[uint64]item {
	t.Helper()
	if r == nil {
		r = mrand.New(mrand.NewPCG(0, 0))
	}
	recs, items := makeItems(r, sizes...)
	idx, err := v.Append(context.Background(), recs...)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	out := map[uint64]item{}
	addItems(out, idx, items)
	return out
}

// makeItems makes records of random bodies of the given sizes and what
// checkItems expects of them.
func makeItems(r *mrand.Rand, sizes ...int) ([]Record, []item) {
	var recs []Record
	var items []item
	for _, n := range sizes {
		body := randBytes(r, n)
		meta := []byte(fmt.Sprintf("meta-%d-%d", n, r.Uint32()))
		recs = append(recs, Record{Type: TypeItem, Meta: meta, Body: bytes.NewReader(body)})
		items = append(items, item{meta: meta, sum: sha256.Sum256(body), size: int64(n)})
	}
	return recs, items
}

func addItems(m map[uint64]item, idx []uint64, items []item) {
	for i, x := range idx {
		m[x] = items[i]
	}
}

func checkItems(t testing.TB, v *Vault, items map[uint64]item) {
	t.Helper()
	for idx, it := range items {
		h, meta, body, err := v.Get(idx)
		if err != nil {
			t.Fatalf("get %d: %v", idx, err)
		}
		hs := sha256.New()
		n, err := io.Copy(hs, body)
		if err != nil {
			t.Fatalf("get %d: body: %v", idx, err)
		}
		if h.Index != idx || h.Type != TypeItem || !bytes.Equal(meta, it.meta) || n != it.size || !bytes.Equal(hs.Sum(nil), it.sum[:]) {
			t.Fatalf("get %d: got index %d type %v meta %q size %d, want meta %q size %d", idx, h.Index, h.Type, meta, n, it.meta, it.size)
		}
	}
}

// auditOK checks that the drives at paths audit clean.
func auditOK(t testing.TB, k *testKeys, paths []string) {
	t.Helper()
	if rep, err := Audit(paths, AuditOptions{Verifier: k.verifier}); err != nil || !rep.OK {
		t.Fatalf("audit: %v %s", err, rep)
	}
}

// replicasEqual checks that every active drive holds the same bytes over
// the vault log.
func replicasEqual(t testing.TB, paths []string) {
	t.Helper()
	var ref []byte
	for _, p := range paths {
		info, err := ReadDriveInfo(p)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, DataStart+info.Used)
		if _, err := io.ReadFull(f, b); err != nil {
			t.Fatal(err)
		}
		f.Close()
		b = b[DataStart:]
		if ref == nil {
			ref = b
		} else if !bytes.Equal(ref, b) {
			t.Fatalf("replica %s differs from %s", p, paths[0])
		}
	}
}
