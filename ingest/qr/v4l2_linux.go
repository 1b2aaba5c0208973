//go:build linux && (amd64 || arm64)

package qr

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// V4L2 capture, kept small: YUYV at a requested size, memory-mapped
// streaming I/O (what UVC webcams support), the Y plane handed out. The
// structures below are the kernel's 64-bit layouts (videodev2.h).

type v4l2PixFormat struct {
	Width, Height, PixelFormat, Field, BytesPerLine, SizeImage, Colorspace, Priv uint32
	Flags, YcbcrEnc, Quantization, XferFunc                                      uint32
}

type v4l2Format struct {
	Type uint32
	_    uint32 // the union is 8-byte aligned
	Pix  v4l2PixFormat
	_    [200 - unsafe.Sizeof(v4l2PixFormat{})]byte
}

type v4l2RequestBuffers struct {
	Count, Type, Memory, Capabilities uint32
	Flags                             uint8
	_                                 [3]uint8
}

type v4l2Buffer struct {
	Index, Type, BytesUsed, Flags, Field uint32
	_                                    uint32
	Timestamp                            unix.Timeval
	Timecode                             [16]byte
	Sequence, Memory                     uint32
	Offset                               uint64 // union m: offset / userptr / planes / fd
	Length, Reserved2, RequestFD         uint32
	_                                    uint32
}

func iowr(nr, size uintptr) uint { return uint(3<<30 | size<<16 | 'V'<<8 | nr) }
func iow(nr, size uintptr) uint  { return uint(1<<30 | size<<16 | 'V'<<8 | nr) }

var (
	vidiocSFmt      = iowr(5, unsafe.Sizeof(v4l2Format{}))
	vidiocReqBufs   = iowr(8, unsafe.Sizeof(v4l2RequestBuffers{}))
	vidiocQueryBuf  = iowr(9, unsafe.Sizeof(v4l2Buffer{}))
	vidiocQBuf      = iowr(15, unsafe.Sizeof(v4l2Buffer{}))
	vidiocDQBuf     = iowr(17, unsafe.Sizeof(v4l2Buffer{}))
	vidiocStreamOn  = iow(18, 4)
	vidiocStreamOff = iow(19, 4)
)

const (
	v4l2BufTypeVideoCapture = 1
	v4l2MemoryMmap          = 1
	v4l2FieldNone           = 1
	v4l2PixFmtYUYV          = 'Y' | 'U'<<8 | 'Y'<<16 | 'V'<<24
	v4l2Buffers             = 4
)

func ioctl(fd int, req uint, arg unsafe.Pointer) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}

// Camera is an open V4L2 capture device yielding Y planes.
type Camera struct {
	dev     string
	fd      int
	w, h    int
	stride  int
	bufs    [][]byte
	y       []byte
	n       int
	timeout time.Duration
}

// OpenV4L2 opens a V4L2 device (e.g. /dev/video0) for YUYV capture at about
// w×h (the driver may pick another size; Camera reports it) and starts
// streaming. Not tested against a real device in CI (none is present); the
// YUYV conversion and the capture loop are tested with YUYVSource.
func OpenV4L2(dev string, w, h int) (*Camera, error) {
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("qr: camera %s: %w (is it plugged in, and are you in the video group?)", dev, err)
	}
	c := &Camera{dev: dev, fd: fd, timeout: 5 * time.Second}
	if err := c.setup(w, h); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Camera) setup(w, h int) error {
	f := v4l2Format{Type: v4l2BufTypeVideoCapture}
	f.Pix = v4l2PixFormat{Width: uint32(w), Height: uint32(h), PixelFormat: v4l2PixFmtYUYV, Field: v4l2FieldNone}
	if err := ioctl(c.fd, vidiocSFmt, unsafe.Pointer(&f)); err != nil {
		return fmt.Errorf("qr: camera %s: set YUYV %dx%d: %w", c.dev, w, h, err)
	}
	if f.Pix.PixelFormat != v4l2PixFmtYUYV {
		return fmt.Errorf("qr: camera %s does not capture YUYV; pick another camera or convert with ffmpeg", c.dev)
	}
	c.w, c.h, c.stride = int(f.Pix.Width), int(f.Pix.Height), int(f.Pix.BytesPerLine)
	if c.stride == 0 {
		c.stride = 2 * c.w
	}
	if c.w <= 0 || c.h <= 0 || c.w%2 != 0 || c.w*c.h > MaxImagePixels || c.stride < 2*c.w {
		return fmt.Errorf("qr: camera %s: driver chose %dx%d (stride %d)", c.dev, c.w, c.h, c.stride)
	}
	rb := v4l2RequestBuffers{Count: v4l2Buffers, Type: v4l2BufTypeVideoCapture, Memory: v4l2MemoryMmap}
	if err := ioctl(c.fd, vidiocReqBufs, unsafe.Pointer(&rb)); err != nil {
		return fmt.Errorf("qr: camera %s: request buffers: %w", c.dev, err)
	}
	if rb.Count < 1 {
		return fmt.Errorf("qr: camera %s: no capture buffers", c.dev)
	}
	for i := 0; i < int(rb.Count); i++ {
		b := v4l2Buffer{Index: uint32(i), Type: v4l2BufTypeVideoCapture, Memory: v4l2MemoryMmap}
		if err := ioctl(c.fd, vidiocQueryBuf, unsafe.Pointer(&b)); err != nil {
			return fmt.Errorf("qr: camera %s: query buffer %d: %w", c.dev, i, err)
		}
		m, err := unix.Mmap(c.fd, int64(b.Offset), int(b.Length), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return fmt.Errorf("qr: camera %s: map buffer %d: %w", c.dev, i, err)
		}
		c.bufs = append(c.bufs, m)
		if err := ioctl(c.fd, vidiocQBuf, unsafe.Pointer(&b)); err != nil {
			return fmt.Errorf("qr: camera %s: queue buffer %d: %w", c.dev, i, err)
		}
	}
	typ := uint32(v4l2BufTypeVideoCapture)
	if err := ioctl(c.fd, vidiocStreamOn, unsafe.Pointer(&typ)); err != nil {
		return fmt.Errorf("qr: camera %s: start streaming: %w", c.dev, err)
	}
	c.y = make([]byte, c.w*c.h)
	return nil
}

// Size returns the capture size the driver chose.
func (c *Camera) Size() (w, h int) { return c.w, c.h }

// Next waits for the next picture and returns its Y plane (valid until the
// next call).
func (c *Camera) Next() (LumaFrame, error) {
	for {
		fds := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(c.timeout/time.Millisecond))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return LumaFrame{}, fmt.Errorf("qr: camera %s: %w", c.dev, err)
		}
		if n == 0 {
			return LumaFrame{}, fmt.Errorf("qr: camera %s: no picture for %v; check the cable", c.dev, c.timeout)
		}
		b := v4l2Buffer{Type: v4l2BufTypeVideoCapture, Memory: v4l2MemoryMmap}
		if err := ioctl(c.fd, vidiocDQBuf, unsafe.Pointer(&b)); err != nil {
			if errors.Is(err, unix.EAGAIN) {
				continue
			}
			return LumaFrame{}, fmt.Errorf("qr: camera %s: dequeue: %w", c.dev, err)
		}
		var y []byte
		if int(b.Index) < len(c.bufs) {
			y, err = YUYVToY(c.y, c.bufs[b.Index], c.w, c.h, c.stride)
		} else {
			err = fmt.Errorf("qr: camera %s: driver returned buffer %d of %d", c.dev, b.Index, len(c.bufs))
		}
		if qerr := ioctl(c.fd, vidiocQBuf, unsafe.Pointer(&b)); qerr != nil && err == nil {
			err = fmt.Errorf("qr: camera %s: requeue: %w", c.dev, qerr)
		}
		if err != nil {
			return LumaFrame{}, err
		}
		c.n++
		return LumaFrame{Y: y, W: c.w, H: c.h, Stride: c.w, Name: fmt.Sprintf("%s picture %d", c.dev, c.n)}, nil
	}
}

// Close stops streaming and releases the device.
func (c *Camera) Close() error {
	if c.fd < 0 {
		return nil
	}
	typ := uint32(v4l2BufTypeVideoCapture)
	_ = ioctl(c.fd, vidiocStreamOff, unsafe.Pointer(&typ))
	for _, b := range c.bufs {
		_ = unix.Munmap(b)
	}
	c.bufs = nil
	err := unix.Close(c.fd)
	c.fd = -1
	return err
}

// ReadCamera captures from a V4L2 device until a message is rebuilt or ctx
// is done.
func ReadCamera(ctx context.Context, dev string, w, h int, l Limits, progress func(Progress)) ([]byte, error) {
	c, err := OpenV4L2(dev, w, h)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	msgs, err := Consume(ctx, c, NewDecoder(l), progress, 1)
	if err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, fmt.Errorf("qr: camera %s: stream ended before a message was rebuilt", dev)
	}
	return msgs[0].Data, nil
}
