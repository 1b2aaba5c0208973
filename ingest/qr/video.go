package qr

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
)

// VideoSource decodes a video file with ffmpeg (a child process writing raw
// 8-bit gray pictures to a pipe) and yields its pictures.
type VideoSource struct {
	cmd    *exec.Cmd
	out    io.ReadCloser
	stderr bytes.Buffer
	w, h   int
	buf    []byte
	n      int
	path   string
}

// OpenVideo starts ffmpeg on path. ffprobe and ffmpeg (Debian package
// ffmpeg) must be on PATH. fps > 0 makes ffmpeg resample the video to that
// many pictures per second (fewer pictures to scan); 0 keeps every picture.
func OpenVideo(ctx context.Context, path string, fps float64) (*VideoSource, error) {
	w, h, err := probeVideo(ctx, path)
	if err != nil {
		return nil, err
	}
	filters := []string{}
	if fps > 0 {
		filters = append(filters, "fps="+strconv.FormatFloat(fps, 'f', -1, 64))
	}
	if w > MaxVideoSide || h > MaxVideoSide {
		scale := float64(MaxVideoSide) / float64(max(w, h))
		w = int(float64(w)*scale) &^ 1
		h = int(float64(h)*scale) &^ 1
		filters = append(filters, fmt.Sprintf("scale=%d:%d", w, h))
	}
	args := []string{"-nostdin", "-v", "error", "-i", path}
	if len(filters) > 0 {
		args = append(args, "-vf", strings.Join(filters, ","))
	}
	args = append(args, "-f", "rawvideo", "-pix_fmt", "gray", "-")
	cmd := exec.CommandContext(ctx, "ffmpeg", args...)
	v := &VideoSource{cmd: cmd, w: w, h: h, buf: make([]byte, w*h), path: path}
	cmd.Stderr = &v.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("qr: video %s: %w", path, err)
	}
	v.out = out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("qr: video %s: start ffmpeg (install the ffmpeg package): %w", path, err)
	}
	return v, nil
}

func probeVideo(ctx context.Context, path string) (int, int, error) {
	cmd := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-select_streams", "v:0",
		"-show_entries", "stream=width,height", "-of", "csv=p=0:s=x", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, 0, fmt.Errorf("qr: video %s: ffprobe (install the ffmpeg package): %w: %s", path, err, strings.TrimSpace(firstLine(stderr.String())))
	}
	line := strings.TrimSpace(firstLine(string(out)))
	ws, hs, ok := strings.Cut(line, "x")
	w, err1 := strconv.Atoi(ws)
	h, err2 := strconv.Atoi(strings.TrimSpace(hs))
	if !ok || err1 != nil || err2 != nil || w <= 0 || h <= 0 || w > 16384 || h > 16384 {
		return 0, 0, fmt.Errorf("qr: video %s: no usable video stream (ffprobe said %q)", path, line)
	}
	return w, h, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// Next returns the next picture (valid until the next call) or io.EOF.
func (v *VideoSource) Next() (LumaFrame, error) {
	if _, err := io.ReadFull(v.out, v.buf); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			if werr := v.wait(); werr != nil {
				return LumaFrame{}, werr
			}
			return LumaFrame{}, io.EOF
		}
		return LumaFrame{}, fmt.Errorf("qr: video %s: %w", v.path, err)
	}
	v.n++
	return LumaFrame{Y: v.buf, W: v.w, H: v.h, Stride: v.w, Name: fmt.Sprintf("%s picture %d", v.path, v.n)}, nil
}

func (v *VideoSource) wait() error {
	if v.cmd == nil {
		return nil
	}
	err := v.cmd.Wait()
	v.cmd = nil
	if err != nil {
		return fmt.Errorf("qr: video %s: ffmpeg: %w: %s", v.path, err, firstLine(v.stderr.String()))
	}
	return nil
}

// Close stops ffmpeg.
func (v *VideoSource) Close() error {
	if v.cmd == nil {
		return nil
	}
	if v.cmd.Process != nil {
		_ = v.cmd.Process.Kill()
	}
	_, _ = io.Copy(io.Discard, bufio.NewReader(v.out))
	_ = v.cmd.Wait()
	v.cmd = nil
	return nil
}

// ReadVideo decodes the QR frames in a video file and returns the messages
// rebuilt; it fails, naming the file and the progress made, when none was.
func ReadVideo(ctx context.Context, path string, l Limits, progress func(Progress)) ([][]byte, error) {
	v, err := OpenVideo(ctx, path, 0)
	if err != nil {
		return nil, err
	}
	defer v.Close()
	d := NewDecoder(l)
	msgs, err := Consume(ctx, v, d, progress, 0)
	if err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, incompleteError("video "+path, v.n, d)
	}
	out := make([][]byte, len(msgs))
	for i, m := range msgs {
		out[i] = m.Data
	}
	return out, nil
}
