package bailiff

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// The post-quantum profile (docs/formats/escrow.md, "Escrow bundle v2" and
// "Post-quantum items"): the target of the algorithm upgrade
// (re-encapsulation kind 4). Only the appliance reads it — GnuPG 2.2, Sequoia
// 1.x and RNP 0.16 read none of it — so it is used for escrow keys and the
// items sealed to them, never for anything a bailiff or a beneficiary opens
// with their own tools.
//
//   - escrow key: v6 OpenPGP, ML-DSA-87+Ed448 primary (31), ML-KEM-1024+X448
//     encryption subkey (36), no user id (RFC 9580 allows v6 certificates
//     without one; it keeps the key under 16 KiB);
//   - items: one anonymous PKESK v6 (key version 0, no fingerprint) of an
//     AES-256 session key, one SEIPD v2 packet (AES-256, OCB, 256 KiB
//     chunks, random salt), holding one binary literal data packet with no
//     name and time 0. No compression, no signature, no padding packet.
//
// Names as stored objects record them (and as the default crypto policy
// rates them: preferred, no end date).
const (
	AlgKeyPQ   = "openpgp-v6-mldsa87-ed448+mlkem1024-x448"
	AlgPKESKPQ = "openpgp-pkesk-v6-mlkem1024-x448-hidden"
	AlgDataPQ  = "openpgp-seipd-v2-aes256-ocb"
	// AlgPKESKPQNamed is the key packet of a share message to a
	// post-quantum bailiff key (bailiff_pq.go): PKESK v6 naming the
	// recipient's v6 fingerprint.
	AlgPKESKPQNamed = "openpgp-pkesk-v6-mlkem1024-x448"
	// AlgSignaturePQ is a v6 signature by an ML-DSA-87+Ed448 key over
	// SHA-512: what a post-quantum bailiff signs rosters and orders with.
	AlgSignaturePQ = "openpgp-sig-v6-mldsa87-ed448-sha512"
	// AlgS2KArgon2 protects a post-quantum bailiff's exported secret key:
	// Argon2 S2K with AEAD (OCB) key protection, AES-256 (S2K usage 253).
	AlgS2KArgon2 = "openpgp-s2k-argon2-aes256"
)

// ItemAlgorithmsPQ is what SealItemPQ uses.
var ItemAlgorithmsPQ = Algorithms{Key: AlgKeyPQ, PKESK: AlgPKESKPQ, Data: AlgDataPQ, Digest: "sha256"}

// pqChunkSize is the SEIPD v2 chunk size (2^16: chunk size octet 10), the
// record layer's chunk size too. go-crypto allocates one chunk per message
// on both sides; most items are far smaller.
const pqChunkSize = 1 << 16

// pqConfig pins the PQ profile. AEADConfig set means v6 PKESK and SEIPD v2
// wherever go-crypto decides from the config; the item writer below does
// not rely on that and asks for them explicitly.
func pqConfig(now time.Time) *packet.Config {
	return &packet.Config{
		DefaultHash:            crypto.SHA512,
		DefaultCipher:          packet.CipherAES256,
		DefaultCompressionAlgo: packet.CompressionNone,
		Algorithm:              packet.PubKeyAlgoMldsa87Ed448,
		V6Keys:                 true,
		AEADConfig:             &packet.AEADConfig{DefaultMode: packet.AEADModeOCB, ChunkSize: pqChunkSize},
		Time:                   func() time.Time { return now },
	}
}

// newPQEntity generates a v2 escrow key: v6, ML-DSA-87+Ed448 primary
// (certify), ML-KEM-1024+X448 subkey (encrypt), no user id, pair-wise
// checked.
func newPQEntity(now time.Time) (*openpgp.Entity, error) {
	e, err := openpgp.NewEntity("Coffre escrow key", "", "", pqConfig(now))
	if err != nil {
		return nil, fmt.Errorf("bailiff: generating a post-quantum key: %w", err)
	}
	// A v6 key carries its preferences in the direct-key signature; the
	// user id (and its ML-DSA-87 signature, 4.7 KB) adds nothing here.
	for id := range e.Identities {
		delete(e.Identities, id)
	}
	if err := pqPairwiseCheck(e, now); err != nil {
		wipeEntity(e)
		return nil, err
	}
	return e, nil
}

// pqPairwiseCheck signs and verifies with the primary key and seals and
// opens an item with the subkey, in the profile items use.
func pqPairwiseCheck(e *openpgp.Entity, now time.Time) error {
	msg := []byte("coffre pairwise check")
	var sig bytes.Buffer
	if err := openpgp.DetachSign(&sig, e, bytes.NewReader(msg), pqConfig(now)); err != nil {
		return fmt.Errorf("bailiff: pairwise check: sign: %w", err)
	}
	if _, err := openpgp.CheckDetachedSignature(openpgp.EntityList{e}, bytes.NewReader(msg), &sig, nil); err != nil {
		return fmt.Errorf("bailiff: pairwise check: verify: %w", err)
	}
	if err := checkPQPublic(e, now); err != nil {
		return fmt.Errorf("bailiff: pairwise check: %w", err)
	}
	enc, _ := e.EncryptionKey(now)
	var ct bytes.Buffer
	if err := sealToPQ(&ct, enc.PublicKey, bytes.NewReader(msg), true, now); err != nil {
		return fmt.Errorf("bailiff: pairwise check: encrypt: %w", err)
	}
	pr, err := openItemPQ(&ct, openpgp.EntityList{e})
	if err != nil {
		return fmt.Errorf("bailiff: pairwise check: decrypt: %w", err)
	}
	pt, err := io.ReadAll(pr)
	if err != nil || !bytes.Equal(pt, msg) {
		return fmt.Errorf("bailiff: pairwise check: decrypt failed: %v", err)
	}
	return nil
}

// checkPQPublic checks an entity is a v6 key with an ML-DSA-87+Ed448
// primary and a valid v6 ML-KEM-1024+X448 encryption subkey.
func checkPQPublic(e *openpgp.Entity, now time.Time) error {
	pk := e.PrimaryKey
	if pk.Version != 6 {
		return fmt.Errorf("key version %d, want v6", pk.Version)
	}
	if pk.PubKeyAlgo != packet.PubKeyAlgoMldsa87Ed448 {
		return fmt.Errorf("primary key algorithm %d, want ML-DSA-87+Ed448 (%d)", pk.PubKeyAlgo, packet.PubKeyAlgoMldsa87Ed448)
	}
	enc, ok := e.EncryptionKey(now)
	if !ok {
		return errors.New("no valid encryption subkey")
	}
	if enc.PublicKey.Version != 6 || enc.PublicKey.PubKeyAlgo != packet.PubKeyAlgoMlkem1024X448 {
		return fmt.Errorf("encryption key v%d algorithm %d, want v6 ML-KEM-1024+X448 (%d)", enc.PublicKey.Version, enc.PublicKey.PubKeyAlgo, packet.PubKeyAlgoMlkem1024X448)
	}
	return nil
}

// parseEscrowPublic reads the escrow public key of a bundle of the given
// version: exactly one public key (no secret part) of that version's
// profile.
func parseEscrowPublic(version int, b []byte, now time.Time) (*openpgp.Entity, error) {
	if version != 2 {
		return parsePublicKey(b, now)
	}
	el, err := readKeysN(b, MaxPublicKeyLenPQ)
	if err != nil {
		return nil, fmt.Errorf("not an OpenPGP public key: %s", sanitize(err))
	}
	if len(el) != 1 {
		return nil, fmt.Errorf("%d keys found, want exactly 1", len(el))
	}
	e := el[0]
	if e.PrivateKey != nil || hasSecretSubkey(e) {
		wipeEntity(e)
		return nil, errors.New("a secret key was given where a public key is expected")
	}
	if err := checkPQPublic(e, now); err != nil {
		return nil, err
	}
	return e, nil
}

func hasSecretSubkey(e *openpgp.Entity) bool {
	for _, s := range e.Subkeys {
		if s.PrivateKey != nil {
			return true
		}
	}
	return false
}

// readKeysN reads binary keys of at most max bytes, turning a parser panic
// into an error.
func readKeysN(b []byte, max int) (el openpgp.EntityList, err error) {
	defer func() {
		if p := recover(); p != nil {
			el, err = nil, errors.New("malformed OpenPGP key (parser panicked)")
		}
	}()
	if len(b) == 0 || len(b) > max {
		return nil, fmt.Errorf("key of %d bytes: outside 1..%d", len(b), max)
	}
	return openpgp.ReadKeyRing(bytes.NewReader(b))
}

// escrowLimit bounds the fields of an escrow bundle that depend on its
// version.
type escrowLimit struct{ fingerprint, public, sealed int }

func escrowLimits(version int) escrowLimit {
	if version == 2 {
		return escrowLimit{fingerprint: 32, public: MaxPublicKeyLenPQ, sealed: MaxSealedKeyLenPQ}
	}
	return escrowLimit{fingerprint: 20, public: MaxPublicKeyLen, sealed: MaxSealedKeyLen}
}

// NewEscrowPQ creates a user's escrow with a post-quantum escrow key
// (bundle v2): the target of the algorithm upgrade. Like NewEscrow, the
// escrow private key is sealed under K, K split k-of-n to the roster, each
// share encrypted to its bailiff in the GnuPG 2.2 profile (bailiffs still
// open their share with their own tools), and every secret is wiped before
// it returns.
func NewEscrowPQ(userID string, r *Roster) (*Escrow, error) {
	if len(userID) >= len(ReservedPrefix) && userID[:len(ReservedPrefix)] == ReservedPrefix {
		return nil, fmt.Errorf("bailiff: user id %q uses the reserved prefix %q", userID, ReservedPrefix)
	}
	return makeEscrow(userID, r, time.Now(), 2)
}

// NewVaultCheckPQ is NewVaultCheck with a post-quantum key: the
// verify-shares escrow after an algorithm upgrade.
func NewVaultCheckPQ(r *Roster, now time.Time) (*Escrow, error) {
	return makeEscrow(checkUserID, r, now, 2)
}

// PQ reports whether the escrow key is post-quantum (bundle v2).
func (e *Escrow) PQ() bool { return e.Version == 2 }

// ItemAlgorithms names what items sealed to this escrow record.
func (e *Escrow) ItemAlgorithms() Algorithms {
	if e.PQ() {
		return ItemAlgorithmsPQ
	}
	return ItemAlgorithms
}

// KeyAlgorithm names the escrow key (AlgKey or AlgKeyPQ).
func (e *Escrow) KeyAlgorithm() string { return e.ItemAlgorithms().Key }

// SealEscrowItem seals an item to the escrow in the escrow's profile: the
// GnuPG 2.2 profile for a v1 (P-521) escrow (SealItem), the post-quantum
// profile for a v2 escrow (SealItemPQ). It returns the algorithms used.
func SealEscrowItem(w io.Writer, e *Escrow, plaintext io.Reader) (Algorithms, error) {
	if e.PQ() {
		return SealItemPQ(w, e.pub, plaintext)
	}
	return SealItem(w, e.pub, plaintext)
}

// SealItemPQ encrypts plaintext to a post-quantum escrow key: a fresh
// AES-256 session key in an anonymous PKESK v6 (ML-KEM-1024+X448), then a
// SEIPD v2 packet (AES-256/OCB) holding a binary literal packet with no
// name and time 0. It streams in constant memory.
func SealItemPQ(w io.Writer, escrowPub *openpgp.Entity, plaintext io.Reader) (Algorithms, error) {
	if escrowPub == nil {
		return Algorithms{}, errors.New("bailiff: seal: no escrow key")
	}
	now := time.Now()
	if err := checkPQPublic(escrowPub, now); err != nil {
		return Algorithms{}, fmt.Errorf("bailiff: seal: escrow key: %v", err)
	}
	enc, _ := escrowPub.EncryptionKey(now)
	if err := sealToPQ(w, enc.PublicKey, plaintext, true, now); err != nil {
		return Algorithms{}, fmt.Errorf("bailiff: seal: %w", err)
	}
	return ItemAlgorithmsPQ, nil
}

// sealToPQ writes the PQ profile's message to pub: an anonymous PKESK v6
// when hidden (items), else one naming pub's fingerprint (share messages).
func sealToPQ(w io.Writer, pub *packet.PublicKey, plaintext io.Reader, hidden bool, now time.Time) error {
	cfg := pqConfig(now)
	key := make([]byte, packet.CipherAES256.KeySize())
	defer clear(key)
	if _, err := io.ReadFull(rand.Reader, key); err != nil {
		return err
	}
	bufs := pqBufPool.Get().(*pqBufs)
	defer pqBufPool.Put(bufs)
	bw := bufs.w
	bw.Reset(w)
	defer bw.Reset(nil)
	if err := packet.SerializeEncryptedKeyAEADwithHiddenOption(bw, pub, packet.CipherAES256, true, key, hidden, cfg); err != nil {
		return err
	}
	data, err := packet.SerializeSymmetricallyEncrypted(bw, packet.CipherAES256, true,
		packet.CipherSuite{Cipher: packet.CipherAES256, Mode: packet.AEADModeOCB}, key, cfg)
	if err != nil {
		return err
	}
	lit, err := packet.SerializeLiteral(data, true, "", 0)
	if err != nil {
		return err
	}
	defer clear(bufs.copy)
	if _, err := io.CopyBuffer(lit, onlyReader{plaintext}, bufs.copy); err != nil {
		return err
	}
	if err := lit.Close(); err != nil { // closes the SEIPD packet too (final tag)
		return err
	}
	return bw.Flush()
}

// pqBufs are the buffers of one sealToPQ, reused: items are sealed by the
// thousand during an upgrade, most of them far smaller than the buffers.
type pqBufs struct {
	w    *bufio.Writer
	copy []byte
}

var pqBufPool = sync.Pool{New: func() any {
	return &pqBufs{w: bufio.NewWriterSize(nil, pqChunkSize), copy: make([]byte, pqChunkSize)}
}}

// openItemAny opens an item in either profile, telling them apart by the
// version of the first key packet (3: GnuPG 2.2 profile, 6: PQ profile).
func openItemAny(r io.Reader, keys openpgp.EntityList) (io.Reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(8)
	if pkeskVersion(head) == 6 {
		return openItemPQ(br, keys)
	}
	return openItem(br, keys)
}

// pkeskVersion returns the version octet of a PKESK packet starting head,
// or 0 when head does not start with one.
func pkeskVersion(head []byte) int {
	if len(head) < 2 || head[0]&0x80 == 0 {
		return 0
	}
	var tag byte
	n := 1                 // header length so far
	if head[0]&0x40 != 0 { // new format
		tag = head[0] & 0x3f
		switch l := head[1]; {
		case l < 192:
			n += 1
		case l < 224:
			n += 2
		case l == 255:
			n += 5
		default:
			return 0 // partial lengths are not allowed for PKESK
		}
	} else {
		tag = (head[0] >> 2) & 0x0f
		switch head[0] & 3 {
		case 0:
			n += 1
		case 1:
			n += 2
		case 2:
			n += 4
		default:
			return 0
		}
	}
	if tag != 1 || len(head) <= n {
		return 0
	}
	return int(head[n])
}

// openItemPQ is the strict reader of the PQ profile: anonymous or named
// PKESK v6 packets, then one SEIPD v2 packet (AES-256, OCB), holding
// exactly one literal data packet. Each chunk is authenticated before its
// plaintext is released; truncation and a bad final tag are errors at EOF.
func openItemPQ(r io.Reader, keys openpgp.EntityList) (rd io.Reader, err error) {
	defer func() {
		if p := recover(); p != nil {
			rd, err = nil, fmt.Errorf("%w: malformed packets", ErrItemFormat)
		}
	}()
	var eks []*packet.EncryptedKey
	var se *packet.SymmetricallyEncrypted
	for se == nil {
		if len(eks) > 64 {
			return nil, fmt.Errorf("%w: too many key packets", ErrItemFormat)
		}
		p, err := packet.Read(r)
		if err != nil {
			return nil, fmt.Errorf("%w: %s", ErrItemFormat, sanitize(err))
		}
		switch p := p.(type) {
		case *packet.EncryptedKey:
			if p.Version != 6 || p.Algo != packet.PubKeyAlgoMlkem1024X448 {
				return nil, fmt.Errorf("%w: want PKESK v6 to ML-KEM-1024+X448, found v%d algorithm %d", ErrItemFormat, p.Version, p.Algo)
			}
			eks = append(eks, p)
		case *packet.SymmetricallyEncrypted:
			if !p.IntegrityProtected || p.Version != 2 || p.Cipher != packet.CipherAES256 || p.Mode != packet.AEADModeOCB {
				return nil, fmt.Errorf("%w: want SEIPD v2 with AES-256/OCB", ErrItemFormat)
			}
			se = p
		default:
			return nil, fmt.Errorf("%w: unexpected packet %T", ErrItemFormat, p)
		}
	}
	var key []byte
	for _, ek := range eks {
		for _, k := range keys.DecryptionKeys() {
			if k.PrivateKey == nil || k.PrivateKey.Encrypted || k.PublicKey.PubKeyAlgo != ek.Algo {
				continue
			}
			if ek.KeyVersion != 0 && !bytes.Equal(ek.KeyFingerprint, k.PublicKey.Fingerprint) {
				continue
			}
			if ek.Decrypt(k.PrivateKey, nil) == nil {
				key = ek.Key
				break
			}
		}
		if key != nil {
			break
		}
	}
	if key == nil {
		return nil, errors.New("bailiff: no key packet of the item opens with the given key")
	}
	if len(key) != packet.CipherAES256.KeySize() {
		clear(key)
		return nil, fmt.Errorf("%w: session key of %d bytes, want 32", ErrItemFormat, len(key))
	}
	dec, err := se.Decrypt(packet.CipherAES256, key)
	clear(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrItemFormat, sanitize(err))
	}
	p, err := packet.Read(dec)
	if err != nil {
		return nil, fmt.Errorf("bailiff: item does not decrypt: %s", sanitize(err))
	}
	lit, ok := p.(*packet.LiteralData)
	if !ok {
		return nil, fmt.Errorf("%w: inner packet %T, want literal data", ErrItemFormat, p)
	}
	return &pqLiteralEOF{body: lit.Body, dec: dec}, nil
}

// pqLiteralEOF returns the literal body and, at its end, requires the
// encrypted stream to end too and its final AEAD tag to verify.
type pqLiteralEOF struct {
	body io.Reader
	dec  io.ReadCloser
	done bool
}

func (l *pqLiteralEOF) Read(p []byte) (n int, err error) {
	defer func() {
		if r := recover(); r != nil {
			n, err = 0, fmt.Errorf("%w: malformed packets", ErrItemFormat)
		}
	}()
	if l.done {
		return 0, io.EOF
	}
	n, err = l.body.Read(p)
	if err == io.EOF {
		var one [1]byte
		if k, _ := l.dec.Read(one[:]); k != 0 {
			return n, fmt.Errorf("%w: data after the literal packet", ErrItemFormat)
		}
		if cerr := l.dec.Close(); cerr != nil {
			return n, errors.New("bailiff: item failed its integrity check (AEAD final tag): damaged, truncated or tampered")
		}
		l.done = true
	} else if err != nil {
		return n, fmt.Errorf("bailiff: item failed its integrity check: %s", sanitize(err))
	}
	return n, err
}

// onlyReader hides WriterTo/ReaderFrom so io.CopyBuffer uses our buffer.
type onlyReader struct{ io.Reader }
