package appliance

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Config is coffred's configuration file (JSON, unknown fields refused). A
// documented sample is docs/coffred.sample.json; see docs/operator.md.
type Config struct {
	// State is the appliance's state directory on its internal disk
	// (keystore, catalog, receipts, vault identity).
	State string `json:"state"`
	// Production refuses the software keystore and development shortcuts.
	Production bool `json:"production"`
	// Keystore says where the appliance's own keys live.
	Keystore KeystoreConfig `json:"keystore"`
	// Drives are the paths (image files or block devices) to look at for the
	// vault's drives; drives are recognised by their superblock uuid, so the
	// order and the names do not matter.
	Drives []string `json:"drives"`
	// WriteQuorum is how many drives must hold an upload durably before it
	// is acknowledged (default 3).
	WriteQuorum int `json:"write_quorum"`
	// Sources are watched for uploads.
	Sources SourcesConfig `json:"sources"`
	// Socket is the local control socket (mode 0600).
	Socket string `json:"socket"`
	// Workers bounds the uploads opened and re-encrypted at once (default:
	// the number of CPUs).
	Workers int `json:"workers"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `json:"log_level"`

	// Path is the file the config was read from (measured at start).
	Path string `json:"-"`
}

// KeystoreConfig selects the keystore backend.
type KeystoreConfig struct {
	// Backend is "soft" (development, passphrase) or "tpm".
	Backend string `json:"backend"`
	// PassphraseFile holds the soft keystore's passphrase (or the TPM PIN).
	PassphraseFile string `json:"passphrase_file"`
	// Device is the TPM device (default /dev/tpmrm0) or "unix:PATH" for swtpm.
	Device string `json:"device"`
}

// SourcesConfig lists where uploads come from.
type SourcesConfig struct {
	// QRDirs are directories where a camera (or a test) drops frame images.
	QRDirs []string `json:"qr_dirs"`
	// USBDirs are directories where USB bundle images appear (or bundle
	// directories); USBDevices are raw devices polled for a bundle.
	USBDirs    []string `json:"usb_dirs"`
	USBDevices []string `json:"usb_devices"`
	// Cameras are V4L2 capture devices filming the online machine's screen.
	Cameras []CameraConfig `json:"cameras"`
	// Poll is how often sources are looked at (default 1s).
	Poll Duration `json:"poll"`
}

// CameraConfig is one V4L2 camera. Width and Height are the capture size
// asked of the driver (default 1920×1080; the driver may choose another).
type CameraConfig struct {
	Device string `json:"device"`
	Width  int    `json:"width"`
	Height int    `json:"height"`
}

// Duration is a time.Duration written as "1s", "250ms" in JSON.
type Duration struct{ time.Duration }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"1s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// ErrConfig wraps every configuration problem.
var ErrConfig = errors.New("appliance: config")

// LoadConfig reads and checks a config file, filling defaults. Relative paths
// are taken from the config file's directory.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	c.Path = path
	c.resolve(filepath.Dir(path))
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	return &c, nil
}

func (c *Config) resolve(base string) {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	c.State = abs(c.State)
	c.Keystore.PassphraseFile = abs(c.Keystore.PassphraseFile)
	for i := range c.Drives {
		c.Drives[i] = abs(c.Drives[i])
	}
	for i := range c.Sources.QRDirs {
		c.Sources.QRDirs[i] = abs(c.Sources.QRDirs[i])
	}
	for i := range c.Sources.USBDirs {
		c.Sources.USBDirs[i] = abs(c.Sources.USBDirs[i])
	}
	c.Socket = abs(c.Socket)
	c.defaults()
}

func (c *Config) defaults() {
	if c.WriteQuorum == 0 {
		c.WriteQuorum = 3
	}
	if c.Sources.Poll.Duration == 0 {
		c.Sources.Poll.Duration = time.Second
	}
	if c.Socket == "" && c.State != "" {
		c.Socket = filepath.Join(c.State, "control.sock")
	}
	if c.Keystore.Backend == "" {
		c.Keystore.Backend = "soft"
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	for i := range c.Sources.Cameras {
		if c.Sources.Cameras[i].Width == 0 {
			c.Sources.Cameras[i].Width = 1920
		}
		if c.Sources.Cameras[i].Height == 0 {
			c.Sources.Cameras[i].Height = 1080
		}
	}
}

func (c *Config) check() error {
	switch {
	case c.State == "":
		return errors.New(`"state" (the state directory) is required`)
	case c.Keystore.Backend != "soft" && c.Keystore.Backend != "tpm":
		return fmt.Errorf(`keystore backend %q: want "soft" or "tpm"`, c.Keystore.Backend)
	case c.Production && c.Keystore.Backend == "soft":
		return errors.New(`production refuses the software keystore: set keystore.backend to "tpm"`)
	case c.WriteQuorum < 1 || c.WriteQuorum > 4:
		return fmt.Errorf("write_quorum %d: want 1 to 4", c.WriteQuorum)
	case len(c.Drives) > 16:
		return fmt.Errorf("%d drive paths: at most 16", len(c.Drives))
	case c.Workers < 0 || c.Workers > 256:
		return fmt.Errorf("workers %d: want 0 (auto) to 256", c.Workers)
	}
	for _, cam := range c.Sources.Cameras {
		if cam.Device == "" {
			return errors.New(`a camera needs "device" (e.g. /dev/video0)`)
		}
		if cam.Width < 16 || cam.Height < 16 || cam.Width > 8192 || cam.Height > 8192 {
			return fmt.Errorf("camera %s: size %dx%d: want 16 to 8192 pixels a side", cam.Device, cam.Width, cam.Height)
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level %q: want debug, info, warn or error", c.LogLevel)
	}
	return nil
}
