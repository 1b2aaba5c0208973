package usb

import (
	"encoding/binary"
	"fmt"
	"io"
)

// volume is a FAT32 volume located and checked by checkVolume.
type volume struct {
	Start             int64 // byte offset of the volume's boot sector in the device
	Size              int64 // bytes: total sectors × bytes per sector
	BytesPerSector    int64
	SectorsPerCluster int64
	ReservedSectors   int64
	SectorsPerFAT     int64
	TotalSectors      int64
	Clusters          int64
	Partition         int // 0: the whole device; 1-4: MBR partition number
}

// checkVolume finds the FAT32 volume of a device of devSize bytes — the whole
// device, or the first MBR partition of type 0x0B or 0x0C — and checks its
// boot sector against the device. It reads at most two sectors.
func checkVolume(r io.ReaderAt, devSize int64) (volume, error) {
	if devSize < minImageSize {
		return volume{}, fmt.Errorf("%w: %d bytes is too small for a FAT32 volume", ErrNotFAT32, devSize)
	}
	s0 := make([]byte, 512)
	if _, err := r.ReadAt(s0, 0); err != nil {
		return volume{}, fmt.Errorf("%w: reading sector 0: %v", ErrNotFAT32, err)
	}
	if looksFAT32(s0) {
		return checkBootSector(s0, 0, devSize)
	}
	if s0[510] != 0x55 || s0[511] != 0xAA {
		return volume{}, fmt.Errorf("%w: sector 0 is neither a FAT32 boot sector nor a partition table", ErrNotFAT32)
	}
	for i := 0; i < 4; i++ {
		p := s0[446+16*i : 446+16*i+16]
		if p[0] != 0x00 && p[0] != 0x80 {
			return volume{}, fmt.Errorf("%w: partition table entry %d has status %#x", ErrNotFAT32, i+1, p[0])
		}
		if p[4] != 0x0B && p[4] != 0x0C {
			continue
		}
		lba := int64(binary.LittleEndian.Uint32(p[8:]))
		n := int64(binary.LittleEndian.Uint32(p[12:]))
		if lba == 0 || n == 0 || (lba+n)*512 > devSize {
			return volume{}, fmt.Errorf("%w: partition %d (sectors %d+%d) lies outside the %d-byte device", ErrBootSector, i+1, lba, n, devSize)
		}
		bs := make([]byte, 512)
		if _, err := r.ReadAt(bs, lba*512); err != nil {
			return volume{}, fmt.Errorf("%w: partition %d: reading its boot sector: %v", ErrBootSector, i+1, err)
		}
		if !looksFAT32(bs) {
			return volume{}, fmt.Errorf("%w: partition %d is typed FAT32 but holds no FAT32 boot sector", ErrNotFAT32, i+1)
		}
		v, err := checkBootSector(bs, lba*512, n*512)
		if err != nil {
			return volume{}, fmt.Errorf("partition %d: %w", i+1, err)
		}
		v.Partition = i + 1
		return v, nil
	}
	return volume{}, fmt.Errorf("%w: the partition table has no FAT32 partition (type 0x0b or 0x0c)", ErrNotFAT32)
}

// looksFAT32 reports whether a sector carries the FAT32 markers: a jump
// instruction, the "FAT32   " type string and the 0x55AA signature.
func looksFAT32(b []byte) bool {
	return (b[0] == 0xEB && b[2] == 0x90 || b[0] == 0xE9) &&
		string(b[82:90]) == "FAT32   " && b[510] == 0x55 && b[511] == 0xAA
}

// checkBootSector checks a FAT32 boot sector found at byte start of a region
// of avail bytes. Every field go-diskfs relies on must be sane and the whole
// volume must lie inside the region.
func checkBootSector(b []byte, start, avail int64) (volume, error) {
	bad := func(format string, a ...any) (volume, error) {
		return volume{}, fmt.Errorf("%w: "+format, append([]any{ErrBootSector}, a...)...)
	}
	if len(b) < 512 || !looksFAT32(b) {
		return volume{}, fmt.Errorf("%w: no FAT32 boot sector", ErrNotFAT32)
	}
	le16 := func(o int) int64 { return int64(binary.LittleEndian.Uint16(b[o:])) }
	le32 := func(o int) int64 { return int64(binary.LittleEndian.Uint32(b[o:])) }
	v := volume{
		Start:             start,
		BytesPerSector:    le16(11),
		SectorsPerCluster: int64(b[13]),
		ReservedSectors:   le16(14),
		TotalSectors:      le32(32),
		SectorsPerFAT:     le32(36),
	}
	if v.BytesPerSector != 512 && v.BytesPerSector != 4096 {
		return bad("%d bytes per sector (want 512 or 4096)", v.BytesPerSector)
	}
	spc := v.SectorsPerCluster
	if spc == 0 || spc&(spc-1) != 0 || spc*v.BytesPerSector > maxClusterBytes {
		return bad("%d sectors per cluster (want a power of two, clusters of at most %d bytes)", spc, maxClusterBytes)
	}
	fsinfo, backup := le16(48), le16(50)
	if v.ReservedSectors < 2 || fsinfo < 1 || fsinfo >= v.ReservedSectors || backup >= v.ReservedSectors {
		return bad("%d reserved sectors, FSInfo at %d, backup at %d", v.ReservedSectors, fsinfo, backup)
	}
	if b[16] != 2 {
		return bad("%d FATs (want 2)", b[16])
	}
	if le16(17) != 0 || le16(19) != 0 || le16(22) != 0 {
		return bad("FAT12/16 fields set (root entries %d, 16-bit total sectors %d, 16-bit sectors per FAT %d)", le16(17), le16(19), le16(22))
	}
	if le16(42) != 0 {
		return bad("FAT32 version %#x (want 0)", le16(42))
	}
	if rc := le32(44); rc != 2 {
		return bad("root directory at cluster %d (want 2)", rc)
	}
	if v.TotalSectors == 0 {
		return bad("zero total sectors")
	}
	v.Size = v.TotalSectors * v.BytesPerSector
	if v.Size > avail {
		return bad("volume claims %d sectors (%d bytes) but the device has %d bytes", v.TotalSectors, v.Size, avail)
	}
	if v.SectorsPerFAT == 0 || v.SectorsPerFAT*v.BytesPerSector > maxFATBytes {
		return bad("%d sectors per FAT (a FAT of at most %d bytes)", v.SectorsPerFAT, maxFATBytes)
	}
	data := v.TotalSectors - v.ReservedSectors - 2*v.SectorsPerFAT
	if data < spc {
		return bad("%d sectors per FAT leave no data area in %d sectors", v.SectorsPerFAT, v.TotalSectors)
	}
	v.Clusters = data / spc
	if v.Clusters > 0x0FFFFFF5-2 {
		return bad("%d clusters, more than FAT32 can address", v.Clusters)
	}
	entriesPerSector := v.BytesPerSector / 4
	need := (v.Clusters + 2 + entriesPerSector - 1) / entriesPerSector
	if v.SectorsPerFAT < need {
		return bad("%d sectors per FAT cannot map %d clusters (need %d)", v.SectorsPerFAT, v.Clusters, need)
	}
	if v.SectorsPerFAT > need+need/32+fatSlackSectors {
		return bad("%d sectors per FAT for %d clusters (need %d): forged", v.SectorsPerFAT, v.Clusters, need)
	}
	return v, nil
}
