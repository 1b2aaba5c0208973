package firmware

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"

	"coffre/hsm"
)

// Event is one measured component: its name and the SHA-256 of its bytes.
type Event struct {
	Name   string
	SHA256 [32]byte
}

// extendDigest is what an event extends into the PCR:
// SHA-256("coffre measure v1" || 0x00 || name || 0x00 || sha256).
func (e Event) extendDigest() []byte {
	h := sha256.New()
	h.Write([]byte("coffre measure v1\x00"))
	h.Write([]byte(e.Name))
	h.Write([]byte{0})
	h.Write(e.SHA256[:])
	return h.Sum(nil)
}

// Measurement is the ordered list of events measured at boot.
type Measurement struct {
	Events []Event
}

// PCRValue is the value the measure PCR holds after the events, starting
// from its reset value (32 zero bytes).
func (m *Measurement) PCRValue() []byte {
	v := make([]byte, 32)
	for _, e := range m.Events {
		v = hsm.ExtendValue(v, e.extendDigest())
	}
	return v
}

// After returns the measurement the appliance will make once the release
// in man runs: every event named like a manifest component takes the
// manifest's digest; the others (the site configuration) stay.
func (m *Measurement) After(man *Manifest) *Measurement {
	out := &Measurement{}
	for _, e := range m.Events {
		if c, ok := man.Component(e.Name); ok {
			e.SHA256 = c.SHA256
		}
		out.Events = append(out.Events, e)
	}
	return out
}

// Input is something to measure: a name and a file.
type Input struct {
	Name string
	Path string
}

// RunningInputs are what coffred measures at start: its own executable
// (as "coffred") and its configuration file (as "config").
func RunningInputs(configPath string) ([]Input, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("firmware: find the running executable: %w", err)
	}
	return []Input{{Name: "coffred", Path: exe}, {Name: "config", Path: configPath}}, nil
}

// Extender is what measuring needs from a TPM: *hsm.TPM (an open
// keystore) and *hsm.PCRBank (provisioning, before the keystore exists).
type Extender interface {
	MeasurePCR() int
	PCRs(pcrs ...int) (map[int][]byte, error)
	Extend(pcr int, digest []byte) error
}

// Measure digests each input and, when ks is bound to measurements (the
// TPM), extends its measure PCR with every event, in order. It must run
// before anything is unsealed; it refuses a PCR that is not in its reset
// state (already measured or capped this boot: reboot). With the soft
// keystore it only computes the measurement, and says so.
func Measure(ks hsm.Keystore, inputs []Input) (*Measurement, error) {
	if e, ok := ks.(Extender); ok {
		return MeasureInto(e, inputs)
	}
	m, err := digestInputs(inputs)
	if err != nil {
		return nil, err
	}
	slog.Warn("firmware: keystore is not bound to measurements: the measurement is computed but not enforced", "backend", ks.Backend())
	return m, nil
}

// MeasureInto digests the inputs and extends e's measure PCR with them
// (see Measure).
func MeasureInto(e Extender, inputs []Input) (*Measurement, error) {
	m, err := digestInputs(inputs)
	if err != nil {
		return nil, err
	}
	pcr := e.MeasurePCR()
	cur, err := e.PCRs(pcr)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(cur[pcr], make([]byte, 32)) {
		return nil, fmt.Errorf("firmware: PCR %d was already extended this boot (measured or capped): reboot the appliance", pcr)
	}
	for _, ev := range m.Events {
		if err := e.Extend(pcr, ev.extendDigest()); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func digestInputs(inputs []Input) (*Measurement, error) {
	m := &Measurement{}
	seen := map[string]bool{}
	for _, in := range inputs {
		if !validName(in.Name) || seen[in.Name] {
			return nil, fmt.Errorf("firmware: measure: bad or repeated input name %q", truncate(in.Name))
		}
		seen[in.Name] = true
		d, err := digestFile(in.Path)
		if err != nil {
			return nil, err
		}
		m.Events = append(m.Events, Event{Name: in.Name, SHA256: d})
	}
	return m, nil
}

func digestFile(path string) ([32]byte, error) {
	var d [32]byte
	f, err := os.Open(path)
	if err != nil {
		return d, fmt.Errorf("firmware: measure %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, MaxComponentSize+1))
	if err != nil {
		return d, fmt.Errorf("firmware: measure %s: %w", path, err)
	}
	if n > MaxComponentSize {
		return d, fmt.Errorf("firmware: measure %s: larger than %d bytes", path, MaxComponentSize)
	}
	copy(d[:], h.Sum(nil))
	return d, nil
}
