package storage

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"coffre/internal/testenv"

	"golang.org/x/mod/sumdb/note"
)

// crashCycles is how many kill/restart cycles TestCrashKill runs (more
// under the soak build tag).
var crashCycles = 100

// TestCrashKill re-executes the test binary as a child that appends
// records to three image drives and reports each acknowledgement on a
// pipe; the parent SIGKILLs it at a random moment, reopens the vault and
// checks that every acknowledged record is there, intact, and that the
// replicas are byte-identical.
func TestCrashKill(t *testing.T) {
	k := newTestKeys(t)
	skey, vkey, err := note.GenerateKey(nil, "coffre-crash")
	if err != nil {
		t.Fatal(err)
	}
	k.signer, _ = note.NewSigner(skey)
	k.verifier, _ = note.NewVerifier(vkey)
	// The drives live on a tmpfs: a SIGKILL loses no page cache, so this
	// tests the process-kill logic, and tmpfs keeps 100 cycles of opens and
	// syncs quick (power-loss ordering is covered by TestTornWrite).
	dir := t.TempDir()
	testenv.RequireRoot(t)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1g", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	var paths []string
	for i := 1; i <= 3; i++ {
		p := fmt.Sprintf("%s/d%d.img", dir, i)
		if _, err := Format(p, FormatOptions{VaultID: k.vault, Slot: i, WrappedRecordKey: []byte("w"), Size: 256 << 20}); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	acked := map[uint64]item{}
	rng := mrand.New(mrand.NewPCG(21, 22))
	kills := 0
	for cycle := 0; cycle < crashCycles; cycle++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(),
			"COFFRE_CRASH_CHILD=1",
			"COFFRE_CRASH_DRIVES="+strings.Join(paths, ","),
			"COFFRE_CRASH_SKEY="+skey,
			"COFFRE_CRASH_VKEY="+vkey,
			"COFFRE_CRASH_KEY="+hex.EncodeToString(k.key),
			fmt.Sprintf("COFFRE_CRASH_SEED=%d", cycle))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		tStart := time.Now()
		var tReady time.Time
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// Wait until the child is appending, then kill it at a random moment.
		var started bool
		timeout := time.After(20 * time.Second)
		// Kill after a random number of acknowledgements plus a random
		// sub-millisecond delay, so the kill lands anywhere in a batch.
		killAfter := rng.IntN(12)
		delay := time.Duration(rng.IntN(2000)) * time.Microsecond
		acks := 0
		var killAt <-chan time.Time
		killed := false
	loop:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break loop
				}
				if l == "ready" {
					started = true
					tReady = time.Now()
				}
				if (l == "ready" && killAfter == 0) || (strings.HasPrefix(l, "ack ") && acks == killAfter) {
					killAt = time.After(delay)
				}
				if l == "ready" {
					continue
				}
				f := strings.Fields(l)
				if len(f) != 5 || f[0] != "ack" {
					continue
				}
				idx, _ := strconv.ParseUint(f[1], 10, 64)
				size, _ := strconv.ParseInt(f[2], 10, 64)
				sum, _ := hex.DecodeString(f[3])
				meta, _ := hex.DecodeString(f[4])
				var it item
				it.size, it.meta = size, meta
				copy(it.sum[:], sum)
				acked[idx] = it
				acks++
			case <-killAt:
				cmd.Process.Signal(syscall.SIGKILL)
				killed = true
				killAt = nil
			case <-timeout:
				cmd.Process.Kill()
				t.Fatalf("cycle %d: child hung; stderr: %s", cycle, stderr.String())
			}
		}
		cmd.Wait()
		tDead := time.Now()
		if !started {
			t.Fatalf("cycle %d: child never started: %s", cycle, stderr.String())
		}
		if !killed {
			t.Fatalf("cycle %d: child ended before it was killed: %s", cycle, stderr.String())
		}
		kills++
		// Restart: everything acknowledged must be there.
		v, err := Open(paths, k.opts(2))
		if err != nil {
			t.Fatalf("cycle %d: reopen: %v", cycle, err)
		}
		for _, d := range v.Drives() {
			if d.State != StateActive {
				t.Fatalf("cycle %d: drive %+v", cycle, d)
			}
		}
		if cycle%10 == 9 || cycle == crashCycles-1 {
			checkItems(t, v, acked)
		} else {
			// Cheaper check each cycle: every acked record is in the log.
			if n := v.Size(); len(acked) > 0 && n <= maxKey(acked) {
				t.Fatalf("cycle %d: log has %d records, acked up to %d", cycle, n, maxKey(acked))
			}
		}
		v.Close()
		tOpen := time.Now()
		if cycle%10 == 9 || cycle == crashCycles-1 {
			replicasEqual(t, paths)
		} else {
			tailsEqual(t, paths)
		}
		if testing.Verbose() && cycle%20 == 0 {
			t.Logf("cycle %d: start %v, run %v, reopen %v, compare %v", cycle, tReady.Sub(tStart), tDead.Sub(tReady), tOpen.Sub(tDead), time.Since(tOpen))
		}
	}
	t.Logf("%d cycles, %d killed mid-run, %d acknowledged records verified", crashCycles, kills, len(acked))
}

func maxKey(m map[uint64]item) uint64 {
	var x uint64
	for k := range m {
		x = max(x, k)
	}
	return x
}

// TestCrashChild is the child side of TestCrashKill; it does nothing in a
// normal run.
func TestCrashChild(t *testing.T) {
	if os.Getenv("COFFRE_CRASH_CHILD") != "1" {
		return
	}
	s, err := note.NewSigner(os.Getenv("COFFRE_CRASH_SKEY"))
	if err != nil {
		t.Fatal(err)
	}
	ver, err := note.NewVerifier(os.Getenv("COFFRE_CRASH_VKEY"))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := hex.DecodeString(os.Getenv("COFFRE_CRASH_KEY"))
	seed, _ := strconv.ParseUint(os.Getenv("COFFRE_CRASH_SEED"), 10, 64)
	v, err := Open(strings.Split(os.Getenv("COFFRE_CRASH_DRIVES"), ","), Options{
		RecordKey: func(uint32) ([]byte, error) { return key, nil },
		Signer:    s, Verifier: ver, Origin: "coffre.test/vault", WriteQuorum: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	r := mrand.New(mrand.NewPCG(seed, 99))
	for i := 0; i < 100000; i++ { // until killed
		var recs []Record
		var sums [][32]byte
		var sizes []int
		var metas [][]byte
		for j := 0; j <= r.IntN(3); j++ {
			n := r.IntN(4 << 10)
			if r.IntN(16) == 0 {
				n = r.IntN(200 << 10)
			}
			body := randBytes(r, n)
			meta := []byte(fmt.Sprintf("c%d-%d-%d", seed, i, j))
			recs = append(recs, Record{Type: TypeItem, Meta: meta, Body: bytes.NewReader(body)})
			sums = append(sums, sha256.Sum256(body))
			sizes = append(sizes, n)
			metas = append(metas, meta)
		}
		idx, err := v.Append(context.Background(), recs...)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for j, x := range idx {
			fmt.Fprintf(&b, "ack %d %d %x %x\n", x, sizes[j], sums[j], metas[j])
		}
		os.Stdout.WriteString(b.String())
	}
	v.Close()
}

// tailsEqual compares the last MiB of every replica's log (a cheap check
// between the full comparisons).
func tailsEqual(t *testing.T, paths []string) {
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
		end := DataStart + info.Used
		start := max(int64(DataStart), end-1<<20)
		b := make([]byte, end-start)
		if _, err := f.ReadAt(b, start); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if ref == nil {
			ref = b
		} else if !bytes.Equal(ref, b) {
			t.Fatalf("replica %s differs from %s", p, paths[0])
		}
	}
}
