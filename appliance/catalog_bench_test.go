//go:build bench

package appliance_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"coffre/appliance"
	"coffre/hsm"
	"coffre/internal/benchrow"
	"coffre/storage"
	"coffre/storage/catalog"
)

// The catalog rebuild bench: one drive image holding 1,000,000 small
// records (one 4 KiB block each), rebuilt with the real `coffre catalog
// rebuild` against `sha256sum` of the same image, both with the image in
// the page cache. The image takes a few minutes to write, so it is kept
// between runs when COFFRE_BENCH_KEEP=1 (under $COFFRE_BENCH_CACHE,
// default /tmp/coffre-bench-catalog); otherwise it is removed at the end.
const (
	rebuildBenchRecords = 1_000_000
	// rebuildBenchVersion names the generator; a cached image made by
	// another version is regenerated.
	rebuildBenchVersion = "catalog-rebuild-bench/1"
)

// rebuildBenchMeta is the i-th record's meta: items of 10,000 users with
// a few versions each, every 50th a re-encapsulation superseding the
// record before it, record 0 the genesis.
func rebuildBenchMeta(i uint64) catalog.Meta {
	if i == 0 {
		return catalog.Meta{Kind: catalog.KindGenesis}
	}
	m := catalog.Meta{
		Kind: catalog.KindItem, UserID: fmt.Sprintf("user-%05d", i%10000), ItemID: fmt.Sprintf("item-%d", (i/10000)%7),
		Version: uint32(i/70000) + 1, UploadID: fmt.Sprintf("%032x", sha256.Sum256(binary.BigEndian.AppendUint64(nil, i)))[:32],
		ItemKind: "password", ContentType: "text/plain", Size: int64(i % 4096),
		Algorithms: []string{"openpgp:p521-ecdh", "aes256", "seipdv1"},
	}
	m.Digest = sha256.Sum256(binary.BigEndian.AppendUint64(nil, i))
	if i%50 == 49 {
		m.Supersedes = i - 1
	}
	return m
}

// rebuildBenchImage returns the bench's vault environment, generating it
// when it is not cached.
func rebuildBenchImage(t *testing.T) (*env, string) {
	root := os.Getenv("COFFRE_BENCH_CACHE")
	if root == "" {
		root = filepath.Join(os.TempDir(), "coffre-bench-catalog")
	}
	if os.Getenv("COFFRE_BENCH_KEEP") != "1" {
		t.Cleanup(func() { os.RemoveAll(root) })
	}
	e := &env{t: t, dir: root, state: filepath.Join(root, "state")}
	drive := e.path("drive1.img")
	if b, err := os.ReadFile(e.path("ready")); err == nil && string(b) == rebuildBenchVersion {
		t.Logf("using the cached image %s", drive)
		return e, drive
	}
	os.RemoveAll(root)
	if err := os.MkdirAll(root, 0o700); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	e.coffre("init", "--state", e.state, "--fast-kdf")
	// Exactly the records (one block each) and their checkpoints (one
	// every storage.MaxBatch records), plus the superblocks.
	batches := (rebuildBenchRecords + storage.MaxBatch - 1) / storage.MaxBatch
	size := int64(rebuildBenchRecords+batches+2) * storage.BlockSize
	e.coffre("drive", "format", "--state", e.state, "--slot", "1", "--size", fmt.Sprint(size), drive)
	a, err := appliance.Open(e.state, appliance.OpenOptions{
		Keystore: hsm.Config{Backend: "soft", Passphrase: []byte(testPass)},
		Drives:   []string{drive}, WriteQuorum: 1, NoCatalog: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("coffre bench body "), 256)
	recs := make([]storage.Record, 0, storage.MaxBatch)
	for i := uint64(0); i < rebuildBenchRecords; i++ {
		meta, err := catalog.EncodeMeta(rebuildBenchMeta(i))
		if err != nil {
			t.Fatal(err)
		}
		// Fill the record's one block: 160-byte header, meta, body, tag.
		n := storage.BlockSize - storage.HeaderSize - 16 - len(meta) - int(i%64)
		typ := storage.TypeItem
		if i == 0 {
			typ = storage.TypeCeremony
		}
		recs = append(recs, storage.Record{Type: typ, Meta: meta, Body: bytes.NewReader(body[:n])})
		if len(recs) == cap(recs) || i == rebuildBenchRecords-1 {
			if _, err := a.Vault().Append(context.Background(), recs...); err != nil {
				t.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.path("ready"), []byte(rebuildBenchVersion), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d records to %s in %s", rebuildBenchRecords, drive, time.Since(t0).Round(time.Second))
	return e, drive
}

// childRun is a command's wall time, CPU time (user+sys), peak RSS (file
// pages mapped included) and peak anonymous RSS (sampled every 20 ms).
type childRun struct {
	wall, cpu       time.Duration
	maxRSS, maxAnon int64 // bytes
	out             string
}

func runTimed(t *testing.T, env []string, name string, args ...string) childRun {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	anon := make(chan int64, 1)
	go func() {
		var peak int64
		for {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
			for _, l := range strings.Split(string(b), "\n") {
				if f := strings.Fields(l); len(f) >= 2 && f[0] == "RssAnon:" {
					kb, _ := strconv.ParseInt(f[1], 10, 64)
					peak = max(peak, kb<<10)
				}
			}
			select {
			case <-done:
				anon <- peak
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	err := cmd.Wait()
	wall := time.Since(t0)
	close(done)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return childRun{wall, cpu, ru.Maxrss << 10, <-anon, out.String()}
}

var rebuiltLine = regexp.MustCompile(`catalog rebuilt from .*: (\d+) records indexed, digest ([0-9a-f]{64})`)

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestBenchCatalogRebuild times `coffre catalog rebuild` (open the
// keystore, scan the drive: headers, chain and checkpoint roots checked,
// every meta authenticated and decrypted; index into a fresh encrypted
// catalog; sync; swap) against `sha256sum` of the same drive image, both
// from the page cache, alternating, and reports the medians.
func TestBenchCatalogRebuild(t *testing.T) {
	sha := exec.Command("sha256sum", "--version")
	if err := sha.Run(); err != nil {
		t.Fatalf("sha256sum: %v", err)
	}
	e, drive := rebuildBenchImage(t)
	st, err := os.Stat(drive)
	if err != nil {
		t.Fatal(err)
	}
	mb := float64(st.Size()) / 1e6

	// The page cache of this shared machine does not keep the image for
	// long: warm it before each timed run.
	warm := func() {
		f, err := os.Open(drive)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := io.CopyBuffer(io.Discard, f, make([]byte, 1<<20)); err != nil {
			t.Fatal(err)
		}
	}
	reps := 3
	if v, err := strconv.Atoi(os.Getenv("COFFRE_BENCH_REPS")); err == nil && v > 0 {
		reps = v
	}
	coffre := filepath.Join(binDir, "coffre")
	var shaWall, ourWall []time.Duration
	var ourCPU, shaCPU []time.Duration
	var rss, anon int64
	digest := ""
	for r := 0; r < reps; r++ {
		warm()
		s := runTimed(t, nil, "sha256sum", drive)
		warm()
		o := runTimed(t, []string{"COFFRE_PASSPHRASE=" + testPass}, coffre, "catalog", "rebuild", "--state", e.state, "--from", drive)
		t.Logf("rep %d: sha256sum %s (cpu %s), coffre catalog rebuild %s (cpu %s, peak RSS %d MiB, anonymous %d MiB)",
			r, s.wall.Round(time.Millisecond), s.cpu.Round(time.Millisecond), o.wall.Round(time.Millisecond), o.cpu.Round(time.Millisecond), o.maxRSS>>20, o.maxAnon>>20)
		// The rebuild indexes every record and checkpoint, and gives the
		// same catalog every time.
		m := rebuiltLine.FindStringSubmatch(o.out)
		if m == nil {
			t.Fatalf("rebuild output: %q", o.out)
		}
		n, d := atoi(m[1]), m[2]
		batches := (rebuildBenchRecords + storage.MaxBatch - 1) / storage.MaxBatch
		if n != rebuildBenchRecords+batches {
			t.Fatalf("rebuild indexed %d records, want %d", n, rebuildBenchRecords+batches)
		}
		if digest != "" && d != digest {
			t.Fatalf("rebuild %d: digest %s, earlier %s", r, d, digest)
		}
		digest = d
		shaWall, ourWall = append(shaWall, s.wall), append(ourWall, o.wall)
		shaCPU, ourCPU = append(shaCPU, s.cpu), append(ourCPU, o.cpu)
		rss, anon = max(rss, o.maxRSS), max(anon, o.maxAnon)
	}
	ours, peer := median(ourWall), median(shaWall)
	benchrow.Record(t, benchrow.Row{
		Name: "catalog rebuild from one drive, 1M small records (MB/s of drive image)",
		Ours: mb / ours.Seconds(), Peer: "sha256sum of the same drive image (page cache warm)",
		PeerValue: mb / peer.Seconds(), Unit: "MB/s", Goal: 0.8, HigherIsBetter: true,
		Note: fmt.Sprintf("median of %d alternating runs: rebuild %.2f s (%.0f records/s, cpu %.2f s, peak RSS %d MiB of which anonymous %d MiB), sha256sum %.2f s (%.0f records/s, cpu %.2f s); %.0f MB image",
			reps, ours.Seconds(), rebuildBenchRecords/ours.Seconds(), median(ourCPU).Seconds(), rss>>20, anon>>20, peer.Seconds(), rebuildBenchRecords/peer.Seconds(), median(shaCPU).Seconds(), mb),
	})
}
