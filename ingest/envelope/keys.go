package envelope

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/subtle"
	"io"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// CourierAlgo selects the courier key algorithm.
type CourierAlgo int

const (
	// CourierP521 is an OpenPGP v4 ECDSA key on NIST P-521.
	CourierP521 CourierAlgo = iota
	// CourierEd25519 is an OpenPGP v4 EdDSA (legacy, algorithm 22) key on
	// Ed25519, readable by GnuPG 2.2.
	CourierEd25519
)

// keyConfig is the GnuPG 2.2-compatible key profile: v4, no AEAD
// advertised, AES-256 and SHA-512 preferred, no compression.
func keyConfig(algo packet.PublicKeyAlgorithm, curve packet.Curve) *packet.Config {
	return &packet.Config{
		Algorithm:              algo,
		Curve:                  curve,
		DefaultHash:            crypto.SHA512,
		DefaultCipher:          packet.CipherAES256,
		DefaultCompressionAlgo: packet.CompressionNone,
		AEADConfig:             nil,
		V6Keys:                 false,
	}
}

// GenerateIngestKey makes an appliance ingest key: a v4 OpenPGP key with a
// P-521 ECDSA primary (certification) and a P-521 ECDH encryption subkey
// (KDF SHA-512, AES-256), checked pair-wise (encrypt then decrypt once).
func GenerateIngestKey(name string) (*openpgp.Entity, error) {
	e, err := openpgp.NewEntity(name, "coffre ingest key", "", keyConfig(packet.PubKeyAlgoECDSA, packet.CurveNistP521))
	if err != nil {
		return nil, wrapf(ErrFormat, err, "generating ingest key")
	}
	if err := checkIngestKeyPair(e); err != nil {
		return nil, err
	}
	return e, nil
}

// GenerateCourierKey makes a courier signing key (v4, P-521 ECDSA or
// Ed25519), checked pair-wise (sign then verify once). The key also carries
// an encryption subkey, as every OpenPGP key generator in go-crypto makes
// one; Coffre never encrypts to it.
func GenerateCourierKey(name string, algo CourierAlgo) (*openpgp.Entity, error) {
	var cfg *packet.Config
	switch algo {
	case CourierP521:
		cfg = keyConfig(packet.PubKeyAlgoECDSA, packet.CurveNistP521)
	case CourierEd25519:
		cfg = keyConfig(packet.PubKeyAlgoEdDSA, packet.Curve25519)
	default:
		return nil, errorf(ErrFormat, "unknown courier key algorithm %d", algo)
	}
	e, err := openpgp.NewEntity(name, "coffre courier key", "", cfg)
	if err != nil {
		return nil, wrapf(ErrFormat, err, "generating courier key")
	}
	if err := checkCourierKeyPair(e); err != nil {
		return nil, err
	}
	return e, nil
}

// checkIngestKeyPair seals a random value to e with the upload profile and
// opens it again.
func checkIngestKeyPair(e *openpgp.Entity) error {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return wrapf(ErrFormat, err, "pair-wise check of ingest key")
	}
	var ct bytes.Buffer
	w, err := sealWriter(&ct, e)
	if err != nil {
		return wrapf(ErrWrongIngestKey, err, "pair-wise check of ingest key: encrypt")
	}
	w.Write(secret)
	if err := w.Close(); err != nil {
		return wrapf(ErrWrongIngestKey, err, "pair-wise check of ingest key: encrypt")
	}
	md, err := openpgp.ReadMessage(&ct, openpgp.EntityList{e}, nil, readConfig())
	if err != nil {
		return wrapf(ErrWrongIngestKey, err, "pair-wise check of ingest key: decrypt")
	}
	got, err := io.ReadAll(md.UnverifiedBody)
	if err != nil || subtle.ConstantTimeCompare(got, secret) != 1 {
		return errorf(ErrWrongIngestKey, "pair-wise check of ingest key failed: discard this key")
	}
	return nil
}

func checkCourierKeyPair(e *openpgp.Entity) error {
	msg := make([]byte, 32)
	if _, err := rand.Read(msg); err != nil {
		return wrapf(ErrFormat, err, "pair-wise check of courier key")
	}
	var sig bytes.Buffer
	if err := openpgp.DetachSign(&sig, e, bytes.NewReader(msg), signConfig()); err != nil {
		return wrapf(ErrBadSignature, err, "pair-wise check of courier key: sign")
	}
	if _, err := openpgp.CheckDetachedSignature(openpgp.EntityList{e}, bytes.NewReader(msg), &sig, readConfig()); err != nil {
		return wrapf(ErrBadSignature, err, "pair-wise check of courier key failed: discard this key")
	}
	return nil
}

// WritePublicKey writes e's public key, ASCII-armored.
func WritePublicKey(w io.Writer, e *openpgp.Entity) error {
	aw, err := armor.Encode(w, openpgp.PublicKeyType, nil)
	if err != nil {
		return err
	}
	if err := e.Serialize(aw); err != nil {
		return err
	}
	return aw.Close()
}

// WritePrivateKey writes e's private key, ASCII-armored and NOT
// passphrase-protected: the caller protects it (HSM seal, 0600 file created
// with O_EXCL). Never print it to a terminal unasked.
func WritePrivateKey(w io.Writer, e *openpgp.Entity) error {
	aw, err := armor.Encode(w, openpgp.PrivateKeyType, nil)
	if err != nil {
		return err
	}
	if err := e.SerializePrivate(aw, nil); err != nil {
		return err
	}
	return aw.Close()
}

// ReadKeys reads OpenPGP keys, armored or binary, at most MaxKeyFile bytes.
func ReadKeys(r io.Reader) (openpgp.EntityList, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxKeyFile+1))
	if err != nil {
		return nil, wrapf(ErrFormat, err, "reading key file")
	}
	if len(b) > MaxKeyFile {
		return nil, errorf(ErrTooLarge, "key file is over %d bytes", MaxKeyFile)
	}
	var el openpgp.EntityList
	if bytes.HasPrefix(bytes.TrimSpace(b), []byte("-----BEGIN PGP")) {
		el, err = openpgp.ReadArmoredKeyRing(bytes.NewReader(b))
	} else {
		el, err = openpgp.ReadKeyRing(bufio.NewReader(bytes.NewReader(b)))
	}
	if err != nil {
		return nil, wrapf(ErrFormat, err, "key file is not an OpenPGP key")
	}
	if len(el) == 0 {
		return nil, errorf(ErrFormat, "key file holds no key")
	}
	return el, nil
}
