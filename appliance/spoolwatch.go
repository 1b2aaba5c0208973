package appliance

import (
	"context"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"
)

// watchSpools returns a channel that receives when an entry is moved into
// one of the USB spool directories, or a file in one is closed after
// writing: a bundle (or image) is then taken at once instead of at the next
// poll (sources.poll, 1 s by default). Only completed arrivals wake it: a
// bundle directory being copied in place is left to the poll, as before.
// Polling stays the rule for every source; without inotify (or for a spool
// that does not exist yet) nothing changes. The watch ends with ctx.
func watchSpools(ctx context.Context, dirs []string, log *slog.Logger) <-chan struct{} {
	wake := make(chan struct{}, 1)
	if len(dirs) == 0 {
		return wake
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		log.Warn("spool directories are polled only", "err", err)
		return wake
	}
	watched := 0
	for _, d := range dirs {
		if _, err := unix.InotifyAddWatch(fd, d, unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE); err == nil {
			watched++
		}
	}
	if watched == 0 {
		unix.Close(fd)
		return wake
	}
	f := os.NewFile(uintptr(fd), "inotify") // non-blocking: reads wait in the runtime poller, Close ends them
	go func() {
		<-ctx.Done()
		f.Close()
	}()
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := f.Read(buf); err != nil {
				return // closed (ctx done), or the watch broke: polling goes on
			}
			select {
			case wake <- struct{}{}:
			default: // a wake-up is already pending
			}
		}
	}()
	return wake
}
