package firmware

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// ErrSignatures is returned when a manifest lacks threshold valid
// signatures from distinct release keys.
var ErrSignatures = errors.New("firmware: manifest is not signed by enough release keys")

const trustMagic = "coffre firmware trust root v1"

// TrustRoot is the set of release public keys and the number of them that
// must sign a manifest.
type TrustRoot struct {
	Threshold int
	Keys      openpgp.EntityList
}

// NewTrustRoot checks and builds a trust root.
func NewTrustRoot(threshold int, keys openpgp.EntityList) (*TrustRoot, error) {
	if len(keys) == 0 || len(keys) > MaxTrustKeys {
		return nil, fmt.Errorf("firmware: trust root has %d keys (1 to %d allowed)", len(keys), MaxTrustKeys)
	}
	if threshold < 1 || threshold > len(keys) {
		return nil, fmt.Errorf("firmware: trust root threshold %d out of 1..%d", threshold, len(keys))
	}
	seen := map[string]bool{}
	for _, k := range keys {
		if k.PrivateKey != nil {
			return nil, fmt.Errorf("firmware: trust root key %X holds a private key: use public keys only", k.PrimaryKey.Fingerprint)
		}
		fp := hex.EncodeToString(k.PrimaryKey.Fingerprint)
		if seen[fp] {
			return nil, fmt.Errorf("firmware: trust root lists key %s twice", fp)
		}
		seen[fp] = true
	}
	return &TrustRoot{Threshold: threshold, Keys: keys}, nil
}

// ParseTrustRoot reads the trust root file:
//
//	coffre firmware trust root v1
//	threshold K
//	<blank line>
//	<ASCII-armored OpenPGP public keyring>
func ParseTrustRoot(b []byte) (*TrustRoot, error) {
	if len(b) > MaxTrustRootLen {
		return nil, fmt.Errorf("firmware: trust root is %d bytes (max %d)", len(b), MaxTrustRootLen)
	}
	head, keys, ok := bytes.Cut(b, []byte("\n\n"))
	if !ok {
		return nil, errors.New("firmware: trust root: missing blank line before the keyring")
	}
	lines := strings.Split(string(head), "\n")
	if len(lines) != 2 || lines[0] != trustMagic || !strings.HasPrefix(lines[1], "threshold ") {
		return nil, fmt.Errorf("firmware: trust root: header must be %q then \"threshold K\"", trustMagic)
	}
	k, err := strconv.Atoi(strings.TrimPrefix(lines[1], "threshold "))
	if err != nil || strconv.Itoa(k) != strings.TrimPrefix(lines[1], "threshold ") {
		return nil, errors.New("firmware: trust root: threshold is not a canonical decimal")
	}
	el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(keys))
	if err != nil {
		return nil, fmt.Errorf("firmware: trust root keyring: %w", err)
	}
	return NewTrustRoot(k, el)
}

// Marshal encodes the trust root file.
func (r *TrustRoot) Marshal() ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\nthreshold %d\n\n", trustMagic, r.Threshold)
	w, err := armor.Encode(&b, openpgp.PublicKeyType, nil)
	if err != nil {
		return nil, err
	}
	for _, e := range r.Keys {
		if err := e.Serialize(w); err != nil {
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}

// SignManifest makes one release key's detached binary OpenPGP signature
// over the canonical manifest (vendor side; tests).
func SignManifest(manifest []byte, signer *openpgp.Entity) ([]byte, error) {
	var b bytes.Buffer
	cfg := &packet.Config{DefaultHash: crypto.SHA512}
	if err := openpgp.DetachSign(&b, signer, bytes.NewReader(manifest), cfg); err != nil {
		return nil, fmt.Errorf("firmware: sign manifest: %w", err)
	}
	return b.Bytes(), nil
}

// verifySignatures checks that at least Threshold distinct release keys made
// a valid SHA-256/SHA-512 signature over manifest. Signatures by unknown
// keys are not counted; a malformed signature, or a known key's signature
// that does not verify, fails the whole manifest.
func (r *TrustRoot) verifySignatures(manifest []byte, sigs [][]byte) ([]string, error) {
	if len(sigs) > MaxSignatures {
		return nil, fmt.Errorf("firmware: %d signatures (max %d)", len(sigs), MaxSignatures)
	}
	signers := map[string]bool{}
	var order []string
	for i, s := range sigs {
		if len(s) == 0 || len(s) > MaxSignatureLen {
			return nil, fmt.Errorf("firmware: signature %d is %d bytes (1 to %d allowed)", i+1, len(s), MaxSignatureLen)
		}
		// Exactly one signature packet, nothing after it.
		pr := packet.NewReader(bytes.NewReader(s))
		p, err := pr.Next()
		if err != nil {
			return nil, fmt.Errorf("firmware: signature %d: %v", i+1, err)
		}
		sig, ok := p.(*packet.Signature)
		if !ok {
			return nil, fmt.Errorf("firmware: signature %d is not an OpenPGP signature packet", i+1)
		}
		if _, err := pr.Next(); err != io.EOF {
			return nil, fmt.Errorf("firmware: signature %d has trailing data", i+1)
		}
		if sig.SigType != packet.SigTypeBinary {
			return nil, fmt.Errorf("firmware: signature %d is not a binary-document signature", i+1)
		}
		if sig.IssuerKeyId == nil {
			return nil, fmt.Errorf("firmware: signature %d names no issuer key", i+1)
		}
		if len(r.Keys.KeysById(*sig.IssuerKeyId)) == 0 {
			continue // not a release key in this trust root
		}
		e, err := openpgp.CheckDetachedSignatureAndHash(r.Keys, bytes.NewReader(manifest), bytes.NewReader(s),
			[]crypto.Hash{crypto.SHA256, crypto.SHA512}, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: signature %d (key %016X) does not verify: the bundle was altered or damaged", ErrSignatures, i+1, *sig.IssuerKeyId)
		}
		fp := fmt.Sprintf("%X", e.PrimaryKey.Fingerprint)
		if !signers[fp] {
			signers[fp] = true
			order = append(order, fp)
		}
	}
	if len(order) < r.Threshold {
		return order, fmt.Errorf("%w: %d of %d required: collect more release signatures", ErrSignatures, len(order), r.Threshold)
	}
	return order, nil
}
