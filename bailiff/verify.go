package bailiff

import (
	"fmt"
	"time"

	"coffre/bailiff/shamir"
)

// NewVaultCheck makes the vault-level test escrow used by verify-shares: an
// escrow like any user's (a fresh P-521 key sealed under K, K split k-of-n
// to the bailiffs) under the reserved user id "coffre:verify-shares". No
// item is ever sealed to it, so opening it opens nothing real. The
// appliance stores it at genesis and after each roster change.
func NewVaultCheck(r *Roster, now time.Time) (*Escrow, error) {
	return newEscrow(checkUserID, r, now)
}

// ShareCheck reports one bailiff's verify-shares result.
type ShareCheck struct {
	Bailiff string // fingerprint
	Name    string
	Index   int
}

// VerifyShare is the dry run of one bailiff: with their protected secret
// key and passphrase (wiped), they open their share of the vault check and
// the library checks it against its commitment. Nothing real is opened.
func VerifyShare(check *Escrow, r *Roster, secretKey, passphrase []byte) (*ShareCheck, error) {
	if check.UserID != checkUserID {
		return nil, fmt.Errorf("%w: verify-shares runs on the vault check escrow only, not on %s", ErrWrongEscrow, check.UserID)
	}
	if check.RosterDigest != r.Digest() {
		return nil, fmt.Errorf("%w: the vault check was made under another roster; run `coffre ceremony genesis` or rotate the roster", ErrWrongEscrow)
	}
	key, err := OpenBailiffKey(secretKey, passphrase)
	if err != nil {
		return nil, err
	}
	defer wipeEntity(key)
	b := r.Bailiff(Fingerprint(key))
	if b == nil {
		return nil, fmt.Errorf("bailiff: key %s is not on the roster", Fingerprint(key))
	}
	s, err := check.openShareMessage(key)
	if err != nil {
		return nil, err
	}
	defer s.Wipe()
	return &ShareCheck{Bailiff: b.Fingerprint, Name: b.Name, Index: s.Index}, nil
}

// VerifyShareCard is VerifyShare for a bailiff who opened their share of
// the vault check with their own tools (`gpg --decrypt`) and brings the card
// text back.
func VerifyShareCard(check *Escrow, r *Roster, card []byte) (*ShareCheck, error) {
	defer clear(card)
	if check.UserID != checkUserID || check.RosterDigest != r.Digest() {
		return nil, fmt.Errorf("%w: not the vault check of this roster", ErrWrongEscrow)
	}
	s, err := shamir.ParseCard(string(card))
	if err != nil {
		return nil, err
	}
	defer s.Wipe()
	if err := check.checkShare(s); err != nil {
		return nil, err
	}
	b := r.Bailiffs[s.Index-1]
	return &ShareCheck{Bailiff: b.Fingerprint, Name: b.Name, Index: s.Index}, nil
}

// VerifyQuorum goes one step further than VerifyShare: with the k shares
// of the vault check (card texts, wiped) it rebuilds the test key end to
// end, proving the quorum can open an escrow. Still nothing real opens.
func VerifyQuorum(check *Escrow, r *Roster, cards [][]byte) error {
	if check.UserID != checkUserID || check.RosterDigest != r.Digest() {
		return fmt.Errorf("%w: not the vault check of this roster", ErrWrongEscrow)
	}
	var shares []shamir.Share
	defer func() {
		for i := range shares {
			shares[i].Wipe()
		}
		for _, c := range cards {
			clear(c)
		}
	}()
	for _, c := range cards {
		s, err := shamir.ParseCard(string(c))
		if err != nil {
			return err
		}
		shares = append(shares, s)
	}
	key, err := check.openKey(shares, time.Now())
	if err != nil {
		return err
	}
	wipeEntity(key)
	return nil
}
