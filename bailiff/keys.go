package bailiff

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"coffre/bailiff/internal/canon"
)

// BailiffKey is a bailiff's public key as the appliance keeps it: a v4
// OpenPGP key with an ECDSA P-521 primary and an ECDH P-521 encryption
// subkey, or a post-quantum v6 key (bailiff_pq.go).
type BailiffKey struct {
	Name        string // as printed on the roster
	Fingerprint string // lowercase hex fingerprint (v4: 40 digits, v6: 64)
	Public      []byte // binary transferable public key
	entity      *openpgp.Entity
}

// Entity returns the parsed public key.
func (k *BailiffKey) Entity() *openpgp.Entity { return k.entity }

// ArmoredPublic returns the public key armored.
func (k *BailiffKey) ArmoredPublic() ([]byte, error) {
	return armorBytes(k.Public, openpgp.PublicKeyType)
}

// ImportBailiffKey accepts the public key a bailiff made elsewhere (GnuPG
// `--quick-gen-key … nistp521` plus an nistp521 encryption subkey, or a
// smartcard), armored or binary, or a post-quantum v6 key (ML-DSA-87+Ed448
// primary, ML-KEM-1024+X448 encryption subkey; `coffre ceremony enrol
// --pq`). It refuses secret keys, other algorithms and versions, and keys
// without a valid encryption subkey.
func ImportBailiffKey(name string, public []byte, now time.Time) (*BailiffKey, error) {
	if err := canon.CheckText(name, MaxNameLen); err != nil {
		return nil, fmt.Errorf("bailiff: name %q: %v", name, err)
	}
	e, err := parseBailiffKey(public, now)
	if err != nil {
		return nil, fmt.Errorf("bailiff: importing the key of %s: %w; export it with `gpg --export KEYID`", name, err)
	}
	bin, err := publicBytes(e)
	if err != nil {
		return nil, err
	}
	if max := maxBailiffKeyLen(e.PrimaryKey.Version); len(bin) > max {
		return nil, fmt.Errorf("bailiff: key of %s is %d bytes, more than %d; export it with `gpg --export-options export-minimal --export`", name, len(bin), max)
	}
	return &BailiffKey{Name: name, Fingerprint: Fingerprint(e), Public: bin, entity: e}, nil
}

// GeneratedKey is a bailiff key the appliance generated in a ceremony. The
// private part exists only until Wipe: it is handed out passphrase-protected
// (ArmoredSecret, Card) and used to sign the roster.
type GeneratedKey struct {
	Key *BailiffKey
	// ArmoredSecret is the secret key protected with the bailiff's
	// passphrase, iterated+salted S2K (SHA-256) and AES-256: GnuPG 2.2 and
	// tokens import it (Argon2 S2K is not readable by GnuPG 2.2).
	ArmoredSecret []byte
	// Card is the printable QR backup of the same protected secret key,
	// already scanned back and verified.
	Card *KeyCard
	priv *openpgp.Entity
}

// GenerateBailiffKey makes a bailiff key pair (v4, ECDSA P-521 + ECDH
// P-521), runs a pair-wise check, exports the secret part under passphrase
// (which it wipes), renders and verifies the QR card. The unprotected
// private key stays inside the GeneratedKey until Wipe.
func GenerateBailiffKey(name, email string, passphrase []byte, now time.Time) (*GeneratedKey, error) {
	return generateBailiffKey(name, email, passphrase, now, false)
}

func generateBailiffKey(name, email string, passphrase []byte, now time.Time, pq bool) (*GeneratedKey, error) {
	defer clear(passphrase)
	if err := canon.CheckText(name, MaxNameLen); err != nil {
		return nil, fmt.Errorf("bailiff: name %q: %v", name, err)
	}
	if len(passphrase) < 8 {
		return nil, errors.New("bailiff: passphrase shorter than 8 bytes; choose a longer one")
	}
	newEntity, protect := newP521Entity, config
	if pq {
		newEntity, protect = newPQBailiffEntity, pqProtect
	}
	e, err := newEntity(name, email, now)
	if err != nil {
		return nil, err
	}
	g := &GeneratedKey{priv: e}
	fail := func(err error) (*GeneratedKey, error) { g.Wipe(); return nil, err }

	pub, err := publicBytes(e)
	if err != nil {
		return fail(err)
	}
	g.Key = &BailiffKey{Name: name, Fingerprint: Fingerprint(e), Public: pub}
	g.Key.entity, err = parseBailiffKey(pub, now)
	if err != nil {
		return fail(fmt.Errorf("bailiff: generated key does not re-read: %w", err))
	}
	secret, err := protectedSecret(e, passphrase, protect(now))
	if err != nil {
		return fail(err)
	}
	g.ArmoredSecret, err = armorBytes(secret, openpgp.PrivateKeyType)
	if err != nil {
		return fail(err)
	}
	onCard := secret
	if pq {
		if onCard, err = cardPackets(secret); err != nil {
			return fail(err)
		}
	}
	g.Card, err = NewKeyCard(onCard, g.Key.Fingerprint)
	if err != nil {
		return fail(err)
	}
	back, err := ReadKeyCard(g.Card.PNG)
	if err != nil {
		return fail(fmt.Errorf("bailiff: the key card of %s does not scan back: %w", name, err))
	}
	if !bytes.Equal(back, onCard) {
		return fail(fmt.Errorf("bailiff: the key card of %s scans back different bytes", name))
	}
	if pq {
		restored, err := RestoreKeyCard(back, pub, now)
		if err != nil || !bytes.Equal(restored, secret) {
			return fail(fmt.Errorf("bailiff: the key card of %s does not restore the token file: %v", name, err))
		}
	}
	return g, nil
}

// protectedSecret serializes e's secret keys encrypted under passphrase
// with cfg's S2K, leaving e itself decrypted.
func protectedSecret(e *openpgp.Entity, passphrase []byte, cfg *packet.Config) ([]byte, error) {
	var raw bytes.Buffer
	if err := e.SerializePrivateWithoutSigning(&raw, nil); err != nil {
		return nil, fmt.Errorf("bailiff: serializing the secret key: %w", err)
	}
	defer clear(raw.Bytes())
	el, err := openpgp.ReadKeyRing(bytes.NewReader(raw.Bytes()))
	if err != nil || len(el) != 1 {
		return nil, fmt.Errorf("bailiff: re-reading the secret key: %v", err)
	}
	c := el[0]
	defer wipeEntity(c)
	if err := c.EncryptPrivateKeys(passphrase, cfg); err != nil {
		return nil, fmt.Errorf("bailiff: protecting the secret key: %w", err)
	}
	var out bytes.Buffer
	if err := c.SerializePrivateWithoutSigning(&out, nil); err != nil {
		return nil, fmt.Errorf("bailiff: serializing the protected key: %w", err)
	}
	return out.Bytes(), nil
}

// Wipe forgets the unprotected private key.
func (g *GeneratedKey) Wipe() {
	wipeEntity(g.priv)
	g.priv = nil
}

// OpenBailiffKey decrypts a bailiff's protected secret key (armored or
// binary, from a token file or a scanned card) with the passphrase, which it
// wipes. The caller wipes the result with WipeKey when done. The error never
// says more than "wrong passphrase or damaged key".
func OpenBailiffKey(secret, passphrase []byte) (*openpgp.Entity, error) {
	defer clear(passphrase)
	if len(secret) == 0 || len(secret) > MaxPrivateKeyLen {
		return nil, fmt.Errorf("bailiff: secret key of %d bytes outside 1..%d", len(secret), MaxPrivateKeyLen)
	}
	r := io.Reader(bytes.NewReader(secret))
	if bytes.HasPrefix(bytes.TrimSpace(secret), []byte("-----BEGIN PGP")) {
		blk, err := armor.Decode(r)
		if err != nil {
			return nil, fmt.Errorf("bailiff: secret key armor: %w", err)
		}
		r = blk.Body
	}
	el, err := openpgp.ReadKeyRing(r)
	if err != nil {
		return nil, fmt.Errorf("bailiff: not an OpenPGP secret key: %s", sanitize(err))
	}
	if len(el) != 1 || el[0].PrivateKey == nil {
		return nil, errors.New("bailiff: want exactly one secret key")
	}
	e := el[0]
	if e.PrivateKey.Encrypted || hasEncryptedSubkey(e) {
		if err := e.DecryptPrivateKeys(passphrase); err != nil {
			wipeEntity(e)
			return nil, errors.New("bailiff: wrong passphrase or damaged key; try again")
		}
	}
	return e, nil
}

func hasEncryptedSubkey(e *openpgp.Entity) bool {
	for _, s := range e.Subkeys {
		if s.PrivateKey != nil && s.PrivateKey.Encrypted {
			return true
		}
	}
	return false
}

// WipeKey overwrites the private scalars of an opened key (best effort).
func WipeKey(e *openpgp.Entity) { wipeEntity(e) }

// String describes the generated key without key material.
func (g *GeneratedKey) String() string {
	if g.Key == nil {
		return "generated bailiff key (wiped)"
	}
	return fmt.Sprintf("generated bailiff key %s of %s (secret redacted)", g.Key.Fingerprint, g.Key.Name)
}

// GoString is String for %#v.
func (g *GeneratedKey) GoString() string { return g.String() }
