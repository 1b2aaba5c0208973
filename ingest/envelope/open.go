package envelope

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"runtime"

	"github.com/ProtonMail/go-crypto/openpgp"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// OpenParams is what the appliance supplies to open envelopes.
type OpenParams struct {
	// IngestKeys hold the ingest private key(s) (current and, during a
	// rotation, previous).
	IngestKeys openpgp.EntityList
	// Couriers are the pinned courier public keys.
	Couriers openpgp.EntityList
	// Seen reports whether an upload id was already accepted (backed by the
	// catalog). It is called once, after the courier signature verified and
	// before anything is decrypted. Required.
	Seen func(uploadID string) (bool, error)
	// Limits bound sizes; zero fields take their defaults.
	Limits Limits
}

// Upload is an opened envelope. Content streams the item's content; its Read
// returns io.EOF only after every check passed (content size and SHA-256,
// OpenPGP integrity, the sealed part's length and SHA-256 against the signed
// binding, no trailing data). Any other error means: commit nothing. Content
// must be read to io.EOF before the upload is acknowledged or its id marked
// as seen.
type Upload struct {
	UserID             string // bound by the courier, equal to Manifest.UserID
	UploadID           string // 32 lowercase hex digits
	CourierFingerprint string // lowercase hex fingerprint of the courier's primary key
	IngestFingerprint  string // lowercase hex fingerprint of the ingest key that decrypted it
	Manifest           Manifest
	Content            io.Reader

	quit *stopper
}

// Close stops the upload's background hashing. Call it when done with the
// upload, whether or not Content was read to the end; it does not close the
// reader given to Open. Content returns an error after Close.
func (u *Upload) Close() error {
	if u.quit != nil {
		u.quit.stop()
	}
	return nil
}

// acceptedSigHashes are the hashes a courier signature may use.
var acceptedSigHashes = []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512, crypto.SHA3_256, crypto.SHA3_512}

// Open reads an envelope from r: it verifies the courier signature over the
// header, asks p.Seen about the upload id, then starts decrypting the sealed
// part with p.IngestKeys, reads and checks the manifest (limits, user
// binding), and returns the upload with its content as a stream.
//
// Open and Upload.Content together consume r to its end (an envelope is the
// whole of r; Open buffers ahead); nothing else may read r meanwhile. Call
// Upload.Close when done. Memory use is bounded independently of the content
// size; plaintext is never written anywhere but to the caller's buffers.
func Open(r io.Reader, p OpenParams) (*Upload, error) {
	lim := p.Limits.withDefaults()
	if p.Seen == nil {
		return nil, errorf(ErrReplay, "open: no replay check configured (OpenParams.Seen is nil)")
	}
	if len(p.Couriers) == 0 {
		return nil, errorf(ErrUnknownCourier, "open: no courier key pinned: add the courier public key to the appliance config")
	}
	if len(p.IngestKeys) == 0 {
		return nil, errorf(ErrWrongIngestKey, "open: no ingest key loaded")
	}
	// Small: reads of the sealed part are larger and bypass it.
	r = bufio.NewReaderSize(r, 8<<10)
	hd, signed, sig, err := readHeader(r, lim)
	if err != nil {
		return nil, err
	}
	uploadID := uploadIDString(hd.uploadID)
	courier, err := verifyBinding(p.Couriers, signed, sig, uploadID)
	if err != nil {
		return nil, err
	}
	seen, err := p.Seen(uploadID)
	if err != nil {
		return nil, fmt.Errorf("envelope: upload %s: replay check failed, retry when the catalog is available: %w", uploadID, err)
	}
	if seen {
		return nil, errorf(ErrReplay, "upload %s (user %q)", uploadID, hd.userID)
	}

	quit := newStopper()
	sr := &sealedReader{r: r, remaining: int64(hd.sealedLen), h: newAsyncHash(quit, int64(hd.sealedLen))}
	c := &contentReader{sr: sr, outer: r, hd: hd, uploadID: uploadID, quit: quit}
	// An upload dropped without Close still stops its hashing goroutines.
	runtime.AddCleanup(c, func(s *stopper) { s.stop() }, quit)
	d, err := decryptSealed(sr, p.IngestKeys, quit, int64(hd.sealedLen))
	if err != nil {
		return nil, c.fail(prefix(err, "upload "+uploadID))
	}
	c.body, c.rest, c.closer = d.body, d.rest, d.closer
	m, err := readItemHeader(d.body)
	if err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			err = errorf(ErrFormat, "upload %s: sealed part ends inside the item header", uploadID)
		} else if !errors.As(err, new(*Error)) {
			err = wrapf(ErrFormat, err, "upload %s: reading item header", uploadID)
		} else {
			err = prefix(err, "upload "+uploadID)
		}
		return nil, c.fail(err)
	}
	if m.UserID != hd.userID {
		return nil, c.fail(errorf(ErrUserMismatch, "upload %s: courier bound user %q, the sealed manifest names another user: reject the upload", uploadID, hd.userID))
	}
	if m.Size > lim.MaxContent {
		return nil, c.fail(errorf(ErrTooLarge, "upload %s: content is %d bytes, limit %d", uploadID, m.Size, lim.MaxContent))
	}
	c.remaining = m.Size
	c.want = m.Digest
	c.ch = newAsyncHash(quit, m.Size)
	return &Upload{
		UserID:             hd.userID,
		UploadID:           uploadID,
		CourierFingerprint: hex.EncodeToString(courier.PrimaryKey.Fingerprint),
		IngestFingerprint:  hex.EncodeToString(d.ingest.PrimaryKey.Fingerprint),
		Manifest:           m,
		Content:            c,
		quit:               quit,
	}, nil
}

// verifyBinding checks that sig is exactly one binary-document signature
// packet, by a pinned courier key, over signed.
func verifyBinding(couriers openpgp.EntityList, signed, sig []byte, uploadID string) (*openpgp.Entity, error) {
	pr := packet.NewReader(bytes.NewReader(sig))
	pk, err := pr.Next()
	if err != nil {
		return nil, wrapf(ErrBadSignature, err, "upload %s: courier signature is not an OpenPGP packet", uploadID)
	}
	s, ok := pk.(*packet.Signature)
	if !ok {
		return nil, errorf(ErrBadSignature, "upload %s: courier signature field holds a %T, not a signature", uploadID, pk)
	}
	if _, err := pr.Next(); err != io.EOF {
		return nil, errorf(ErrBadSignature, "upload %s: courier signature field holds more than one packet", uploadID)
	}
	switch s.PubKeyAlgo {
	case packet.PubKeyAlgoECDSA, packet.PubKeyAlgoEdDSA, packet.PubKeyAlgoEd25519:
	default:
		return nil, errorf(ErrBadSignature, "upload %s: courier signature uses public-key algorithm %d, want ECDSA or EdDSA", uploadID, s.PubKeyAlgo)
	}
	if s.Version != 4 {
		return nil, errorf(ErrBadSignature, "upload %s: courier signature is version %d, want 4", uploadID, s.Version)
	}
	for _, f := range []any{s.ECDSASigR, s.ECDSASigS, s.EdDSASigR, s.EdDSASigS} {
		if mpi, ok := f.(interface {
			Bytes() []byte
			BitLength() uint16
		}); ok && !canonicalMPI(mpi.Bytes(), mpi.BitLength()) {
			return nil, errorf(ErrBadSignature, "upload %s: courier signature has a non-canonical number", uploadID)
		}
	}
	var re bytes.Buffer
	if err := s.Serialize(&re); err != nil || !bytes.Equal(re.Bytes(), sig) {
		return nil, errorf(ErrBadSignature, "upload %s: courier signature packet is not canonically encoded", uploadID)
	}
	if s.SigType != packet.SigTypeBinary {
		return nil, errorf(ErrBadSignature, "upload %s: courier signature has type 0x%02x, want 0x00 (binary)", uploadID, uint8(s.SigType))
	}
	signer, err := openpgp.CheckDetachedSignatureAndHash(couriers, bytes.NewReader(signed), bytes.NewReader(sig), acceptedSigHashes, readConfig())
	if err != nil {
		if errors.Is(err, pgperrors.ErrUnknownIssuer) {
			issuer := "unknown"
			if s.IssuerFingerprint != nil {
				issuer = hex.EncodeToString(s.IssuerFingerprint)
			} else if s.IssuerKeyId != nil {
				issuer = fmt.Sprintf("%016x", *s.IssuerKeyId)
			}
			return nil, wrapf(ErrUnknownCourier, err, "upload %s: signed by courier key %s, which is not pinned: reject the upload, or pin the key in the appliance config if the courier rotated it", uploadID, issuer)
		}
		return nil, wrapf(ErrBadSignature, err, "upload %s: courier signature does not verify: the envelope was altered or forged, reject it", uploadID)
	}
	// go-crypto does not check the v4 hash tag; a canonical signature has
	// the right one.
	h := s.Hash.New()
	h.Write(signed)
	if err := packet.VerifyHashTag(h, s); err != nil {
		return nil, wrapf(ErrBadSignature, err, "upload %s: courier signature hash tag is wrong", uploadID)
	}
	return signer, nil
}

// canonicalMPI reports whether an OpenPGP MPI's declared bit length is that
// of its value with no leading zero byte.
func canonicalMPI(b []byte, bitLen uint16) bool {
	if len(b) == 0 {
		return bitLen == 0
	}
	if b[0] == 0 {
		return false
	}
	return int(bitLen) == 8*(len(b)-1)+bits.Len8(b[0])
}

// sealedReader reads exactly the declared sealed length from the envelope,
// hashing it.
type sealedReader struct {
	r         io.Reader
	remaining int64
	read      int64
	h         *asyncHash
	truncated bool
	err       error // first non-EOF read error of r
}

func (s *sealedReader) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.remaining <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > s.remaining {
		p = p[:s.remaining]
	}
	n, err := s.r.Read(p)
	s.h.Write(p[:n])
	s.remaining -= int64(n)
	s.read += int64(n)
	if err == io.EOF && s.remaining > 0 {
		s.truncated = true
		s.err = errorf(ErrTruncated, "sealed part ends after %d bytes, header declares %d: the transfer was cut, ask the courier to resend", s.read, s.read+s.remaining)
		return n, s.err
	}
	if err != nil && err != io.EOF {
		s.err = wrapf(ErrTruncated, err, "reading sealed part")
		return n, s.err
	}
	if s.remaining == 0 {
		return n, io.EOF
	}
	return n, nil
}

// contentReader is Upload.Content.
type contentReader struct {
	sr       *sealedReader
	outer    io.Reader
	hd       *header
	uploadID string
	quit     *stopper
	sealedOK bool
	sealErr  error
	body     io.Reader // literal data
	rest     io.Reader // decrypted packet stream, drained at the end
	closer   io.Closer
	ch       *asyncHash
	want     [32]byte
	// remaining content bytes per the manifest.
	remaining int64
	done      int64
	err       error
}

func (c *contentReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	select {
	case <-c.quit.c:
		c.err = errorf(ErrFormat, "upload %s: content read after Close", c.uploadID)
		return 0, c.err
	default:
	}
	if c.remaining == 0 {
		c.err = c.finish()
		c.quit.stop()
		return 0, c.err
	}
	if int64(len(p)) > c.remaining {
		p = p[:c.remaining]
	}
	n, err := c.body.Read(p)
	c.ch.Write(p[:n])
	c.remaining -= int64(n)
	c.done += int64(n)
	if err != nil && !(err == io.EOF && c.remaining == 0) {
		if err == io.EOF {
			err = errorf(ErrFormat, "upload %s: content ends after %d bytes, manifest says %d", c.uploadID, c.done, c.done+c.remaining)
		} else if !errors.As(err, new(*Error)) {
			err = c.pgpError(err)
		}
		c.err = c.fail(err)
		c.quit.stop()
		if n > 0 {
			return n, nil
		}
		return 0, c.err
	}
	return n, nil
}

// pgpError classifies an error from the OpenPGP reader.
func (c *contentReader) pgpError(err error) error {
	var se pgperrors.SignatureError
	if errors.As(err, &se) {
		return wrapf(ErrDigestMismatch, err, "upload %s: OpenPGP integrity check (MDC) failed: the sealed part was altered", c.uploadID)
	}
	return wrapf(ErrFormat, err, "upload %s: decrypting sealed part", c.uploadID)
}

// finish runs the end-of-content checks; it returns io.EOF when all pass.
func (c *contentReader) finish() error {
	if sum, ok := c.ch.Sum(); !ok || subtle.ConstantTimeCompare(sum, c.want[:]) != 1 {
		return c.fail(errorf(ErrDigestMismatch, "upload %s: content SHA-256 differs from the manifest digest", c.uploadID))
	}
	var one [1]byte
	for {
		n, err := c.body.Read(one[:])
		if n > 0 {
			return c.fail(errorf(ErrTooLarge, "upload %s: content runs past the manifest size %d", c.uploadID, c.done))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if errors.As(err, new(*Error)) {
				return c.fail(err)
			}
			return c.fail(c.pgpError(err))
		}
	}
	if _, err := io.Copy(io.Discard, c.rest); err != nil {
		if errors.As(err, new(*Error)) {
			return c.fail(err)
		}
		return c.fail(c.pgpError(err))
	}
	if c.closer != nil {
		if err := c.closer.Close(); err != nil {
			return c.fail(c.pgpError(err))
		}
	}
	if err := c.checkSealed(); err != nil {
		return err
	}
	n, err := io.ReadFull(c.outer, one[:])
	if n > 0 {
		return errorf(ErrFormat, "upload %s: data after the sealed part", c.uploadID)
	}
	if err != io.EOF {
		return wrapf(ErrFormat, err, "upload %s: reading past the sealed part", c.uploadID)
	}
	return io.EOF
}

// checkSealed drains the sealed part (bounded by its declared length, itself
// bounded by Limits.MaxSealed) and compares its length and digest with the
// signed binding.
func (c *contentReader) checkSealed() error {
	if !c.sealedOK {
		c.sealedOK = true
		c.sealErr = c.checkSealedOnce()
	}
	return c.sealErr
}

func (c *contentReader) checkSealedOnce() error {
	if _, err := io.Copy(io.Discard, c.sr); err != nil && c.sr.err != nil {
		return c.sr.err
	}
	if c.sr.err != nil {
		return c.sr.err
	}
	if sum, ok := c.sr.h.Sum(); !ok || subtle.ConstantTimeCompare(sum, c.hd.sealedDigest[:]) != 1 {
		return errorf(ErrDigestMismatch, "upload %s: sealed part SHA-256 differs from the courier's signed binding: it was altered after the courier signed it, ask the courier to resend", c.uploadID)
	}
	return nil
}

// fail returns the first cause of a failure: a truncated or altered sealed
// part explains any later decryption or parsing error, so it is reported
// instead of err.
func (c *contentReader) fail(err error) error {
	defer c.quit.stop()
	if serr := c.checkSealed(); serr != nil {
		return serr
	}
	return err
}
