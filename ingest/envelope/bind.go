package envelope

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"io"

	"github.com/ProtonMail/go-crypto/openpgp"
)

// NewUploadID returns a fresh 128-bit random upload id as 32 lowercase hex
// digits.
func NewUploadID() string {
	var b [UploadIDSize]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("envelope: crypto/rand failed: " + err.Error()) // rand.Read does not fail on Linux
	}
	return hex.EncodeToString(b[:])
}

// Bind is the courier's step: it writes the envelope — header binding userID,
// uploadID and the SHA-256 and length of sealed, the courier's detached
// signature of that header, then sealed itself — to w.
//
// sealed is read twice (digest, then copy), so it is an io.ReadSeeker: on the
// online side, buffer an upload in a temporary file. Bind fails if sealed
// changes between the two reads, or is larger than the default MaxSealed.
// It checks that sealed starts with an OpenPGP public-key encrypted session
// key packet, but cannot (and must not) decrypt it.
func Bind(w io.Writer, courier *openpgp.Entity, userID, uploadID string, sealed io.ReadSeeker) error {
	if err := checkUserID(userID); err != nil {
		return prefix(err, "bind")
	}
	id, err := parseUploadID(uploadID)
	if err != nil {
		return err
	}
	if courier == nil || courier.PrivateKey == nil {
		return errorf(ErrUnknownCourier, "bind: courier key has no private part: load the courier secret key")
	}
	start, err := sealed.Seek(0, io.SeekCurrent)
	if err != nil {
		return wrapf(ErrFormat, err, "bind: sealed part")
	}
	lim := Limits{}.withDefaults()
	h := sha256.New()
	var first [1]byte
	n, err := io.Copy(h, io.TeeReader(io.LimitReader(sealed, lim.MaxSealed+1), &firstByte{b: first[:]}))
	if err != nil {
		return wrapf(ErrFormat, err, "bind: reading sealed part")
	}
	if n == 0 {
		return errorf(ErrFormat, "bind: sealed part is empty")
	}
	if n > lim.MaxSealed {
		return errorf(ErrTooLarge, "bind: sealed part is over %d bytes", lim.MaxSealed)
	}
	if !isPKESKStart(first[0]) {
		return errorf(ErrFormat, "bind: sealed part does not start with an OpenPGP encrypted session key: it was not sealed with `coffre courier seal` or gpg --encrypt")
	}
	hd := header{userID: userID, uploadID: id, sealedLen: uint64(n)}
	copy(hd.sealedDigest[:], h.Sum(nil))
	signed := hd.encode()
	var sig bytes.Buffer
	if err := openpgp.DetachSign(&sig, courier, bytes.NewReader(signed), signConfig()); err != nil {
		return wrapf(ErrBadSignature, err, "bind: signing with courier key %X", courier.PrimaryKey.Fingerprint)
	}
	if sig.Len() > MaxSignature {
		return errorf(ErrTooLarge, "bind: signature is %d bytes, limit %d", sig.Len(), MaxSignature)
	}
	if _, err := sealed.Seek(start, io.SeekStart); err != nil {
		return wrapf(ErrFormat, err, "bind: rewinding sealed part")
	}
	out := append(signed, binary.BigEndian.AppendUint16(nil, uint16(sig.Len()))...)
	out = append(out, sig.Bytes()...)
	if _, err := w.Write(out); err != nil {
		return wrapf(ErrFormat, err, "bind: writing envelope")
	}
	h.Reset()
	m, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(sealed, n))
	if err != nil {
		return wrapf(ErrFormat, err, "bind: copying sealed part")
	}
	if m != n || subtle.ConstantTimeCompare(h.Sum(nil), hd.sealedDigest[:]) != 1 {
		return errorf(ErrDigestMismatch, "bind: sealed part changed while binding: discard the output and retry")
	}
	return nil
}

// isPKESKStart reports whether an OpenPGP packet header byte is a
// public-key encrypted session key packet (tag 1), old or new format.
func isPKESKStart(b byte) bool {
	if b&0x80 == 0 {
		return false
	}
	if b&0x40 != 0 {
		return b&0x3f == 1
	}
	return (b>>2)&0x0f == 1
}

type firstByte struct {
	b    []byte
	done bool
}

func (f *firstByte) Write(p []byte) (int, error) {
	if !f.done && len(p) > 0 {
		f.b[0] = p[0]
		f.done = true
	}
	return len(p), nil
}
