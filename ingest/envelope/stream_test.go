package envelope

import (
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
)

// pattern is a deterministic, incompressible-enough content stream.
type pattern struct {
	n     int64
	state uint64
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n {
		b = b[:p.n]
	}
	for i := range b {
		p.state ^= p.state << 13
		p.state ^= p.state >> 7
		p.state ^= p.state << 17
		b[i] = byte(p.state)
	}
	p.n -= int64(len(b))
	return len(b), nil
}

func newPattern(n int64) *pattern { return &pattern{n: n, state: 0x9e3779b97f4a7c15} }

// makeBigEnvelope writes an envelope with size bytes of pattern content to
// dir and returns its path, the manifest and the sealed part's path.
func makeBigEnvelope(t testing.TB, ingest, courier *openpgp.Entity, dir string, size int64) (string, string, Manifest) {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, newPattern(size)); err != nil {
		t.Fatal(err)
	}
	m := testManifest(nil)
	m.Size = size
	copy(m.Digest[:], h.Sum(nil))
	sealedPath := filepath.Join(dir, "sealed.pgp")
	sf, err := os.Create(sealedPath)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	if err := SealItem(sf, ingest, m, newPattern(size)); err != nil {
		t.Fatal(err)
	}
	if _, err := sf.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	envPath := filepath.Join(dir, "upload.env")
	ef, err := os.Create(envPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	if err := Bind(ef, courier, m.UserID, NewUploadID(), sf); err != nil {
		t.Fatal(err)
	}
	return envPath, sealedPath, m
}

// TestStreaming100MiB opens a 100 MiB item and checks that the heap stays
// far below the item size while it streams.
func TestStreaming100MiB(t *testing.T) {
	k := getKeys(t)
	const size = 100 << 20
	envPath, _, m := makeBigEnvelope(t, k.ingest, k.courier, t.TempDir(), size)

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()

	f, err := os.Open(envPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	up, err := Open(f, params(k))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, up.Content)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if n != size || [32]byte(h.Sum(nil)) != m.Digest {
		t.Fatalf("read %d bytes, digest mismatch or short", n)
	}
	grew := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("heap in use: base %d MiB, peak %d MiB (+%d KiB)", base.HeapInuse>>20, peak.Load()>>20, grew>>10)
	if grew > 32<<20 {
		t.Fatalf("heap grew by %d MiB while streaming a %d MiB item (bound 32 MiB)", grew>>20, size>>20)
	}
}
