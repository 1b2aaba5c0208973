package bailiff

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"coffre/bailiff/shamir"
)

// Quorum is k bailiffs present on the appliance for one signed
// re-encapsulation order that opens escrows (the algorithm upgrade). Unlike
// an Unlock (one restitution, one escrow), the job spans many users, so the
// bailiffs' keys stay open for the session and each escrow of a listed user
// is opened from its share messages when the job reaches it. It can open
// no escrow of a user the order does not list. It holds secret keys until
// Close; it has no String method that shows them.
type Quorum struct {
	roster  *Roster
	order   *ReencapOrder
	users   map[string]bool
	keys    map[string]*openpgp.Entity // bailiff fingerprint -> opened key
	expires time.Time
	now     func() time.Time
}

// NewQuorum opens a session for a verified order (k valid signatures of the
// roster) whose action opens escrows.
func NewQuorum(r *Roster, o *ReencapOrder, opt UnlockOptions) (*Quorum, error) {
	if err := r.Verify(); err != nil {
		return nil, err
	}
	if err := o.Verify(r); err != nil {
		return nil, err
	}
	if o.Action != ActionUpgrade {
		return nil, fmt.Errorf("bailiff: a %s order opens no escrow", o.Action)
	}
	if opt.TTL <= 0 {
		opt.TTL = DefaultUnlockTTL
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	q := &Quorum{roster: r, order: o, users: map[string]bool{}, keys: map[string]*openpgp.Entity{}, expires: opt.Now().Add(opt.TTL), now: opt.Now}
	for _, u := range o.Users {
		q.users[u] = true
	}
	d := o.Digest()
	slog.Info("bailiff: quorum session opened", "action", o.Action, "order", fmt.Sprintf("%x", d[:]), "users", len(o.Users), "ttl", opt.TTL.String())
	return q, nil
}

func (q *Quorum) live() error {
	if !q.now().Before(q.expires) {
		q.Close()
		return ErrUnlockExpired
	}
	return nil
}

// AddKey hands the session a bailiff's opened key (OpenBailiffKey); the
// session owns it from then on and wipes it at Close, also on error. The
// bailiff must be on the roster and must have signed the order.
func (q *Quorum) AddKey(key *openpgp.Entity) (string, error) {
	if err := q.live(); err != nil {
		wipeEntity(key)
		return "", err
	}
	fpr := Fingerprint(key)
	b := q.roster.Bailiff(fpr)
	if b == nil {
		wipeEntity(key)
		return "", fmt.Errorf("bailiff: key %s is not on the roster", fpr)
	}
	if !q.order.Signed(fpr) {
		wipeEntity(key)
		return "", fmt.Errorf("bailiff: %s did not sign the %s order; only signatories open their shares", b.Name, q.order.Action)
	}
	if old := q.keys[fpr]; old != nil {
		wipeEntity(old)
	}
	q.keys[fpr] = key
	slog.Info("bailiff: key present for the quorum session", "bailiff", fpr, "have", len(q.keys), "need", q.roster.Threshold)
	return b.Name, nil
}

// Have returns how many bailiffs' keys the session holds and how many it
// needs.
func (q *Quorum) Have() (have, need int) { return len(q.keys), q.roster.Threshold }

// Close wipes the keys and ends the session.
func (q *Quorum) Close() {
	for f, k := range q.keys {
		wipeEntity(k)
		delete(q.keys, f)
	}
	q.expires = time.Time{}
}

// String describes the session without its keys.
func (q *Quorum) String() string {
	return fmt.Sprintf("quorum session for a %s order (%d of %d bailiffs, keys redacted)", q.order.Action, len(q.keys), q.roster.Threshold)
}

// GoString is String for %#v.
func (q *Quorum) GoString() string { return q.String() }

// EscrowKey is one opened escrow private key. Close wipes it.
type EscrowKey struct {
	esc  *Escrow
	key  *openpgp.Entity
	fast *fastKey // the same key for crypto/ecdh (fastopen.go), or nil
}

// OpenEscrow rebuilds the escrow private key of a user the order lists:
// each bailiff present decrypts their share message, each share is checked
// against its commitment, k are combined (digest checked) and the sealed key
// is opened. The shares are wiped before it returns.
func (q *Quorum) OpenEscrow(esc *Escrow) (*EscrowKey, error) {
	if err := q.live(); err != nil {
		return nil, err
	}
	if !q.users[esc.UserID] {
		return nil, fmt.Errorf("%w: the %s order does not list user %s", ErrWrongEscrow, q.order.Action, esc.UserID)
	}
	if esc.RosterDigest != q.roster.Digest() {
		return nil, fmt.Errorf("%w: escrow of %s was made under another roster", ErrWrongEscrow, esc.UserID)
	}
	if esc.Threshold != q.roster.Threshold || len(esc.Shares) != len(q.roster.Bailiffs) {
		return nil, fmt.Errorf("%w: escrow of %s does not fit the roster threshold", ErrWrongEscrow, esc.UserID)
	}
	fprs := make([]string, 0, len(q.keys))
	for f := range q.keys {
		fprs = append(fprs, f)
	}
	slices.Sort(fprs)
	var shares []shamir.Share
	defer func() {
		for i := range shares {
			shares[i].Wipe()
		}
	}()
	var errs []error
	for _, f := range fprs {
		if len(shares) == esc.Threshold {
			break
		}
		s, err := esc.openShareMessage(q.keys[f])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		shares = append(shares, s)
	}
	if len(shares) < esc.Threshold {
		return nil, fmt.Errorf("bailiff: escrow of %s: %d of the %d shares needed open: %w", esc.UserID, len(shares), esc.Threshold, errors.Join(errs...))
	}
	key, err := esc.openKey(shares, q.now())
	if err != nil {
		return nil, err
	}
	return &EscrowKey{esc: esc, key: key, fast: newFastKey(key)}, nil
}

// Escrow returns the bundle the key belongs to.
func (k *EscrowKey) Escrow() *Escrow { return k.esc }

// Open returns the plaintext stream of an item sealed to this escrow (either
// profile). Integrity is checked at EOF: read to the end before trusting it.
func (k *EscrowKey) Open(item io.Reader) (io.Reader, error) {
	if k.key == nil {
		return nil, errors.New("bailiff: escrow key already closed")
	}
	return openItemFast(item, openpgp.EntityList{k.key}, k.fast)
}

// Close wipes the escrow private key.
func (k *EscrowKey) Close() {
	wipeEntity(k.key)
	k.key, k.fast = nil, nil // crypto/ecdh keys cannot be overwritten; dropped
}

// String describes the key without its secret.
func (k *EscrowKey) String() string {
	return fmt.Sprintf("opened escrow key %s of %s (secret redacted)", k.esc.Fingerprint, k.esc.UserID)
}

// GoString is String for %#v.
func (k *EscrowKey) GoString() string { return k.String() }

// UpgradeItem is the algorithm upgrade of one sealed item: it decrypts the
// item with the old escrow key and seals the plaintext afresh to the
// post-quantum escrow to — a new random session key, a new PKESK, a new
// encrypted data packet; nothing of the old ciphertext is reused, so the old
// escrow key (or anyone who kept the old PKESK) does not open the result.
// When digest is set, the plaintext's SHA-256 must equal it. It streams;
// on any error (including the old item's integrity check, which comes at
// its end) what was written to w must be discarded. It returns the
// algorithms of the result and the plaintext size.
func UpgradeItem(w io.Writer, item io.Reader, old *EscrowKey, to *Escrow, digest []byte) (Algorithms, int64, error) {
	if !to.PQ() {
		return Algorithms{}, 0, fmt.Errorf("bailiff: upgrade: the escrow of %s is not post-quantum", to.UserID)
	}
	if old.esc.UserID != to.UserID {
		return Algorithms{}, 0, fmt.Errorf("%w: upgrade from the escrow of %s to that of %s", ErrWrongEscrow, old.esc.UserID, to.UserID)
	}
	pr, err := old.Open(item)
	if err != nil {
		return Algorithms{}, 0, fmt.Errorf("bailiff: upgrade: the item does not open with the old escrow key of %s: %s", to.UserID, sanitize(err))
	}
	h := sha256.New()
	cnt := &countingReader{r: io.TeeReader(pr, h)}
	algs, err := SealItemPQ(w, to.pub, cnt)
	if err != nil {
		return Algorithms{}, 0, fmt.Errorf("bailiff: upgrade: %w", err)
	}
	if digest != nil && !bytes.Equal(h.Sum(nil), digest) {
		return Algorithms{}, 0, errors.New("bailiff: upgrade: plaintext digest differs from the one recorded at ingest; nothing written (run `coffre scrub`)")
	}
	return algs, cnt.n, nil
}
