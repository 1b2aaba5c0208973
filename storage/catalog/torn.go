package catalog

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// dropEmptyMemtables removes memtable files of zero bytes from dir.
//
// badger creates a memtable's write-ahead log by creating the file and
// then growing it; a process killed between the two leaves a file of zero
// bytes, which holds no entry, and which badger v4.9.6 then refuses to open
// ("while opening memtables: while opening fid: N: Create a new file"):
// the catalog would stay shut after a SIGKILL or a power cut. Such a file
// is removed, under the same directory lock badger takes, so that a
// catalog another process has open is never touched.
func dropEmptyMemtables(dir string, log *slog.Logger) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	var empty []string
	for _, e := range ents {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".mem") {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.Size() == 0 {
			empty = append(empty, e.Name())
		}
	}
	if len(empty) == 0 {
		return nil
	}
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return nil // in use by another process: badger.Open will say so
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	for _, name := range empty {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err != nil || fi.Size() != 0 {
			continue
		}
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("catalog: removing the empty memtable %s left by an interrupted run: %w", p, err)
		}
		log.Warn("catalog: removed an empty memtable file left by an interrupted run", "file", p)
	}
	return nil
}
