package layering

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// top returns the layer a package belongs to ("storage" for coffre/storage/catalog).
func top(pkg string) string {
	p := strings.TrimPrefix(pkg, "coffre/")
	if i := strings.IndexByte(p, '/'); i >= 0 {
		p = p[:i]
	}
	return p
}

// allowed says which of the module's layers each layer may import.
var allowed = map[string][]string{
	"cmd":       {"appliance", "ingest", "bailiff", "storage", "firmware", "hsm", "internal"},
	"appliance": {"ingest", "bailiff", "storage", "firmware", "hsm", "internal"},
	"ingest":    {"hsm", "internal"},
	"bailiff":   {"hsm", "internal"},
	"storage":   {"hsm", "internal"},
	"firmware":  {"hsm", "internal"},
	"hsm":       {"internal"},
	"internal":  {"internal"},
}

// netFree lists layers that must not import the network stack at all.
var netFree = []string{"storage", "bailiff", "ingest", "firmware", "hsm"}

// netExceptions are the only files' packages allowed a socket: the TPM
// transport to swtpm / the kernel resource manager.
var netExceptions = map[string]bool{}

func TestLayering(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "coffre/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	n := 0
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		pkg, imports := f[0], f[1:]
		n++
		layer := top(pkg)
		for _, imp := range imports {
			if strings.HasPrefix(imp, "coffre/") {
				il := top(imp)
				if il == layer {
					continue
				}
				ok := false
				for _, a := range allowed[layer] {
					if a == il {
						ok = true
					}
				}
				if !ok {
					t.Errorf("%s imports %s: layer %q may not depend on %q", pkg, imp, layer, il)
				}
				continue
			}
			if imp == "net" || strings.HasPrefix(imp, "net/") {
				for _, nf := range netFree {
					if layer == nf && !netExceptions[pkg] {
						t.Errorf("%s imports %s: the %s layer has no network path", pkg, imp, layer)
					}
				}
			}
			if imp == "net/http" && layer != "internal" {
				t.Errorf("%s imports net/http: the appliance has no network code path", pkg)
			}
		}
	}
	if n < 2 {
		t.Fatalf("go list returned %d packages; the check saw nothing", n)
	}
}

func TestTopOfPackage(t *testing.T) {
	for in, want := range map[string]string{
		"coffre/storage/catalog": "storage",
		"coffre/cmd/coffre":      "cmd",
		"coffre/hsm":             "hsm",
	} {
		if got := top(in); got != want {
			t.Errorf("top(%q) = %q, want %q", in, got, want)
		}
	}
}
