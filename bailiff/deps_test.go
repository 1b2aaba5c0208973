package bailiff

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayering: bailiff never imports ingest, storage, appliance or
// anything network (it runs in the offline appliance and its parsers take
// outside input).
func TestLayering(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "coffre/bailiff/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		for _, bad := range []string{"coffre/ingest", "coffre/storage", "coffre/appliance", "coffre/cmd", "net/http"} {
			if p == bad || strings.HasPrefix(p, bad+"/") {
				t.Errorf("bailiff depends on %s", p)
			}
		}
	}
}
