package envelope

import (
	"crypto/aes"
	"crypto/sha1"
	"crypto/subtle"
	"errors"
	"io"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"coffre/internal/cfb"
)

// decrypted is the transport layer opened: the literal data body and what
// to drain and check at its end.
type decrypted struct {
	body   io.Reader // the literal data packet's content
	rest   io.Reader // the decrypted packet stream, drained after body (checks the MDC / AEAD tag)
	closer io.Closer // optional, for SEIPDv2
	ingest *openpgp.Entity
}

// decryptSealed reads the sealed part's packets: PKESKs, then one
// integrity-protected encrypted data packet, decrypted with keys. SEIPDv1
// (the upload profile) takes a fast streaming path written here; SEIPDv2 is
// decrypted by go-crypto. Inside, a literal data packet, optionally inside
// one compressed data packet (GnuPG compresses by default), is expected.
//
// sealedLen, the sealed part's declared length, bounds the buffers.
func decryptSealed(r io.Reader, keys openpgp.EntityList, quit *stopper, sealedLen int64) (*decrypted, error) {
	pr := packet.NewReader(r)
	var eks []*packet.EncryptedKey
	var se *packet.SymmetricallyEncrypted
	for se == nil {
		p, err := pr.Next()
		if err != nil {
			if err == io.EOF {
				return nil, errorf(ErrWrongIngestKey, "sealed part holds no encrypted data")
			}
			return nil, wrapf(ErrFormat, err, "sealed part: reading OpenPGP packets")
		}
		switch p := p.(type) {
		case *packet.EncryptedKey:
			if len(eks) == MaxRecipients {
				return nil, errorf(ErrTooLarge, "sealed part has more than %d recipients", MaxRecipients)
			}
			eks = append(eks, p)
		case *packet.SymmetricKeyEncrypted:
			// A passphrase recipient: not for us.
		case *packet.SymmetricallyEncrypted:
			se = p
		default:
			return nil, errorf(ErrWrongIngestKey, "sealed part is not encrypted (found a %T before any encrypted data)", p)
		}
	}
	if !se.IntegrityProtected {
		return nil, errorf(ErrFormat, "sealed part uses encryption without integrity protection (no MDC): seal with the GnuPG 2.2 profile")
	}
	var (
		sessionKey []byte
		cf         packet.CipherFunction
		ingest     *openpgp.Entity
	)
	cands := keys.DecryptionKeys()
find:
	for _, ek := range eks {
		for _, k := range cands {
			if ek.KeyId != 0 && ek.KeyId != k.PublicKey.KeyId {
				continue
			}
			if k.PrivateKey == nil || k.PrivateKey.Encrypted {
				continue
			}
			if err := ek.Decrypt(k.PrivateKey, readConfig()); err == nil {
				sessionKey, cf, ingest = ek.Key, ek.CipherFunc, k.Entity
				break find
			}
		}
	}
	if sessionKey == nil {
		return nil, errorf(ErrWrongIngestKey, "no session key decrypts with the ingest key(s): check the client used this appliance's current ingest public key")
	}
	var plain io.Reader
	d := &decrypted{ingest: ingest}
	switch se.Version {
	case 1:
		mr, err := newMDCReader(se.Contents, cf, sessionKey, quit, sealedLen)
		if err != nil {
			return nil, err
		}
		plain = mr
		clear(sessionKey)
	case 2:
		rc, err := se.Decrypt(cf, sessionKey)
		if err != nil {
			return nil, wrapf(ErrFormat, err, "sealed part: SEIPDv2")
		}
		plain, d.closer = rc, rc
	default:
		return nil, errorf(ErrFormat, "sealed part: encrypted data packet version %d", se.Version)
	}
	d.rest = plain
	body, err := literalBody(plain)
	if err != nil {
		return nil, err
	}
	d.body = body
	return d, nil
}

// literalBody reads the decrypted packet stream up to the literal data
// packet (directly, or inside one compressed data packet) and returns its
// body.
func literalBody(plain io.Reader) (io.Reader, error) {
	p, err := packet.Read(plain)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return nil, err
		}
		return nil, wrapf(ErrFormat, err, "sealed part: reading the decrypted packets")
	}
	if c, ok := p.(*packet.Compressed); ok {
		if p, err = packet.Read(c.Body); err != nil {
			var e *Error
			if errors.As(err, &e) {
				return nil, err
			}
			return nil, wrapf(ErrFormat, err, "sealed part: reading the decompressed packets")
		}
	}
	lit, ok := p.(*packet.LiteralData)
	if !ok {
		return nil, errorf(ErrFormat, "sealed part holds a %T, want literal data (signed or nested messages are not accepted)", p)
	}
	return lit.Body, nil
}

// mdcReader decrypts a SEIPDv1 body (OpenPGP CFB without resync, IV zero,
// over prefix || packets || MDC packet, where the prefix is one random block
// and its last two bytes repeated) and checks the modification detection
// code: it returns io.EOF only after the trailing MDC packet (0xD3 0x14 and
// the SHA-1 of prefix, packets and those two bytes) matched. Chunks are
// decrypted in place by internal/cfb (eight AES blocks at a time with
// AES-NI; go-crypto's OCFB decrypter works byte by byte) and the SHA-1
// runs on a helper goroutine.
type mdcReader struct {
	in      io.Reader
	dec     *cfb.Stream
	h       *asyncHash // SHA-1 of the MDC, computed beside decryption
	buf     []byte     // held-back tail of the previous chunk, then this chunk
	held    int        // length of the held-back tail (mdcLen once started)
	tailOff int        // where the held-back tail is in buf
	chunk   int        // ciphertext read per fill
	ready   []byte     // plaintext released to the reader
	started bool       // prefix checked
	eof     bool       // MDC checked, ready is the last plaintext
	err     error
}

const (
	mdcLen     = 22 // 0xD3 0x14 + SHA-1
	cfbChunk   = 128 << 10
	prefixSize = aes.BlockSize + 2
)

// newMDCReader decrypts in; size bounds its length (buffers are sized to
// it).
func newMDCReader(in io.Reader, cf packet.CipherFunction, key []byte, quit *stopper, size int64) (*mdcReader, error) {
	switch cf {
	case packet.CipherAES128, packet.CipherAES192, packet.CipherAES256:
	default:
		return nil, errorf(ErrFormat, "sealed part uses cipher %d, want AES", cf)
	}
	if len(key) != cf.KeySize() {
		return nil, errorf(ErrFormat, "sealed part: session key length %d for cipher %d", len(key), cf)
	}
	dec, err := cfb.NewDecrypter(key, make([]byte, aes.BlockSize))
	if err != nil {
		return nil, wrapf(ErrFormat, err, "sealed part: cipher")
	}
	chunk := int(min(max(size, 4<<10), cfbChunk))
	return &mdcReader{
		in:    in,
		dec:   dec,
		h:     newAsync(sha1.New(), quit, size),
		buf:   make([]byte, mdcLen+chunk),
		chunk: chunk,
	}, nil
}

func (m *mdcReader) Read(p []byte) (int, error) {
	for len(m.ready) == 0 {
		if m.eof {
			return 0, io.EOF
		}
		if m.err != nil {
			return 0, m.err
		}
		m.err = m.fill()
		if m.err != nil {
			m.release()
		}
	}
	n := copy(p, m.ready)
	m.ready = m.ready[n:]
	if len(m.ready) == 0 && m.eof {
		m.release()
	}
	return n, nil
}

// release wipes the key and the plaintext buffer once the stream is over.
func (m *mdcReader) release() {
	m.dec.Wipe()
	clear(m.buf)
}

// fill reads and decrypts the next chunk.
func (m *mdcReader) fill() error {
	// the held-back tail of the previous chunk moves to the front
	m.held = copy(m.buf, m.buf[m.tailOff:m.tailOff+m.held])
	ct := m.buf[m.held : m.held+m.chunk]
	n := 0
	last := false
	for n < len(ct) {
		k, err := m.in.Read(ct[n:])
		n += k
		if err == io.EOF {
			last = true
			break
		}
		if err != nil {
			var e *Error
			if errors.As(err, &e) {
				return err
			}
			return wrapf(ErrFormat, err, "sealed part: reading encrypted data")
		}
	}
	m.dec.XORKeyStream(ct[:n], ct[:n])
	data := m.buf[:m.held+n]
	if !m.started {
		if len(data) < prefixSize+mdcLen {
			if !last {
				return errorf(ErrFormat, "sealed part: short read inside encrypted data")
			}
			return errorf(ErrFormat, "sealed part: encrypted data is %d bytes, too short for prefix and MDC", len(data))
		}
		const bs = aes.BlockSize
		if data[bs-2] != data[bs] || data[bs-1] != data[bs+1] {
			return errorf(ErrDigestMismatch, "sealed part: encrypted data prefix check failed: the ciphertext was altered")
		}
		m.h.Write(data[:prefixSize])
		data = data[prefixSize:]
		m.started = true
	}
	if len(data) < mdcLen {
		return errorf(ErrFormat, "sealed part: encrypted data ends without an MDC packet")
	}
	release, tail := data[:len(data)-mdcLen], data[len(data)-mdcLen:]
	m.h.Write(release)
	if last {
		m.h.Write(tail[:2])
		sum, ok := m.h.Sum()
		if !ok || tail[0] != 0xd3 || tail[1] != 0x14 || subtle.ConstantTimeCompare(sum, tail[2:]) != 1 {
			return errorf(ErrDigestMismatch, "sealed part: OpenPGP integrity check (MDC) failed: the ciphertext was altered")
		}
		m.eof = true
	}
	m.ready = release
	m.held, m.tailOff = mdcLen, m.held+n-mdcLen
	return nil
}
