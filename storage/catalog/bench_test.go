//go:build bench

package catalog

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"coffre/internal/benchrow"
)

const benchRecords = 1_000_000

func init() {
	childModes["bench-ours"] = benchOurs
	childModes["bench-rebuild"] = benchRebuild
	childModes["bench-peer"] = benchPeer
}

// benchMeta is the i-th of the benchmark's small metas (about 150 bytes):
// items of 10,000 users, a few versions each, every 50th a
// re-encapsulation superseding the record before it.
func benchMeta(i uint64) Meta {
	if i == 0 {
		return Meta{Kind: KindGenesis}
	}
	user := fmt.Sprintf("user-%05d", i%10000)
	m := Meta{
		Kind: KindItem, UserID: user, ItemID: fmt.Sprintf("item-%d", (i/10000)%7),
		Version: uint32(i/70000) + 1, UploadID: fmt.Sprintf("%032x", i+1),
		ItemKind: "password", ContentType: "text/plain", Size: int64(i % 4096),
		Algorithms: []string{"openpgp:p521-ecdh", "aes256", "seipdv1"},
	}
	binary.BigEndian.PutUint64(m.Digest[:], i)
	m.Digest = sha256.Sum256(m.Digest[:8])
	if i%50 == 49 {
		m.Supersedes = i - 1
	}
	return m
}

type benchResult struct {
	Seconds     float64 `json:"seconds"`
	HWMKiB      int64   `json:"hwm_kib"`       // VmHWM: peak RSS, file-backed mmap pages included
	AnonPeakKiB int64   `json:"anon_peak_kib"` // peak RssAnon, sampled every 20 ms
}

// procStatus returns a field of /proc/self/status in KiB.
func procStatus(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			v, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return v
		}
	}
	return 0
}

var anonPeak atomic.Int64

func init() {
	if strings.HasPrefix(os.Getenv("COFFRE_CATALOG_CHILD"), "bench-") {
		go func() {
			for {
				if v := procStatus("RssAnon"); v > anonPeak.Load() {
					anonPeak.Store(v)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
}

func report(start time.Time) error {
	secs := time.Since(start).Seconds()
	if v := procStatus("RssAnon"); v > anonPeak.Load() {
		anonPeak.Store(v)
	}
	return json.NewEncoder(os.Stdout).Encode(benchResult{secs, procStatus("VmHWM"), anonPeak.Load()})
}

// benchOurs indexes the metas into a catalog through IndexBatch: 1,000
// records per durable (fsync'd) transaction, encrypted, checksummed.
func benchOurs() error {
	key, _ := hex.DecodeString(os.Getenv("CHILD_KEY"))
	c, err := Open(os.Getenv("CHILD_DIR"), key, nil)
	if err != nil {
		return err
	}
	start := time.Now()
	batch := make([]Record, 0, 1000)
	for i := uint64(0); i < benchRecords; i++ {
		batch = append(batch, Record{i, benchMeta(i)})
		if len(batch) == cap(batch) {
			if err := c.IndexBatch(batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	if err := c.IndexBatch(batch); err != nil {
		return err
	}
	if err := c.Close(); err != nil {
		return err
	}
	return report(start)
}

// benchRebuild rebuilds a catalog from a scan of the metas' encodings.
func benchRebuild() error {
	key, _ := hex.DecodeString(os.Getenv("CHILD_KEY"))
	start := time.Now()
	c, _, err := Rebuild(os.Getenv("CHILD_DIR"), key, func(fn func(uint64, []byte) error) error {
		for i := uint64(0); i < benchRecords; i++ {
			b, err := EncodeMeta(benchMeta(i))
			if err != nil {
				return err
			}
			if err := fn(i, b); err != nil {
				return err
			}
		}
		return nil
	}, nil)
	if err != nil {
		return err
	}
	if err := c.Close(); err != nil {
		return err
	}
	return report(start)
}

// benchPeer writes the same keys and values with a plain badger
// WriteBatch and badger's default options (no encryption, no sync).
func benchPeer() error {
	db, err := badger.Open(badger.DefaultOptions(os.Getenv("CHILD_DIR")).WithLogger(nil))
	if err != nil {
		return err
	}
	start := time.Now()
	wb := db.NewWriteBatch()
	for i := uint64(0); i < benchRecords; i++ {
		m := benchMeta(i)
		b, err := EncodeMeta(m)
		if err != nil {
			return err
		}
		if err := wb.Set(recordKey(i), b); err != nil {
			return err
		}
		for _, k := range derivedKeys(i, m) {
			if err := wb.Set(k, nil); err != nil {
				return err
			}
		}
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	if err := db.Close(); err != nil {
		return err
	}
	return report(start)
}

func runBenchChild(t *testing.T, mode string, key []byte) benchResult {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "COFFRE_CATALOG_CHILD="+mode,
		"CHILD_DIR="+filepath.Join(t.TempDir(), "db"), "CHILD_KEY="+hex.EncodeToString(key))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", mode, err)
	}
	var r benchResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%s: %v: %q", mode, err, out)
	}
	t.Logf("%s: %d records in %.1f s, peak RSS %d MiB, peak anonymous RSS %d MiB", mode, benchRecords, r.Seconds, r.HWMKiB>>10, r.AnonPeakKiB>>10)
	return r
}

func TestBenchIndexThroughput(t *testing.T) {
	key := newKey(t)
	peer := runBenchChild(t, "bench-peer", key)
	ours := runBenchChild(t, "bench-ours", key)
	rebuild := runBenchChild(t, "bench-rebuild", key)
	peerRate := benchRecords / peer.Seconds
	benchrow.Record(t, benchrow.Row{
		Name: "catalog: index 1M metas, durable batches of 1000 (records/s)",
		Ours: benchRecords / ours.Seconds, Peer: "badger WriteBatch, default options, same keys",
		PeerValue: peerRate, Unit: "records/s", Goal: 0.25, HigherIsBetter: true,
		Note: "ours: AES-256 encrypted, SyncWrites, checksums verified, idempotence check per record",
	})
	benchrow.Record(t, benchrow.Row{
		Name: "catalog: rebuild 1M metas from a scan (records/s)",
		Ours: benchRecords / rebuild.Seconds, Peer: "badger WriteBatch, default options, same keys",
		PeerValue: peerRate, Unit: "records/s", Goal: 0.5, HigherIsBetter: true,
	})
	benchrow.Record(t, benchrow.Row{
		Name: "catalog: peak RSS indexing 1M metas (MiB)",
		Ours: float64(ours.HWMKiB) / 1024, Peer: "badger WriteBatch, default options",
		PeerValue: float64(peer.HWMKiB) / 1024, Unit: "MiB", Goal: 2, HigherIsBetter: false,
		Note: fmt.Sprintf("VmHWM, file-backed mmap pages of badger's tables included; rebuild %.0f MiB", float64(rebuild.HWMKiB)/1024),
	})
	benchrow.Record(t, benchrow.Row{
		Name: "catalog: peak anonymous RSS indexing 1M metas (MiB)",
		Ours: float64(ours.AnonPeakKiB) / 1024, Peer: "badger WriteBatch, default options",
		PeerValue: float64(peer.AnonPeakKiB) / 1024, Unit: "MiB", Goal: 2, HigherIsBetter: false,
		Note: fmt.Sprintf("RssAnon sampled every 20 ms; rebuild %.0f MiB", float64(rebuild.AnonPeakKiB)/1024),
	})
}
