package usb

import "time"

// Format limits: a bundle that exceeds any of them is refused. Limits passed to
// Open can only tighten them.
const (
	// MaxFiles is the largest number of envelopes in one bundle. go-diskfs
	// scans the root directory on every file open, so reading a bundle is
	// quadratic in its file count: 1024 files read in about 8 s.
	MaxFiles = 1024
	// MaxFileSize is the largest envelope, in bytes.
	MaxFileSize = 256 << 20
	// MaxTotalSize is the largest sum of envelope sizes in one bundle.
	MaxTotalSize = 4 << 30
	// MaxNameLen is the longest envelope name, in bytes.
	MaxNameLen = 64
	// MaxManifestSize bounds the MANIFEST file: header lines plus MaxFiles
	// file lines of at most 5+64+1+9+1+64+1 bytes (about 148 KiB).
	MaxManifestSize = 1 << 20
	// ManifestName is the manifest's file name in the bundle directory.
	ManifestName = "MANIFEST"
)

// Child stream limits (docs/formats/usb.md, "Child stream").
const (
	maxFramePayload = 1 << 20 // a 'D' frame carries at most 1 MiB
	maxWireName     = 255     // names on the wire (longer FAT names are cut; they are refused anyway)
	maxFailureText  = 512     // an 'X' frame's reason
	maxListEntries  = MaxFiles + 2
)

// Boot-sector limits.
const (
	minImageSize      = 64 * 512      // smaller than this cannot hold a FAT32 volume
	maxClusterBytes   = 64 << 10      // 64 KiB clusters at most
	maxFATBytes       = 64 << 20      // one FAT of at most 64 MiB (16 Mi clusters)
	fatSlackSectors   = 64            // a FAT may exceed its need by this many sectors
	minWriteImageSize = 36 << 20      // 512-byte clusters: ≥ 65525 clusters
	minBigImageSize   = 272 << 20     // 4 KiB clusters (go-diskfs above 260 MB): ≥ 65525 clusters
	smallClusterLimit = 260 * 1000000 // go-diskfs uses 512-byte clusters up to 260 MB (decimal)
)

// Default child limits; Limits fields left zero take these values.
const (
	DefaultChildMemory  = 512 << 20        // RLIMIT_DATA of the child, bytes
	DefaultChildCPU     = 20 * time.Second // CPU time of the child, plus CPUPerGiB per GiB read
	DefaultChildTimeout = 60 * time.Second // wall clock, plus one second per MinRate bytes read
	// CPUPerGiB is the CPU time budget added per GiB a child reads.
	CPUPerGiB = 30 * time.Second
	// MinRate is the slowest read rate (bytes per second) the wall-clock
	// timeout tolerates on top of DefaultChildTimeout.
	MinRate     = 1 << 20
	childNofile = 16 // open files of the child
	// childAddressSlack is added to ChildMemory for RLIMIT_AS: the Go
	// runtime reserves about a GiB of address space it never touches.
	childAddressSlack = 4 << 30
)

// Limits tightens the format limits for one Open. Zero fields take the format
// limit (or the default child limit).
type Limits struct {
	MaxFiles     int           // ≤ MaxFiles
	MaxFileSize  int64         // ≤ MaxFileSize
	MaxTotalSize int64         // ≤ MaxTotalSize
	ChildMemory  int64         // RLIMIT_DATA of the child; its Go heap target is half
	ChildCPU     time.Duration // RLIMIT_CPU base
	ChildTimeout time.Duration // wall-clock base
}

func (l Limits) withDefaults() Limits {
	if l.MaxFiles <= 0 || l.MaxFiles > MaxFiles {
		l.MaxFiles = MaxFiles
	}
	if l.MaxFileSize <= 0 || l.MaxFileSize > MaxFileSize {
		l.MaxFileSize = MaxFileSize
	}
	if l.MaxTotalSize <= 0 || l.MaxTotalSize > MaxTotalSize {
		l.MaxTotalSize = MaxTotalSize
	}
	if l.ChildMemory <= 0 {
		l.ChildMemory = DefaultChildMemory
	}
	if l.ChildCPU <= 0 {
		l.ChildCPU = DefaultChildCPU
	}
	if l.ChildTimeout <= 0 {
		l.ChildTimeout = DefaultChildTimeout
	}
	return l
}

// budget returns the CPU and wall-clock budget of a child that reads n bytes.
func (l Limits) budget(n int64) (cpu, wall time.Duration) {
	cpu = l.ChildCPU + time.Duration(float64(CPUPerGiB)*float64(n)/float64(1<<30))
	wall = l.ChildTimeout + time.Duration(n/MinRate)*time.Second
	return cpu, wall
}
