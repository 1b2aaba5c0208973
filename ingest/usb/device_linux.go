package usb

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// deviceSize returns the size in bytes of an open image file or block device.
func deviceSize(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	switch {
	case fi.Mode().IsRegular():
		return fi.Size(), nil
	case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		var n uint64
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&n)))
		if errno != 0 {
			return 0, fmt.Errorf("BLKGETSIZE64: %v", errno)
		}
		if n > 1<<50 {
			return 0, fmt.Errorf("BLKGETSIZE64: implausible size %d", n)
		}
		return int64(n), nil
	default:
		return 0, fmt.Errorf("not a directory, image file or block device (mode %v)", fi.Mode())
	}
}
