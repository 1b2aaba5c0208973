package bailiff

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"coffre/bailiff/internal/canon"
)

// Transcript is the record of a ceremony: every step with its time, the
// participant's key fingerprint and what was issued or printed. Marshal
// gives the canonical bytes the appliance signs and stores as a record;
// Markdown the printable document.
type Transcript struct {
	Ceremony string // "genesis"
	VaultID  [32]byte
	Started  time.Time
	Steps    []Step
}

// Step is one line of a transcript.
type Step struct {
	Time        time.Time
	Action      string // lowercase word with hyphens: generate-key, print-card, import-key, fix-roster, sign-roster, vault-check, finish, ...
	Fingerprint string // participant key, or "" for none
	Detail      string // free text, never secret
}

// Marshal returns the canonical transcript (docs/formats/roster.md,
// "Ceremony transcript").
func (t *Transcript) Marshal() []byte {
	var w canon.Writer
	w.Line("coffre-transcript", "v1")
	w.Line("ceremony", t.Ceremony)
	w.Line("vault", hex.EncodeToString(t.VaultID[:]))
	w.Line("started", canon.EncTime(t.Started))
	w.Line("steps", fmt.Sprint(len(t.Steps)))
	for _, s := range t.Steps {
		f := s.Fingerprint
		if f == "" {
			f = "-"
		}
		w.Line("step", canon.EncTime(s.Time), s.Action, f, s.Detail)
	}
	return w.Bytes()
}

// Markdown returns the printable transcript.
func (t *Transcript) Markdown() []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# Coffre %s ceremony\n\n", t.Ceremony)
	fmt.Fprintf(&b, "- Vault: `%x`\n- Started: %s\n\n", t.VaultID, canon.EncTime(t.Started))
	b.WriteString("| time (UTC) | step | key | detail |\n|---|---|---|---|\n")
	for _, s := range t.Steps {
		f := s.Fingerprint
		if f == "" {
			f = "—"
		} else {
			f = "`" + f + "`"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", canon.EncTime(s.Time), s.Action, f, strings.ReplaceAll(s.Detail, "|", "\\|"))
	}
	b.WriteString("\nSignatures of the bailiffs present:\n\n")
	return []byte(b.String())
}

// Genesis runs the genesis ceremony as library calls: enrol each bailiff
// (GenerateBailiff or ImportBailiff), FixRoster, collect the signatures of
// imported keys (AddRosterSignature), Finish. Every step goes to the
// transcript.
type Genesis struct {
	VaultID   [32]byte
	Threshold int
	now       func() time.Time
	keys      []*BailiffKey
	generated []*GeneratedKey
	roster    *Roster
	t         Transcript
}

// GenesisResult is what the appliance stores after genesis.
type GenesisResult struct {
	Roster     *Roster     // signed by every bailiff
	Check      *Escrow     // the vault check escrow for verify-shares
	Transcript *Transcript // to be signed by the appliance and stored
}

// NewGenesis starts a genesis ceremony for a new vault (random vault id)
// with threshold k. now may be nil for time.Now.
func NewGenesis(threshold int, now func() time.Time) (*Genesis, error) {
	var id [32]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	return NewGenesisFor(id, threshold, now)
}

// NewGenesisFor starts the genesis ceremony of an existing vault identity:
// the roster, the escrows and the orders bind to vaultID.
func NewGenesisFor(vaultID [32]byte, threshold int, now func() time.Time) (*Genesis, error) {
	if now == nil {
		now = time.Now
	}
	if threshold < MinThreshold || threshold > MaxBailiffs {
		return nil, fmt.Errorf("bailiff: genesis: threshold %d outside %d..%d", threshold, MinThreshold, MaxBailiffs)
	}
	g := &Genesis{Threshold: threshold, now: now, VaultID: vaultID}
	g.t = Transcript{Ceremony: "genesis", VaultID: g.VaultID, Started: now().UTC().Truncate(time.Second)}
	g.Note("start", "", fmt.Sprintf("vault %x, threshold %d", g.VaultID, threshold))
	return g, nil
}

// Note appends a step to the transcript (the CLI records what it printed,
// who was present). detail must not contain secrets.
func (g *Genesis) Note(action, fingerprint, detail string) {
	detail = strings.Join(strings.Fields(detail), " ")
	if detail == "" {
		detail = "-"
	}
	if len(g.t.Steps) < MaxTranscriptSteps {
		g.t.Steps = append(g.t.Steps, Step{Time: g.now().UTC().Truncate(time.Second), Action: action, Fingerprint: fingerprint, Detail: detail})
	}
}

func (g *Genesis) enrol(k *BailiffKey) error {
	if g.roster != nil {
		return errors.New("bailiff: genesis: the roster is already fixed")
	}
	if len(g.keys) >= MaxBailiffs {
		return fmt.Errorf("bailiff: genesis: more than %d bailiffs", MaxBailiffs)
	}
	for _, o := range g.keys {
		if o.Fingerprint == k.Fingerprint {
			return fmt.Errorf("bailiff: genesis: key %s is already enrolled (%s)", k.Fingerprint, o.Name)
		}
	}
	g.keys = append(g.keys, k)
	return nil
}

// GenerateBailiff generates a bailiff's key on the appliance, exports it
// protected by passphrase (wiped) as armored text and a QR card (scanned
// back and verified). The caller hands ArmoredSecret and Card to the
// bailiff; the unprotected key is kept only to sign the roster and wiped by
// FixRoster.
func (g *Genesis) GenerateBailiff(name, email string, passphrase []byte) (*GeneratedKey, error) {
	if g.roster != nil {
		clear(passphrase)
		return nil, errors.New("bailiff: genesis: the roster is already fixed")
	}
	gk, err := GenerateBailiffKey(name, email, passphrase, g.now())
	if err != nil {
		return nil, err
	}
	if err := g.enrol(gk.Key); err != nil {
		gk.Wipe()
		return nil, err
	}
	g.generated = append(g.generated, gk)
	f := gk.Key.Fingerprint
	g.Note("generate-key", f, fmt.Sprintf("%s: %s generated on the appliance", name, AlgKey))
	g.Note("export-key", f, "armored secret key, "+AlgS2K)
	g.Note("print-card", f, fmt.Sprintf("key card %s, %d QR codes, checksum %s, scanned back and verified", gk.Card.ID, gk.Card.Parts, gk.Card.Checksum))
	return gk, nil
}

// ImportBailiff enrols a public key the bailiff made with their own tools.
func (g *Genesis) ImportBailiff(name string, public []byte) (*BailiffKey, error) {
	k, err := ImportBailiffKey(name, public, g.now())
	if err != nil {
		return nil, err
	}
	if err := g.enrol(k); err != nil {
		return nil, err
	}
	g.Note("import-key", k.Fingerprint, name+": public key imported")
	return k, nil
}

// FixRoster fixes the roster, signs it with every key generated on the
// appliance and wipes those keys. Bailiffs with imported keys then sign
// Roster().Body() with their own tools and hand the signature to
// AddRosterSignature.
func (g *Genesis) FixRoster() (*Roster, error) {
	if g.roster != nil {
		return g.roster, nil
	}
	r, err := NewRoster(g.VaultID, g.Threshold, g.keys, g.now())
	if err != nil {
		return nil, err
	}
	g.roster = r
	d := r.Digest()
	g.Note("fix-roster", "", fmt.Sprintf("roster %x, %d of %d", d, r.Threshold, len(r.Bailiffs)))
	body := r.Body()
	for _, gk := range g.generated {
		sig, err := detachSign(gk.priv, body, g.now())
		gk.Wipe()
		if err != nil {
			return nil, fmt.Errorf("bailiff: genesis: signing the roster for %s: %w", gk.Key.Name, err)
		}
		r.Signatures[gk.Key.Fingerprint] = sig
		g.Note("sign-roster", gk.Key.Fingerprint, gk.Key.Name+": signed on the appliance")
		g.Note("wipe-key", gk.Key.Fingerprint, "unprotected private key wiped from the appliance")
	}
	g.generated = nil
	return r, nil
}

// AddRosterSignature records a bailiff's detached signature over the
// roster body.
func (g *Genesis) AddRosterSignature(sig []byte) (*BailiffKey, error) {
	if g.roster == nil {
		return nil, errors.New("bailiff: genesis: fix the roster first")
	}
	b, err := g.roster.AddSignature(sig)
	if err != nil {
		return nil, err
	}
	g.Note("sign-roster", b.Fingerprint, b.Name+": detached signature verified")
	return b, nil
}

// Finish checks every bailiff signed, makes the vault check escrow and
// returns what the appliance stores.
func (g *Genesis) Finish() (*GenesisResult, error) {
	if g.roster == nil {
		return nil, errors.New("bailiff: genesis: fix the roster first")
	}
	if err := g.roster.Verify(); err != nil {
		return nil, err
	}
	check, err := NewVaultCheck(g.roster, g.now())
	if err != nil {
		return nil, err
	}
	g.Note("vault-check", check.Fingerprint, fmt.Sprintf("verify-shares escrow made, split %x", check.SplitID))
	g.Note("finish", "", "roster signed by every bailiff")
	t := g.t
	t.Steps = append([]Step(nil), g.t.Steps...)
	return &GenesisResult{Roster: g.roster, Check: check, Transcript: &t}, nil
}

// Abort wipes any generated key still held.
func (g *Genesis) Abort() {
	for _, gk := range g.generated {
		gk.Wipe()
	}
	g.generated = nil
}
