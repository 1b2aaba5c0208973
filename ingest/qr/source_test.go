package qr

import (
	"bytes"
	"context"
	"encoding/base64"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"coffre/internal/testenv"

	"github.com/makiuchi-d/gozxing"
	zxqr "github.com/makiuchi-d/gozxing/qrcode"
)

func TestWriteFramesReadDir(t *testing.T) {
	msg := testMessage(6000, 11)
	o := Options{Version: 12, ECC: "L", Redundancy: 0.3}
	frames, err := Encode(msg, o)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := WriteFrames(dir, frames, o); err != nil {
		t.Fatal(err)
	}
	// Lose a few frames and drop in junk a camera might leave.
	os.Remove(filepath.Join(dir, FrameFileName(1)))
	os.Remove(filepath.Join(dir, FrameFileName(4)))
	os.WriteFile(filepath.Join(dir, "frame-00002.5.png"), []byte("not a png"), 0o644)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("ignored"), 0o644)
	var last Progress
	calls := 0
	got, err := ReadDir(dir, Limits{}, func(p Progress) { last = p; calls++ })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !bytes.Equal(got[0], msg) {
		t.Fatalf("got %d messages", len(got))
	}
	if !last.Done || last.Percent != 100 || calls < last.Needed-2 {
		t.Fatalf("last progress %+v after %d calls", last, calls)
	}
	// Too few frames: a clear error naming the directory and the progress.
	inc := t.TempDir()
	if err := WriteFrames(inc, frames[:3], o); err != nil {
		t.Fatal(err)
	}
	_, err = ReadDir(inc, Limits{}, nil)
	if err == nil || !strings.Contains(err.Error(), inc) || !strings.Contains(err.Error(), "3 of") {
		t.Fatalf("err = %v", err)
	}
}

func TestDirWatcherPicksUpNewFiles(t *testing.T) {
	msg := testMessage(3000, 12)
	o := Options{Version: 10, ECC: "M"}
	frames, _ := Encode(msg, o)
	dir := t.TempDir()
	d := NewDecoder(Limits{})
	w := NewDirWatcher(dir, d)
	half := len(frames) / 2
	if err := WriteFrames(dir, frames[:half], o); err != nil {
		t.Fatal(err)
	}
	// A half-written file is retried later, not lost.
	full, _ := RenderPNG(frames[half], o)
	partial := filepath.Join(dir, "frame-99999.png")
	os.WriteFile(partial, full[:len(full)/3], 0o644)
	msgs, err := w.Poll(nil)
	if err != nil || len(msgs) != 0 {
		t.Fatalf("%d messages, %v", len(msgs), err)
	}
	os.WriteFile(partial, full, 0o644)
	later := time.Now().Add(2 * time.Second)
	os.Chtimes(partial, later, later)
	for i, f := range frames[half+1:] {
		b, _ := RenderPNG(f, o)
		os.WriteFile(filepath.Join(dir, FrameFileName(half+1+i)), b, 0o644)
	}
	msgs, err = w.Poll(nil)
	if err != nil || len(msgs) != 1 || !bytes.Equal(msgs[0].Data, msg) {
		t.Fatalf("%d messages, %v, stats %+v", len(msgs), err, d.Stats())
	}
	// Watch stops with its context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Watch(ctx, dir, NewDecoder(Limits{}), time.Millisecond, nil, func(Message) {}); err == nil {
		t.Fatal("watch did not report its context")
	}
}

func TestHTMLPlayerSelfContained(t *testing.T) {
	msg := testMessage(2000, 13)
	o := Options{Version: 10}
	frames, _ := Encode(msg, o)
	var buf bytes.Buffer
	if err := WriteHTMLPlayer(&buf, frames, 5, o); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	for _, bad := range []string{"http:", "https:", "//cdn", "src=\"http", "<link", "import("} {
		if strings.Contains(page, bad) {
			t.Fatalf("page references the network (%q)", bad)
		}
	}
	if !strings.Contains(page, "default-src 'none'") {
		t.Fatal("no content security policy")
	}
	// Every embedded frame decodes to the frame text, in order.
	re := regexp.MustCompile(`data:image\\?/png;base64,([A-Za-z0-9+/=\\u]+)"`)
	ms := re.FindAllStringSubmatch(page, -1)
	if len(ms) != len(frames) {
		t.Fatalf("%d embedded frames, want %d", len(ms), len(frames))
	}
	unescape := strings.NewReplacer(`\u002b`, "+", `\u003d`, "=", `\/`, "/")
	for i, m := range ms {
		b, err := base64.StdEncoding.DecodeString(unescape.Replace(m[1]))
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		texts, err := DecodeImage(img)
		if err != nil || texts[0] != frames[i] {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	if err := WriteHTMLPlayer(&buf, frames, 0, o); err == nil {
		t.Fatal("0 fps accepted")
	}
}

func TestRenderFollowsOptions(t *testing.T) {
	frames, _ := Encode([]byte("geometry"), Options{Version: 10, ECC: "L", ModulePx: 5})
	b, err := RenderPNG(frames[0], Options{Version: 10, ECC: "L", ModulePx: 5})
	if err != nil {
		t.Fatal(err)
	}
	img, _ := png.Decode(bytes.NewReader(b))
	// Version 10 is 57 modules, plus a 4-module quiet zone on each side.
	if got, want := img.Bounds().Dx(), (57+2*QuietZoneModules)*5; got != want {
		t.Fatalf("width %d, want %d", got, want)
	}
	if _, err := RenderPNG(frames[0], Options{Version: 1}); err == nil {
		t.Fatal("frame rendered into a version too small for it")
	}
	if _, err := RenderPNG("lowercase", Options{}); err == nil {
		t.Fatal("non-alphanumeric text rendered")
	}
}

func TestReadVideo(t *testing.T) {
	ffmpeg := testenv.RequireTool(t, "ffmpeg", "ffmpeg")
	testenv.RequireTool(t, "ffprobe", "ffmpeg")
	msg := testMessage(4000, 14)
	o := Options{Version: 15, ECC: "M", Redundancy: 0.5}
	frames, _ := Encode(msg, o)
	dir := t.TempDir()
	if err := WriteFrames(dir, frames, o); err != nil {
		t.Fatal(err)
	}
	video := filepath.Join(dir, "transfer.mp4")
	cmd := exec.Command(ffmpeg, "-nostdin", "-v", "error", "-framerate", "5", "-i", filepath.Join(dir, "frame-%05d.png"),
		"-vf", "pad=1280:720:(ow-iw)/2:(oh-ih)/2:white", "-c:v", "libx264", "-crf", "20", "-pix_fmt", "yuv420p", video)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	var last Progress
	got, err := ReadVideo(context.Background(), video, Limits{}, func(p Progress) { last = p })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !bytes.Equal(got[0], msg) || !last.Done {
		t.Fatalf("got %d messages, last %+v", len(got), last)
	}
	if _, err := ReadVideo(context.Background(), filepath.Join(dir, "missing.mp4"), Limits{}, nil); err == nil || !strings.Contains(err.Error(), "missing.mp4") {
		t.Fatalf("err = %v", err)
	}
}

// The capture loop on a file-backed YUYV source (what a V4L2 camera yields).
func TestYUYVSourceLoop(t *testing.T) {
	msg := testMessage(2500, 15)
	o := Options{Version: 10, ECC: "L", ModulePx: 5}
	frames, _ := Encode(msg, o)
	const W, H = 640, 480
	var stream bytes.Buffer
	for _, f := range frames {
		b, _ := RenderPNG(f, o)
		img, _ := png.Decode(bytes.NewReader(b))
		y, w, h, s, _ := Luma(img)
		frame := make([]byte, 2*W*H)
		for i := 0; i < len(frame); i += 2 {
			frame[i], frame[i+1] = 200, 128 // gray background, neutral chroma
		}
		ox, oy := (W-w)/2, (H-h)/2
		for r := 0; r < h; r++ {
			for x := 0; x < w; x++ {
				frame[2*((oy+r)*W+ox+x)] = y[r*s+x]
			}
		}
		stream.Write(frame)
		stream.Write(frame) // the camera sees each frame twice
	}
	stream.Write(make([]byte, 100)) // a torn last picture ends the stream
	path := filepath.Join(t.TempDir(), "capture.yuyv")
	os.WriteFile(path, stream.Bytes(), 0o644)
	f, _ := os.Open(path)
	src, err := NewYUYVSource(f, W, H)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	d := NewDecoder(Limits{})
	msgs, err := Consume(context.Background(), src, d, nil, 1)
	if err != nil || len(msgs) != 1 || !bytes.Equal(msgs[0].Data, msg) {
		t.Fatalf("%d messages, %v, stats %+v", len(msgs), err, d.Stats())
	}
	if _, err := YUYVToY(nil, make([]byte, 10), 3, 2, 6); err == nil {
		t.Fatal("odd width accepted")
	}
	y, err := YUYVToY(nil, []byte{1, 9, 2, 9, 3, 9, 4, 9}, 2, 2, 5)
	if err == nil {
		t.Fatalf("short buffer accepted: %v", y)
	}
	y, err = YUYVToY(nil, []byte{1, 9, 2, 8, 0xaa, 3, 7, 4, 6}, 2, 2, 5)
	if err != nil || !bytes.Equal(y, []byte{1, 2, 3, 4}) {
		t.Fatalf("Y = %v, %v", y, err)
	}
}

// go-qrcode writes our frame texts in alphanumeric (and numeric) mode only:
// a byte-mode segment would show up in gozxing's BYTE_SEGMENTS metadata.
func TestRenderedFramesUseAlphanumericMode(t *testing.T) {
	frames, _ := Encode(testMessage(3000, 17), Options{})
	for i, f := range frames[:4] {
		b, _ := RenderPNG(f, Options{})
		img, _ := png.Decode(bytes.NewReader(b))
		bmp, err := gozxing.NewBinaryBitmapFromImage(img)
		if err != nil {
			t.Fatal(err)
		}
		res, err := zxqr.NewQRCodeReader().Decode(bmp, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := res.GetResultMetadata()[gozxing.ResultMetadataType_BYTE_SEGMENTS]; ok {
			t.Fatalf("frame %d was written with a byte-mode segment", i)
		}
		if res.GetText() != f {
			t.Fatalf("frame %d read back differently", i)
		}
	}
}
