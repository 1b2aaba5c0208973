package hsm

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// File names inside a keystore directory (docs/formats/keystore.md).
const (
	headerFile    = "keystore.hdr"
	secretSuffix  = ".key"
	counterSuffix = ".ctr"
	tmpPrefix     = ".tmp-"
)

// writeNew writes data to dir/name atomically and exclusively: a temporary
// file (O_EXCL, 0600) is written and fsynced, then hard-linked to its final
// name (which fails if the name exists), then the directory is fsynced.
func writeNew(dir, name string, data []byte) error {
	tmp, err := writeTemp(dir, data)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, filepath.Join(dir, name)); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fs.ErrExist
		}
		return fmt.Errorf("hsm: publish %s: %w", filepath.Join(dir, name), err)
	}
	if err := os.Remove(tmp); err != nil {
		return fmt.Errorf("hsm: remove temporary file in %s: %w", dir, err)
	}
	return syncDir(dir)
}

// writeReplace writes data to dir/name atomically, replacing any old file.
func writeReplace(dir, name string, data []byte) error {
	tmp, err := writeTemp(dir, data)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("hsm: publish %s: %w", filepath.Join(dir, name), err)
	}
	return syncDir(dir)
}

func writeTemp(dir string, data []byte) (string, error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	tmp := filepath.Join(dir, tmpPrefix+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("hsm: create file in keystore %s: %w", dir, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return "", fmt.Errorf("hsm: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return "", fmt.Errorf("hsm: fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("hsm: close %s: %w", tmp, err)
	}
	return tmp, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("hsm: open keystore directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("hsm: fsync keystore directory %s: %w", dir, err)
	}
	return nil
}

// readBounded reads a keystore file of at most MaxFileLen bytes.
func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFileLen+1))
	if err != nil {
		return nil, fmt.Errorf("hsm: read %s: %w", path, err)
	}
	if len(b) > MaxFileLen {
		return nil, fmt.Errorf("hsm: %s is larger than %d bytes: not a keystore file", path, MaxFileLen)
	}
	return b, nil
}

// listNames lists the valid names of files with suffix in dir, sorted.
func listNames(dir, suffix string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("hsm: list keystore %s: %w", dir, err)
	}
	var names []string
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), suffix)
		if !ok || !e.Type().IsRegular() || !ValidName(n) {
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

func removeSynced(dir, name string) error {
	if err := os.Remove(filepath.Join(dir, name)); err != nil {
		return err
	}
	return syncDir(dir)
}
