package appliance

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"

	"coffre/storage"
)

// wrapAD binds a wrapped record key to its vault and epoch.
func wrapAD(vaultID [16]byte, epoch uint32) []byte {
	return fmt.Appendf(vaultID[:], "coffre record key epoch %d", epoch)
}

// wrapRecordKey seals the record key of an epoch under the keystore's wrap
// key (XChaCha20-Poly1305), for the drive superblocks: an appliance holding
// the keystore can read any drive of its vault from the drive alone.
func (a *Appliance) wrapRecordKey(epoch uint32) ([]byte, error) {
	wk := a.secrets[keyWrap]
	rk, err := a.recordKey(epoch)
	if err != nil {
		return nil, err
	}
	defer clear(rk)
	aead, err := chacha20poly1305.NewX(wk)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	vid, err := a.vaultID()
	if err != nil {
		return nil, err
	}
	return aead.Seal(nonce, nonce, rk, wrapAD(vid, epoch)), nil
}

func (a *Appliance) vaultID() ([16]byte, error) {
	var v [16]byte
	b, err := hex.DecodeString(a.ID.VaultID)
	if err != nil || len(b) != 16 {
		return v, fmt.Errorf("appliance: vault id %q in vault.json is not 32 hex digits", a.ID.VaultID)
	}
	copy(v[:], b)
	return v, nil
}

// FormatDrive writes a fresh superblock for this vault on path (an image
// file, created or extended to size when size > 0, or a block device) in
// slot 1–4. The drive is empty: it catches up when added to the vault.
func FormatDrive(state string, o OpenOptions, slot int, path string, size int64) (storage.DriveInfo, error) {
	o.NoDrives = true
	a, err := Open(state, o)
	if err != nil {
		return storage.DriveInfo{}, err
	}
	defer a.Close()
	return a.formatDrive(slot, path, size)
}

func (a *Appliance) formatDrive(slot int, path string, size int64) (storage.DriveInfo, error) {
	wrapped, err := a.wrapRecordKey(0)
	if err != nil {
		return storage.DriveInfo{}, err
	}
	vid, err := a.vaultID()
	if err != nil {
		return storage.DriveInfo{}, err
	}
	info, err := storage.Format(path, storage.FormatOptions{VaultID: vid, Slot: slot, WrappedRecordKey: wrapped, Size: size})
	if err != nil {
		return info, err
	}
	a.ID.Drives = append(a.ID.Drives, DriveRef{UUID: storage.UUIDString(info.UUID), Slot: slot, Path: path})
	return info, a.ID.Save(a.State)
}
