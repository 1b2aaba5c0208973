package bailiff

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"coffre/bailiff/internal/canon"
)

// The bailiffs' signed documents (restitution orders, quorum orders,
// re-encapsulation orders) end with the same signatures section: detached
// OpenPGP signatures over the document body, one per bailiff fingerprint,
// ascending. `what` names the document in errors ("order", "quorum order").

// marshalSignatures writes the signatures section.
func marshalSignatures(sigs map[string][]byte) []byte {
	var w canon.Writer
	fprs := make([]string, 0, len(sigs))
	for f := range sigs {
		fprs = append(fprs, f)
	}
	slices.Sort(fprs)
	w.Line("signatures", strconv.Itoa(len(fprs)))
	for _, f := range fprs {
		w.Line("signature", f, canon.EncB64(sigs[f]))
	}
	return w.Bytes()
}

// addBailiffSignature verifies a detached signature (binary or armored)
// over body against the bailiffs of r and records it under the signer's
// fingerprint. none is the error when no bailiff made it.
func addBailiffSignature(sigs map[string][]byte, r *Roster, body, sig []byte, what, none string) (*BailiffKey, error) {
	sig, err := normalizeSignature(sig)
	if err != nil {
		return nil, fmt.Errorf("bailiff: %s signature: %w", what, err)
	}
	for _, b := range issuerFirst(r.Bailiffs, sig) {
		if verifyDetached(b.entity, body, sig) == nil {
			sigs[b.Fingerprint] = sig
			return b, nil
		}
	}
	return nil, errors.New(none)
}

// issuerFirst returns bs with the bailiff the signature names as its
// issuer (fingerprint or key id, of the primary key or a subkey) moved
// first: the others are tried only if it does not verify, each try a
// public-key verification.
func issuerFirst(bs []*BailiffKey, sig []byte) []*BailiffKey {
	p, err := readPacket(bytes.NewReader(sig))
	s, ok := p.(*packet.Signature)
	if err != nil || !ok {
		return bs
	}
	issued := func(k *packet.PublicKey) bool {
		if s.IssuerFingerprint != nil {
			return bytes.Equal(s.IssuerFingerprint, k.Fingerprint)
		}
		return s.IssuerKeyId != nil && *s.IssuerKeyId == k.KeyId
	}
	for i, b := range bs {
		if b.entity == nil {
			continue
		}
		keys := []*packet.PublicKey{b.entity.PrimaryKey}
		for _, sk := range b.entity.Subkeys {
			keys = append(keys, sk.PublicKey)
		}
		if slices.ContainsFunc(keys, issued) {
			return append([]*BailiffKey{b}, slices.Delete(slices.Clone(bs), i, i+1)...)
		}
	}
	return bs
}

// countBailiffSignatures checks every signature is by a bailiff of r and
// valid over body, and returns how many there are.
func countBailiffSignatures(sigs map[string][]byte, r *Roster, body []byte, what string) (int, error) {
	valid := 0
	for f, sig := range sigs {
		b := r.Bailiff(f)
		if b == nil {
			return 0, fmt.Errorf("bailiff: %s: signature by %s who is not on the roster", what, f)
		}
		if err := verifyDetached(b.entity, body, sig); err != nil {
			return 0, fmt.Errorf("bailiff: %s: signature of %s (%s) is invalid: %s", what, b.Name, f, sanitize(err))
		}
		valid++
	}
	return valid, nil
}

// readSignatures parses the signatures section into sigs.
func readSignatures(rd *canon.Reader, sigs map[string][]byte, what string) error {
	wrap := func(field string, err error) error { return fmt.Errorf("bailiff: %s: %s: %w", what, field, err) }
	v, err := rd.Field("signatures")
	if err != nil {
		return err
	}
	m, err := canon.Uint(v, 0, MaxBailiffs)
	if err != nil {
		return wrap("signatures", err)
	}
	prev := ""
	for i := 0; i < m; i++ {
		f, err := rd.Fields("signature", 2)
		if err != nil {
			return err
		}
		if err := checkFingerprint(f[0]); err != nil {
			return wrap("signature", err)
		}
		if f[0] <= prev {
			return fmt.Errorf("bailiff: %s: signature by %s out of order or repeated", what, f[0])
		}
		prev = f[0]
		sig, err := canon.B64(f[1], MaxSignatureLen)
		if err != nil {
			return wrap("signature", err)
		}
		sigs[f[0]] = sig
	}
	return nil
}

// readHex reads a hex field of exactly len(dst) bytes into dst.
func readHex(rd *canon.Reader, what, name string, dst []byte) error {
	v, err := rd.Field(name)
	if err != nil {
		return err
	}
	h, err := canon.Hex(v, len(dst))
	if err != nil {
		return fmt.Errorf("bailiff: %s: %s: %w", what, name, err)
	}
	copy(dst, h)
	return nil
}

// readOrderHead reads the lines every signed order starts with
// (docs/formats/quorum-order.md): the magic with version v1, the vault and
// the roster in force.
func readOrderHead(rd *canon.Reader, what, magic string, vault, roster *[32]byte) error {
	v, err := rd.Field(magic)
	if err != nil {
		return err
	}
	if v != "v1" {
		return fmt.Errorf("bailiff: %s version %q is not supported (want v1)", what, v)
	}
	if err := readHex(rd, what, "vault", vault[:]); err != nil {
		return err
	}
	return readHex(rd, what, "roster", roster[:])
}
