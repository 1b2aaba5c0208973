package appliance

import (
	"fmt"
	"os"
	"path/filepath"

	"coffre/firmware"
)

// stagedDir holds verified updates waiting to be installed.
const stagedDir = "staged"

// ApplyUpdate takes an update bundle that came through the diode: it checks
// the release signatures against the trust root (k of n), refuses a
// downgrade (the keystore's monotonic counter), stages the files under
// STATE/staged/v<N>/ and re-authorises the sealed keys for the measurement
// the new release will make, so the keys follow an approved update and never
// an unapproved one. Installing the staged files and rebooting is the
// operator's step.
func (a *Appliance) ApplyUpdate(bundlePath, trustRootPath string) (*firmware.Staged, error) {
	bundle, err := os.ReadFile(bundlePath)
	if err != nil {
		return nil, err
	}
	rb, err := os.ReadFile(trustRootPath)
	if err != nil {
		return nil, err
	}
	root, err := firmware.ParseTrustRoot(rb)
	if err != nil {
		return nil, fmt.Errorf("appliance: trust root %s: %w", trustRootPath, err)
	}
	if a.measurement == nil {
		return nil, fmt.Errorf("appliance: the %s keystore is not bound to measurements; updates need the TPM keystore", a.ks.Backend())
	}
	st, err := firmware.Apply(a.ks, bundle, root, a.measurement, filepath.Join(a.State, stagedDir))
	if err != nil {
		return nil, err
	}
	a.Log.Info("firmware update staged", "version", st.Manifest.Version, "semver", st.Manifest.SemVer, "dir", st.Dir)
	return st, nil
}
