package qr

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"html/template"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"

	qrcode "github.com/skip2/go-qrcode"
)

// newSymbol builds the QR code of a frame text at the chosen version and
// ECC level. The text must be alphanumeric: go-qrcode then uses only the
// alphanumeric and numeric modes (it picks byte mode only for characters
// outside that set), which is what RenderPNG relies on.
func newSymbol(frame string, o Options) (*qrcode.QRCode, error) {
	if !IsAlphanumeric(frame) {
		return nil, fmt.Errorf("qr: frame text is not alphanumeric; pass texts made by Encode")
	}
	lvl, err := eccLevel(o.ECC)
	if err != nil {
		return nil, err
	}
	q, err := qrcode.NewWithForcedVersion(frame, o.Version, lvl)
	if err != nil {
		return nil, fmt.Errorf("qr: frame of %d characters does not fit version %d-%s; encode and render with the same options: %w", len(frame), o.Version, o.ECC, err)
	}
	return q, nil
}

// RenderPNG renders one frame text as a PNG: o.ModulePx pixels per module
// and a 4-module quiet zone, black on white.
func RenderPNG(frame string, o Options) ([]byte, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	q, err := newSymbol(frame, o)
	if err != nil {
		return nil, err
	}
	img := q.Image(-o.ModulePx) // negative: exactly ModulePx per module
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	if err := enc.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("qr: png: %w", err)
	}
	return buf.Bytes(), nil
}

// FrameFileName is the name WriteFrames gives frame i (counted from 0):
// frame-00001.png for i = 0.
func FrameFileName(i int) string { return fmt.Sprintf("frame-%05d.png", i+1) }

// WriteFrames renders frames to dir as frame-00001.png, frame-00002.png, …
// (dir is created if needed; existing files of the same name are replaced).
func WriteFrames(dir string, frames []string, o Options) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("qr: frames directory %s: %w", dir, err)
	}
	for i, f := range frames {
		b, err := RenderPNG(f, o)
		if err != nil {
			return fmt.Errorf("qr: frame %d: %w", i+1, err)
		}
		name := filepath.Join(dir, FrameFileName(i))
		tmp := name + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return fmt.Errorf("qr: write %s: %w", tmp, err)
		}
		if err := os.Rename(tmp, name); err != nil {
			return fmt.Errorf("qr: publish %s: %w", name, err)
		}
	}
	return nil
}

var playerTmpl = template.Must(template.New("player").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>Coffre transfer {{.ID}}</title>
<style>
html,body{margin:0;height:100%;background:#fff;color:#000;font:14px sans-serif}
#f{display:block;margin:0 auto;height:calc(100vh - 2em);max-width:100vw;object-fit:contain;image-rendering:pixelated}
#s{height:2em;line-height:2em;text-align:center}
</style></head>
<body>
<img id="f" alt="QR frame">
<div id="s"></div>
<script>
"use strict";
var F=[{{range .Frames}}"{{.}}",{{end}}];
var fps={{.FPS}}, i=0, playing=true;
var img=document.getElementById("f"), st=document.getElementById("s");
function show(){img.src=F[i];st.textContent="transfer {{.ID}} \u2014 frame "+(i+1)+"/"+F.length+" \u2014 "+fps+" fps \u2014 space: pause, f: full screen, +/-: speed";}
function tick(){if(playing){i=(i+1)%F.length;show();}setTimeout(tick,1000/fps);}
document.addEventListener("keydown",function(e){
 if(e.key===" "){playing=!playing;}
 else if(e.key==="f"){if(document.documentElement.requestFullscreen)document.documentElement.requestFullscreen();}
 else if(e.key==="+"){fps=Math.min(30,fps+1);}
 else if(e.key==="-"){fps=Math.max(1,fps-1);}
 show();});
img.addEventListener("click",function(){if(document.documentElement.requestFullscreen)document.documentElement.requestFullscreen();});
show();setTimeout(tick,1000/fps);
</script>
</body></html>
`))

// WriteHTMLPlayer writes a self-contained HTML page that loops over the
// frames at fps frames per second (2 to 10 suit cameras): every frame is
// embedded as a data: URI, the script is inline, and a Content-Security-
// Policy forbids any network access. Click or press f for full screen.
func WriteHTMLPlayer(w io.Writer, frames []string, fps float64, o Options) error {
	if len(frames) == 0 {
		return fmt.Errorf("qr: no frames to play")
	}
	if math.IsNaN(fps) || fps < 0.5 || fps > 60 {
		return fmt.Errorf("qr: %v frames per second out of range 0.5..60", fps)
	}
	o, err := o.withDefaults()
	if err != nil {
		return err
	}
	uris := make([]template.URL, len(frames))
	id := ""
	for i, f := range frames {
		b, err := RenderPNG(f, o)
		if err != nil {
			return fmt.Errorf("qr: frame %d: %w", i+1, err)
		}
		uris[i] = template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(b))
		if id == "" {
			if fr, err := ParseFrame(f, 0); err == nil {
				id = fr.Transfer.String()
			}
		}
	}
	return playerTmpl.Execute(w, struct {
		Frames []template.URL
		FPS    float64
		ID     string
	}{uris, fps, id})
}
