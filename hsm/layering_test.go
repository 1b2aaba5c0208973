package hsm_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayering: hsm and firmware import nothing network. Package net enters
// only through go-tpm's TPM transports (tpmutil, used by every go-tpm
// transport, and linuxudstpm, the swtpm unix-socket transport); no Coffre
// package imports it, and hsm depends on no other Coffre package except
// internal test helpers.
func TestLayering(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \",\"}}", "coffre/hsm", "coffre/firmware").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	allowedNet := map[string]bool{
		"github.com/google/go-tpm/tpmutil":                    true,
		"github.com/google/go-tpm/tpm2/transport/linuxudstpm": true,
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imps, _ := strings.Cut(line, " ")
		for _, imp := range strings.Split(imps, ",") {
			if (imp == "net" || imp == "net/http" || imp == "crypto/tls") && !allowedNet[pkg] {
				t.Errorf("%s imports %s: hsm and firmware must not reach the network", pkg, imp)
			}
			if strings.HasPrefix(pkg, "coffre/hsm") && strings.HasPrefix(imp, "coffre/") && !strings.HasPrefix(imp, "coffre/hsm") && !strings.HasPrefix(imp, "coffre/internal/") {
				t.Errorf("%s imports %s: hsm is the bottom layer", pkg, imp)
			}
		}
	}
}
