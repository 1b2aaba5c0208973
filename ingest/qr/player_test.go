package qr

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"coffre/internal/testenv"
)

// playerHarness runs the player's inline script in node with a minimal DOM
// and fake timers, and prints what the page showed and when.
const playerHarness = `
const fs = require("fs");
const html = fs.readFileSync(process.argv[2], "utf8");
const script = html.split("<script>")[1].split("</script>")[0];
const shown = [], delays = [];
const img = { set src(v) { shown.push(v); }, addEventListener() {} };
const status = { textContent: "" };
const document = {
  getElementById: (id) => (id === "f" ? img : status),
  addEventListener() {},
  documentElement: {},
};
const timers = [];
const setTimeout = (f, ms) => { timers.push(f); delays.push(ms); };
new Function("document", "setTimeout", script)(document, setTimeout);
for (let k = 0; k < Number(process.argv[3]); k++) timers.shift()();
process.stdout.write(JSON.stringify({ shown, delays, status: status.textContent }));
`

// The player shows every frame in order, loops, and waits 1/fps between
// frames.
func TestHTMLPlayerPlays(t *testing.T) {
	node := testenv.RequireTool(t, "node", "nodejs")
	frames, _ := Encode(testMessage(1500, 16), Options{Version: 10})
	dir := t.TempDir()
	page := filepath.Join(dir, "player.html")
	var buf bytes.Buffer
	if err := WriteHTMLPlayer(&buf, frames, 4, Options{Version: 10}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(page, buf.Bytes(), 0o644)
	harness := filepath.Join(dir, "harness.js")
	os.WriteFile(harness, []byte(playerHarness), 0o644)
	ticks := len(frames) + 2
	out, err := exec.Command(node, harness, page, strconv.Itoa(ticks)).CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v: %s", err, out)
	}
	var res struct {
		Shown  []string
		Delays []float64
		Status string
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("%v: %.200s", err, out)
	}
	if len(res.Shown) != ticks+1 {
		t.Fatalf("showed %d pictures, want %d", len(res.Shown), ticks+1)
	}
	for k, src := range res.Shown {
		want := frames[k%len(frames)]
		b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(src, "data:image/png;base64,"))
		if err != nil {
			t.Fatalf("picture %d: %v", k, err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		texts, err := DecodeImage(img)
		if err != nil || texts[0] != want {
			t.Fatalf("picture %d is not frame %d: %v", k, k%len(frames), err)
		}
	}
	for _, d := range res.Delays {
		if d != 250 {
			t.Fatalf("delay %v ms, want 250 for 4 fps", d)
		}
	}
	if !strings.Contains(res.Status, "frame 3/") {
		t.Fatalf("status %q", res.Status)
	}
}
