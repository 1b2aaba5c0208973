package appliance_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffre/appliance"
)

// The documented sample loads, with every source kind filled in.
func TestSampleConfigLoads(t *testing.T) {
	c, err := appliance.LoadConfig("../docs/coffred.sample.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Sources.Cameras) != 1 || c.Sources.Cameras[0].Device != "/dev/video0" || len(c.Sources.QRDirs) == 0 || len(c.Sources.USBDirs) == 0 {
		t.Fatalf("sources: %+v", c.Sources)
	}
}

// Bad configurations are refused with a message naming the field.
func TestConfigRefusals(t *testing.T) {
	for _, tc := range []struct{ json, want string }{
		{`{}`, `"state"`},
		{`{"state":"s","write_quorum":5}`, "write_quorum"},
		{`{"state":"s","sources":{"cameras":[{}]}}`, `"device"`},
		{`{"state":"s","sources":{"cameras":[{"device":"/dev/video0","width":9000}]}}`, "camera /dev/video0"},
		{`{"state":"s","production":true}`, "production"},
		{`{"state":"s","log_level":"loud"}`, "log_level"},
	} {
		p := filepath.Join(t.TempDir(), "c.json")
		os.WriteFile(p, []byte(tc.json), 0o600)
		_, err := appliance.LoadConfig(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to name %s", tc.json, err, tc.want)
		}
	}
}
