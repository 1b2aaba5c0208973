package storage

import (
	"crypto/rand"
	"fmt"
)

// FormatOptions describe a new drive.
type FormatOptions struct {
	VaultID [16]byte
	Slot    int // 1..MaxSlots
	// WrappedRecordKey is the vault record key wrapped for the appliance
	// keystore (opaque here), for KeyEpoch.
	WrappedRecordKey []byte
	KeyEpoch         uint32
	// Size creates or extends an image file of this size; 0 uses the
	// device's (or existing file's) size.
	Size int64
	// Force allows formatting over an existing Coffre drive.
	Force bool
}

// DriveInfo is what a drive's superblock says about it.
type DriveInfo struct {
	Path        string
	UUID        [16]byte
	VaultID     [16]byte
	Slot        int
	Size        int64
	Used        int64  // bytes of log
	Records     uint64 // records durable at the last superblock write
	WrappedKeys []WrappedKey
	// WrappedRecordKey is the wrapped key of the newest epoch.
	WrappedRecordKey []byte
	Checkpoint       []byte // latest signed checkpoint note (may be empty)
	Seq              uint64
	Roster           [MaxSlots]*Member
	ReadOnly         bool
	// SuperblockErrors says what was wrong with the primary and backup
	// copies ("" when fine).
	SuperblockErrors [2]string
}

func infoOf(path string, s *superblock, errs [2]error, ro bool) DriveInfo {
	di := DriveInfo{Path: path, UUID: s.UUID, VaultID: s.VaultID, Slot: s.Slot, Size: s.Size,
		Used: s.LogEnd - DataStart, Records: s.TreeSize, WrappedKeys: s.Keys,
		Checkpoint: s.Checkpoint, Seq: s.Seq, Roster: s.Roster, ReadOnly: ro}
	di.WrappedRecordKey = s.Keys[len(s.Keys)-1].Key
	for i, e := range errs {
		if e != nil {
			di.SuperblockErrors[i] = e.Error()
		}
	}
	return di
}

// Format writes an empty Coffre drive: a zeroed log start and both
// superblock copies, synced.
func Format(path string, o FormatOptions) (DriveInfo, error) {
	return format(path, o, openDevice)
}

func format(path string, o FormatOptions, open opener) (DriveInfo, error) {
	if o.VaultID == ([16]byte{}) {
		return DriveInfo{}, fmt.Errorf("storage: format %s: vault id is zero", path)
	}
	if len(o.WrappedRecordKey) < 1 || len(o.WrappedRecordKey) > MaxWrappedKeySize {
		return DriveInfo{}, fmt.Errorf("storage: format %s: wrapped record key of %d bytes, want 1..%d", path, len(o.WrappedRecordKey), MaxWrappedKeySize)
	}
	if o.Slot < 1 || o.Slot > MaxSlots {
		return DriveInfo{}, fmt.Errorf("storage: format %s: slot %d not in 1..%d", path, o.Slot, MaxSlots)
	}
	if o.Size > 0 {
		if err := ensureImage(path, o.Size); err != nil {
			return DriveInfo{}, err
		}
	}
	dev, err := open(path, true)
	if err != nil {
		return DriveInfo{}, err
	}
	defer dev.Close()
	if dev.ReadOnly() {
		return DriveInfo{}, fmt.Errorf("storage: format %s: %w (check the write-protect switch or losetup -r)", path, ErrReadOnly)
	}
	size := dev.Size()
	if o.Size > 0 && o.Size < size {
		size = o.Size
	}
	size &^= BlockSize - 1
	if size < MinDriveSize {
		return DriveInfo{}, fmt.Errorf("storage: format %s: %d bytes is smaller than the minimum %d", path, size, MinDriveSize)
	}
	if old, _ := readSuperblock(dev); old != nil && !o.Force {
		return DriveInfo{}, fmt.Errorf("storage: format %s: already a coffre drive (vault %s, slot %d); pass Force to erase it", path, UUIDString(old.VaultID), old.Slot)
	}
	s := &superblock{Seq: 1, VaultID: o.VaultID, Slot: o.Slot, Size: size, DataEnd: backupOffset(size),
		LogEnd: DataStart, Keys: []WrappedKey{{Epoch: o.KeyEpoch, Key: append([]byte(nil), o.WrappedRecordKey...)}}}
	if _, err := rand.Read(s.UUID[:]); err != nil {
		return DriveInfo{}, err
	}
	s.Roster[o.Slot-1] = &Member{UUID: s.UUID}
	b, err := encodeSuperblock(s)
	if err != nil {
		return DriveInfo{}, err
	}
	buf := alignedBuf(SuperblockSize)
	zero := alignedBuf(BlockSize)
	if _, err := dev.WriteAt(zero, DataStart); err != nil {
		return DriveInfo{}, err
	}
	copy(buf, b)
	if _, err := dev.WriteAt(buf, backupOffset(size)); err != nil {
		return DriveInfo{}, err
	}
	if err := dev.Sync(); err != nil {
		return DriveInfo{}, err
	}
	if _, err := dev.WriteAt(buf, 0); err != nil {
		return DriveInfo{}, err
	}
	if err := dev.Sync(); err != nil {
		return DriveInfo{}, err
	}
	return infoOf(path, s, [2]error{}, false), nil
}

// ReadDriveInfo reads a drive's superblock read-only.
func ReadDriveInfo(path string) (DriveInfo, error) {
	dev, err := openDevice(path, false)
	if err != nil {
		return DriveInfo{}, err
	}
	defer dev.Close()
	s, errs := readSuperblock(dev)
	if s == nil {
		return DriveInfo{}, fmt.Errorf("storage: %s: no valid superblock (primary: %v; backup: %v): not a coffre drive or both copies damaged", path, errs[0], errs[1])
	}
	return infoOf(path, s, errs, true), nil
}
