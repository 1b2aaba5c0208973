//go:build crashpoints

package crashpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// Enabled reports whether this binary was built with crash points.
const Enabled = true

var (
	point string
	at    int64
	hits  atomic.Int64
)

func init() {
	spec := os.Getenv(Env)
	if spec == "" {
		return
	}
	name, n, ok := strings.Cut(spec, ":")
	v, err := strconv.ParseInt(n, 10, 64)
	if !ok || err != nil || v < 1 || name == "" {
		fmt.Fprintf(os.Stderr, "%s=%q: want NAME:N with N >= 1\n", Env, spec)
		os.Exit(2)
	}
	point, at = name, v
}

// Hit kills the process with SIGKILL on the N-th call with the configured
// name.
func Hit(name string) {
	if name != point || at == 0 {
		return
	}
	if hits.Add(1) == at {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}
