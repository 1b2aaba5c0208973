package bailiff

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"golang.org/x/crypto/chacha20poly1305"

	"coffre/bailiff/internal/canon"
	"coffre/bailiff/shamir"
)

// ReservedPrefix starts user ids that Coffre uses itself (the vault check
// escrow of verify-shares). NewEscrow refuses them.
const ReservedPrefix = "coffre:"

// checkUserID is the user id of the vault-level test escrow.
const checkUserID = ReservedPrefix + "verify-shares"

// Escrow is one user's escrow bundle (docs/formats/escrow.md): the public
// escrow key items are sealed to, the private key sealed under a random key
// K, and K split k-of-n with each share encrypted to one bailiff. It holds
// nothing secret in the clear and is stored as a record by the appliance.
type Escrow struct {
	// Version is the bundle version: 1 for a P-521 escrow key (items in
	// the GnuPG 2.2 profile), 2 for a post-quantum hybrid escrow key
	// (pq.go; items in the PQ profile). 0 reads as 1.
	Version      int
	UserID       string
	RosterDigest [32]byte
	Fingerprint  string // escrow key fingerprint, lowercase hex
	Public       []byte // binary transferable public key
	AEAD         string // AlgEscrowAEAD
	Nonce        [chacha20poly1305.NonceSizeX]byte
	Sealed       []byte // AEAD(K, nonce, secret key, AD)
	SplitID      [shamir.SplitIDLen]byte
	Threshold    int
	Shares       []EscrowShare // index 1..n, in order
	pub          *openpgp.Entity
}

// EscrowShare is one bailiff's encrypted share of K.
type EscrowShare struct {
	Index      int
	Bailiff    string   // fingerprint of the bailiff it is encrypted to
	Commitment [32]byte // shamir.Share.Commitment of the share
	Message    []byte   // OpenPGP message whose plaintext is the share card text, in the profile of the bailiff's key (encryptShare)
}

// PublicKey returns the escrow public key items are sealed to.
func (e *Escrow) PublicKey() *openpgp.Entity { return e.pub }

// ArmoredPublic returns the escrow public key armored.
func (e *Escrow) ArmoredPublic() ([]byte, error) { return armorBytes(e.Public, openpgp.PublicKeyType) }

// escrowAD is the associated data binding the sealed key to its bundle
// version, user and key.
func escrowAD(version int, userID, fingerprint string) []byte {
	return []byte(fmt.Sprintf("coffre/escrow/v%d\x00", max(version, 1)) + userID + "\x00" + fingerprint)
}

// NewEscrow creates the escrow of one user, on the user's first upload. The
// roster must be signed by every bailiff. The escrow private key and K are
// wiped before it returns; only the returned bundle remains.
func NewEscrow(userID string, r *Roster) (*Escrow, error) {
	if strings.HasPrefix(userID, ReservedPrefix) {
		return nil, fmt.Errorf("bailiff: user id %q uses the reserved prefix %q", userID, ReservedPrefix)
	}
	return newEscrow(userID, r, time.Now())
}

// newEscrow makes the escrow of userID at time now (bundle v1, P-521).
func newEscrow(userID string, r *Roster, now time.Time) (*Escrow, error) {
	return makeEscrow(userID, r, now, 1)
}

// makeEscrow makes an escrow bundle of the given version: a fresh escrow
// key of that version's profile, sealed under a random K split to the
// roster's bailiffs.
func makeEscrow(userID string, r *Roster, now time.Time, version int) (*Escrow, error) {
	if err := canon.CheckID(userID, MaxIDLen); err != nil {
		return nil, fmt.Errorf("bailiff: user id: %v", err)
	}
	if err := r.Verify(); err != nil {
		return nil, fmt.Errorf("bailiff: escrow for %s: %w", userID, err)
	}
	// K and its shares do not depend on the escrow key: the shares are
	// encrypted to the bailiffs (one ECDH each) on other goroutines while
	// this one generates the key and runs its checks, so a new user's
	// first upload waits for about half the work on a two-core appliance.
	k := make([]byte, chacha20poly1305.KeySize)
	defer clear(k)
	if _, err := io.ReadFull(rand.Reader, k); err != nil {
		return nil, err
	}
	shares, err := shamir.Split(k, r.Threshold, len(r.Bailiffs), nil)
	if err != nil {
		return nil, fmt.Errorf("bailiff: splitting the escrow key: %w", err)
	}
	defer func() {
		for i := range shares {
			shares[i].Wipe()
		}
	}()
	msgs := make([][]byte, len(r.Bailiffs))
	errs := make([]error, len(r.Bailiffs))
	var wg sync.WaitGroup
	defer wg.Wait() // before the shares are wiped, on every path
	for i, b := range r.Bailiffs {
		wg.Go(func() {
			card, err := shares[i].CardText()
			if err != nil {
				errs[i] = err
				return
			}
			var msg bytes.Buffer
			err = encryptShare(&msg, b, []byte(card), now)
			clearString(&card)
			if err != nil {
				errs[i] = fmt.Errorf("bailiff: encrypting share %d to %s: %w", i+1, b.Name, err)
				return
			}
			msgs[i] = msg.Bytes()
		})
	}

	var key *openpgp.Entity
	switch version {
	case 1:
		key, err = generateP521Entity("Coffre escrow key", "", now) // checked below
	case 2:
		key, err = newPQEntity(now)
	default:
		err = fmt.Errorf("bailiff: escrow bundle version %d is not supported", version)
	}
	if err != nil {
		return nil, err
	}
	defer wipeEntity(key)
	e := &Escrow{Version: version, UserID: userID, RosterDigest: r.Digest(), Fingerprint: Fingerprint(key), AEAD: AlgEscrowAEAD, Threshold: r.Threshold}
	if e.Public, err = publicBytes(key); err != nil {
		return nil, err
	}
	// The P-521 key's pair-wise check and the re-read of its public key
	// (which parses a copy, sharing nothing with key) run side by side;
	// nothing is used before both passed. The re-read verifies the key's
	// two self-signatures, made by its private key, with its public key
	// as parsed back from the bytes: that is the sign/verify half of the
	// check, so only the encrypt/decrypt half runs here (a rotation makes
	// one key per user; two P-521 scalar multiplications less each).
	var pairErr error
	var pair sync.WaitGroup
	if version == 1 {
		pair.Go(func() { pairErr = pairwiseEncrypt(key, now) })
	}
	e.pub, err = parseEscrowPublic(version, e.Public, now)
	pair.Wait()
	if pairErr != nil {
		return nil, pairErr
	}
	if err != nil {
		return nil, fmt.Errorf("bailiff: escrow key does not re-read: %w", err)
	}
	var secret bytes.Buffer
	if err := key.SerializePrivateWithoutSigning(&secret, nil); err != nil {
		return nil, fmt.Errorf("bailiff: serializing escrow key: %w", err)
	}
	defer clear(secret.Bytes())

	if _, err := io.ReadFull(rand.Reader, e.Nonce[:]); err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(k)
	if err != nil {
		return nil, err
	}
	e.Sealed = aead.Seal(nil, e.Nonce[:], secret.Bytes(), escrowAD(version, userID, e.Fingerprint))

	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	e.SplitID = shares[0].SplitID
	for i, b := range r.Bailiffs {
		e.Shares = append(e.Shares, EscrowShare{Index: i + 1, Bailiff: b.Fingerprint, Commitment: shares[i].Commitment(), Message: msgs[i]})
	}
	return e, nil
}

// clearString drops the reference to a string holding secret text (Go
// strings are immutable; the backing array is left to the GC).
func clearString(s *string) { *s = "" }

// Marshal returns the canonical bundle bytes.
func (e *Escrow) Marshal() []byte {
	var w canon.Writer
	w.Line("coffre-escrow", fmt.Sprintf("v%d", max(e.Version, 1)))
	w.Line("user", e.UserID)
	w.Line("roster", hex.EncodeToString(e.RosterDigest[:]))
	w.Line("key", e.Fingerprint)
	w.Line("public", canon.EncB64(e.Public))
	w.Line("aead", e.AEAD)
	w.Line("nonce", hex.EncodeToString(e.Nonce[:]))
	w.Line("sealed", canon.EncB64(e.Sealed))
	w.Line("split", hex.EncodeToString(e.SplitID[:]))
	w.Line("threshold", fmt.Sprint(e.Threshold))
	w.Line("shares", fmt.Sprint(len(e.Shares)))
	for _, s := range e.Shares {
		w.Line("share", fmt.Sprint(s.Index), s.Bailiff, hex.EncodeToString(s.Commitment[:]), canon.EncB64(s.Message))
	}
	return w.Bytes()
}

// ParseEscrow parses a bundle strictly. It checks the encoding, the limits
// and the escrow public key; it cannot check the sealed key or the shares
// (that needs a quorum).
func ParseEscrow(b []byte, now time.Time) (*Escrow, error) { return parseEscrow(b, now, true) }

func parseEscrow(b []byte, now time.Time, verifyKey bool) (*Escrow, error) {
	rd, err := canon.NewReader("bailiff: escrow bundle", b, MaxBundleLen)
	if err != nil {
		return nil, err
	}
	wrap := func(field string, err error) error { return fmt.Errorf("bailiff: escrow bundle: %s: %w", field, err) }
	e := &Escrow{}
	v, err := rd.Field("coffre-escrow")
	if err != nil {
		return nil, err
	}
	switch v {
	case "v1":
		e.Version = 1
	case "v2":
		e.Version = 2
	default:
		return nil, fmt.Errorf("bailiff: escrow bundle version %q is not supported (want v1 or v2)", v)
	}
	lim := escrowLimits(e.Version)
	if e.UserID, err = rd.Field("user"); err != nil {
		return nil, err
	}
	if err := canon.CheckID(e.UserID, MaxIDLen); err != nil {
		return nil, wrap("user", err)
	}
	hexField := func(name string, dst []byte) error {
		v, err := rd.Field(name)
		if err != nil {
			return err
		}
		h, err := canon.Hex(v, len(dst))
		if err != nil {
			return wrap(name, err)
		}
		copy(dst, h)
		return nil
	}
	if err := hexField("roster", e.RosterDigest[:]); err != nil {
		return nil, err
	}
	fpr := make([]byte, lim.fingerprint)
	if err := hexField("key", fpr); err != nil {
		return nil, err
	}
	e.Fingerprint = hex.EncodeToString(fpr)
	if v, err = rd.Field("public"); err != nil {
		return nil, err
	}
	if e.Public, err = canon.B64(v, lim.public); err != nil {
		return nil, wrap("public", err)
	}
	if !verifyKey {
		// Fast path for a bundle already verified when stored.
		if err := checkStoredKey(e.Public, e.Fingerprint, e.Version); err != nil {
			return nil, wrap("public", err)
		}
	} else {
		if e.pub, err = parseEscrowPublic(e.Version, e.Public, now); err != nil {
			return nil, wrap("public", err)
		}
		if Fingerprint(e.pub) != e.Fingerprint {
			return nil, fmt.Errorf("bailiff: escrow bundle: public key fingerprint %s differs from key %s", Fingerprint(e.pub), e.Fingerprint)
		}
	}
	if e.AEAD, err = rd.Field("aead"); err != nil {
		return nil, err
	}
	if e.AEAD != AlgEscrowAEAD {
		return nil, fmt.Errorf("bailiff: escrow bundle: aead %q is not supported (want %s)", e.AEAD, AlgEscrowAEAD)
	}
	if err := hexField("nonce", e.Nonce[:]); err != nil {
		return nil, err
	}
	if v, err = rd.Field("sealed"); err != nil {
		return nil, err
	}
	if e.Sealed, err = canon.B64(v, lim.sealed); err != nil {
		return nil, wrap("sealed", err)
	}
	if len(e.Sealed) <= chacha20poly1305.Overhead {
		return nil, fmt.Errorf("bailiff: escrow bundle: sealed key too short")
	}
	if err := hexField("split", e.SplitID[:]); err != nil {
		return nil, err
	}
	if v, err = rd.Field("threshold"); err != nil {
		return nil, err
	}
	if e.Threshold, err = canon.Uint(v, MinThreshold, MaxBailiffs); err != nil {
		return nil, wrap("threshold", err)
	}
	if v, err = rd.Field("shares"); err != nil {
		return nil, err
	}
	n, err := canon.Uint(v, e.Threshold, MaxBailiffs)
	if err != nil {
		return nil, wrap("shares", err)
	}
	seen := map[string]bool{}
	for i := 1; i <= n; i++ {
		f, err := rd.Fields("share", 4)
		if err != nil {
			return nil, err
		}
		var s EscrowShare
		if s.Index, err = canon.Uint(f[0], i, i); err != nil {
			return nil, wrap(fmt.Sprintf("share %d index", i), err)
		}
		if err := checkFingerprint(f[1]); err != nil {
			return nil, wrap(fmt.Sprintf("share %d bailiff", i), err)
		}
		if seen[f[1]] {
			return nil, fmt.Errorf("bailiff: escrow bundle: bailiff %s holds two shares", f[1])
		}
		seen[f[1]] = true
		s.Bailiff = f[1]
		c, err := canon.Hex(f[2], 32)
		if err != nil {
			return nil, wrap(fmt.Sprintf("share %d commitment", i), err)
		}
		copy(s.Commitment[:], c)
		if s.Message, err = canon.B64(f[3], MaxShareMessageLen); err != nil {
			return nil, wrap(fmt.Sprintf("share %d message", i), err)
		}
		e.Shares = append(e.Shares, s)
	}
	if err := rd.End(); err != nil {
		return nil, err
	}
	return e, nil
}

// shareFor returns the share slot of a bailiff, or nil.
func (e *Escrow) shareFor(fingerprint string) *EscrowShare {
	for i := range e.Shares {
		if e.Shares[i].Bailiff == fingerprint {
			return &e.Shares[i]
		}
	}
	return nil
}

// openShareMessage decrypts the share addressed to the bailiff whose opened
// key is given, and checks it against this escrow (split id, threshold,
// index, commitment).
func (e *Escrow) openShareMessage(bailiffKey *openpgp.Entity) (shamir.Share, error) {
	return e.openShareMessageFast(bailiffKey, nil)
}

// openShareMessageFast is openShareMessage with the key's prepared ECDH
// subkey (see fastopen.go), when the caller opens many escrows.
func (e *Escrow) openShareMessageFast(bailiffKey *openpgp.Entity, fk *fastKey) (shamir.Share, error) {
	fpr := Fingerprint(bailiffKey)
	slot := e.shareFor(fpr)
	if slot == nil {
		return shamir.Share{}, fmt.Errorf("bailiff: key %s holds no share of the escrow of %s", fpr, e.UserID)
	}
	card, err := decryptShare(slot.Message, bailiffKey, fk, shamir.MaxCardLen)
	if err != nil {
		return shamir.Share{}, fmt.Errorf("bailiff: share %d of %s does not open with key %s: %s", slot.Index, e.UserID, fpr, sanitize(err))
	}
	defer clear(card)
	s, err := shamir.ParseCard(string(card))
	if err != nil {
		return shamir.Share{}, fmt.Errorf("bailiff: share %d of %s: %w", slot.Index, e.UserID, err)
	}
	if err := e.checkShare(s); err != nil {
		s.Wipe()
		return shamir.Share{}, err
	}
	return s, nil
}

// checkShare checks a share belongs to this escrow and matches its
// commitment.
func (e *Escrow) checkShare(s shamir.Share) error {
	if subtle.ConstantTimeCompare(s.SplitID[:], e.SplitID[:]) != 1 {
		return fmt.Errorf("bailiff: share %d belongs to another escrow, not that of %s (split id differs)", s.Index, e.UserID)
	}
	if s.Threshold != e.Threshold || s.Index < 1 || s.Index > len(e.Shares) {
		return fmt.Errorf("bailiff: share %d does not fit the escrow of %s (threshold or index)", s.Index, e.UserID)
	}
	return s.CheckCommitment(e.Shares[s.Index-1].Commitment)
}

// openKey rebuilds the escrow private key from shares (each checked), and
// returns it. The caller wipes it.
func (e *Escrow) openKey(shares []shamir.Share, now time.Time) (*openpgp.Entity, error) {
	for _, s := range shares {
		if err := e.checkShare(s); err != nil {
			return nil, err
		}
	}
	k, err := shamir.Combine(shares)
	if err != nil {
		return nil, fmt.Errorf("bailiff: escrow of %s: %w", e.UserID, err)
	}
	defer clear(k)
	aead, err := chacha20poly1305.NewX(k)
	if err != nil {
		return nil, err
	}
	secret, err := aead.Open(nil, e.Nonce[:], e.Sealed, escrowAD(e.Version, e.UserID, e.Fingerprint))
	if err != nil {
		return nil, fmt.Errorf("bailiff: escrow of %s: sealed key does not open (bundle damaged or not this user's)", e.UserID)
	}
	defer clear(secret)
	key, err := readSealedKey(secret)
	if err != nil {
		return nil, fmt.Errorf("bailiff: escrow of %s: sealed key is not an OpenPGP secret key", e.UserID)
	}
	if Fingerprint(key) != e.Fingerprint {
		wipeEntity(key)
		return nil, fmt.Errorf("bailiff: escrow of %s: sealed key fingerprint differs from the bundle", e.UserID)
	}
	return key, nil
}

// ErrWrongEscrow means an escrow, order or share is not for the user or
// roster at hand.
var ErrWrongEscrow = errors.New("bailiff: escrow does not match")
