package hsm

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// NV index range of Coffre's monotonic counters (owner range; see
// docs/formats/keystore.md): CounterIndexBase | 20 bits of
// SHA-256(keystore id || name).
const CounterIndexBase = 0x01500000

func (t *TPM) counterIndex(name string) tpm2.TPMHandle {
	h := sha256.New()
	h.Write(t.id[:])
	h.Write([]byte(name))
	d := h.Sum(nil)
	return tpm2.TPMHandle(CounterIndexBase | uint32(d[0])<<12 | uint32(d[1])<<4 | uint32(d[2])>>4)
}

func counterAttrs() tpm2.TPMANV {
	return tpm2.TPMANV{AuthWrite: true, AuthRead: true, NoDA: true, NT: tpm2.TPMNTCounter}
}

// nvPublic returns the public area of the counter's NV index, or nil when
// it is not defined.
func (t *TPM) nvPublic(idx tpm2.TPMHandle) (*tpm2.TPMSNVPublic, *tpm2.TPM2BName, error) {
	rsp, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(t.tpm)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCHandle) {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("hsm: TPM: read NV index %#x: %w", uint32(idx), err)
	}
	pub, err := rsp.NVPublic.Contents()
	if err != nil {
		return nil, nil, err
	}
	want := counterAttrs()
	got := pub.Attributes
	if got.NT != want.NT || !got.AuthWrite || !got.AuthRead || pub.DataSize != 8 || pub.NameAlg != tpm2.TPMAlgSHA256 {
		return nil, nil, fmt.Errorf("hsm: TPM NV index %#x exists but is not a Coffre counter: free it with tpm2_nvundefine or pick another keystore", uint32(idx))
	}
	return pub, &rsp.NVName, nil
}

// Counter returns the current value of the named TPM NV counter (0 if it
// was never incremented). TPM counters are monotonic but not contiguous: a
// new counter starts above the highest value any counter on this TPM has
// held. Compare values; do not count on them.
func (t *TPM) Counter(name string) (uint64, error) {
	if err := checkName(name); err != nil {
		return 0, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return 0, ErrClosed
	}
	return t.counterLocked(name)
}

func (t *TPM) counterLocked(name string) (uint64, error) {
	idx := t.counterIndex(name)
	pub, nvName, err := t.nvPublic(idx)
	if err != nil || pub == nil {
		return 0, err
	}
	if !pub.Attributes.Written {
		return 0, nil
	}
	rsp, err := tpm2.NVRead{
		AuthHandle: tpm2.AuthHandle{Handle: idx, Name: *nvName, Auth: tpm2.PasswordAuth(nil)},
		NVIndex:    tpm2.NamedHandle{Handle: idx, Name: *nvName},
		Size:       8,
	}.Execute(t.tpm)
	if err != nil {
		return 0, fmt.Errorf("hsm: TPM: read counter %q (NV %#x): %w", name, uint32(idx), err)
	}
	if len(rsp.Data.Buffer) != 8 {
		return 0, fmt.Errorf("hsm: TPM: counter %q returned %d bytes", name, len(rsp.Data.Buffer))
	}
	return binary.BigEndian.Uint64(rsp.Data.Buffer), nil
}

// Increment increments the named counter (defining its NV index on first
// use, with empty owner authorisation) and returns the new value.
func (t *TPM) Increment(name string) (uint64, error) {
	if err := checkName(name); err != nil {
		return 0, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return 0, ErrClosed
	}
	return t.incrementLocked(name)
}

func (t *TPM) incrementLocked(name string) (uint64, error) {
	idx := t.counterIndex(name)
	_, nvName, err := t.nvPublic(idx)
	if err != nil {
		return 0, err
	}
	if nvName == nil {
		def := tpm2.NVDefineSpace{
			AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
				NVIndex:    idx,
				NameAlg:    tpm2.TPMAlgSHA256,
				Attributes: counterAttrs(),
				DataSize:   8,
			}),
		}
		if _, err := def.Execute(t.tpm); err != nil {
			return 0, fmt.Errorf("hsm: TPM: define counter %q (NV %#x): %w (is the owner hierarchy password-protected?)", name, uint32(idx), err)
		}
		if _, nvName, err = t.nvPublic(idx); err != nil {
			return 0, err
		}
	}
	if _, err := (tpm2.NVIncrement{
		AuthHandle: tpm2.AuthHandle{Handle: idx, Name: *nvName, Auth: tpm2.PasswordAuth(nil)},
		NVIndex:    tpm2.NamedHandle{Handle: idx, Name: *nvName},
	}).Execute(t.tpm); err != nil {
		return 0, fmt.Errorf("hsm: TPM: increment counter %q (NV %#x): %w", name, uint32(idx), err)
	}
	return t.counterLocked(name)
}
