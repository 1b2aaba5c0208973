package firmware_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffre/firmware"
)

var update = flag.Bool("update", false, "regenerate testdata/firmware vectors")

const vecDir = "../testdata/firmware"

// expectation is testdata/firmware/<vector>.json.
type expectation struct {
	Comment string `json:"comment"`
	// Kind is "manifest" (<vector>.manifest, parsed) or "bundle"
	// (<vector>.bundle, verified against trust-root.txt).
	Kind string `json:"kind"`
	// Outcome: ok, manifest (ErrManifest), bundle (ErrBundle),
	// signatures (ErrSignatures), digest (component mismatch).
	Outcome string `json:"outcome"`
	Version uint64 `json:"version,omitempty"`
}

func TestFirmwareVectors(t *testing.T) {
	if *update {
		generateFirmwareVectors(t)
	}
	rb, err := os.ReadFile(filepath.Join(vecDir, "trust-root.txt"))
	if err != nil {
		t.Fatal(err)
	}
	root, err := firmware.ParseTrustRoot(rb)
	if err != nil {
		t.Fatal(err)
	}
	jsons, _ := filepath.Glob(filepath.Join(vecDir, "*.json"))
	if len(jsons) < 8 {
		t.Fatalf("only %d vectors", len(jsons))
	}
	for _, j := range jsons {
		name := strings.TrimSuffix(filepath.Base(j), ".json")
		t.Run(name, func(t *testing.T) {
			raw, _ := os.ReadFile(j)
			var e expectation
			if err := json.Unmarshal(raw, &e); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(filepath.Join(vecDir, name+"."+e.Kind))
			if err != nil {
				t.Fatal(err)
			}
			var m *firmware.Manifest
			switch e.Kind {
			case "manifest":
				m, err = firmware.ParseManifest(data)
			case "bundle":
				m, err = firmware.Verify(data, root)
			default:
				t.Fatalf("unknown kind %q", e.Kind)
			}
			switch e.Outcome {
			case "ok":
				if err != nil || m.Version != e.Version {
					t.Fatalf("got %v, want ok version %d", err, e.Version)
				}
			case "manifest":
				if !errors.Is(err, firmware.ErrManifest) {
					t.Fatalf("got %v, want ErrManifest", err)
				}
			case "bundle":
				if !errors.Is(err, firmware.ErrBundle) {
					t.Fatalf("got %v, want ErrBundle", err)
				}
			case "signatures":
				if !errors.Is(err, firmware.ErrSignatures) {
					t.Fatalf("got %v, want ErrSignatures", err)
				}
			case "digest":
				if err == nil || !strings.Contains(err.Error(), "does not match its manifest digests") {
					t.Fatalf("got %v, want a digest mismatch", err)
				}
			default:
				t.Fatalf("unknown outcome %q", e.Outcome)
			}
		})
	}
}

func generateFirmwareVectors(t *testing.T) {
	os.RemoveAll(vecDir)
	os.MkdirAll(vecDir, 0o755)
	keys := releaseKeys(t, 4)
	root := trustRoot(t, 2, keys[:3])
	rb, err := root.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(vecDir, "trust-root.txt"), rb, 0o644)
	write := func(name, kind string, data []byte, e expectation) {
		e.Kind = kind
		os.WriteFile(filepath.Join(vecDir, name+"."+kind), data, 0o644)
		j, _ := json.MarshalIndent(e, "", "  ")
		os.WriteFile(filepath.Join(vecDir, name+".json"), append(j, '\n'), 0o644)
	}
	m, good := release(t, 12, "1.4.2", files1, keys[0], keys[1])
	mb, _ := m.Marshal()
	write("manifest-ok", "manifest", mb, expectation{Comment: "canonical manifest, three components", Outcome: "ok", Version: 12})
	write("manifest-crlf", "manifest", bytes.ReplaceAll(mb, []byte("\n"), []byte("\r\n")), expectation{Comment: "CRLF line ends", Outcome: "manifest"})
	write("manifest-leading-zero", "manifest", bytes.Replace(mb, []byte("version 12"), []byte("version 012"), 1), expectation{Comment: "non-canonical version", Outcome: "manifest"})
	write("manifest-unsorted", "manifest", []byte(swapComponentLines(string(mb))), expectation{Comment: "components out of order", Outcome: "manifest"})
	write("bundle-ok", "bundle", good, expectation{Comment: "signed by release keys A and B (2 of 3)", Outcome: "ok", Version: 12})
	_, one := release(t, 12, "1.4.2", files1, keys[0])
	write("bundle-one-signature", "bundle", one, expectation{Comment: "signed by A only: below the threshold", Outcome: "signatures"})
	_, stranger := release(t, 12, "1.4.2", files1, keys[0], keys[3])
	write("bundle-stranger", "bundle", stranger, expectation{Comment: "signed by A and a key outside the trust root", Outcome: "signatures"})
	_, twice := release(t, 12, "1.4.2", files1, keys[1], keys[1])
	write("bundle-same-key-twice", "bundle", twice, expectation{Comment: "two signatures by B count once", Outcome: "signatures"})
	b, _ := firmware.ParseBundle(good)
	b.Files["coffred"] = []byte("coffred daemon binary v1 (patched)")
	swapped := mustMarshalRaw(t, b)
	write("bundle-component-swapped", "bundle", swapped, expectation{Comment: "coffred replaced after signing", Outcome: "digest"})
	trunc := good[:len(good)-3]
	write("bundle-truncated", "bundle", trunc, expectation{Comment: "last 3 bytes missing", Outcome: "bundle"})
	write("bundle-trailing", "bundle", append(bytes.Clone(good), 0), expectation{Comment: "one trailing byte", Outcome: "bundle"})
	mt := bytes.Replace(good, []byte("version 12"), []byte("version 13"), 1)
	write("bundle-manifest-edited", "bundle", mt, expectation{Comment: "version raised after signing", Outcome: "signatures"})
}

// mustMarshalRaw encodes a bundle whose files may not match the manifest
// (Marshal only checks the names).
func mustMarshalRaw(t *testing.T, b *firmware.Bundle) []byte {
	t.Helper()
	out, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return out
}
