package appliance_test

import (
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"coffre/internal/crashpoint"
)

// The kill tests stop a real coffre process with SIGKILL in the middle of a
// job, then resume it. Where the process dies is chosen by the test, not by
// a race against the job: the binaries of crashBinDir kill themselves at a
// named crash point (internal/crashpoint), so every cycle is a kill inside
// the job whatever the speed of the machine.

// crashAt is where one killed run stops: the crash point and the hit of it
// that fires.
type crashAt struct {
	point string
	n     int
}

func (c crashAt) String() string { return c.point + ":" + strconv.Itoa(c.n) }

// betweenBatches reports whether the run stopped between two committed
// batches of its job (so the job is part-way, by construction).
func (c crashAt) betweenBatches() bool { return c.point == "reencap.batch" }

// pickCrash chooses where cycle's run dies, for a job that commits at least
// batches (≥ 2) batches of its own. The cycles rotate through:
//   - reencap.batch: between two batches of the job;
//   - storage.append: a batch is durable on the drives, and neither the
//     superblocks nor the catalog know it yet;
//   - storage.write: inside a batch, some drives written and others not.
//
// Each choice fires before the job can end (every batch is at least one
// write on each of the four drives), so every run is killed.
func pickCrash(rng *rand.Rand, cycle, batches int) crashAt {
	switch cycle % 3 {
	case 0:
		return crashAt{"reencap.batch", 1 + rng.IntN(batches-1)}
	case 1:
		return crashAt{"storage.append", 1 + rng.IntN(batches)}
	default:
		return crashAt{"storage.write", 1 + rng.IntN(4*batches)}
	}
}

// runKilled runs `coffre args…` built with crash points, set to die at c,
// and fails the test unless the process was killed (a run that ends by
// itself means the job is shorter than the test assumes: the test would
// prove nothing).
func (e *env) runKilled(c crashAt, args ...string) {
	e.t.Helper()
	cmd := exec.Command(filepath.Join(crashBinDir, "coffre"), args...)
	cmd.Env = append(os.Environ(), "COFFRE_PASSPHRASE="+testPass, crashpoint.Env+"="+c.String())
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return
		}
	}
	e.t.Fatalf("coffre %s (crash point %v): ended with %v, want killed at the crash point\n%s", strings.Join(args, " "), c, err, out)
}

// killCycles is how many jobs the kill tests interrupt (20; fewer with
// COFFRE_KILL_CYCLES for a quick look).
func killCycles() int {
	if n, err := strconv.Atoi(os.Getenv("COFFRE_KILL_CYCLES")); err == nil && n > 0 {
		return n
	}
	return 20
}

// killSeed seeds a kill test's choices; the seed is logged so that a
// failure can be replayed with COFFRE_KILL_SEED.
func killSeed(logf func(string, ...any)) *rand.Rand {
	seed := uint64(os.Getpid())<<32 ^ uint64(rand.Uint32())
	if s, err := strconv.ParseUint(os.Getenv("COFFRE_KILL_SEED"), 10, 64); err == nil {
		seed = s
	}
	logf("kill seed %d (replay with COFFRE_KILL_SEED=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, 0))
}
