package bailiff

import (
	"bufio"
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/ProtonMail/go-crypto/openpgp/s2k"

	"coffre/bailiff/internal/canon"
)

// Post-quantum bailiff keys (docs/formats/roster.md, "Bailiff keys"). A
// bailiff key is in one of two profiles:
//
//   - classical: v4, ECDSA P-521 primary, ECDH P-521 encryption subkey (the
//     GnuPG 2.2 profile: gpg decrypts the bailiff's share messages and makes
//     their detached signatures);
//   - post-quantum: v6, ML-DSA-87+Ed448 primary (certify and sign),
//     ML-KEM-1024+X448 encryption subkey — the family of the v2 escrow keys
//     (pq.go) — with the bailiff's user id. Share messages to it are in the
//     PQ profile (PKESK v6 naming the key, SEIPD v2 AES-256/OCB); its
//     signatures are v6, SHA-512. Neither GnuPG 2.2, Sequoia 1.x nor RNP
//     0.16 reads any of it: such a bailiff signs and opens shares with their
//     key on the appliance (or `coffre ceremony sign`).
//
// A roster may mix the two (a roster change can replace the keys one
// bailiff at a time); the crypto policy judges each key and each share
// message by its own algorithm.

// PQ reports whether the key is a post-quantum (v6) bailiff key.
func (k *BailiffKey) PQ() bool { return k.entity != nil && k.entity.PrimaryKey.Version == 6 }

// Algorithm names the key (AlgKey or AlgKeyPQ) as stored objects record it.
func (k *BailiffKey) Algorithm() string {
	if k.PQ() {
		return AlgKeyPQ
	}
	return AlgKey
}

// SignatureAlgorithm names the signatures the bailiff makes on rosters and
// orders (AlgSignature or AlgSignaturePQ).
func (k *BailiffKey) SignatureAlgorithm() string {
	if k.PQ() {
		return AlgSignaturePQ
	}
	return AlgSignature
}

// ShareAlgorithm names the key packet of a share message to this bailiff
// (AlgPKESKNamed or AlgPKESKPQNamed).
func (k *BailiffKey) ShareAlgorithm() string {
	if k.PQ() {
		return AlgPKESKPQNamed
	}
	return AlgPKESKNamed
}

// Algorithms names what protects the roster as stored objects record it:
// each distinct bailiff key algorithm and signature algorithm, sorted.
func (r *Roster) Algorithms() []string {
	var out []string
	for _, b := range r.Bailiffs {
		out = append(out, b.Algorithm(), b.SignatureAlgorithm())
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// ShareAlgorithms names the key packets of the escrow's share messages, as
// they are (PKESK v3 to a P-521 key, or v6 to a post-quantum key): distinct,
// sorted. A message of neither shape is named "openpgp-pkesk-unknown",
// which no policy accepts.
func (e *Escrow) ShareAlgorithms() []string {
	var out []string
	for _, s := range e.Shares {
		switch pkeskVersion(s.Message) {
		case 3:
			out = append(out, AlgPKESKNamed)
		case 6:
			out = append(out, AlgPKESKPQNamed)
		default:
			out = append(out, "openpgp-pkesk-unknown")
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// maxBailiffKeyLen bounds the binary public key of a bailiff key of the
// given version (v6 keys carry ML-DSA-87 and ML-KEM-1024 public keys and
// three ML-DSA-87 signatures: about 19 KB).
func maxBailiffKeyLen(version int) int {
	if version == 6 {
		return MaxPublicKeyLenPQ
	}
	return MaxPublicKeyLen
}

// parseBailiffKey reads exactly one binary or armored public key in either
// bailiff profile, refusing secret keys, other versions and algorithms, and
// keys larger than their profile allows.
func parseBailiffKey(b []byte, now time.Time) (*openpgp.Entity, error) {
	e, err := parsePublicEntity(b, 4*MaxPublicKeyLenPQ)
	if err != nil {
		return nil, err
	}
	switch v := e.PrimaryKey.Version; v {
	case 4:
		err = checkP521Public(e, now)
	case 6:
		err = checkPQPublic(e, now)
	default:
		err = fmt.Errorf("key version %d: want v4 (ECDSA+ECDH P-521) or v6 (ML-DSA-87+Ed448, ML-KEM-1024+X448)", v)
	}
	if err != nil {
		return nil, err
	}
	return e, nil
}

// checkFingerprint checks a fingerprint field: lowercase hex of a v4 (20
// bytes) or v6 (32 bytes) fingerprint.
func checkFingerprint(s string) error { return canon.Fingerprint(s) }

// encryptShare writes the share message of one bailiff: the card text in
// the GnuPG 2.2 profile to a classical key (named PKESK v3, SEIPD v1), in
// the PQ profile to a post-quantum key (named PKESK v6, SEIPD v2).
func encryptShare(w io.Writer, b *BailiffKey, card []byte, now time.Time) error {
	if !b.PQ() {
		return encryptBytes(w, b.entity, card, false, now)
	}
	enc, ok := b.entity.EncryptionKey(now)
	if !ok {
		return errors.New("recipient has no valid encryption key")
	}
	return sealToPQ(w, enc.PublicKey, bytes.NewReader(card), false, now)
}

// decryptShare opens a share message (at most max bytes of plaintext) with
// an opened bailiff key, in the profile its first key packet names; fk,
// when not nil, is the key's prepared ECDH subkey (fastopen.go), tried
// first.
func decryptShare(msg []byte, key *openpgp.Entity, fk *fastKey, max int64) ([]byte, error) {
	if fk != nil && pkeskVersion(msg) == 3 {
		if n, sk := fk.sessionKey(msg[:min(len(msg), 512)]); sk != nil {
			defer clear(sk)
			pr, err := openSEIPDv1(bytes.NewReader(msg[n:]), sk)
			if err != nil {
				return nil, err
			}
			return readAllMax(pr, max)
		}
	}
	if pkeskVersion(msg) != 6 {
		return decryptBytes(bytes.NewReader(msg), openpgp.EntityList{key}, max)
	}
	pr, err := openItemPQ(bytes.NewReader(msg), openpgp.EntityList{key})
	if err != nil {
		return nil, err
	}
	return readAllMax(pr, max)
}

// pqProtect is how a post-quantum bailiff's secret key is exported: Argon2
// S2K (RFC 9580 §3.7.1.4, the second recommended parameter set: t=3, p=4,
// 64 MiB) and AEAD key protection (S2K usage 253, AES-256, OCB). Nothing
// that reads v6 keys is limited to iterated+salted S2K.
func pqProtect(now time.Time) *packet.Config {
	return &packet.Config{
		DefaultHash:   crypto.SHA512,
		DefaultCipher: packet.CipherAES256,
		AEADConfig:    &packet.AEADConfig{DefaultMode: packet.AEADModeOCB},
		Time:          func() time.Time { return now },
		S2KConfig: &s2k.Config{
			S2KMode:      s2k.Argon2S2K,
			Argon2Config: &s2k.Argon2Config{NumberOfPasses: 3, DegreeOfParallelism: 4, Memory: 64 << 10},
		},
	}
}

// GenerateBailiffKeyPQ is GenerateBailiffKey for a post-quantum bailiff
// key (v6, ML-DSA-87+Ed448 primary with the bailiff's user id,
// ML-KEM-1024+X448 encryption subkey). The token file is the whole secret
// key under Argon2 S2K with AEAD protection; the key card carries only its
// two secret-key packets (the certificate is public: the roster and
// NAME.pub.asc hold it; RestoreKeyCard puts them back together).
func GenerateBailiffKeyPQ(name, email string, passphrase []byte, now time.Time) (*GeneratedKey, error) {
	return generateBailiffKey(name, email, passphrase, now, true)
}

// newPQBailiffEntity generates a post-quantum bailiff key, pair-wise
// checked.
func newPQBailiffEntity(name, email string, now time.Time) (*openpgp.Entity, error) {
	e, err := openpgp.NewEntity(name, "", email, pqConfig(now))
	if err != nil {
		return nil, fmt.Errorf("bailiff: generating a post-quantum key: %w", err)
	}
	if err := pqPairwiseCheck(e, now); err != nil {
		wipeEntity(e)
		return nil, err
	}
	return e, nil
}

// cardPackets returns the secret-key packets of a protected v6 key (the
// primary's, then each subkey's), as its key card carries them.
func cardPackets(protected []byte) ([]byte, error) {
	el, err := openpgp.ReadKeyRing(bytes.NewReader(protected))
	if err != nil || len(el) != 1 || el[0].PrivateKey == nil {
		return nil, fmt.Errorf("bailiff: re-reading the protected key: %v", err)
	}
	e := el[0]
	defer wipeEntity(e)
	var out bytes.Buffer
	if err := e.PrivateKey.Serialize(&out); err != nil {
		return nil, err
	}
	for _, s := range e.Subkeys {
		if s.PrivateKey == nil {
			return nil, errors.New("bailiff: a subkey has no secret part")
		}
		if err := s.PrivateKey.Serialize(&out); err != nil {
			return nil, err
		}
	}
	return out.Bytes(), nil
}

// RestoreKeyCard turns what a key card carries back into a token file
// (binary protected secret key, as OpenBailiffKey reads it). A classical
// card carries the whole protected key: it is returned as is. A
// post-quantum card carries only the secret-key packets: they are joined
// to the bailiff's public key (from the roster or NAME.pub.asc), each
// packet matched by fingerprint. Nothing is decrypted.
func RestoreKeyCard(card, public []byte, now time.Time) ([]byte, error) {
	if len(card) == 0 || len(card) > MaxPrivateKeyLen {
		return nil, fmt.Errorf("bailiff: key card of %d bytes outside 1..%d", len(card), MaxPrivateKeyLen)
	}
	if el, err := readKeys(card, MaxPrivateKeyLen); err == nil && len(el) == 1 && el[0].PrivateKey != nil {
		wipeEntity(el[0])
		return bytes.Clone(card), nil
	}
	e, err := parseBailiffKey(public, now)
	if err != nil {
		return nil, fmt.Errorf("bailiff: restoring a key card: public key: %w", err)
	}
	privs, err := readSecretPackets(card)
	if err != nil {
		return nil, err
	}
	if len(privs) != 1+len(e.Subkeys) {
		return nil, fmt.Errorf("bailiff: restoring a key card: %d secret packets for a key with %d subkeys", len(privs), len(e.Subkeys))
	}
	if !bytes.Equal(privs[0].Fingerprint, e.PrimaryKey.Fingerprint) || privs[0].IsSubkey {
		return nil, errors.New("bailiff: restoring a key card: the card is not of this public key (primary fingerprint differs)")
	}
	e.PrivateKey = privs[0]
	for i := range e.Subkeys {
		p := privs[1+i]
		if !p.IsSubkey || !bytes.Equal(p.Fingerprint, e.Subkeys[i].PublicKey.Fingerprint) {
			return nil, errors.New("bailiff: restoring a key card: the card is not of this public key (subkey fingerprint differs)")
		}
		e.Subkeys[i].PrivateKey = p
	}
	var out bytes.Buffer
	if err := e.SerializePrivateWithoutSigning(&out, nil); err != nil {
		return nil, fmt.Errorf("bailiff: restoring a key card: %w", err)
	}
	return out.Bytes(), nil
}

// readSecretPackets reads a sequence of protected secret-key packets.
func readSecretPackets(b []byte) (out []*packet.PrivateKey, err error) {
	defer func() {
		if p := recover(); p != nil {
			out, err = nil, errors.New("bailiff: restoring a key card: malformed packets")
		}
	}()
	r := packet.NewReader(bufio.NewReader(bytes.NewReader(b)))
	for {
		p, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("bailiff: restoring a key card: %s", sanitize(err))
		}
		k, ok := p.(*packet.PrivateKey)
		if !ok || !k.Encrypted || len(out) > MaxCardParts {
			return nil, errors.New("bailiff: restoring a key card: want passphrase-protected secret-key packets only")
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, errors.New("bailiff: restoring a key card: no secret-key packet")
	}
	return out, nil
}
