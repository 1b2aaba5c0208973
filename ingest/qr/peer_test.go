package qr

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"coffre/internal/testenv"
)

func decodePNGFile(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, _, err := image.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	texts, err := DecodeImage(img)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return texts
}

// Frames we render are read back by zbarimg as our exact frame text.
func TestZbarimgReadsOurFrames(t *testing.T) {
	zbar := testenv.RequireTool(t, "zbarimg", "zbar-tools")
	msg := testMessage(3000, 1)
	for _, o := range []Options{{}, {Version: 10, ECC: "L", ModulePx: 5}, {Version: 25, ECC: "M"}} {
		frames, err := Encode(msg, o)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := WriteFrames(dir, frames[:3], o); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			out, err := exec.Command(zbar, "-q", "--raw", "-Sdisable", "-Sqrcode.enable", filepath.Join(dir, FrameFileName(i))).Output()
			if err != nil {
				t.Fatalf("zbarimg on frame %d (options %+v): %v", i+1, o, err)
			}
			if got := strings.TrimRight(string(out), "\n"); got != frames[i] {
				t.Fatalf("zbarimg read frame %d (options %+v) as %q…, want %q…", i+1, o, got[:min(40, len(got))], frames[i][:40])
			}
		}
	}
}

// Frames made by qrencode from our frame texts decode with ours and rebuild
// the message.
func TestQrencodeFramesDecodeWithOurs(t *testing.T) {
	qrencode := testenv.RequireTool(t, "qrencode", "qrencode")
	msg := testMessage(2500, 2)
	frames, err := Encode(msg, Options{Version: 15, ECC: "L", Redundancy: -1})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	d := NewDecoder(Limits{})
	for i, f := range frames {
		path := filepath.Join(dir, FrameFileName(i))
		cmd := exec.Command(qrencode, "-t", "PNG", "-l", "L", "-v", "15", "-s", "5", "-m", "4", "-o", path, f)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("qrencode: %v: %s", err, out)
		}
		for _, text := range decodePNGFile(t, path) {
			if text != f {
				t.Fatalf("frame %d read back differently", i+1)
			}
			if _, err := d.AddFrame(text); err != nil {
				t.Fatal(err)
			}
		}
	}
	msgs := d.Completed()
	if len(msgs) != 1 || !bytes.Equal(msgs[0].Data, msg) {
		t.Fatalf("got %d messages", len(msgs))
	}
}

// Frames degraded as a camera would see them still decode.
func TestDegradedFramesDecode(t *testing.T) {
	convert := testenv.RequireTool(t, "convert", "imagemagick")
	msg := testMessage(4000, 3)
	frames, err := Encode(msg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := WriteFrames(dir, frames[:1], Options{}); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, FrameFileName(0))
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"blur", []string{"-blur", "0x1.5"}},
		{"rotate-12", []string{"-background", "white", "-rotate", "12"}},
		{"rotate-90", []string{"-rotate", "90"}},
		{"perspective", []string{"-background", "white", "-virtual-pixel", "white", "-distort", "Perspective",
			"0,0 12,18  629,0 612,6  0,629 6,615  629,629 624,627"}},
		{"noise", []string{"-attenuate", "0.6", "+noise", "Gaussian"}},
		{"uneven-light", []string{"(", "-size", "630x630", "gradient:gray90-gray35", ")", "-compose", "Multiply", "-composite"}},
		{"low-contrast-jpeg", []string{"+level", "25%,80%", "-quality", "60"}},
		{"downscale-4px", []string{"-resize", "70%"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.jpg")
			args := append([]string{src}, tc.args...)
			args = append(args, out)
			if b, err := exec.Command(convert, args...).CombinedOutput(); err != nil {
				t.Fatalf("convert %v: %v: %s", tc.args, err, b)
			}
			texts := decodePNGFile(t, out)
			if len(texts) != 1 || texts[0] != frames[0] {
				t.Fatalf("read %d texts, not our frame", len(texts))
			}
		})
	}
}

// cameraScene places a rendered frame, scaled by a non-integer factor and
// slightly rotated, into a 1920x1080 textured scene with uneven light and
// sensor noise, then round-trips it through JPEG like a camera would.
func cameraScene(t testing.TB, frame string, seed uint64) *image.YCbCr {
	t.Helper()
	b, err := RenderPNG(frame, Options{})
	if err != nil {
		t.Fatal(err)
	}
	qimg, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	y, qw, _, qs, err := Luma(qimg)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, 5))
	const W, H = 1920, 1080
	scene := image.NewGray(image.Rect(0, 0, W, H))
	scale := 1.37 + r.Float64()*0.2 // scene pixels per rendered pixel
	angle := (r.Float64() - 0.5) * 0.12
	cx, cy := 700+r.Float64()*300, 500+r.Float64()*60
	sin, cos := math.Sincos(angle)
	half := float64(qw) / 2
	for py := 0; py < H; py++ {
		for px := 0; px < W; px++ {
			// background: a desk-like texture
			v := 120 + 40*math.Sin(float64(px)/37)*math.Cos(float64(py)/53)
			dx, dy := float64(px)-cx, float64(py)-cy
			u := (cos*dx+sin*dy)/scale + half
			w := (-sin*dx+cos*dy)/scale + half
			if u >= 0 && w >= 0 && u < float64(qw) && w < float64(qw) {
				v = float64(y[int(w)*qs+int(u)])*0.75 + 30 // screen contrast
			}
			v *= 0.6 + 0.5*float64(px)/W // uneven light
			v += r.NormFloat64() * 6
			scene.Pix[py*W+px] = uint8(max(0, min(255, v)))
		}
	}
	var jb bytes.Buffer
	if err := jpeg.Encode(&jb, scene, &jpeg.Options{Quality: 80}); err != nil {
		t.Fatal(err)
	}
	img, err := jpeg.Decode(&jb)
	if err != nil {
		t.Fatal(err)
	}
	switch m := img.(type) {
	case *image.YCbCr:
		return m
	case *image.Gray:
		out := image.NewYCbCr(m.Rect, image.YCbCrSubsampleRatio420)
		copy(out.Y, m.Pix)
		for i := range out.Cb {
			out.Cb[i], out.Cr[i] = 128, 128
		}
		return out
	}
	t.Fatalf("jpeg decoded to %T", img)
	return nil
}

func TestCamera1080pFrameDecodes(t *testing.T) {
	msg := testMessage(5000, 4)
	frames, err := Encode(msg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		scene := cameraScene(t, frames[i], uint64(i))
		texts, err := DecodeImage(scene)
		if err != nil {
			t.Fatalf("scene %d: %v", i, err)
		}
		if len(texts) != 1 || texts[0] != frames[i] {
			t.Fatalf("scene %d: wrong text", i)
		}
	}
}

func TestDecodeImageRejectsNonAlphanumeric(t *testing.T) {
	qrencode := testenv.RequireTool(t, "qrencode", "qrencode")
	path := filepath.Join(t.TempDir(), "byte.png")
	if out, err := exec.Command(qrencode, "-t", "PNG", "-s", "5", "-o", path, "hello, world — not a frame").CombinedOutput(); err != nil {
		t.Fatalf("qrencode: %v: %s", err, out)
	}
	f, _ := os.Open(path)
	defer f.Close()
	img, _, err := image.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeImage(img); err == nil || !strings.Contains(err.Error(), "not a coffre frame") {
		t.Fatalf("err = %v, want a not-a-frame error", err)
	}
	blank := image.NewGray(image.Rect(0, 0, 200, 200))
	for i := range blank.Pix {
		blank.Pix[i] = 255
	}
	blank.Set(5, 5, color.Black)
	if _, err := DecodeImage(blank); err == nil {
		t.Fatal("blank image decoded")
	}
}
