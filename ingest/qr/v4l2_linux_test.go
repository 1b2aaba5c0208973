//go:build linux && (amd64 || arm64)

package qr

import (
	"strings"
	"testing"
	"unsafe"
)

// The ioctl numbers and structure sizes match videodev2.h on 64-bit Linux.
func TestV4L2ABI(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof v4l2_format", unsafe.Sizeof(v4l2Format{}), 208},
		{"sizeof v4l2_requestbuffers", unsafe.Sizeof(v4l2RequestBuffers{}), 20},
		{"sizeof v4l2_buffer", unsafe.Sizeof(v4l2Buffer{}), 88},
		{"offsetof v4l2_buffer.m", unsafe.Offsetof(v4l2Buffer{}.Offset), 64},
		{"offsetof v4l2_buffer.length", unsafe.Offsetof(v4l2Buffer{}.Length), 72},
		{"VIDIOC_S_FMT", uintptr(vidiocSFmt), 0xc0d05605},
		{"VIDIOC_REQBUFS", uintptr(vidiocReqBufs), 0xc0145608},
		{"VIDIOC_QUERYBUF", uintptr(vidiocQueryBuf), 0xc0585609},
		{"VIDIOC_QBUF", uintptr(vidiocQBuf), 0xc058560f},
		{"VIDIOC_DQBUF", uintptr(vidiocDQBuf), 0xc0585611},
		{"VIDIOC_STREAMON", uintptr(vidiocStreamOn), 0x40045612},
		{"VIDIOC_STREAMOFF", uintptr(vidiocStreamOff), 0x40045613},
		{"V4L2_PIX_FMT_YUYV", v4l2PixFmtYUYV, 0x56595559},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
}

// Opening something that is not a camera fails with a message naming it.
func TestOpenV4L2NotACamera(t *testing.T) {
	for _, dev := range []string{"/dev/null", "/nonexistent/video9"} {
		c, err := OpenV4L2(dev, 640, 480)
		if err == nil {
			c.Close()
			t.Fatalf("%s opened as a camera", dev)
		}
		if !strings.Contains(err.Error(), dev) {
			t.Fatalf("error %q does not name %s", err, dev)
		}
	}
}
