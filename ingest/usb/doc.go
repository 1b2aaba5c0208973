// Package usb reads and writes Coffre USB bundles: a FAT32 volume (a stick, an
// image file or a raw block device) or a plain directory whose root holds
// opaque upload envelopes and a MANIFEST naming each of them with its size
// and SHA-256. The format is specified in docs/formats/usb.md.
//
// The reading side never writes and never mounts: files and devices are opened
// O_RDONLY. The FAT32 boot sector is checked against the size of the device in
// the calling process; the filesystem itself is then parsed with
// github.com/diskfs/go-diskfs in a separate child process (the same executable
// re-executed, see RunChildIfRequested) that runs under memory, CPU-time,
// file-size and open-file limits and a wall-clock timeout. The child sends the
// directory listing and file contents back as a framed, checksummed stream that
// the parent parses strictly and verifies against the manifest. A hostile
// image costs the child, never the caller.
//
// Structural problems (a bad manifest, a missing, extra, oversized or badly
// named file, a size that differs from the manifest) refuse the whole bundle
// at Open. Contents are verified while they are read: a file whose SHA-256
// differs from the manifest ends with ErrHashMismatch instead of io.EOF, and
// the consumer must then discard it.
package usb
