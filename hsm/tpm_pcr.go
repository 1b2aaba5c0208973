package hsm

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// PCRBank gives access to a TPM's PCRs without a keystore: provisioning
// measures the firmware (firmware.MeasureInto) before CreateTPM binds the
// keystore to the measured state.
type PCRBank struct {
	tpm        transport.TPMCloser
	measurePCR int
}

// OpenPCRBank opens the TPM at device (see TPMOptions.Device) for PCR
// reads and extends; measurePCR 0 means DefaultMeasurePCR.
func OpenPCRBank(device string, measurePCR int) (*PCRBank, error) {
	if measurePCR == 0 {
		measurePCR = DefaultMeasurePCR
	}
	if measurePCR < 0 || measurePCR > MaxPCR {
		return nil, fmt.Errorf("hsm: measure PCR %d out of range 0-%d", measurePCR, MaxPCR)
	}
	tp, err := openTransport(device)
	if err != nil {
		return nil, err
	}
	return &PCRBank{tpm: tp, measurePCR: measurePCR}, nil
}

// MeasurePCR is the PCR measurements go to.
func (b *PCRBank) MeasurePCR() int { return b.measurePCR }

// PCRs reads current PCR values (SHA-256 bank).
func (b *PCRBank) PCRs(pcrs ...int) (map[int][]byte, error) { return readPCRs(b.tpm, pcrs) }

// Extend extends a PCR with a 32-byte digest.
func (b *PCRBank) Extend(pcr int, digest []byte) error { return extendPCR(b.tpm, pcr, digest) }

// Close closes the TPM connection.
func (b *PCRBank) Close() error { return b.tpm.Close() }

func readPCRs(tp transport.TPM, pcrs []int) (map[int][]byte, error) {
	out := make(map[int][]byte, len(pcrs))
	for _, p := range pcrs { // one at a time: a TPM returns at most 8 per read
		if p < 0 || p > MaxPCR {
			return nil, fmt.Errorf("hsm: PCR %d out of range 0-%d", p, MaxPCR)
		}
		rsp, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
			Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(uint(p)),
		}}}}.Execute(tp)
		if err != nil {
			return nil, fmt.Errorf("hsm: TPM: read PCR %d: %w", p, err)
		}
		if len(rsp.PCRValues.Digests) != 1 || len(rsp.PCRValues.Digests[0].Buffer) != sha256.Size {
			return nil, fmt.Errorf("hsm: TPM: PCR %d has no SHA-256 bank: enable it in firmware setup", p)
		}
		out[p] = rsp.PCRValues.Digests[0].Buffer
	}
	return out, nil
}

func extendPCR(tp transport.TPM, pcr int, digest []byte) error {
	if pcr < 0 || pcr > MaxPCR || len(digest) != sha256.Size {
		return fmt.Errorf("hsm: extend PCR %d: need PCR 0-%d and a 32-byte digest", pcr, MaxPCR)
	}
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: digest}}},
	}.Execute(tp)
	if err != nil {
		return fmt.Errorf("hsm: TPM: extend PCR %d: %w", pcr, err)
	}
	return nil
}

// ErrUnmeasured is returned when a keystore would be bound to (or approve)
// a measure PCR still in its reset state: measure the firmware first.
var ErrUnmeasured = errors.New("hsm: the measure PCR is in its reset state: measure the firmware before creating or approving a TPM keystore")

func isReset(v []byte) bool { return bytes.Equal(v, make([]byte, sha256.Size)) }
