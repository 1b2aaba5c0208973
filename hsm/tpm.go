package hsm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/crypto/chacha20poly1305"
)

// TPMOptions configure the TPM backend.
type TPMOptions struct {
	// Device is the TPM character device (default /dev/tpmrm0) or, for
	// swtpm, the path of its unix server socket.
	Device string
	// PCRs is the SHA-256 PCR set the secrets are bound to (at create; the
	// header records it). It must include MeasurePCR. Default: {MeasurePCR}.
	PCRs []int
	// MeasurePCR is the PCR firmware.Measure extends and Cap caps. Default
	// DefaultMeasurePCR. Production must use a PCR that is not resettable
	// from the OS (0-15).
	MeasurePCR int
	// PIN is the optional operator PIN (PolicyAuthValue). Whether a PIN is
	// required is fixed at create and recorded in the header.
	PIN []byte
}

// DefaultMeasurePCR is the PCR Coffre measures its firmware into when the
// configuration names none.
const DefaultMeasurePCR = 15

// capDigest is what Cap extends into the measure PCR.
var capDigest = sha256.Sum256([]byte("coffre keystore v1 cap"))

// TPM is the TPM 2.0 keystore: secrets are keyed-hash objects sealed under
// the storage root key (ECC P-256, the TCG reference template, re-derived
// from the owner seed at every open) with the policy
//
//	PolicyAuthorize(signer, ref=keystore id) [then PolicyAuthValue when a PIN is set]
//
// and the appliance policy signer approves a PolicyPCR digest for each
// measured state it accepts. Sessions are salted to the SRK and encrypt the
// secret parameter on the bus. The sealed blobs live in the keystore
// directory (docs/formats/keystore.md).
type TPM struct {
	mu      sync.Mutex
	dir     string
	tpm     transport.TPMCloser
	id      [idLen]byte
	hdr     tpmBody
	pin     []byte
	srk     tpm2.TPMHandle
	srkName tpm2.TPM2BName
	srkPub  tpm2.TPMTPublic
	signer  *ecdsa.PrivateKey // held after Cap (for updates), else nil
	closed  bool
}

var _ Keystore = (*TPM)(nil)
var _ Counters = (*TPM)(nil)

// tpmBody is the TPM keystore header body.
type tpmBody struct {
	measurePCR uint8
	pcrMask    uint32 // bit i = PCR i, SHA-256 bank
	flags      uint8  // bit 0: PIN required
	signerX    [32]byte
	signerY    [32]byte
	srkName    [34]byte // TPM2B_NAME contents of the SRK: alg (0x000B) || SHA-256
}

const tpmBodyLen = 1 + 4 + 1 + 32 + 32 + 34
const flagPIN = 1

func (b *tpmBody) marshal() []byte {
	out := make([]byte, 0, tpmBodyLen)
	out = append(out, b.measurePCR)
	out = binary.BigEndian.AppendUint32(out, b.pcrMask)
	out = append(out, b.flags)
	out = append(out, b.signerX[:]...)
	out = append(out, b.signerY[:]...)
	return append(out, b.srkName[:]...)
}

func parseTPMBody(p []byte) (*tpmBody, error) {
	if len(p) != tpmBodyLen {
		return nil, fmt.Errorf("hsm: TPM keystore header body is %d bytes, want %d", len(p), tpmBodyLen)
	}
	b := &tpmBody{measurePCR: p[0], pcrMask: binary.BigEndian.Uint32(p[1:]), flags: p[5]}
	copy(b.signerX[:], p[6:])
	copy(b.signerY[:], p[38:])
	copy(b.srkName[:], p[70:])
	if b.measurePCR > MaxPCR || b.pcrMask == 0 || b.pcrMask>>(MaxPCR+1) != 0 || b.pcrMask&(1<<b.measurePCR) == 0 {
		return nil, fmt.Errorf("hsm: TPM keystore header has an invalid PCR selection")
	}
	if b.flags&^flagPIN != 0 {
		return nil, fmt.Errorf("hsm: TPM keystore header has unknown flags %#x", b.flags)
	}
	if _, err := b.signerPub(); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *tpmBody) pcrs() []uint {
	var out []uint
	for i := uint(0); i <= MaxPCR; i++ {
		if b.pcrMask&(1<<i) != 0 {
			out = append(out, i)
		}
	}
	return out
}

func (b *tpmBody) signerPub() (*ecdsa.PublicKey, error) {
	raw := append([]byte{4}, b.signerX[:]...)
	raw = append(raw, b.signerY[:]...)
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	if err != nil {
		return nil, fmt.Errorf("hsm: TPM keystore header: policy signer is not a P-256 point")
	}
	return pub, nil
}

// signerTPMPublic is the TPMT_PUBLIC of the policy signer as loaded with
// TPM2_LoadExternal; its Name is what PolicyAuthorize binds to.
func (b *tpmBody) signerTPMPublic() tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			SignEncrypt:  true,
			UserWithAuth: true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			CurveID: tpm2.TPMECCNistP256,
			Scheme: tpm2.TPMTECCScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: bytes.Clone(b.signerX[:])},
			Y: tpm2.TPM2BECCParameter{Buffer: bytes.Clone(b.signerY[:])},
		}),
	}
}

// sealPolicy is the authPolicy of every sealed object.
func (t *TPM) sealPolicy() ([]byte, error) {
	pub := t.hdr.signerTPMPublic()
	name, err := tpm2.ObjectName(&pub)
	if err != nil {
		return nil, err
	}
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, err
	}
	if err := (tpm2.PolicyAuthorize{KeySign: *name, PolicyRef: tpm2.TPM2BDigest{Buffer: t.id[:]}}).Update(calc); err != nil {
		return nil, err
	}
	if t.hdr.flags&flagPIN != 0 {
		if err := (tpm2.PolicyAuthValue{}).Update(calc); err != nil {
			return nil, err
		}
	}
	return calc.Hash().Digest, nil
}

// approvedPolicy is the policy an approval signs, from a zero policy:
// PolicyPCR(pcrDigest) then PolicyNV(epoch counter <= maxEpoch).
func (t *TPM) approvedPolicy(pcrDigest []byte, maxEpoch uint64, epochName tpm2.TPM2BName) ([]byte, error) {
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, err
	}
	if err := (tpm2.PolicyPCR{PcrDigest: tpm2.TPM2BDigest{Buffer: pcrDigest}, Pcrs: t.selection()}).Update(calc); err != nil {
		return nil, err
	}
	if err := t.epochPolicyNV(0, maxEpoch, epochName).Update(calc); err != nil {
		return nil, err
	}
	return calc.Hash().Digest, nil
}

// epochPolicyNV is TPM2_PolicyNV(epoch counter, operandB = maxEpoch as 8
// big-endian bytes, offset 0, TPM_EO_UNSIGNED_LE): the approval holds only
// while the epoch counter has not moved past maxEpoch.
func (t *TPM) epochPolicyNV(session tpm2.TPMISHPolicy, maxEpoch uint64, epochName tpm2.TPM2BName) tpm2.PolicyNV {
	idx := t.counterIndex(epochCounter)
	return tpm2.PolicyNV{
		AuthHandle:    tpm2.AuthHandle{Handle: idx, Name: epochName, Auth: tpm2.PasswordAuth(nil)},
		NVIndex:       tpm2.NamedHandle{Handle: idx, Name: epochName},
		PolicySession: session,
		OperandB:      tpm2.TPM2BOperand{Buffer: binary.BigEndian.AppendUint64(nil, maxEpoch)},
		Offset:        0,
		Operation:     tpm2.TPMEOUnsignedLE,
	}
}

// epochCounter is the internal counter that retires approvals: an approval
// made for generation e holds while the counter is <= e.
const epochCounter = "_epoch"

// epoch returns the epoch counter's value and NV name, defining and
// incrementing it first if it was never written.
func (t *TPM) epoch() (uint64, tpm2.TPM2BName, error) {
	v, err := t.counterLocked(epochCounter)
	if err != nil {
		return 0, tpm2.TPM2BName{}, err
	}
	if v == 0 {
		if v, err = t.incrementLocked(epochCounter); err != nil {
			return 0, tpm2.TPM2BName{}, err
		}
	}
	_, name, err := t.nvPublic(t.counterIndex(epochCounter))
	if err != nil {
		return 0, tpm2.TPM2BName{}, err
	}
	if name == nil {
		return 0, tpm2.TPM2BName{}, fmt.Errorf("hsm: TPM: epoch counter vanished")
	}
	return v, *name, nil
}

func (t *TPM) selection() tpm2.TPMLPCRSelection {
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      tpm2.TPMAlgSHA256,
		PCRSelect: tpm2.PCClientCompatible.PCRs(t.hdr.pcrs()...),
	}}}
}

// CreateTPM creates a TPM keystore in dir, bound to the TPM's current
// values of the configured PCRs (measure first: see firmware.Measure).
func CreateTPM(dir string, o TPMOptions) (*TPM, error) {
	if o.MeasurePCR == 0 {
		o.MeasurePCR = DefaultMeasurePCR
	}
	if len(o.PCRs) == 0 {
		o.PCRs = []int{o.MeasurePCR}
	}
	var body tpmBody
	if o.MeasurePCR < 0 || o.MeasurePCR > MaxPCR {
		return nil, fmt.Errorf("hsm: measure PCR %d out of range 0-%d", o.MeasurePCR, MaxPCR)
	}
	body.measurePCR = uint8(o.MeasurePCR)
	for _, p := range o.PCRs {
		if p < 0 || p > MaxPCR {
			return nil, fmt.Errorf("hsm: PCR %d out of range 0-%d", p, MaxPCR)
		}
		body.pcrMask |= 1 << p
	}
	if body.pcrMask&(1<<body.measurePCR) == 0 {
		return nil, fmt.Errorf("hsm: the PCR set %v must include the measure PCR %d", o.PCRs, o.MeasurePCR)
	}
	if len(o.PIN) > MaxPassphraseLen {
		return nil, fmt.Errorf("hsm: PIN longer than %d bytes", MaxPassphraseLen)
	}
	if len(o.PIN) > 0 {
		body.flags |= flagPIN
	}
	signer, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	if err := PairwiseECDSA(signer); err != nil {
		return nil, err
	}
	signer.X.FillBytes(body.signerX[:])
	signer.Y.FillBytes(body.signerY[:])

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("hsm: create keystore directory %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, headerFile)); err == nil {
		return nil, fmt.Errorf("hsm: %s already holds a keystore: open it, or choose an empty directory", dir)
	}
	t := &TPM{dir: dir, hdr: body, pin: bytes.Clone(o.PIN)}
	if _, err := rand.Read(t.id[:]); err != nil {
		return nil, err
	}
	if err := t.connect(o.Device); err != nil {
		return nil, err
	}
	copy(t.hdr.srkName[:], t.srkName.Buffer)
	// Approve the current measured state and seal the signer itself.
	if err := t.approveCurrent(signer); err != nil {
		t.Close()
		return nil, err
	}
	d, err := ecdsaPrivBytes(signer)
	if err != nil {
		t.Close()
		return nil, err
	}
	if err := t.seal(signerName, d); err != nil {
		t.Close()
		return nil, err
	}
	h := &header{backend: backendCodeTPM, id: t.id, body: t.hdr.marshal()}
	if err := writeNew(dir, headerFile, h.marshal()); err != nil {
		t.Close()
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("hsm: %s already holds a keystore", dir)
		}
		return nil, err
	}
	return t, nil
}

// signerName is the internal secret holding the policy signer's private key;
// it is not a valid user name, so Names never lists it.
const signerName = "_signer"

// OpenTPM opens the TPM keystore in dir. A PIN in o is required when the
// keystore was created with one. PCR selection options in o are ignored:
// the header's apply.
func OpenTPM(dir string, o TPMOptions) (*TPM, error) {
	hb, err := readBounded(filepath.Join(dir, headerFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w %s: create one with `coffre init`", ErrNoKeystore, dir)
		}
		return nil, err
	}
	h, err := parseHeader(hb)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, filepath.Join(dir, headerFile))
	}
	if h.backend != backendCodeTPM {
		return nil, fmt.Errorf("hsm: keystore %s is a software keystore, not a TPM one", dir)
	}
	body, err := parseTPMBody(h.body)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, filepath.Join(dir, headerFile))
	}
	if body.flags&flagPIN != 0 && len(o.PIN) == 0 {
		return nil, fmt.Errorf("hsm: keystore %s requires the operator PIN", dir)
	}
	if len(o.PIN) > MaxPassphraseLen {
		return nil, ErrWrongPIN
	}
	t := &TPM{dir: dir, id: h.id, hdr: *body, pin: bytes.Clone(o.PIN)}
	if err := t.connect(o.Device); err != nil {
		return nil, err
	}
	if !bytes.Equal(t.srkName.Buffer, t.hdr.srkName[:]) {
		t.Close()
		return nil, fmt.Errorf("hsm: keystore %s was created on another TPM, or this TPM was cleared: restore the keys through the bailiff recovery ceremony", dir)
	}
	return t, nil
}

// connect opens the transport and creates the SRK.
func (t *TPM) connect(device string) error {
	tp, err := openTransport(device)
	if err != nil {
		return err
	}
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(tp)
	if err != nil {
		tp.Close()
		return fmt.Errorf("hsm: TPM %s: create storage root key: %w", device, err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		tp.Close()
		return fmt.Errorf("hsm: TPM %s: storage root key: %w", device, err)
	}
	t.tpm, t.srk, t.srkName, t.srkPub = tp, rsp.ObjectHandle, rsp.Name, *pub
	return nil
}

// Backend returns "tpm".
func (t *TPM) Backend() string { return BackendTPM }

// Dir returns the keystore directory.
func (t *TPM) Dir() string { return t.dir }

// MeasurePCR is the PCR firmware measurements go to.
func (t *TPM) MeasurePCR() int { return int(t.hdr.measurePCR) }

// PCRSelection is the PCR set (SHA-256 bank) the secrets are bound to.
func (t *TPM) PCRSelection() []int {
	var out []int
	for _, p := range t.hdr.pcrs() {
		out = append(out, int(p))
	}
	return out
}

// srkAuth authorises use of the SRK through an HMAC session salted to the
// SRK whose first command parameter is AES-CFB encrypted.
func (t *TPM) srkAuth() tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: t.srk, Name: t.srkName, Auth: tpm2.HMAC(tpm2.TPMAlgSHA256, 16,
		tpm2.Auth(nil), tpm2.Salted(t.srk, t.srkPub), tpm2.AESEncryption(128, tpm2.EncryptIn))}
}

func (t *TPM) flush(h tpm2.TPMHandle) {
	tpm2.FlushContext{FlushHandle: h}.Execute(t.tpm)
}

// Seal stores a new secret sealed by the TPM.
func (t *TPM) Seal(name string, secret []byte) error {
	if err := checkName(name); err != nil {
		return err
	}
	if len(secret) == 0 || len(secret) > MaxSecretLen {
		return fmt.Errorf("hsm: secret %q is %d bytes: must be 1 to %d", name, len(secret), MaxSecretLen)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	names, err := listNames(t.dir, secretSuffix)
	if err != nil {
		return err
	}
	if len(names) >= MaxSecrets {
		return fmt.Errorf("hsm: keystore %s already holds %d secrets (the limit): delete unused ones", t.dir, MaxSecrets)
	}
	if _, err := os.Stat(filepath.Join(t.dir, name+secretSuffix)); err == nil {
		return fmt.Errorf("%w: %q in %s", ErrExists, name, t.dir)
	}
	return t.seal(name, secret)
}

// seal creates the TPM object and publishes its blob exclusively. The secret
// travels encrypted (session salted to the SRK, AES-CFB parameter encryption).
func (t *TPM) seal(name string, secret []byte) error {
	policy, err := t.sealPolicy()
	if err != nil {
		return err
	}
	// The TPM seals a fresh 32-byte key; the secret is encrypted under it
	// (sealed data objects hold at most 128 bytes).
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	defer clear(key)
	env, err := sealEnvelope(key, name, t.id, secret)
	if err != nil {
		return err
	}
	rsp, err := tpm2.Create{
		ParentHandle: t.srkAuth(),
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			UserAuth: tpm2.TPM2BAuth{Buffer: t.pin},
			Data:     tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: key}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type:    tpm2.TPMAlgKeyedHash,
			NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{
				FixedTPM:    true,
				FixedParent: true,
				NoDA:        t.hdr.flags&flagPIN == 0,
			},
			AuthPolicy: tpm2.TPM2BDigest{Buffer: policy},
		}),
	}.Execute(t.tpm)
	if err != nil {
		return fmt.Errorf("hsm: TPM: seal %q: %w", name, err)
	}
	body := tpm2.Marshal(rsp.OutPublic)
	body = append(body, tpm2.Marshal(rsp.OutPrivate)...)
	body = append(body, env...)
	f := &secretFile{backend: backendCodeTPM, body: body}
	if err := writeNew(t.dir, name+secretSuffix, f.marshal()); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %q in %s", ErrExists, name, t.dir)
		}
		return err
	}
	return nil
}

// Unseal returns the secret. It fails with ErrPolicy when the current PCR
// values have no approved policy (changed binary, capped PCR) and with
// ErrWrongPIN on a wrong PIN.
func (t *TPM) Unseal(name string) ([]byte, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.unseal(name)
}

func (t *TPM) unseal(name string) ([]byte, error) {
	if t.closed {
		return nil, ErrClosed
	}
	path := filepath.Join(t.dir, name+secretSuffix)
	b, err := readBounded(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %q in %s", ErrNotFound, name, t.dir)
		}
		return nil, err
	}
	sf, err := parseSecretFile(b)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	if sf.backend != backendCodeTPM {
		return nil, fmt.Errorf("hsm: %s is not a TPM sealed object", path)
	}
	pub, priv, rest, err := parseTPMBlob(sf.body)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	key, err := t.unsealObject(path, pub, priv)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return openEnvelope(path, name, t.id, key, rest)
}

func (t *TPM) unsealObject(path string, pub *tpm2.TPM2BPublic, priv *tpm2.TPM2BPrivate) ([]byte, error) {
	pcrDigest, err := t.currentPCRDigest()
	if err != nil {
		return nil, err
	}
	ap, err := t.readApproval(pcrDigest)
	if err != nil {
		return nil, err
	}
	signerPub := t.hdr.signerTPMPublic()
	ext, err := tpm2.LoadExternal{InPublic: tpm2.New2B(signerPub), Hierarchy: tpm2.TPMRHOwner}.Execute(t.tpm)
	if err != nil {
		return nil, fmt.Errorf("hsm: TPM: load policy signer: %w", err)
	}
	defer t.flush(ext.ObjectHandle)
	_, epochName, err := t.nvPublic(t.counterIndex(epochCounter))
	if err != nil {
		return nil, err
	}
	if epochName == nil {
		return nil, fmt.Errorf("%w: the keystore's epoch counter is missing from this TPM", ErrPolicy)
	}
	approved, err := t.approvedPolicy(pcrDigest, ap.maxEpoch, *epochName)
	if err != nil {
		return nil, err
	}
	aHash := approvalHash(approved, t.id[:])
	ver, err := tpm2.VerifySignature{
		KeyHandle: tpm2.NamedHandle{Handle: ext.ObjectHandle, Name: ext.Name},
		Digest:    tpm2.TPM2BDigest{Buffer: aHash},
		Signature: ecdsaTPMSignature(ap.r[:], ap.s[:]),
	}.Execute(t.tpm)
	if err != nil {
		return nil, fmt.Errorf("%w: approval for the current measurements does not verify: %v", ErrPolicy, err)
	}
	obj, err := tpm2.Load{ParentHandle: t.srkAuth(), InPrivate: *priv, InPublic: *pub}.Execute(t.tpm)
	if err != nil {
		return nil, fmt.Errorf("hsm: TPM: load %s: %w (was it sealed on this TPM?)", path, err)
	}
	defer t.flush(obj.ObjectHandle)
	pin := t.pin
	callback := func(tp transport.TPM, handle tpm2.TPMISHPolicy, _ tpm2.TPM2BNonce) error {
		if _, err := (tpm2.PolicyPCR{PolicySession: handle, PcrDigest: tpm2.TPM2BDigest{Buffer: pcrDigest}, Pcrs: t.selection()}).Execute(tp); err != nil {
			return fmt.Errorf("%w: PCRs changed during unsealing: %v", ErrPolicy, err)
		}
		if _, err := t.epochPolicyNV(handle, ap.maxEpoch, *epochName).Execute(tp); err != nil {
			return fmt.Errorf("%w: this approval was retired by a later update (epoch counter check: %v)", ErrPolicy, err)
		}
		if _, err := (tpm2.PolicyAuthorize{
			PolicySession:  handle,
			ApprovedPolicy: tpm2.TPM2BDigest{Buffer: approved},
			PolicyRef:      tpm2.TPM2BDigest{Buffer: t.id[:]},
			KeySign:        ext.Name,
			CheckTicket:    ver.Validation,
		}).Execute(tp); err != nil {
			return fmt.Errorf("%w: %v", ErrPolicy, err)
		}
		if t.hdr.flags&flagPIN != 0 {
			if _, err := (tpm2.PolicyAuthValue{PolicySession: handle}).Execute(tp); err != nil {
				return err
			}
		}
		return nil
	}
	rsp, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{
		Handle: obj.ObjectHandle,
		Name:   obj.Name,
		Auth: tpm2.Policy(tpm2.TPMAlgSHA256, 16, callback,
			tpm2.Auth(pin), tpm2.Salted(t.srk, t.srkPub), tpm2.AESEncryption(128, tpm2.EncryptOut)),
	}}.Execute(t.tpm)
	if err != nil {
		switch {
		case errors.Is(err, ErrPolicy):
			return nil, fmt.Errorf("hsm: unseal %s: %w", path, err)
		case errors.Is(err, tpm2.TPMRCAuthFail), errors.Is(err, tpm2.TPMRCBadAuth):
			return nil, fmt.Errorf("hsm: unseal %s: %w", path, ErrWrongPIN)
		case errors.Is(err, tpm2.TPMRCLockout):
			return nil, fmt.Errorf("hsm: unseal %s: TPM is in dictionary-attack lockout: wait, or have the owner reset it", path)
		case errors.Is(err, tpm2.TPMRCPolicyFail), errors.Is(err, tpm2.TPMRCValue):
			return nil, fmt.Errorf("hsm: unseal %s: %w", path, ErrPolicy)
		}
		return nil, fmt.Errorf("hsm: TPM: unseal %s: %w", path, err)
	}
	return rsp.OutData.Buffer, nil
}

// Has reports whether the secret exists.
func (t *TPM) Has(name string) bool {
	if !ValidName(name) {
		return false
	}
	fi, err := os.Stat(filepath.Join(t.dir, name+secretSuffix))
	return err == nil && fi.Mode().IsRegular()
}

// Names lists the secrets, sorted.
func (t *TPM) Names() ([]string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	return listNames(t.dir, secretSuffix)
}

// Delete removes a secret's sealed blob.
func (t *TPM) Delete(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	if err := removeSynced(t.dir, name+secretSuffix); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %q in %s", ErrNotFound, name, t.dir)
		}
		return fmt.Errorf("hsm: delete %q in %s: %w", name, t.dir, err)
	}
	return nil
}

// Close flushes the SRK and closes the TPM connection.
func (t *TPM) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	clear(t.pin)
	t.signer = nil
	if t.tpm == nil {
		return nil
	}
	t.flush(t.srk)
	return t.tpm.Close()
}

// PCRs reads the current SHA-256 values of the given PCRs.
func (t *TPM) PCRs(pcrs ...int) (map[int][]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	return t.readPCRs(pcrs)
}

func (t *TPM) readPCRs(pcrs []int) (map[int][]byte, error) { return readPCRs(t.tpm, pcrs) }

func (t *TPM) currentPCRDigest() ([]byte, error) {
	vals, err := t.readPCRs(t.PCRSelection())
	if err != nil {
		return nil, err
	}
	return t.pcrCompositeDigest(vals)
}

// pcrCompositeDigest is SHA-256 of the selected PCR values in ascending PCR
// order (the pcrDigest of TPM2_PolicyPCR).
func (t *TPM) pcrCompositeDigest(vals map[int][]byte) ([]byte, error) {
	h := sha256.New()
	for _, p := range t.PCRSelection() {
		v, ok := vals[p]
		if !ok || len(v) != sha256.Size {
			return nil, fmt.Errorf("hsm: expected value for PCR %d missing or not 32 bytes", p)
		}
		h.Write(v)
	}
	return h.Sum(nil), nil
}

// Extend extends a PCR of the SHA-256 bank with a 32-byte digest.
func (t *TPM) Extend(pcr int, digest []byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	return extendPCR(t.tpm, pcr, digest)
}

// ExtendValue is the PCR value after extending old with digest:
// SHA-256(old || digest).
func ExtendValue(old, digest []byte) []byte {
	h := sha256.New()
	h.Write(old)
	h.Write(digest)
	return h.Sum(nil)
}

// Cap ends the unsealing window: it keeps the policy signer in memory (so an
// approved update can still be authorised while running), then extends the
// measure PCR so that no secret can be unsealed until the next boot.
func (t *TPM) Cap() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return ErrClosed
	}
	if t.signer == nil {
		if s, err := t.loadSigner(); err == nil {
			t.signer = s
		}
	}
	t.mu.Unlock()
	return t.Extend(int(t.hdr.measurePCR), capDigest[:])
}

func (t *TPM) loadSigner() (*ecdsa.PrivateKey, error) {
	d, err := t.unseal(signerName)
	if err != nil {
		return nil, err
	}
	defer clear(d)
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
	if err != nil {
		return nil, fmt.Errorf("hsm: policy signer in %s is damaged", t.dir)
	}
	pub, _ := t.hdr.signerPub()
	if !k.PublicKey.Equal(pub) {
		return nil, fmt.Errorf("hsm: policy signer in %s does not match the header", t.dir)
	}
	return k, nil
}

// Approve moves the keys to a new measured state: after it, secrets
// unseal only when the keystore's PCRs hold exactly the given values (every
// PCR of PCRSelection must be given), and every earlier approval — the
// running state's included — is retired by the TPM (the epoch NV counter
// moves past it). It needs the policy signer: call it while the current
// state is approved (before Cap, or after Cap, which keeps the signer).
// firmware.Apply calls it for a verified update only.
func (t *TPM) Approve(values map[int][]byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	signer := t.signer
	if signer == nil {
		s, err := t.loadSigner()
		if err != nil {
			return fmt.Errorf("hsm: approve new measurements: the policy signer cannot be unsealed in the current state: %w", err)
		}
		signer = s
	}
	e, name, err := t.epoch()
	if err != nil {
		return err
	}
	if err := t.approve(signer, values, e+1, name); err != nil {
		return err
	}
	if _, err := t.incrementLocked(epochCounter); err != nil {
		return fmt.Errorf("hsm: retire earlier approvals: %w (approve again to finish)", err)
	}
	return nil
}

func (t *TPM) approveCurrent(signer *ecdsa.PrivateKey) error {
	vals, err := t.readPCRs(t.PCRSelection())
	if err != nil {
		return err
	}
	e, name, err := t.epoch()
	if err != nil {
		return err
	}
	return t.approve(signer, vals, e, name)
}

func (t *TPM) approve(signer *ecdsa.PrivateKey, values map[int][]byte, maxEpoch uint64, epochName tpm2.TPM2BName) error {
	if isReset(values[int(t.hdr.measurePCR)]) {
		return ErrUnmeasured
	}
	pcrDigest, err := t.pcrCompositeDigest(values)
	if err != nil {
		return err
	}
	approved, err := t.approvedPolicy(pcrDigest, maxEpoch, epochName)
	if err != nil {
		return err
	}
	r, s, err := ecdsa.Sign(rand.Reader, signer, approvalHash(approved, t.id[:]))
	if err != nil {
		return err
	}
	a := &approval{pcrMask: t.hdr.pcrMask, maxEpoch: maxEpoch}
	copy(a.pcrDigest[:], pcrDigest)
	r.FillBytes(a.r[:])
	s.FillBytes(a.s[:])
	return writeReplace(t.dir, approvalFileName(pcrDigest), a.marshal())
}

func (t *TPM) readApproval(pcrDigest []byte) (*approval, error) {
	path := filepath.Join(t.dir, approvalFileName(pcrDigest))
	b, err := readBounded(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: the current measurements (PCR digest %x) were never approved: boot an approved firmware", ErrPolicy, pcrDigest[:8])
	}
	if err != nil {
		return nil, err
	}
	a, err := parseApproval(b)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	if a.pcrMask != t.hdr.pcrMask || !bytes.Equal(a.pcrDigest[:], pcrDigest) {
		return nil, fmt.Errorf("%w: approval %s is for another PCR state", ErrPolicy, path)
	}
	return a, nil
}

// approvalHash is aHash of TPM2_PolicyAuthorize: SHA-256(approvedPolicy || policyRef).
func approvalHash(approved, ref []byte) []byte {
	h := sha256.New()
	h.Write(approved)
	h.Write(ref)
	return h.Sum(nil)
}

func ecdsaTPMSignature(r, s []byte) tpm2.TPMTSignature {
	return tpm2.TPMTSignature{
		SigAlg: tpm2.TPMAlgECDSA,
		Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
			Hash:       tpm2.TPMAlgSHA256,
			SignatureR: tpm2.TPM2BECCParameter{Buffer: r},
			SignatureS: tpm2.TPM2BECCParameter{Buffer: s},
		}),
	}
}

func ecdsaPrivBytes(k *ecdsa.PrivateKey) ([]byte, error) {
	return k.Bytes()
}

// approval is a decoded <hex pcr digest>.pol file.
type approval struct {
	pcrMask   uint32
	maxEpoch  uint64
	pcrDigest [32]byte
	r, s      [32]byte
}

const approvalMagic = "CFKP"
const approvalLen = 4 + 1 + 4 + 8 + 32 + 32 + 32
const approvalSuffix = ".pol"

func approvalFileName(pcrDigest []byte) string {
	return "pcr-" + hex.EncodeToString(pcrDigest) + approvalSuffix
}

func (a *approval) marshal() []byte {
	b := make([]byte, 0, approvalLen)
	b = append(b, approvalMagic...)
	b = append(b, formatVersion)
	b = binary.BigEndian.AppendUint32(b, a.pcrMask)
	b = binary.BigEndian.AppendUint64(b, a.maxEpoch)
	b = append(b, a.pcrDigest[:]...)
	b = append(b, a.r[:]...)
	return append(b, a.s[:]...)
}

func parseApproval(b []byte) (*approval, error) {
	if len(b) != approvalLen || string(b[:4]) != approvalMagic || b[4] != formatVersion {
		return nil, fmt.Errorf("hsm: malformed approval file")
	}
	a := &approval{pcrMask: binary.BigEndian.Uint32(b[5:]), maxEpoch: binary.BigEndian.Uint64(b[9:])}
	copy(a.pcrDigest[:], b[17:])
	copy(a.r[:], b[49:])
	copy(a.s[:], b[81:])
	return a, nil
}

// sealEnvelope encrypts secret under key: nonce(24) || XChaCha20-Poly1305
// ciphertext, with the secret associated data of the soft backend.
func sealEnvelope(key []byte, name string, id [idLen]byte, secret []byte) ([]byte, error) {
	a, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, nonceLen, nonceLen+len(secret)+tagLen)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return a.Seal(nonce, nonce, secret, secretAD("secret", id, name)), nil
}

func openEnvelope(path, name string, id [idLen]byte, key, env []byte) ([]byte, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("hsm: %s: sealed key is %d bytes, want 32", path, len(key))
	}
	if len(env) < nonceLen+tagLen+1 || len(env) > nonceLen+MaxSecretLen+tagLen {
		return nil, fmt.Errorf("hsm: %s: encrypted secret has invalid size", path)
	}
	a, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, err
	}
	out, err := a.Open(nil, env[:nonceLen], env[nonceLen:], secretAD("secret", id, name))
	if err != nil {
		return nil, fmt.Errorf("hsm: %s failed authentication (altered, renamed or from another keystore): restore it from backup", path)
	}
	return out, nil
}

// parseTPMBlob splits a TPM secret body: TPM2B_PUBLIC || TPM2B_PRIVATE ||
// envelope.
func parseTPMBlob(b []byte) (*tpm2.TPM2BPublic, *tpm2.TPM2BPrivate, []byte, error) {
	take := func() ([]byte, error) {
		if len(b) < 2 {
			return nil, fmt.Errorf("hsm: TPM blob truncated")
		}
		n := int(binary.BigEndian.Uint16(b))
		if n == 0 || len(b) < 2+n {
			return nil, fmt.Errorf("hsm: TPM blob truncated")
		}
		out := b[:2+n]
		b = b[2+n:]
		return out, nil
	}
	pb, err := take()
	if err != nil {
		return nil, nil, nil, err
	}
	vb, err := take()
	if err != nil {
		return nil, nil, nil, err
	}
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](pb)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("hsm: TPM blob: bad public area: %v", err)
	}
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](vb)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("hsm: TPM blob: bad private area: %v", err)
	}
	if !slices.Equal(tpm2.Marshal(pub), pb) {
		return nil, nil, nil, fmt.Errorf("hsm: TPM blob: non-canonical public area")
	}
	return pub, priv, b, nil
}
