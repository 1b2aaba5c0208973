package bailiff

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pecdh "github.com/ProtonMail/go-crypto/openpgp/ecdh"
	pecdsa "github.com/ProtonMail/go-crypto/openpgp/ecdsa"
	"github.com/ProtonMail/go-crypto/openpgp/mldsa_eddsa"
	"github.com/ProtonMail/go-crypto/openpgp/mlkem_ecdh"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/ProtonMail/go-crypto/openpgp/s2k"
)

// The GnuPG 2.2 profile: what every message a bailiff or beneficiary opens
// with their own tools uses. v4 keys, PKESK v3, SEIPD v1 with MDC, AES-256,
// SHA-512 signatures, no compression, no AEAD. These names are what stored
// objects record.
const (
	AlgKey        = "openpgp-v4-ecdsa-p521+ecdh-p521"
	AlgPKESK      = "openpgp-pkesk-v3-ecdh-p521-hidden"
	AlgPKESKNamed = "openpgp-pkesk-v3-ecdh-p521"
	AlgData       = "openpgp-seipd-v1-aes256-mdc"
	AlgSignature  = "openpgp-sig-v4-ecdsa-p521-sha512"
	AlgS2K        = "openpgp-s2k-iterated-salted-sha256-aes256"
	AlgEscrowAEAD = "xchacha20poly1305"
)

// Algorithms names the algorithms of a stored object.
type Algorithms struct {
	Key    string // recipient key type
	PKESK  string // key wrapping
	Data   string // payload encryption
	Digest string // digest recorded for the plaintext, if any
}

// ItemAlgorithms is what SealItem uses.
var ItemAlgorithms = Algorithms{Key: AlgKey, PKESK: AlgPKESK, Data: AlgData, Digest: "sha256"}

// s2kCount is the iterated-salted S2K count used for exported keys (the
// GnuPG 2.2 default is calibrated; this is the largest encodable count
// below 2^25, about 0.1 s on the appliance).
const s2kCount = 31457280

// config returns the pinned GnuPG 2.2 profile.
func config(now time.Time) *packet.Config {
	return &packet.Config{
		DefaultHash:            crypto.SHA512,
		DefaultCipher:          packet.CipherAES256,
		DefaultCompressionAlgo: packet.CompressionNone,
		Algorithm:              packet.PubKeyAlgoECDSA,
		Curve:                  packet.CurveNistP521,
		V6Keys:                 false,
		AEADConfig:             nil,
		Time:                   func() time.Time { return now },
		S2KConfig: &s2k.Config{
			S2KMode:  s2k.IteratedSaltedS2K,
			Hash:     crypto.SHA256,
			S2KCount: s2kCount,
		},
	}
}

// readConfig is the profile for reading: SHA-1 and MD5 refused, MDC
// required (the default), no decompression bombs.
func readConfig() *packet.Config {
	limit := int64(1 << 40)
	return &packet.Config{MaxDecompressedMessageSize: &limit}
}

// Fingerprint returns the lowercase hex fingerprint of an entity: 40 hex
// digits for a v4 key, 64 for a v6 key.
func Fingerprint(e *openpgp.Entity) string {
	return hex.EncodeToString(e.PrimaryKey.Fingerprint)
}

// newP521Entity generates a v4 OpenPGP key: ECDSA P-521 primary
// (certify+sign), ECDH P-521 subkey (encrypt), with a pair-wise consistency
// check (sign/verify and encrypt/decrypt) before it is returned.
func newP521Entity(name, email string, now time.Time) (*openpgp.Entity, error) {
	e, err := generateP521Entity(name, email, now)
	if err != nil {
		return nil, err
	}
	if err := pairwiseCheck(e, now); err != nil {
		wipeEntity(e)
		return nil, err
	}
	return e, nil
}

// generateP521Entity is newP521Entity without the pair-wise check, for a
// caller that runs it beside other work and uses nothing before it passed.
func generateP521Entity(name, email string, now time.Time) (*openpgp.Entity, error) {
	e, err := openpgp.NewEntity(name, "", email, config(now))
	if err != nil {
		return nil, fmt.Errorf("bailiff: generating a P-521 key: %w", err)
	}
	return e, nil
}

// pairwiseCheck signs and verifies, encrypts and decrypts with a fresh key.
// The two halves are independent and run side by side (each is a few P-521
// scalar multiplications).
func pairwiseCheck(e *openpgp.Entity, now time.Time) error {
	var signErr error
	var wg sync.WaitGroup
	wg.Go(func() { signErr = pairwiseSign(e, now) })
	encErr := pairwiseEncrypt(e, now)
	wg.Wait()
	return errors.Join(signErr, encErr)
}

var pairwiseMsg = []byte("coffre pairwise check")

// pairwiseSign is the sign/verify half of pairwiseCheck.
func pairwiseSign(e *openpgp.Entity, now time.Time) error {
	var sig bytes.Buffer
	if err := openpgp.DetachSign(&sig, e, bytes.NewReader(pairwiseMsg), config(now)); err != nil {
		return fmt.Errorf("bailiff: pairwise check: sign: %w", err)
	}
	if _, err := openpgp.CheckDetachedSignature(openpgp.EntityList{e}, bytes.NewReader(pairwiseMsg), &sig, nil); err != nil {
		return fmt.Errorf("bailiff: pairwise check: verify: %w", err)
	}
	return nil
}

// pairwiseEncrypt is the encrypt/decrypt half of pairwiseCheck.
func pairwiseEncrypt(e *openpgp.Entity, now time.Time) error {
	var ct bytes.Buffer
	if err := encryptBytes(&ct, e, pairwiseMsg, false, now); err != nil {
		return fmt.Errorf("bailiff: pairwise check: encrypt: %w", err)
	}
	pt, err := decryptBytes(&ct, openpgp.EntityList{e}, 1<<10)
	if err != nil || !bytes.Equal(pt, pairwiseMsg) {
		return fmt.Errorf("bailiff: pairwise check: decrypt failed: %v", err)
	}
	return nil
}

// checkP521Public checks an entity is a v4 key with an ECDSA P-521 primary
// and a valid ECDH P-521 encryption subkey, and carries no private material.
func checkP521Public(e *openpgp.Entity, now time.Time) error {
	pk := e.PrimaryKey
	if pk.Version != 4 {
		return fmt.Errorf("key version %d, want v4 (GnuPG 2.2 reads v4 only)", pk.Version)
	}
	if pk.PubKeyAlgo != packet.PubKeyAlgoECDSA {
		return fmt.Errorf("primary key algorithm %d, want ECDSA (19)", pk.PubKeyAlgo)
	}
	if c, err := pk.Curve(); err != nil || c != packet.CurveNistP521 {
		return fmt.Errorf("primary key curve is not NIST P-521")
	}
	enc, ok := e.EncryptionKey(now)
	if !ok {
		return errors.New("no valid encryption subkey")
	}
	if enc.PublicKey.PubKeyAlgo != packet.PubKeyAlgoECDH {
		return fmt.Errorf("encryption key algorithm %d, want ECDH (18)", enc.PublicKey.PubKeyAlgo)
	}
	if c, err := enc.PublicKey.Curve(); err != nil || c != packet.CurveNistP521 {
		return fmt.Errorf("encryption key curve is not NIST P-521")
	}
	return nil
}

// publicBytes serializes the transferable public key.
func publicBytes(e *openpgp.Entity) ([]byte, error) {
	var b bytes.Buffer
	if err := e.Serialize(&b); err != nil {
		return nil, fmt.Errorf("bailiff: serializing public key: %w", err)
	}
	return b.Bytes(), nil
}

// parsePublicKey reads exactly one binary or armored transferable public
// key in the GnuPG 2.2 profile (v4, P-521), refusing secret keys.
func parsePublicKey(b []byte, now time.Time) (*openpgp.Entity, error) {
	e, err := parsePublicEntity(b, 4*MaxPublicKeyLen)
	if err != nil {
		return nil, err
	}
	if err := checkP521Public(e, now); err != nil {
		return nil, err
	}
	return e, nil
}

// parsePublicEntity reads exactly one binary or armored transferable
// public key of at most max bytes, refusing secret keys. It checks no
// algorithm.
func parsePublicEntity(b []byte, max int) (e *openpgp.Entity, err error) {
	defer func() {
		// the OpenPGP parser is third-party code fed outside input: a
		// panic there must not take the appliance down
		if p := recover(); p != nil {
			e, err = nil, fmt.Errorf("malformed OpenPGP key (parser panicked)")
		}
	}()
	el, err := readKeys(b, max)
	if err != nil {
		return nil, fmt.Errorf("not an OpenPGP public key: %s", sanitize(err))
	}
	if len(el) != 1 {
		return nil, fmt.Errorf("%d keys found, want exactly 1", len(el))
	}
	e = el[0]
	if e.PrivateKey != nil {
		wipeEntity(e)
		return nil, errors.New("a secret key was given where a public key is expected; export the public key only")
	}
	for _, sk := range e.Subkeys {
		if sk.PrivateKey != nil {
			wipeEntity(e)
			return nil, errors.New("a secret subkey was given where a public key is expected")
		}
	}
	return e, nil
}

// encryptTo starts a message in the GnuPG 2.2 profile to the encryption key
// of e: PKESK v3 (key id 0 when hidden), SEIPD v1 + MDC, AES-256, binary
// literal data with no name and time 0. The caller writes the plaintext and
// closes the returned writer.
func encryptTo(w io.Writer, e *openpgp.Entity, hidden bool, now time.Time) (io.WriteCloser, error) {
	enc, ok := e.EncryptionKey(now)
	if !ok {
		return nil, errors.New("recipient has no valid encryption key")
	}
	return encryptToKey(w, enc.PublicKey, hidden, now)
}

func encryptToKey(w io.Writer, pub *packet.PublicKey, hidden bool, now time.Time) (io.WriteCloser, error) {
	key, head, err := sessionKeyPacket(pub, hidden, now)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return newLiteralWriter(w, head, key)
}

// sessionKeyPacket draws an AES-256 session key and encrypts it to pub in
// a PKESK v3 (key id 0 when hidden). The caller clears key.
func sessionKeyPacket(pub *packet.PublicKey, hidden bool, now time.Time) (key, head []byte, err error) {
	key = make([]byte, packet.CipherAES256.KeySize())
	if _, err := io.ReadFull(rand.Reader, key); err != nil {
		return nil, nil, err
	}
	if head, err = keyPacket(pub, key, hidden, now); err != nil {
		clear(key)
		return nil, nil, err
	}
	return key, head, nil
}

// keyPacket encrypts an AES-256 session key to pub in a PKESK v3.
func keyPacket(pub *packet.PublicKey, key []byte, hidden bool, now time.Time) ([]byte, error) {
	head, err := ecdhP521KeyPacket(pub, key, hidden)
	if err == nil || err != errNotP521 {
		return head, err
	}
	b := bytes.NewBuffer(make([]byte, 0, 512))
	if err := packet.SerializeEncryptedKeyAEADwithHiddenOption(b, pub, packet.CipherAES256, false, key, hidden, config(now)); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func encryptBytes(w io.Writer, e *openpgp.Entity, msg []byte, hidden bool, now time.Time) error {
	pw, err := encryptTo(w, e, hidden, now)
	if err != nil {
		return err
	}
	if _, err := pw.Write(msg); err != nil {
		return err
	}
	return pw.Close()
}

// decryptReader opens an OpenPGP message with the keyring and returns the
// plaintext stream. Integrity (MDC) is checked when the stream reaches EOF:
// the reader returns an error then, so callers must read to EOF before
// trusting anything.
func decryptReader(r io.Reader, keys openpgp.EntityList) (io.Reader, error) {
	md, err := openpgp.ReadMessage(r, keys, nil, readConfig())
	if err != nil {
		return nil, err
	}
	if !md.IsEncrypted {
		return nil, errors.New("message is not encrypted")
	}
	return md.UnverifiedBody, nil
}

// decryptBytes decrypts a whole small message, at most max bytes.
func decryptBytes(r io.Reader, keys openpgp.EntityList, max int64) ([]byte, error) {
	pr, err := decryptReader(r, keys)
	if err != nil {
		return nil, err
	}
	return readAllMax(pr, max)
}

// readAllMax reads a decrypted message whole, failing (and wiping what
// it read) past max bytes.
func readAllMax(pr io.Reader, max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(pr, max+1))
	if err != nil {
		clear(b)
		return nil, err
	}
	if int64(len(b)) > max {
		clear(b)
		return nil, fmt.Errorf("message larger than %d bytes", max)
	}
	return b, nil
}

// detachSign makes a binary detached signature over msg.
func detachSign(e *openpgp.Entity, msg []byte, now time.Time) ([]byte, error) {
	var sig bytes.Buffer
	if err := openpgp.DetachSign(&sig, e, bytes.NewReader(msg), config(now)); err != nil {
		return nil, err
	}
	return sig.Bytes(), nil
}

// normalizeSignature accepts a binary or armored detached signature and
// returns it binary.
func normalizeSignature(sig []byte) ([]byte, error) {
	if len(sig) > 4*MaxSignatureLen {
		return nil, fmt.Errorf("signature of %d bytes is too large", len(sig))
	}
	if bytes.HasPrefix(bytes.TrimSpace(sig), []byte("-----BEGIN PGP SIGNATURE")) {
		blk, err := armor.Decode(bytes.NewReader(sig))
		if err != nil {
			return nil, fmt.Errorf("bad armored signature: %w", err)
		}
		b, err := io.ReadAll(io.LimitReader(blk.Body, MaxSignatureLen+1))
		if err != nil {
			return nil, fmt.Errorf("bad armored signature: %w", err)
		}
		sig = b
	}
	if len(sig) == 0 || len(sig) > MaxSignatureLen {
		return nil, fmt.Errorf("signature of %d bytes outside 1..%d", len(sig), MaxSignatureLen)
	}
	return sig, nil
}

// verifyDetached checks sig over msg by e (primary key or a signing
// subkey), with SHA-256 or stronger.
//
// Signatures that verified are remembered for a while (verifiedSigs): a
// roster's and an order's signatures are checked again at each step of a
// job (parse, approve, open the quorum, each resume), at several
// milliseconds per P-521 or ML-DSA verification.
func verifyDetached(e *openpgp.Entity, msg, sig []byte) error {
	id := sigMemoKey(e, msg, sig)
	if verifiedSigs.seen(id) {
		return nil
	}
	signer, err := openpgp.CheckDetachedSignatureAndHash(openpgp.EntityList{e}, bytes.NewReader(msg), bytes.NewReader(sig),
		[]crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512, crypto.SHA3_256, crypto.SHA3_512}, nil)
	if err != nil {
		return err
	}
	if signer == nil || !bytes.Equal(signer.PrimaryKey.Fingerprint, e.PrimaryKey.Fingerprint) {
		return errors.New("signed by another key")
	}
	verifiedSigs.add(id)
	return nil
}

// sigMemoKey names a (key, message, signature) triple. The primary key's
// fingerprint names the key: its subkeys are bound to it by signatures
// only its holder can make, checked when the key was parsed.
func sigMemoKey(e *openpgp.Entity, msg, sig []byte) [32]byte {
	m := sha256.Sum256(msg)
	h := sha256.New()
	h.Write(e.PrimaryKey.Fingerprint)
	h.Write(m[:])
	h.Write(sig)
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// sigMemo remembers successful verifications for ttl (a key that expires
// or is revoked meanwhile is seen at the next verification), at most max
// of them (then it starts again empty). Failures are never remembered.
type sigMemo struct {
	mu  sync.Mutex
	ok  map[[32]byte]time.Time
	ttl time.Duration
	max int
	now func() time.Time
}

var verifiedSigs = &sigMemo{ttl: 10 * time.Minute, max: 4096, now: time.Now}

// ForgetVerifiedSignatures drops the remembered verifications: every
// signature is verified afresh from now on (benchmarks of a first
// verification use it).
func ForgetVerifiedSignatures() {
	verifiedSigs.mu.Lock()
	defer verifiedSigs.mu.Unlock()
	verifiedSigs.ok = nil
}

func (m *sigMemo) seen(k [32]byte) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.ok[k]
	if ok && m.now().Before(t) {
		return true
	}
	delete(m.ok, k)
	return false
}

func (m *sigMemo) add(k [32]byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ok == nil || len(m.ok) >= m.max {
		m.ok = map[[32]byte]time.Time{}
	}
	m.ok[k] = m.now().Add(m.ttl)
}

// armorBytes armors b with the given block type.
func armorBytes(b []byte, blockType string) ([]byte, error) {
	var out bytes.Buffer
	w, err := armor.Encode(&out, blockType, nil)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(b); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// wipeEntity overwrites the private scalars of e (best effort: the Go
// runtime may have copied them; the appliance also keeps no swap).
func wipeEntity(e *openpgp.Entity) {
	if e == nil {
		return
	}
	wipePriv(e.PrivateKey)
	for i := range e.Subkeys {
		wipePriv(e.Subkeys[i].PrivateKey)
	}
	e.PrivateKey = nil
	for i := range e.Subkeys {
		e.Subkeys[i].PrivateKey = nil
	}
}

func wipePriv(p *packet.PrivateKey) {
	if p == nil {
		return
	}
	switch k := p.PrivateKey.(type) {
	case *pecdsa.PrivateKey:
		if k.D != nil {
			clear(k.D.Bits())
			k.D.SetInt64(0)
		}
	case *pecdh.PrivateKey:
		clear(k.D)
	case *mldsa_eddsa.PrivateKey:
		clear(k.SecretEc)
		clear(k.SecretMldsaSeed)
		k.SecretMldsa = nil // circl's expanded key: dropped, not overwritable
	case *mlkem_ecdh.PrivateKey:
		clear(k.SecretEc)
		clear(k.SecretMlkemSeed)
		k.SecretMlkem = nil
	}
	p.PrivateKey = nil
}

// sanitize keeps error text from external parsers short and single-line.
func sanitize(err error) string {
	s := err.Error()
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// readKeys reads binary or armored keys of at most max bytes, turning a
// parser panic into an error.
func readKeys(b []byte, max int) (el openpgp.EntityList, err error) {
	defer func() {
		if p := recover(); p != nil {
			el, err = nil, errors.New("malformed OpenPGP key (parser panicked)")
		}
	}()
	if len(b) == 0 || len(b) > max {
		return nil, fmt.Errorf("key of %d bytes: outside 1..%d", len(b), max)
	}
	if bytes.HasPrefix(bytes.TrimSpace(b), []byte("-----BEGIN PGP")) {
		return openpgp.ReadArmoredKeyRing(bytes.NewReader(b))
	}
	return openpgp.ReadKeyRing(bytes.NewReader(b))
}
