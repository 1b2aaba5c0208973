// Package loopdev attaches image files to Linux loop devices with the loop
// ioctls (no losetup needed), so the demo and tests run the drive store on
// real block devices when they run as root.
package loopdev

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Device is an attached loop device.
type Device struct {
	Path    string // /dev/loopN
	Backing string
}

// Attach binds the image file to a free loop device, read-only if asked.
func Attach(image string, readOnly bool) (*Device, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	img, err := os.OpenFile(image, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("loopdev: %w", err)
	}
	defer img.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("loopdev: %w (loop devices need root)", err)
	}
	defer ctl.Close()
	for attempt := 0; attempt < 10; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("loopdev: no free loop device: %w", err)
		}
		path := fmt.Sprintf("/dev/loop%d", n)
		dev, err := openDev(path, flag)
		if err != nil {
			return nil, err
		}
		err = unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_SET_FD, int(img.Fd()))
		if errors.Is(err, unix.EBUSY) {
			dev.Close()
			continue // raced with another attach
		}
		if err != nil {
			dev.Close()
			return nil, fmt.Errorf("loopdev: attaching %s to %s: %w", image, path, err)
		}
		info := unix.LoopInfo64{}
		copy(info.File_name[:], image)
		if readOnly {
			info.Flags |= unix.LO_FLAGS_READ_ONLY
		}
		if err := unix.IoctlLoopSetStatus64(int(dev.Fd()), &info); err != nil {
			unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_CLR_FD, 0)
			dev.Close()
			return nil, fmt.Errorf("loopdev: %s: %w", path, err)
		}
		dev.Close()
		return &Device{Path: path, Backing: image}, nil
	}
	return nil, errors.New("loopdev: every free loop device was taken by others")
}

// openDev opens a loop device node, waiting briefly for udev-less systems
// where the node appears a moment after LOOP_CTL_GET_FREE creates it.
func openDev(path string, flag int) (*os.File, error) {
	var err error
	for i := 0; i < 50; i++ {
		var f *os.File
		if f, err = os.OpenFile(path, flag, 0); err == nil {
			return f, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			break
		}
		if i == 0 {
			// No udev: make the node ourselves (block major 7).
			var n int
			fmt.Sscanf(path, "/dev/loop%d", &n)
			unix.Mknod(path, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(n))))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, fmt.Errorf("loopdev: %w", err)
}

// Detach releases the loop device.
func (d *Device) Detach() error {
	f, err := os.OpenFile(d.Path, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("loopdev: %w", err)
	}
	defer f.Close()
	for i := 0; i < 50; i++ {
		err = unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("loopdev: detaching %s: %w", d.Path, err)
	}
	return nil
}

// Available reports whether loop devices can be attached here (root and
// /dev/loop-control present).
func Available() bool {
	if os.Geteuid() != 0 {
		return false
	}
	_, err := os.Stat("/dev/loop-control")
	return err == nil
}
