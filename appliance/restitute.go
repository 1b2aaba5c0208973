package appliance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"coffre/bailiff"
	"coffre/ingest/usb"
	"coffre/storage"
	"coffre/storage/catalog"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// RestituteOptions are the inputs of a restitution.
type RestituteOptions struct {
	UserID      string
	Beneficiary []byte // armored OpenPGP public key
	Reference   string // legal reference
	// Order is a restitution order already signed elsewhere (optional);
	// otherwise one is made from the fields above and signed by Bailiffs.
	Order []byte
	// Bailiffs present unlock with their key and passphrase (they sign the
	// order and open their share on the appliance) …
	Bailiffs []BailiffSecret
	// … or bring a share they opened with GnuPG as its card text.
	ShareCards [][]byte
	// OutDir receives the package; Image, when set, also gets it as a FAT32
	// image for the beneficiary's stick.
	OutDir string
	Image  string
	Say    func(format string, a ...any)
}

// RestitutionResult says what was released.
type RestitutionResult struct {
	Manifest *bailiff.PackageManifest
	Record   uint64
	Items    int
}

// Restitute releases one user's items, every version, to a beneficiary,
// under a quorum: the order must carry k bailiff signatures, k shares rebuild
// only that user's escrow key, each item is re-encrypted to the beneficiary,
// and the act is appended as a record. Nothing of any other user is read.
func (a *Appliance) Restitute(ctx context.Context, o RestituteOptions) (*RestitutionResult, error) {
	say := o.Say
	if say == nil {
		say = func(string, ...any) {}
	}
	defer func() {
		for _, b := range o.Bailiffs {
			clear(b.Passphrase)
		}
	}()
	r, err := a.Roster()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var order *bailiff.Order
	if len(o.Order) > 0 {
		if order, err = bailiff.ParseOrder(o.Order, now); err != nil {
			return nil, err
		}
	} else {
		if order, err = bailiff.NewOrder(r, o.UserID, o.Reference, o.Beneficiary, now); err != nil {
			return nil, err
		}
		// The share is opened below with the same passphrases.
		if _, err := signEach(o.Bailiffs, "order", false, say, func(k *openpgp.Entity) error { return order.Sign(r, k, now) }); err != nil {
			return nil, err
		}
	}
	if err := order.Verify(r); err != nil {
		return nil, err
	}
	esc, err := a.loadEscrow(order.UserID)
	if err != nil {
		return nil, err
	}
	if esc == nil {
		return nil, fmt.Errorf("appliance: user %s has nothing in this vault", order.UserID)
	}
	if err := a.checkNotMidUpgrade(order.UserID); err != nil {
		return nil, err
	}
	u, err := bailiff.NewUnlock(r, order, esc, bailiff.UnlockOptions{TTL: 15 * time.Minute, Uses: 1})
	if err != nil {
		return nil, err
	}
	defer u.Close()
	for _, b := range o.Bailiffs {
		if _, err := u.AddShareWithKey(b.SecretKey, bytes.Clone(b.Passphrase)); err != nil {
			return nil, fmt.Errorf("appliance: %s's share: %w", b.Label, err)
		}
		say("share of %s opened", b.Label)
	}
	for i, c := range o.ShareCards {
		if _, err := u.AddShareCard(c); err != nil {
			return nil, fmt.Errorf("appliance: share card %d: %w", i+1, err)
		}
	}
	if have, need := u.Have(); have < need {
		return nil, fmt.Errorf("appliance: %d of the %d shares needed to open %s's escrow", have, need, order.UserID)
	}
	// Live records only: a record re-encapsulated (superseded) is the same
	// item version under newer protection.
	entries, err := a.cat.Live(order.UserID)
	if err != nil {
		return nil, err
	}
	var items []bailiff.ItemSource
	var designations bytes.Buffer
	for _, e := range entries {
		if e.Meta.Kind != catalog.KindItem {
			continue
		}
		idx := e.Record
		d := e.Meta.Digest
		items = append(items, bailiff.ItemSource{
			ItemID: e.Meta.ItemID, Version: int(e.Meta.Version), Digest: d[:],
			Open: func() (io.ReadCloser, error) {
				_, _, body, err := a.vault.Get(idx)
				return body, err
			},
		})
		if b := e.Meta.Attrs["beneficiaries"]; b != "" {
			fmt.Fprintf(&designations, "%s v%d: %s\n", e.Meta.ItemID, e.Meta.Version, b)
		}
	}
	if len(items) == 0 {
		return nil, fmt.Errorf("appliance: user %s has no items", order.UserID)
	}
	signer := a.ingest[0]
	m, err := bailiff.Restitute(u, items, designations.Bytes(), o.OutDir, signer)
	if err != nil {
		return nil, err
	}
	say("%d item version(s) re-encrypted to the beneficiary in %s", len(m.Items), o.OutDir)
	body := append(append([]byte(nil), m.Bytes...), order.Marshal()...)
	idx, err := a.commit(ctx, storage.TypeRestitution, catalog.Meta{Kind: catalog.KindRestitution, UserID: order.UserID, Attrs: map[string]string{"reference": order.Reference, "beneficiary": m.BeneficiaryFingerprint}}, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("appliance: the package is written but the act could not be recorded: %w", err)
	}
	if o.Image != "" {
		if err := writeDirImage(o.OutDir, o.Image); err != nil {
			return nil, err
		}
		say("package also written as FAT32 image %s", o.Image)
	}
	return &RestitutionResult{Manifest: m, Record: idx, Items: len(m.Items)}, nil
}

// writeDirImage copies a package directory (items/ flattened with a prefix)
// into a FAT32 image.
func writeDirImage(dir, image string) error {
	var files []usb.File
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, usb.BytesFile(flatName(rel), b))
		return nil
	})
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return errors.New("appliance: empty package")
	}
	_, err = usb.WriteImage(image, files, 0)
	return err
}

func flatName(rel string) string {
	b := []byte(rel)
	for i, c := range b {
		if c == '/' {
			b[i] = '_'
		}
	}
	return string(b)
}
