package envelope

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"io"
)

// Wire constants (docs/formats/envelope.md).
const (
	// EnvelopeMagic starts every envelope.
	EnvelopeMagic = "COFFRENV"
	// EnvelopeVersion is the envelope format version this package writes
	// and reads.
	EnvelopeVersion = 1
	// ItemMagic starts the plaintext of the sealed part.
	ItemMagic = "COFFREIT"
	// ItemVersion is the item layout version.
	ItemVersion = 1
)

// header is the envelope's clear part up to (not including) the signature.
type header struct {
	userID       string
	uploadID     [UploadIDSize]byte
	sealedLen    uint64
	sealedDigest [32]byte
}

// encode returns the signed bytes: magic, version, user id, upload id,
// sealed length, sealed digest.
func (h header) encode() []byte {
	var b bytes.Buffer
	b.WriteString(EnvelopeMagic)
	b.WriteByte(EnvelopeVersion)
	b.Write(binary.BigEndian.AppendUint16(nil, uint16(len(h.userID))))
	b.WriteString(h.userID)
	b.Write(h.uploadID[:])
	b.Write(binary.BigEndian.AppendUint64(nil, h.sealedLen))
	b.Write(h.sealedDigest[:])
	return b.Bytes()
}

// readHeader reads the signed header bytes and the signature packet from r.
// It returns the header, the exact signed bytes and the signature bytes.
func readHeader(r io.Reader, lim Limits) (*header, []byte, []byte, error) {
	var signed bytes.Buffer
	read := func(n int, what string) ([]byte, error) {
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil, errorf(ErrTruncated, "envelope header ends inside %s: the transfer was cut, ask the courier to resend", what)
			}
			return nil, wrapf(ErrTruncated, err, "reading envelope %s", what)
		}
		return b, nil
	}
	b, err := read(len(EnvelopeMagic)+1, "magic")
	if err != nil {
		return nil, nil, nil, err
	}
	if string(b[:len(EnvelopeMagic)]) != EnvelopeMagic {
		return nil, nil, nil, errorf(ErrFormat, "not an envelope (bad magic)")
	}
	if b[len(EnvelopeMagic)] != EnvelopeVersion {
		return nil, nil, nil, errorf(ErrFormat, "envelope version %d, this appliance reads version %d: update the appliance firmware", b[len(EnvelopeMagic)], EnvelopeVersion)
	}
	signed.Write(b)
	if b, err = read(2, "user id length"); err != nil {
		return nil, nil, nil, err
	}
	signed.Write(b)
	n := int(binary.BigEndian.Uint16(b))
	if n > MaxUserID {
		return nil, nil, nil, errorf(ErrTooLarge, "envelope user id is %d bytes, limit %d", n, MaxUserID)
	}
	if b, err = read(n, "user id"); err != nil {
		return nil, nil, nil, err
	}
	signed.Write(b)
	h := &header{userID: string(b)}
	if err := checkUserID(h.userID); err != nil {
		return nil, nil, nil, prefix(err, "envelope header")
	}
	if b, err = read(UploadIDSize+8+32, "upload id, sealed length and digest"); err != nil {
		return nil, nil, nil, err
	}
	signed.Write(b)
	copy(h.uploadID[:], b)
	h.sealedLen = binary.BigEndian.Uint64(b[UploadIDSize:])
	copy(h.sealedDigest[:], b[UploadIDSize+8:])
	if h.sealedLen == 0 {
		return nil, nil, nil, errorf(ErrFormat, "envelope declares an empty sealed part")
	}
	if h.sealedLen > uint64(lim.MaxSealed) {
		return nil, nil, nil, errorf(ErrTooLarge, "envelope declares a sealed part of %d bytes, limit %d: raise Limits.MaxSealed if this is expected", h.sealedLen, lim.MaxSealed)
	}
	if b, err = read(2, "signature length"); err != nil {
		return nil, nil, nil, err
	}
	n = int(binary.BigEndian.Uint16(b))
	if n == 0 {
		return nil, nil, nil, errorf(ErrFormat, "envelope has an empty courier signature")
	}
	if n > MaxSignature {
		return nil, nil, nil, errorf(ErrTooLarge, "envelope signature is %d bytes, limit %d", n, MaxSignature)
	}
	sig, err := read(n, "courier signature")
	if err != nil {
		return nil, nil, nil, err
	}
	return h, signed.Bytes(), sig, nil
}

// itemHeader returns the start of the item plaintext: magic, version,
// manifest length, manifest.
func itemHeader(manifest []byte) []byte {
	b := make([]byte, 0, len(ItemMagic)+1+4+len(manifest))
	b = append(b, ItemMagic...)
	b = append(b, ItemVersion)
	b = binary.BigEndian.AppendUint32(b, uint32(len(manifest)))
	return append(b, manifest...)
}

// EncodeItem returns the item plaintext prefix (magic, version, manifest
// length, manifest) that precedes the content inside the sealed part. Other
// sealers (tests, clients using GnuPG) encrypt this followed by the content.
func EncodeItem(m Manifest) ([]byte, error) {
	mb, err := m.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return itemHeader(mb), nil
}

// readItemHeader reads the item prefix from the decrypted stream.
func readItemHeader(r io.Reader) (Manifest, error) {
	var b [len(ItemMagic) + 1 + 4]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return Manifest{}, err
	}
	if string(b[:len(ItemMagic)]) != ItemMagic {
		return Manifest{}, errorf(ErrFormat, "sealed part does not hold a Coffre item (bad item magic)")
	}
	if b[len(ItemMagic)] != ItemVersion {
		return Manifest{}, errorf(ErrFormat, "item version %d, this appliance reads version %d: update the appliance firmware", b[len(ItemMagic)], ItemVersion)
	}
	n := binary.BigEndian.Uint32(b[len(ItemMagic)+1:])
	if n > MaxManifest {
		return Manifest{}, errorf(ErrTooLarge, "manifest is %d bytes, limit %d", n, MaxManifest)
	}
	mb := make([]byte, n)
	if _, err := io.ReadFull(r, mb); err != nil {
		return Manifest{}, err
	}
	return ParseManifest(mb)
}

// uploadIDString is the lowercase hex form of an upload id.
func uploadIDString(id [UploadIDSize]byte) string { return hex.EncodeToString(id[:]) }

func parseUploadID(s string) ([UploadIDSize]byte, error) {
	var id [UploadIDSize]byte
	if len(s) != 2*UploadIDSize {
		return id, errorf(ErrFormat, "upload id %q: want %d lowercase hex digits", truncate(s), 2*UploadIDSize)
	}
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9') && !(c >= 'a' && c <= 'f') {
			return id, errorf(ErrFormat, "upload id %q: want %d lowercase hex digits", truncate(s), 2*UploadIDSize)
		}
	}
	hex.Decode(id[:], []byte(s))
	return id, nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
