package bailiff

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"coffre/bailiff/internal/canon"
	"coffre/bailiff/shamir"
)

// UnlockOptions limits an unlock session.
type UnlockOptions struct {
	TTL  time.Duration    // how long the session is usable; DefaultUnlockTTL if 0
	Uses int              // how many Restitute calls it allows; DefaultUnlockUses if 0
	Now  func() time.Time // clock; time.Now if nil
}

// Unlock gathers the shares of one user's escrow for one verified
// restitution order. It is bound to that escrow: a share of any other
// escrow is refused by name, so it can never rebuild another user's key.
// It holds shares (secret) until Close; it has no String method.
type Unlock struct {
	order   *Order
	esc     *Escrow
	roster  *Roster
	shares  map[int]shamir.Share
	expires time.Time
	uses    int
	now     func() time.Time
}

// ErrUnlockExpired means the session ran out of time or uses.
var ErrUnlockExpired = errors.New("bailiff: unlock session expired or used up; start a new one with the bailiffs present")

// NewUnlock opens a session for one order: the order must carry k valid
// signatures of the roster, and the escrow must be that of the order's user
// under the same roster.
func NewUnlock(r *Roster, o *Order, esc *Escrow, opt UnlockOptions) (*Unlock, error) {
	if err := r.Verify(); err != nil {
		return nil, err
	}
	if err := o.Verify(r); err != nil {
		return nil, err
	}
	if esc.UserID != o.UserID {
		return nil, fmt.Errorf("%w: the order is for user %s, the escrow is that of %s", ErrWrongEscrow, o.UserID, esc.UserID)
	}
	if esc.RosterDigest != r.Digest() {
		return nil, fmt.Errorf("%w: escrow of %s was made under another roster", ErrWrongEscrow, esc.UserID)
	}
	if esc.Threshold != r.Threshold || len(esc.Shares) != len(r.Bailiffs) {
		return nil, fmt.Errorf("%w: escrow of %s does not fit the roster threshold", ErrWrongEscrow, esc.UserID)
	}
	if opt.TTL <= 0 {
		opt.TTL = DefaultUnlockTTL
	}
	if opt.Uses <= 0 {
		opt.Uses = DefaultUnlockUses
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	slog.Info("bailiff: unlock session opened", "user", esc.UserID, "order", hex.EncodeToString(sum(o.Body())), "ttl", opt.TTL.String(), "uses", opt.Uses)
	return &Unlock{order: o, esc: esc, roster: r, shares: map[int]shamir.Share{}, expires: opt.Now().Add(opt.TTL), uses: opt.Uses, now: opt.Now}, nil
}

func (u *Unlock) live() error {
	if u.uses <= 0 || !u.now().Before(u.expires) {
		u.Close()
		return ErrUnlockExpired
	}
	return nil
}

// AddShareWithKey lets a bailiff unlock their share on the appliance with
// their protected secret key (token file or scanned card) and passphrase
// (wiped). It returns the share index.
func (u *Unlock) AddShareWithKey(secretKey, passphrase []byte) (int, error) {
	if err := u.live(); err != nil {
		clear(passphrase)
		return 0, err
	}
	key, err := OpenBailiffKey(secretKey, passphrase)
	if err != nil {
		return 0, err
	}
	defer wipeEntity(key)
	if u.roster.Bailiff(Fingerprint(key)) == nil {
		return 0, fmt.Errorf("bailiff: key %s is not on the roster", Fingerprint(key))
	}
	s, err := u.esc.openShareMessage(key)
	if err != nil {
		return 0, err
	}
	return u.keep(s)
}

// AddShareCard takes a share a bailiff opened with their own tools (`gpg
// --decrypt` of their share message) and brings back as card text or a QR
// scan of it. It returns the share index.
func (u *Unlock) AddShareCard(text []byte) (int, error) {
	defer clear(text)
	if err := u.live(); err != nil {
		return 0, err
	}
	s, err := shamir.ParseCard(string(text))
	if err != nil {
		return 0, err
	}
	if err := u.esc.checkShare(s); err != nil {
		s.Wipe()
		return 0, err
	}
	return u.keep(s)
}

func (u *Unlock) keep(s shamir.Share) (int, error) {
	if old, ok := u.shares[s.Index]; ok {
		old.Wipe()
	}
	u.shares[s.Index] = s
	slog.Info("bailiff: share unlocked", "user", u.esc.UserID, "index", s.Index, "bailiff", u.esc.Shares[s.Index-1].Bailiff, "have", len(u.shares), "need", u.esc.Threshold)
	return s.Index, nil
}

// Have returns how many distinct shares the session holds and how many it
// needs.
func (u *Unlock) Have() (have, need int) { return len(u.shares), u.esc.Threshold }

// Close wipes the shares and ends the session.
func (u *Unlock) Close() {
	for i, s := range u.shares {
		s.Wipe()
		delete(u.shares, i)
	}
	u.uses = 0
}

// ItemSource is one stored version of one item of the user, as the
// appliance reads it back from the drives.
type ItemSource struct {
	ItemID  string
	Version int
	// Digest is the SHA-256 of the plaintext recorded at ingest (optional;
	// checked when set).
	Digest []byte
	// Open returns the sealed OpenPGP message (as SealItem wrote it).
	Open func() (io.ReadCloser, error)
}

// PackageManifest describes a restitution package (docs/formats/restitution.md).
type PackageManifest struct {
	VaultID                [32]byte
	OrderDigest            [32]byte
	UserID                 string
	Reference              string
	BeneficiaryFingerprint string
	Created                time.Time
	Designations           *PackageFile // nil when the user made none
	Items                  []PackageItem
	Algorithms             Algorithms
	// Bytes is the canonical manifest as written to manifest.txt and
	// signed in manifest.txt.sig.
	Bytes []byte
}

// PackageFile is a file of the package with its digests.
type PackageFile struct {
	File            string // path relative to the package root
	Size            int64  // plaintext size
	PlaintextSHA256 [32]byte
	FileSHA256      [32]byte
}

// PackageItem is one item version in the package.
type PackageItem struct {
	ItemID  string
	Version int
	PackageFile
}

// Package file names.
const (
	ManifestFile     = "manifest.txt"
	ManifestSigFile  = "manifest.txt.sig"
	SignerFile       = "signer.asc"
	OrderFile        = "order.txt"
	DesignationsFile = "designations.pgp"
	ItemsDir         = "items"
	ReadmeFile       = "README.txt"
)

// Restitute rebuilds the escrow key of the session's user from the shares
// (each checked against its commitment; a bad one is named), decrypts every
// item version given, re-encrypts each to the order's beneficiary (GnuPG 2.2
// profile) and writes the package into outDir (created; must not exist or
// be empty): the items, the designations (encrypted to the beneficiary),
// the signed order, and a manifest signed with signer. The escrow key and
// all plaintext buffers are wiped before it returns. Once the escrow key is
// rebuilt the call counts as one use of the session; after the last use
// (default: the first) the session's shares are wiped.
func Restitute(u *Unlock, items []ItemSource, designations []byte, outDir string, signer *openpgp.Entity) (m *PackageManifest, err error) {
	if err := u.live(); err != nil {
		return nil, err
	}
	if len(items) > MaxItems {
		return nil, fmt.Errorf("bailiff: restitution of %s: %d items exceeds %d", u.esc.UserID, len(items), MaxItems)
	}
	if len(designations) > MaxDesignationsLen {
		return nil, fmt.Errorf("bailiff: restitution of %s: designations of %d bytes exceed %d", u.esc.UserID, len(designations), MaxDesignationsLen)
	}
	if signer == nil || signer.PrivateKey == nil {
		return nil, errors.New("bailiff: restitution: no signing key for the manifest")
	}
	have, need := u.Have()
	if have < need {
		return nil, fmt.Errorf("bailiff: restitution of %s: %d of %d shares; more bailiffs must unlock their share", u.esc.UserID, have, need)
	}
	if err := prepareDir(outDir); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil { // nothing half-written stays behind
			ents, _ := os.ReadDir(outDir)
			for _, e := range ents {
				os.RemoveAll(filepath.Join(outDir, e.Name()))
			}
		}
	}()
	shares := make([]shamir.Share, 0, len(u.shares))
	for _, s := range u.shares {
		shares = append(shares, s)
	}
	now := u.now()
	u.uses-- // the key is about to be rebuilt: this counts as a use
	key, err := u.esc.openKey(shares, now)
	if err != nil {
		return nil, err
	}
	defer wipeEntity(key)
	if u.uses <= 0 {
		u.Close() // last use: the shares are no longer needed
	}

	m = &PackageManifest{VaultID: u.order.VaultID, OrderDigest: u.order.Digest(), UserID: u.esc.UserID, Reference: u.order.Reference,
		BeneficiaryFingerprint: u.order.BeneficiaryFingerprint, Created: now.UTC().Truncate(time.Second),
		Algorithms: Algorithms{Key: "beneficiary", PKESK: "openpgp-pkesk-v3", Data: AlgData, Digest: "sha256"}}
	ben := u.order.beneficiary
	if err := os.MkdirAll(filepath.Join(outDir, ItemsDir), 0o700); err != nil {
		return nil, fmt.Errorf("bailiff: restitution: %w", err)
	}
	keys := openpgp.EntityList{key}
	for i, it := range items {
		if err := canon.CheckID(it.ItemID, MaxIDLen); err != nil {
			return nil, fmt.Errorf("bailiff: restitution: item %d: id: %v", i+1, err)
		}
		name := filepath.ToSlash(filepath.Join(ItemsDir, fmt.Sprintf("%06d.pgp", i+1)))
		pf, err := reencryptItem(outDir, name, it, keys, ben, now)
		if err != nil {
			return nil, err
		}
		m.Items = append(m.Items, PackageItem{ItemID: it.ItemID, Version: it.Version, PackageFile: *pf})
		slog.Debug("bailiff: item re-encrypted", "user", m.UserID, "item", it.ItemID, "version", it.Version, "size", pf.Size)
	}
	if len(designations) > 0 {
		pf, err := writeEncrypted(outDir, DesignationsFile, bytes.NewReader(designations), ben, now)
		if err != nil {
			return nil, err
		}
		m.Designations = pf
	}
	if err := writeFile(outDir, OrderFile, u.order.Marshal()); err != nil {
		return nil, err
	}
	signerPub, err := publicOf(signer)
	if err != nil {
		return nil, err
	}
	if err := writeFile(outDir, SignerFile, signerPub); err != nil {
		return nil, err
	}
	m.Bytes = m.marshal()
	if err := writeFile(outDir, ManifestFile, m.Bytes); err != nil {
		return nil, err
	}
	var sig bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&sig, signer, bytes.NewReader(m.Bytes), config(now)); err != nil {
		return nil, fmt.Errorf("bailiff: restitution: signing the manifest: %w", err)
	}
	if err := writeFile(outDir, ManifestSigFile, sig.Bytes()); err != nil {
		return nil, err
	}
	if err := writeFile(outDir, ReadmeFile, []byte(readme(m))); err != nil {
		return nil, err
	}
	if err := syncDir(outDir); err != nil {
		return nil, err
	}
	slog.Info("bailiff: restitution package written", "user", m.UserID, "items", len(m.Items), "dir", outDir, "beneficiary", m.BeneficiaryFingerprint)
	return m, nil
}

func sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

func publicOf(e *openpgp.Entity) ([]byte, error) {
	pub, err := publicBytes(e)
	if err != nil {
		return nil, err
	}
	return armorBytes(pub, openpgp.PublicKeyType)
}

// reencryptItem decrypts one sealed item with the escrow key and writes it
// encrypted to the beneficiary, hashing the plaintext on the way.
func reencryptItem(dir, name string, it ItemSource, keys openpgp.EntityList, ben *openpgp.Entity, now time.Time) (*PackageFile, error) {
	label := fmt.Sprintf("item %s version %d", it.ItemID, it.Version)
	if it.Open == nil {
		return nil, fmt.Errorf("bailiff: restitution: %s: no source", label)
	}
	rc, err := it.Open()
	if err != nil {
		return nil, fmt.Errorf("bailiff: restitution: %s: opening: %w", label, err)
	}
	defer rc.Close()
	pr, err := openItemAny(rc, keys)
	if err != nil {
		return nil, fmt.Errorf("bailiff: restitution: %s does not open with the escrow key of this user: %s", label, sanitize(err))
	}
	pf, err := writeEncrypted(dir, name, pr, ben, now)
	if err != nil {
		return nil, fmt.Errorf("bailiff: restitution: %s: %w", label, err)
	}
	if it.Digest != nil && !bytes.Equal(it.Digest, pf.PlaintextSHA256[:]) {
		os.Remove(filepath.Join(dir, name))
		return nil, fmt.Errorf("bailiff: restitution: %s: plaintext digest differs from the one recorded at ingest; run `coffre scrub` and retry", label)
	}
	return pf, nil
}

// writeEncrypted streams r encrypted to the beneficiary into dir/name
// (O_EXCL, 0600, fsynced), returning sizes and digests.
func writeEncrypted(dir, name string, r io.Reader, ben *openpgp.Entity, now time.Time) (*PackageFile, error) {
	path := filepath.Join(dir, filepath.FromSlash(name))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fileHash := sha256.New()
	ptHash := sha256.New()
	cnt := &countingReader{r: io.TeeReader(r, ptHash)}
	if err := sealTo(io.MultiWriter(f, fileHash), ben, cnt, false); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("re-encrypting: %s", sanitize(err))
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	pf := &PackageFile{File: name, Size: cnt.n}
	sumInto(pf.PlaintextSHA256[:], ptHash)
	sumInto(pf.FileSHA256[:], fileHash)
	return pf, nil
}

func sumInto(dst []byte, h hash.Hash) { copy(dst, h.Sum(nil)) }

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func prepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("bailiff: restitution: output directory %s: %w", dir, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("bailiff: restitution: output directory %s: %w", dir, err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("bailiff: restitution: output directory %s is not empty; give a new directory", dir)
	}
	return nil
}

func writeFile(dir, name string, b []byte) error {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("bailiff: restitution: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("bailiff: restitution: writing %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("bailiff: restitution: syncing %s: %w", name, err)
	}
	return f.Close()
}

func syncDir(dir string) error {
	for _, d := range []string{filepath.Join(dir, ItemsDir), dir} {
		f, err := os.Open(d)
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("bailiff: restitution: syncing %s: %w", d, err)
		}
	}
	return nil
}

// marshal encodes the manifest canonically.
func (m *PackageManifest) marshal() []byte {
	var w canon.Writer
	w.Line("coffre-restitution", "v1")
	w.Line("vault", hex.EncodeToString(m.VaultID[:]))
	w.Line("order", hex.EncodeToString(m.OrderDigest[:]))
	w.Line("user", m.UserID)
	w.Line("reference", m.Reference)
	w.Line("beneficiary", m.BeneficiaryFingerprint)
	w.Line("created", canon.EncTime(m.Created))
	w.Line("algorithms", m.Algorithms.PKESK, m.Algorithms.Data, m.Algorithms.Digest)
	if d := m.Designations; d != nil {
		w.Line("designations", d.File, fmt.Sprint(d.Size), hex.EncodeToString(d.PlaintextSHA256[:]), hex.EncodeToString(d.FileSHA256[:]))
	} else {
		w.Line("designations", "none")
	}
	w.Line("items", fmt.Sprint(len(m.Items)))
	for _, it := range m.Items {
		w.Line("item", it.File, it.ItemID, fmt.Sprint(it.Version), fmt.Sprint(it.Size), hex.EncodeToString(it.PlaintextSHA256[:]), hex.EncodeToString(it.FileSHA256[:]))
	}
	return w.Bytes()
}

func readme(m *PackageManifest) string {
	return fmt.Sprintf(`Coffre restitution package

User:        %s
Reference:   %s
Beneficiary: %s
Created:     %s
Items:       %d

Every file under items/ (and designations.pgp, if present) is an OpenPGP
message encrypted to the beneficiary key above. Open one with any of:

  gpg --decrypt items/000001.pgp > item1
  sq decrypt --recipient-file beneficiary.key items/000001.pgp
  rnp --decrypt items/000001.pgp --output item1

manifest.txt lists every item, its version, size and SHA-256 digests; it is
signed by the appliance (manifest.txt.sig, key in signer.asc):

  gpg --import signer.asc && gpg --verify manifest.txt.sig manifest.txt

order.txt is the restitution order signed by the bailiffs.
`, m.UserID, m.Reference, m.BeneficiaryFingerprint, canon.EncTime(m.Created), len(m.Items))
}

// String describes the session without its shares.
func (u *Unlock) String() string {
	return fmt.Sprintf("unlock session for %s (%d of %d shares, shares redacted)", u.esc.UserID, len(u.shares), u.esc.Threshold)
}

// GoString is String for %#v.
func (u *Unlock) GoString() string { return u.String() }
