package appliance

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"coffre/bailiff"
	"coffre/internal/fsutil"
	"coffre/storage"
	"coffre/storage/catalog"
)

// checkUser is the reserved user id of the verify-shares escrow.
const checkUser = "coffre:verify-shares"

// NewBailiff is a bailiff whose key the appliance generates in the ceremony.
type NewBailiff struct {
	Name, Email string
	Passphrase  []byte // wiped
}

// ImportedBailiff is a bailiff who brings a public key made with GnuPG or on
// a smartcard, and signs the roster with their own tools.
type ImportedBailiff struct {
	Name   string
	Public []byte
}

// GenesisOptions are the inputs of the genesis ceremony.
type GenesisOptions struct {
	Threshold int
	Generate  []NewBailiff
	Import    []ImportedBailiff
	// OutDir receives what is handed out and printed: each generated
	// bailiff's protected secret key and key card, the roster, and the
	// printable transcript. For imported keys, the roster body to sign is
	// written there as roster.body, and the ceremony waits for each
	// bailiff's detached signature as OutDir/FINGERPRINT.sig.
	OutDir string
	// SignatureWait bounds that wait (default 30 minutes).
	SignatureWait time.Duration
	// Say reports each step to the people in the room.
	Say func(format string, a ...any)
}

// GenesisResult is what the ceremony leaves.
type GenesisResult struct {
	Roster      *bailiff.Roster
	RosterIndex uint64
	Transcript  string // printable transcript path
	Files       []string
}

// rosterVaultID is the 32-byte vault id the roster and escrows bind to.
func (a *Appliance) rosterVaultID() [32]byte {
	return sha256.Sum256([]byte("coffre vault " + a.ID.VaultID))
}

// Genesis holds the genesis ceremony: enrol the bailiffs (keys generated on
// the appliance, exported protected and as key cards, then wiped; or
// imported), fix the roster k of n, have every bailiff sign it, and append
// the roster, the verify-shares escrow and the ceremony transcript as
// records on the drives.
func (a *Appliance) Genesis(ctx context.Context, o GenesisOptions) (*GenesisResult, error) {
	if _, err := a.Roster(); !errors.Is(err, ErrNoRoster) {
		return nil, fmt.Errorf("appliance: this vault already has a roster; a roster change is a re-encapsulation (coffre reencap)")
	}
	say := o.Say
	if say == nil {
		say = func(string, ...any) {}
	}
	if err := os.MkdirAll(o.OutDir, 0o700); err != nil {
		return nil, err
	}
	g, err := bailiff.NewGenesisFor(a.rosterVaultID(), o.Threshold, nil)
	if err != nil {
		return nil, err
	}
	defer g.Abort()
	res := &GenesisResult{}
	for _, nb := range o.Generate {
		gk, err := g.GenerateBailiff(nb.Name, nb.Email, nb.Passphrase)
		clear(nb.Passphrase)
		if err != nil {
			return nil, err
		}
		base := filepath.Join(o.OutDir, fileSafe(nb.Name))
		if err := fsutil.CreateExclusive(base+".sec.asc", gk.ArmoredSecret, 0o600); err != nil {
			return nil, fmt.Errorf("appliance: writing %s's key for the token: %w", nb.Name, err)
		}
		if err := fsutil.CreateExclusive(base+".card.png", gk.Card.PNG, 0o600); err != nil {
			return nil, err
		}
		pub, _ := gk.Key.ArmoredPublic()
		os.WriteFile(base+".pub.asc", pub, 0o644)
		res.Files = append(res.Files, base+".sec.asc", base+".card.png", base+".pub.asc")
		say("enrolled %s: key %s generated, exported protected and as key card %s (scanned back and verified)", nb.Name, gk.Key.Fingerprint, gk.Card.ID)
	}
	for _, ib := range o.Import {
		k, err := g.ImportBailiff(ib.Name, ib.Public)
		if err != nil {
			return nil, fmt.Errorf("appliance: %s's key: %w", ib.Name, err)
		}
		say("enrolled %s: public key %s imported", ib.Name, k.Fingerprint)
	}
	r, err := g.FixRoster()
	if err != nil {
		return nil, err
	}
	say("roster fixed: %d of %d; keys generated here signed it and were wiped", r.Threshold, len(r.Bailiffs))
	if len(o.Import) > 0 {
		if err := a.collectRosterSignatures(g, r, o, say); err != nil {
			return nil, err
		}
	}
	fin, err := g.Finish()
	if err != nil {
		return nil, err
	}
	if err := a.appendGenesisRecord(ctx); err != nil {
		return nil, err
	}
	rosterIdx, err := a.commit(ctx, storage.TypeRoster, catalog.Meta{Kind: catalog.KindRoster, Algorithms: fin.Roster.Algorithms()}, bytesReader(fin.Roster.Marshal()))
	if err != nil {
		return nil, err
	}
	if _, err := a.commit(ctx, storage.TypeEscrow, catalog.Meta{Kind: catalog.KindEscrow, UserID: checkUser, Algorithms: escrowAlgorithmsFor(fin.Check)}, bytesReader(fin.Check.Marshal())); err != nil {
		return nil, err
	}
	if _, err := a.commit(ctx, storage.TypeCeremony, catalog.Meta{Kind: catalog.KindCeremony, Attrs: map[string]string{"ceremony": "genesis"}}, bytesReader(fin.Transcript.Marshal())); err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.roster = fin.Roster
	a.mu.Unlock()
	rosterFile := filepath.Join(o.OutDir, "roster.txt")
	os.WriteFile(rosterFile, fin.Roster.Marshal(), 0o644)
	md := append(fin.Transcript.Markdown(), fmt.Sprintf("\nAudit verifier key (print it; bailiffs countersign):\n\n    %s\n", a.ID.AuditKey)...)
	res.Transcript = filepath.Join(o.OutDir, "genesis-transcript.md")
	os.WriteFile(res.Transcript, md, 0o644)
	res.Files = append(res.Files, rosterFile, res.Transcript)
	res.Roster, res.RosterIndex = fin.Roster, rosterIdx
	if err := a.Anchor(ctx); err != nil {
		return nil, err
	}
	say("genesis recorded on the drives: roster is record %d; transcript in %s", rosterIdx, res.Transcript)
	return res, nil
}

func (a *Appliance) collectRosterSignatures(g *bailiff.Genesis, r *bailiff.Roster, o GenesisOptions, say func(string, ...any)) error {
	body := filepath.Join(o.OutDir, "roster.body")
	if err := os.WriteFile(body, r.Body(), 0o644); err != nil {
		return err
	}
	wait := o.SignatureWait
	if wait == 0 {
		wait = 30 * time.Minute
	}
	say("bailiffs with their own keys: sign %s (gpg --detach-sign) and put the signature in %s/FINGERPRINT.sig", body, o.OutDir)
	deadline := time.Now().Add(wait)
	for {
		missing := 0
		for _, b := range r.Bailiffs {
			if _, ok := r.Signatures[b.Fingerprint]; ok {
				continue
			}
			sig, err := os.ReadFile(filepath.Join(o.OutDir, b.Fingerprint+".sig"))
			if err != nil {
				missing++
				continue
			}
			if _, err := g.AddRosterSignature(sig); err != nil {
				return fmt.Errorf("appliance: %s's roster signature: %w", b.Name, err)
			}
			say("roster signature of %s verified", b.Name)
		}
		if missing == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("appliance: %d bailiff signature(s) of the roster did not arrive in %s; nothing was recorded", missing, wait)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func fileSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, s)
}

// appendGenesisRecord makes record 0 the vault's public identity (vault id,
// origin, audit verifier key, ingest public key). Record 0 is never
// superseded (the catalog's "supersedes" field uses 0 for "none"), so it holds
// nothing that would ever need re-encapsulation: only public data.
func (a *Appliance) appendGenesisRecord(ctx context.Context) error {
	if a.vault.Size() != 0 {
		return nil
	}
	pub := struct {
		VaultID   string `json:"vault_id"`
		Origin    string `json:"origin"`
		AuditKey  string `json:"audit_key"`
		IngestKey string `json:"ingest_key"`
	}{a.ID.VaultID, a.ID.Origin, a.ID.AuditKey, a.ID.IngestKey}
	b, err := json.Marshal(pub)
	if err != nil {
		return err
	}
	_, err = a.commit(ctx, storage.TypeCeremony, catalog.Meta{Kind: catalog.KindGenesis}, bytesReader(b))
	return err
}

// Roster returns the roster in force, read from the drives once.
func (a *Appliance) Roster() (*bailiff.Roster, error) {
	a.mu.Lock()
	r := a.roster
	a.mu.Unlock()
	if r != nil {
		return r, nil
	}
	rosters, err := a.cat.ByKind(catalog.KindRoster)
	if err != nil {
		return nil, err
	}
	var idx uint64
	found := false
	for _, e := range rosters {
		if e.Live() && (!found || e.Record > idx) {
			idx, found = e.Record, true
		}
	}
	if !found {
		return nil, ErrNoRoster
	}
	b, err := a.readRecord(idx)
	if err != nil {
		return nil, fmt.Errorf("appliance: reading the roster (record %d): %w", idx, err)
	}
	r, err = bailiff.ParseRoster(b, time.Now())
	if err != nil {
		return nil, fmt.Errorf("appliance: roster (record %d): %w", idx, err)
	}
	if err := r.Verify(); err != nil {
		return nil, fmt.Errorf("appliance: roster (record %d): %w", idx, err)
	}
	a.mu.Lock()
	a.roster = r
	a.keepRoster(r, idx)
	a.mu.Unlock()
	return r, nil
}

// keepRoster remembers r, read from (or written to) record idx, for
// rosterByDigest. The caller holds a.mu.
func (a *Appliance) keepRoster(r *bailiff.Roster, idx uint64) {
	if a.rosters == nil {
		a.rosters = map[[32]byte]rosterAt{}
	}
	a.rosters[r.Digest()] = rosterAt{r, idx}
}

// readRecord reads a small record's body whole (rosters, escrow bundles).
func (a *Appliance) readRecord(idx uint64) ([]byte, error) {
	_, _, body, err := a.vault.Get(idx)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	return io.ReadAll(io.LimitReader(body, 16<<20))
}

// escrowFor returns the user's escrow. On the user's first upload it makes
// a new one and returns, with it, the record to append in the same batch as
// the item (nil when the escrow is already on the drives). The caller holds
// the user's lock.
func (a *Appliance) escrowFor(user string) (*bailiff.Escrow, *pending, error) {
	a.mu.Lock()
	e := a.escrows[user]
	a.mu.Unlock()
	if e != nil {
		return e, nil, nil
	}
	e, err := a.loadEscrow(user)
	if err != nil {
		return nil, nil, err
	}
	if e != nil {
		a.mu.Lock()
		a.escrows[user] = e
		a.mu.Unlock()
		return e, nil, nil
	}
	r, err := a.Roster()
	if err != nil {
		return nil, nil, err
	}
	if e, err = a.newUserEscrow(user, r); err != nil { // post-quantum once the vault is (reencap_upgrade.go)
		return nil, nil, err
	}
	return e, &pending{storage.TypeEscrow, catalog.Meta{Kind: catalog.KindEscrow, UserID: user, Algorithms: escrowAlgorithmsFor(e)}, bytesReader(e.Marshal())}, nil
}

// loadEscrow finds the user's live escrow on the drives (nil if none).
func (a *Appliance) loadEscrow(user string) (*bailiff.Escrow, error) {
	idx, ok, err := a.escrowRecord(user)
	if err != nil || !ok {
		return nil, err
	}
	b, err := a.readRecord(idx)
	if err != nil {
		return nil, fmt.Errorf("appliance: escrow of %s (record %d): %w", user, idx, err)
	}
	e, err := bailiff.ParseEscrow(b, time.Now())
	if err != nil {
		return nil, fmt.Errorf("appliance: escrow of %s (record %d): %w", user, idx, err)
	}
	if e.UserID != user {
		return nil, fmt.Errorf("appliance: record %d holds the escrow of %q, not of %q", idx, e.UserID, user)
	}
	return e, nil
}

// escrowRecord finds the record of the user's live escrow. The index of
// escrow records by user is built from the catalog once per process and kept
// up to date by commit.
func (a *Appliance) escrowRecord(user string) (uint64, bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.escrowIdx == nil {
		all, err := a.cat.ByKind(catalog.KindEscrow)
		if err != nil {
			return 0, false, err
		}
		a.escrowIdx = map[string]uint64{}
		for _, e := range all {
			if e.Live() {
				a.escrowIdx[e.Meta.UserID] = e.Record
			}
		}
	}
	idx, ok := a.escrowIdx[user]
	return idx, ok, nil
}

// VerifyShares is the dry run: each bailiff present opens their share of the
// vault check escrow with their key and passphrase; nothing real is opened.
// It returns one line per bailiff and an error naming those who failed.
func (a *Appliance) VerifyShares(keys []BailiffSecret) ([]string, error) {
	r, err := a.Roster()
	if err != nil {
		return nil, err
	}
	check, err := a.loadEscrow(checkUser)
	if err != nil {
		return nil, err
	}
	if check == nil {
		return nil, errors.New("appliance: no verify-shares escrow on the drives")
	}
	var lines []string
	var failed []string
	for _, k := range keys {
		c, err := bailiff.VerifyShare(check, r, k.SecretKey, k.Passphrase)
		clear(k.Passphrase)
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", k.Label, err))
			continue
		}
		lines = append(lines, fmt.Sprintf("%s (%s): share %d opens", c.Name, c.Bailiff, c.Index))
	}
	if len(failed) > 0 {
		return lines, fmt.Errorf("appliance: verify-shares: %s", strings.Join(failed, "; "))
	}
	return lines, nil
}

// BailiffSecret is a bailiff's protected secret key and passphrase, typed in
// or read from their token for one act.
type BailiffSecret struct {
	Label      string
	SecretKey  []byte
	Passphrase []byte // wiped after use
}
