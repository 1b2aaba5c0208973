package firmware

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"coffre/hsm"
)

// VersionCounter is the keystore counter that holds the highest firmware
// version ever applied (a TPM NV counter on the TPM backend).
const VersionCounter = "firmware.version"

// ErrDowngrade is returned for a release whose version is not above the
// installed one (or, at boot, below it).
var ErrDowngrade = errors.New("firmware: downgrade refused")

// Staged describes an applied update waiting for the next boot.
type Staged struct {
	Manifest *Manifest
	Dir      string // stageRoot/v<version>: manifest, sig-NN.asc, one file per component
}

func counters(ks hsm.Keystore) (hsm.Counters, error) {
	c, ok := ks.(hsm.Counters)
	if !ok {
		return nil, fmt.Errorf("firmware: keystore backend %q has no monotonic counters", ks.Backend())
	}
	return c, nil
}

// CheckVersion is run at start with the running release's manifest: it
// refuses to run a release older than the highest version ever applied.
func CheckVersion(ks hsm.Keystore, running *Manifest) error {
	c, err := counters(ks)
	if err != nil {
		return err
	}
	v, err := c.Counter(VersionCounter)
	if err != nil {
		return err
	}
	if running.Version < v {
		return fmt.Errorf("%w: running version %d (%s) is older than the installed version %d: reinstall the current release", ErrDowngrade, running.Version, running.SemVer, v)
	}
	return nil
}

// Apply installs a verified update: it verifies the bundle against the
// trust root, refuses a version not above the version counter, stages the
// files under stageRoot/v<version>/, authorises the keystore for the
// measurement the new release will make (current.After(manifest)) so the
// sealed keys follow it, then raises the version counter to the new version.
// Apply needs an approved state (before Cap, or after Cap on a TPM
// keystore, which keeps its policy signer).
func Apply(ks hsm.Keystore, bundle []byte, root *TrustRoot, current *Measurement, stageRoot string) (*Staged, error) {
	b, err := ParseBundle(bundle)
	if err != nil {
		return nil, err
	}
	m, err := b.Verify(root)
	if err != nil {
		return nil, err
	}
	c, err := counters(ks)
	if err != nil {
		return nil, err
	}
	installed, err := c.Counter(VersionCounter)
	if err != nil {
		return nil, err
	}
	if m.Version <= installed {
		return nil, fmt.Errorf("%w: bundle version %d (%s) is not above the installed version %d", ErrDowngrade, m.Version, m.SemVer, installed)
	}
	if m.Version-installed > MaxVersionStep {
		return nil, fmt.Errorf("firmware: bundle version %d jumps more than %d above the installed %d: refused", m.Version, MaxVersionStep, installed)
	}
	dir, err := stage(stageRoot, b, m)
	if err != nil {
		return nil, err
	}
	if mk, ok := ks.(hsm.Measured); ok {
		if current == nil {
			return nil, errors.New("firmware: apply: the current measurement is needed to authorise the new one")
		}
		vals, err := mk.PCRs(mk.PCRSelection()...)
		if err != nil {
			return nil, err
		}
		vals[mk.MeasurePCR()] = current.After(m).PCRValue()
		if err := mk.Approve(vals); err != nil {
			return nil, fmt.Errorf("firmware: authorise the keys for version %d: %w", m.Version, err)
		}
	}
	for v := installed; v < m.Version; {
		if v, err = c.Increment(VersionCounter); err != nil {
			return nil, fmt.Errorf("firmware: raise the version counter: %w (re-run the update to finish)", err)
		}
	}
	return &Staged{Manifest: m, Dir: dir}, nil
}

// stage writes the bundle's files to a temporary directory, fsyncs them,
// and renames it to stageRoot/v<version>.
func stage(root string, b *Bundle, m *Manifest) (string, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return "", fmt.Errorf("firmware: stage directory %s: %w", root, err)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(root, ".tmp-"+hex.EncodeToString(rnd[:]))
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return "", fmt.Errorf("firmware: stage: %w", err)
	}
	defer os.RemoveAll(tmp)
	files := map[string][]byte{"manifest": b.Manifest}
	for i, s := range b.Signatures {
		files[fmt.Sprintf("sig-%02d.sig", i+1)] = s
	}
	for _, c := range m.Components {
		files["component."+c.Name] = b.Files[c.Name]
	}
	for name, data := range files {
		if err := writeSynced(filepath.Join(tmp, name), data); err != nil {
			return "", err
		}
	}
	if err := syncDir(tmp); err != nil {
		return "", err
	}
	final := filepath.Join(root, fmt.Sprintf("v%d", m.Version))
	if err := os.RemoveAll(final); err != nil {
		return "", fmt.Errorf("firmware: stage: remove old %s: %w", final, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", fmt.Errorf("firmware: stage: publish %s: %w", final, err)
	}
	return final, syncDir(root)
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("firmware: stage %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("firmware: stage %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("firmware: stage %s: fsync: %w", path, err)
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("firmware: sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("firmware: sync %s: %w", dir, err)
	}
	return nil
}
