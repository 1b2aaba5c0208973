package usb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a running filesystem-reader child.
type child struct {
	cmd    *exec.Cmd
	out    io.ReadCloser
	stderr *headBuffer
	ctx    context.Context
	cancel context.CancelFunc
	source string
	cpu    time.Duration
	wall   time.Duration
}

// startChild re-executes this program as a reader of dev. nbytes is what the
// child is expected to read, which scales its CPU and wall-clock budgets.
func startChild(dev *os.File, source string, v volume, mode string, names []string, l Limits, nbytes int64) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("usb: %s: cannot find this program to start the reader: %v", source, err)
	}
	cpu, wall := l.budget(nbytes)
	a := childArgs{
		mode: mode, start: v.Start, size: v.Size, bps: v.BytesPerSector,
		memory: l.ChildMemory, cpuSeconds: int64((cpu + time.Second - 1) / time.Second),
		maxEntries: maxListEntries, maxFileSize: l.MaxFileSize, names: names,
	}
	ctx, cancel := context.WithTimeout(context.Background(), wall)
	cmd := exec.CommandContext(ctx, exe, a.encode()...)
	cmd.Env = []string{childEnv + "=1", "GOTRACEBACK=single"}
	cmd.ExtraFiles = []*os.File{dev}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c := &child{cmd: cmd, stderr: &headBuffer{max: 4096}, ctx: ctx, cancel: cancel,
		source: source, cpu: time.Duration(a.cpuSeconds) * time.Second, wall: wall}
	cmd.Stderr = c.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("usb: %s: %v", source, err)
	}
	c.out = out
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("usb: %s: cannot start the reader: %v", source, err)
	}
	return c, nil
}

// finish ends the child. streamErr is the parent's verdict on the stream;
// when the child was killed by a limit that is reported instead, being the
// cause.
func (c *child) finish(streamErr error) error {
	defer c.cancel()
	if streamErr != nil {
		// Give a dying child a moment to be reaped with its real cause,
		// then make sure it is gone.
		done := make(chan struct{})
		go func() {
			select {
			case <-done:
			case <-time.After(2 * time.Second):
				c.cmd.Process.Kill()
			}
		}()
		io.Copy(io.Discard, io.LimitReader(c.out, 1<<20))
		c.cmd.Process.Kill()
		err := c.cmd.Wait()
		close(done)
		if ce := c.classify(err); ce != nil && ce.Limit {
			return ce
		}
		if errors.Is(streamErr, ErrChildFailed) {
			return &ChildError{Source: c.source, Reason: sanitize(strings.TrimPrefix(streamErr.Error(), ErrChildFailed.Error()+": "))}
		}
		return fmt.Errorf("usb: %s: %w", c.source, streamErr)
	}
	err := c.cmd.Wait()
	if ce := c.classify(err); ce != nil {
		return ce
	}
	return nil
}

// classify explains how the child ended; nil when it exited 0.
func (c *child) classify(waitErr error) *ChildError {
	if c.ctx.Err() == context.DeadlineExceeded {
		return &ChildError{Source: c.source, Reason: fmt.Sprintf("timed out after %v", c.wall), Limit: true}
	}
	ps := c.cmd.ProcessState
	if ps == nil {
		if waitErr == nil {
			return nil
		}
		return &ChildError{Source: c.source, Reason: sanitize(waitErr.Error())}
	}
	if ps.Success() {
		return nil
	}
	stderr := c.stderr.String()
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		used := ps.UserTime() + ps.SystemTime()
		if ws.Signal() == syscall.SIGXCPU || (ws.Signal() == syscall.SIGKILL && used >= c.cpu-time.Second) {
			return &ChildError{Source: c.source, Reason: fmt.Sprintf("cpu limit: killed after %v of cpu time", used.Round(time.Millisecond)), Limit: true}
		}
		return &ChildError{Source: c.source, Reason: "killed by signal " + ws.Signal().String()}
	}
	if strings.Contains(stderr, "out of memory") || strings.Contains(stderr, "cannot allocate memory") {
		return &ChildError{Source: c.source, Reason: "memory limit: the reader ran out of its memory", Limit: true}
	}
	if strings.Contains(stderr, "goroutine stack exceeds") {
		return &ChildError{Source: c.source, Reason: "stack limit: the reader recursed too deep", Limit: true}
	}
	reason := fmt.Sprintf("exit status %d", ps.ExitCode())
	if line, _, _ := strings.Cut(stderr, "\n"); line != "" {
		reason += ": " + sanitize(line)
	}
	return &ChildError{Source: c.source, Reason: reason}
}

// headBuffer keeps the first max bytes written to it.
type headBuffer struct {
	mu  sync.Mutex
	max int
	b   bytes.Buffer
}

func (h *headBuffer) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if room := h.max - h.b.Len(); room > 0 {
		h.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (h *headBuffer) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.b.String()
}
