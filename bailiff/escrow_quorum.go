package bailiff

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"golang.org/x/crypto/chacha20poly1305"

	"coffre/bailiff/shamir"
)

// EscrowQuorum is the bailiffs' unlock for one re-encapsulation job
// (QuorumOrder): the keys of the bailiffs present, opened with their
// passphrases, and the share cards of those who opened their share messages
// with their own tools. It is bound to the verified order and to the roster
// the escrows to open are split under; it opens only escrows the order
// covers, and never hands an escrow private key or K to its caller: it
// returns re-split bundles (Resplit) and re-wrapping sessions (Rotate).
// It holds secrets until Close; it has no String method that shows them.
type EscrowQuorum struct {
	order  *QuorumOrder
	roster *Roster
	keys   []*openpgp.Entity                          // opened bailiff keys, one per bailiff
	fast   []*fastKey                                 // their prepared ECDH subkeys (nil: none)
	owned  []bool                                     // keys[i] was opened here (Close wipes it)
	cards  map[[shamir.SplitIDLen]byte][]shamir.Share // share cards by split id
	now    func() time.Time
}

// NewEscrowQuorum starts the unlock of a job: the order must carry k valid
// signatures of r, the roster the escrows are split under (for a roster
// change, the old roster).
func NewEscrowQuorum(r *Roster, o *QuorumOrder) (*EscrowQuorum, error) {
	if err := r.Verify(); err != nil {
		return nil, err
	}
	if err := o.Verify(r); err != nil {
		return nil, err
	}
	slog.Info("bailiff: re-encapsulation quorum opened", "kind", o.Kind, "order", o.ID())
	return &EscrowQuorum{order: o, roster: r, cards: map[[shamir.SplitIDLen]byte][]shamir.Share{}, now: time.Now}, nil
}

// AddKey opens a bailiff's protected secret key with the passphrase (wiped)
// for the length of the job. The bailiff must be on the quorum's roster. It
// returns the bailiff.
func (q *EscrowQuorum) AddKey(secretKey, passphrase []byte) (*BailiffKey, error) {
	key, err := OpenBailiffKey(secretKey, passphrase)
	if err != nil {
		return nil, err
	}
	b := q.roster.Bailiff(Fingerprint(key))
	if b == nil {
		wipeEntity(key)
		return nil, fmt.Errorf("bailiff: key %s is not on the roster the escrows are split under", Fingerprint(key))
	}
	if !q.addKey(key, true) {
		wipeEntity(key)
	}
	return b, nil
}

// AddOpenedKey adds a bailiff key the caller opened (OpenBailiffKey) and
// keeps: the caller wipes it (WipeKey) after Close. The bailiff must be on
// the quorum's roster.
func (q *EscrowQuorum) AddOpenedKey(key *openpgp.Entity) (*BailiffKey, error) {
	if key == nil || key.PrivateKey == nil {
		return nil, errors.New("bailiff: no opened key")
	}
	b := q.roster.Bailiff(Fingerprint(key))
	if b == nil {
		return nil, fmt.Errorf("bailiff: key %s is not on the roster the escrows are split under", Fingerprint(key))
	}
	q.addKey(key, false)
	return b, nil
}

// addKey keeps key unless the quorum has one of that bailiff already.
func (q *EscrowQuorum) addKey(key *openpgp.Entity, owned bool) bool {
	for _, k := range q.keys {
		if Fingerprint(k) == Fingerprint(key) {
			return false
		}
	}
	q.keys = append(q.keys, key)
	q.fast = append(q.fast, newFastKey(key))
	q.owned = append(q.owned, owned)
	slog.Info("bailiff: key opened for re-encapsulation", "bailiff", Fingerprint(key))
	return true
}

// AddShareCard takes the card text of one share (a bailiff decrypted a
// share message of one escrow with their own tools, see ShareMessages). It
// is matched to its escrow by split id when that escrow is opened.
func (q *EscrowQuorum) AddShareCard(text []byte) error {
	defer clear(text)
	s, err := shamir.ParseCard(string(text))
	if err != nil {
		return err
	}
	for _, o := range q.cards[s.SplitID] {
		if o.Index == s.Index {
			s.Wipe()
			return nil
		}
	}
	q.cards[s.SplitID] = append(q.cards[s.SplitID], s)
	return nil
}

// Keys returns how many bailiff keys are open.
func (q *EscrowQuorum) Keys() int { return len(q.keys) }

// Order returns the order the quorum acts on.
func (q *EscrowQuorum) Order() *QuorumOrder { return q.order }

// Close wipes the opened keys and the share cards.
func (q *EscrowQuorum) Close() {
	for i, k := range q.keys {
		if q.owned[i] {
			wipeEntity(k)
		}
	}
	q.keys, q.owned, q.fast = nil, nil, nil
	for id, ss := range q.cards {
		for i := range ss {
			ss[i].Wipe()
		}
		delete(q.cards, id)
	}
}

// String describes the quorum without its secrets.
func (q *EscrowQuorum) String() string {
	return fmt.Sprintf("re-encapsulation quorum for %s (%d keys, %d escrows with cards; secrets redacted)", q.order.Kind, len(q.keys), len(q.cards))
}

// GoString is String for %#v.
func (q *EscrowQuorum) GoString() string { return q.String() }

// shares gathers threshold checked shares of esc: cards first, then the
// share messages of the bailiffs whose keys are open. The caller wipes
// them.
func (q *EscrowQuorum) shares(esc *Escrow) ([]shamir.Share, error) {
	if !q.order.Covers(esc.UserID) {
		return nil, fmt.Errorf("%w: the order does not cover the escrow of %s", ErrWrongEscrow, esc.UserID)
	}
	if esc.RosterDigest != q.roster.Digest() {
		return nil, fmt.Errorf("%w: the escrow of %s is split under another roster than the quorum's", ErrWrongEscrow, esc.UserID)
	}
	if esc.Threshold != q.roster.Threshold || len(esc.Shares) != len(q.roster.Bailiffs) {
		return nil, fmt.Errorf("%w: escrow of %s does not fit the roster threshold", ErrWrongEscrow, esc.UserID)
	}
	var out []shamir.Share
	have := map[int]bool{}
	fail := func(err error) ([]shamir.Share, error) {
		for i := range out {
			out[i].Wipe()
		}
		return nil, err
	}
	for _, c := range q.cards[esc.SplitID] {
		if len(out) == esc.Threshold {
			break
		}
		if err := esc.checkShare(c); err != nil {
			return fail(err)
		}
		out = append(out, shamir.Share{SplitID: c.SplitID, Threshold: c.Threshold, Index: c.Index, Value: bytes.Clone(c.Value)})
		have[c.Index] = true
	}
	var errs []error
	for i, k := range q.keys {
		if len(out) == esc.Threshold {
			break
		}
		slot := esc.shareFor(Fingerprint(k))
		if slot == nil || have[slot.Index] {
			continue
		}
		s, err := esc.openShareMessageFast(k, q.fast[i])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, s)
		have[s.Index] = true
	}
	if len(out) < esc.Threshold {
		return fail(fmt.Errorf("bailiff: escrow of %s: %d of the %d shares needed; more bailiffs must unlock (%w)", esc.UserID, len(out), esc.Threshold, errors.Join(errs...)))
	}
	return out, nil
}

// openSecret rebuilds K from shares and returns the escrow's secret key
// bytes (checked: they parse to the key the bundle names). The caller
// wipes them.
func (esc *Escrow) openSecret(shares []shamir.Share) ([]byte, error) {
	k, err := shamir.Combine(shares)
	if err != nil {
		return nil, fmt.Errorf("bailiff: escrow of %s: %w", esc.UserID, err)
	}
	defer clear(k)
	aead, err := chacha20poly1305.NewX(k)
	if err != nil {
		return nil, err
	}
	secret, err := aead.Open(nil, esc.Nonce[:], esc.Sealed, escrowAD(esc.Version, esc.UserID, esc.Fingerprint))
	if err != nil {
		return nil, fmt.Errorf("bailiff: escrow of %s: sealed key does not open (bundle damaged or not this user's)", esc.UserID)
	}
	// The AEAD binds the sealed bytes to the fingerprint; what is left to
	// check is that they start with the secret key packet of the bundle's
	// public primary key (whose fingerprint the bundle's parser checked).
	// Its public part is compared as bytes: parsing the packet would
	// validate the private scalar, a scalar multiplication per escrow
	// (~5% of a roster change), for bytes the AEAD already vouches for and
	// that a re-split passes on unchanged.
	if !sameKeyPacket(secret, esc.Public) {
		clear(secret)
		return nil, fmt.Errorf("bailiff: escrow of %s: sealed key is not the secret key the bundle names", esc.UserID)
	}
	return secret, nil
}

// Resplit rebuilds the K of esc with the quorum, opens the sealed escrow
// key and seals it again under a fresh K' (fresh nonce) split k'-of-n' to
// the bailiffs of next (roster change, kind 2). The escrow key itself, and
// so every item sealed to it, is unchanged. K' is fresh rather than K
// re-split so that, once the old bundle is retired, the old roster's shares
// open nothing. next must be signed by all its bailiffs.
func (q *EscrowQuorum) Resplit(esc *Escrow, next *Roster) (*Escrow, error) {
	if q.order.Kind != ReencapRosterChange || next.Digest() != q.order.NewRoster {
		return nil, fmt.Errorf("%w: the order does not move the escrows to this roster", ErrWrongEscrow)
	}
	if err := next.Verify(); err != nil {
		return nil, err
	}
	shares, err := q.shares(esc)
	if err != nil {
		return nil, err
	}
	defer func() {
		for i := range shares {
			shares[i].Wipe()
		}
	}()
	secret, err := esc.openSecret(shares)
	if err != nil {
		return nil, err
	}
	defer clear(secret)
	// The same bundle (whatever its version and key), re-sealed and re-split.
	ne := *esc
	ne.Public = bytes.Clone(esc.Public)
	ne.RosterDigest, ne.Threshold, ne.AEAD = next.Digest(), next.Threshold, AlgEscrowAEAD
	ne.Shares = nil
	if err := ne.sealAndSplit(secret, next, q.now()); err != nil {
		return nil, err
	}
	return &ne, nil
}

// sealAndSplit seals secret (the escrow's secret key) under a fresh K and
// nonce and splits K to the bailiffs of r, each share encrypted to its
// bailiff (docs/formats/escrow.md, steps 3–6).
func (e *Escrow) sealAndSplit(secret []byte, r *Roster, now time.Time) error {
	k := make([]byte, chacha20poly1305.KeySize)
	defer clear(k)
	if _, err := io.ReadFull(rand.Reader, k); err != nil {
		return err
	}
	if _, err := io.ReadFull(rand.Reader, e.Nonce[:]); err != nil {
		return err
	}
	aead, err := chacha20poly1305.NewX(k)
	if err != nil {
		return err
	}
	e.Sealed = aead.Seal(nil, e.Nonce[:], secret, escrowAD(e.Version, e.UserID, e.Fingerprint))
	shares, err := shamir.Split(k, r.Threshold, len(r.Bailiffs), nil)
	if err != nil {
		return fmt.Errorf("bailiff: splitting the escrow key: %w", err)
	}
	defer func() {
		for i := range shares {
			shares[i].Wipe()
		}
	}()
	e.SplitID = shares[0].SplitID
	e.Shares = e.Shares[:0]
	for i, b := range r.Bailiffs {
		card, err := shares[i].CardText()
		if err != nil {
			return err
		}
		var msg bytes.Buffer
		err = encryptShare(&msg, b, []byte(card), now)
		clearString(&card)
		if err != nil {
			return fmt.Errorf("bailiff: encrypting share %d to %s: %w", i+1, b.Name, err)
		}
		e.Shares = append(e.Shares, EscrowShare{Index: i + 1, Bailiff: b.Fingerprint, Commitment: shares[i].Commitment(), Message: msg.Bytes()})
	}
	return nil
}

// Rotation re-wraps one user's items from the old escrow key to a new one
// (kind 3): it holds the old escrow private key until Close, and the new
// escrow bundle (New) to store.
type Rotation struct {
	Old    *Escrow
	New    *Escrow
	oldKey *packet.PrivateKey // the old escrow key's ECDH subkey
	fast   *fastKey           // the same, for crypto/ecdh (nil: not P-521)
	newEnc *packet.PublicKey
	now    time.Time
	cfg    *packet.Config
}

// Rotate rebuilds the escrow key of esc with the quorum and makes the new
// escrow of the same user under r (the roster in force, which the order is
// bound to): a fresh key, sealed under a fresh K split to r's bailiffs.
func (q *EscrowQuorum) Rotate(esc *Escrow, r *Roster) (*Rotation, error) {
	if q.order.Kind != ReencapEscrowRotation {
		return nil, fmt.Errorf("bailiff: reencap order is a %s, not a %s", q.order.Kind, ReencapEscrowRotation)
	}
	if r.Digest() != q.roster.Digest() {
		return nil, fmt.Errorf("%w: a rotation makes the new escrow under the order's roster", ErrWrongEscrow)
	}
	if err := esc.Rewrappable(); err != nil {
		return nil, err
	}
	shares, err := q.shares(esc)
	if err != nil {
		return nil, err
	}
	defer func() {
		for i := range shares {
			shares[i].Wipe()
		}
	}()
	now := q.now()
	secret, err := esc.openSecret(shares)
	if err != nil {
		return nil, err
	}
	old, err := ecdhSubkey(secret)
	clear(secret)
	if err != nil {
		return nil, fmt.Errorf("bailiff: escrow of %s: %w", esc.UserID, err)
	}
	ne, err := newEscrow(esc.UserID, r, now)
	if err != nil {
		wipePriv(old)
		return nil, err
	}
	enc, ok := ne.pub.EncryptionKey(now)
	if !ok {
		wipePriv(old)
		return nil, errors.New("bailiff: rotation: the new escrow key has no valid encryption key")
	}
	return &Rotation{Old: esc, New: ne, oldKey: old, fast: newFastSubkey(old), newEnc: enc.PublicKey, now: now, cfg: config(now)}, nil
}

// ecdhSubkey reads the ECDH subkey's private key packet from an escrow's
// secret key bytes. Its self-signatures are not verified: the bytes were
// authenticated by the escrow's AEAD (openSecret), and only the subkey
// that decrypts items is needed.
func ecdhSubkey(secret []byte) (*packet.PrivateKey, error) {
	r := bytes.NewReader(secret)
	var found *packet.PrivateKey
	for r.Len() > 0 {
		p, err := readPacket(r)
		if err != nil {
			wipePriv(found)
			return nil, fmt.Errorf("sealed key: %s", sanitize(err))
		}
		pk, ok := p.(*packet.PrivateKey)
		if !ok {
			continue
		}
		if pk.IsSubkey && pk.PubKeyAlgo == packet.PubKeyAlgoECDH && found == nil && !pk.Encrypted {
			found = pk
			continue
		}
		wipePriv(pk)
	}
	if found == nil {
		return nil, errors.New("sealed key has no ECDH subkey")
	}
	return found, nil
}

// Rewrappable says whether an escrow rotation can re-wrap the items of
// this escrow: its key must be the classical one (v4 ECDSA P-521 with an
// ECDH P-521 subkey, items with PKESK v3). Another escrow key (a
// post-quantum one) gets a new key through the algorithm upgrade.
func (e *Escrow) Rewrappable() error {
	if err := checkStoredKey(e.Public, e.Fingerprint, 1); err != nil {
		return fmt.Errorf("bailiff: the escrow of %s cannot be rotated by re-wrapping (%v); only P-521 escrows are, a post-quantum escrow gets a new key through the algorithm upgrade", e.UserID, err)
	}
	return nil
}

// Close wipes the old escrow private key.
func (rot *Rotation) Close() {
	wipePriv(rot.oldKey)
	rot.oldKey, rot.fast = nil, nil
}

// String describes the rotation without its secret.
func (rot *Rotation) String() string {
	return fmt.Sprintf("escrow rotation of %s: %s -> %s (key redacted)", rot.Old.UserID, rot.Old.Fingerprint, rot.New.Fingerprint)
}

// Rewrap reads the key packet of a sealed item (as SealItem wrote it) from
// item, decrypts its session key with the old escrow key and returns the
// item re-wrapped: a new hidden PKESK v3 to the new escrow key, then the
// item's encrypted data packet, streamed from item byte for byte. The
// session key is unchanged (docs/formats/escrow.md, "Re-wrap"): this is for
// a recipient change, never for an ageing cipher.
func (rot *Rotation) Rewrap(item io.Reader) (io.Reader, error) {
	if rot.oldKey == nil {
		return nil, errors.New("bailiff: rewrap: rotation closed")
	}
	// The key packet SealItem writes (ECDH P-521, AES-256) is opened and
	// written with crypto/ecdh (see fastopen.go and ecdhkey.go); any
	// other, or one that does not open there, goes through go-crypto.
	br := bufio.NewReaderSize(item, 1024)
	if rot.fast != nil {
		peek, _ := br.Peek(512)
		if n, key := rot.fast.sessionKey(peek); key != nil {
			head, err := keyPacket(rot.newEnc, key, true, rot.now)
			clear(key)
			if err != nil {
				return nil, fmt.Errorf("bailiff: rewrap: writing the new key packet: %w", err)
			}
			br.Discard(n)
			return withData(head, br)
		}
	}
	p, err := readPacket(br)
	if err != nil {
		return nil, fmt.Errorf("bailiff: rewrap: reading the key packet: %s", sanitize(err))
	}
	ek, ok := p.(*packet.EncryptedKey)
	if !ok || ek.Version != 3 || ek.Algo != packet.PubKeyAlgoECDH {
		return nil, errors.New("bailiff: rewrap: item does not start with an ECDH PKESK v3 packet")
	}
	if ek.Decrypt(rot.oldKey, rot.cfg) != nil {
		return nil, fmt.Errorf("bailiff: rewrap: the old escrow key of %s does not open this item's session key", rot.Old.UserID)
	}
	defer clear(ek.Key)
	if ek.CipherFunc != packet.CipherAES256 {
		return nil, fmt.Errorf("bailiff: rewrap: item cipher %d is not AES-256; re-encrypt instead (algorithm upgrade)", ek.CipherFunc)
	}
	var b bytes.Buffer
	if err := packet.SerializeEncryptedKeyAEADwithHiddenOption(&b, rot.newEnc, ek.CipherFunc, false, ek.Key, true, rot.cfg); err != nil {
		return nil, fmt.Errorf("bailiff: rewrap: writing the new key packet: %w", err)
	}
	return withData(b.Bytes(), br)
}

// withData returns the new key packet followed by the item's encrypted
// data packet, which must come next in item (tag 18, new format) and is
// copied as is.
func withData(head []byte, item io.Reader) (io.Reader, error) {
	var tag [1]byte
	if _, err := io.ReadFull(item, tag[:]); err != nil {
		return nil, fmt.Errorf("bailiff: rewrap: no encrypted data after the key packet: %w", err)
	}
	if tag[0] != 0xc0|18 {
		return nil, fmt.Errorf("bailiff: rewrap: packet 0x%02x after the key packet is not a SEIPD packet", tag[0])
	}
	return io.MultiReader(bytes.NewReader(head), bytes.NewReader(tag[:]), item), nil
}

// sameKeyPacket reports whether the first packet of secret is a secret key
// packet whose public part is the first packet of public, a public key
// packet.
func sameKeyPacket(secret, public []byte) bool {
	sp, err := packet.NewOpaqueReader(bytes.NewReader(secret)).Next()
	if err != nil || sp.Tag != 5 {
		return false
	}
	pp, err := packet.NewOpaqueReader(bytes.NewReader(public)).Next()
	if err != nil || pp.Tag != 6 {
		return false
	}
	return len(sp.Contents) > len(pp.Contents) && bytes.Equal(sp.Contents[:len(pp.Contents)], pp.Contents)
}

func readPacket(r io.Reader) (p packet.Packet, err error) {
	defer func() {
		if x := recover(); x != nil {
			p, err = nil, errors.New("malformed OpenPGP packet (parser panicked)")
		}
	}()
	return packet.Read(r)
}

// ShareMessage returns, for a bailiff who opens shares with their own
// tools, the share message of escrow esc addressed to them, and its index:
// they decrypt it (`gpg --decrypt`) and bring the card text back to
// AddShareCard.
func ShareMessage(esc *Escrow, fingerprint string) ([]byte, int, bool) {
	s := esc.shareFor(fingerprint)
	if s == nil {
		return nil, 0, false
	}
	return s.Message, s.Index, true
}

// ParseStoredEscrow parses a bundle read back from the drives, whose record
// layer authenticates it, for a re-encapsulation job: the same strict parse
// as ParseEscrow, except that the escrow key's self-signatures are not
// verified again (they were when the bundle was made, and a job reads
// thousands of bundles): its primary key packet must be a v4 ECDSA P-521
// key with the bundle's fingerprint. PublicKey() is nil: to seal items to
// the key, parse with ParseEscrow.
func ParseStoredEscrow(b []byte) (*Escrow, error) { return parseEscrow(b, time.Time{}, false) }

// checkStoredKey checks the first packet of a stored escrow public key: a
// v4 ECDSA P-521 primary key (bundle v1) or a v6 ML-DSA-87+Ed448 primary
// key (bundle v2) with the bundle's fingerprint. (Verifying a v2 key's
// self-signatures here would also need the time the bundle was stored at.)
func checkStoredKey(public []byte, fingerprint string, version int) error {
	p, err := readPacket(bytes.NewReader(public))
	if err != nil {
		return fmt.Errorf("not an OpenPGP public key: %s", sanitize(err))
	}
	pk, ok := p.(*packet.PublicKey)
	if version == 2 {
		if !ok || pk.IsSubkey || pk.Version != 6 || pk.PubKeyAlgo != packet.PubKeyAlgoMldsa87Ed448 {
			return errors.New("the escrow key is not a v6 ML-DSA-87+Ed448 primary key")
		}
	} else {
		if !ok || pk.IsSubkey || pk.Version != 4 || pk.PubKeyAlgo != packet.PubKeyAlgoECDSA {
			return errors.New("the escrow key is not a v4 ECDSA primary key")
		}
		if c, err := pk.Curve(); err != nil || c != packet.CurveNistP521 {
			return errors.New("the escrow key's curve is not NIST P-521")
		}
	}
	if hex.EncodeToString(pk.Fingerprint) != fingerprint {
		return fmt.Errorf("public key fingerprint %x differs from key %s", pk.Fingerprint, fingerprint)
	}
	return nil
}
