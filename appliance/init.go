package appliance

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/mod/sumdb/note"

	"coffre/firmware"
	"coffre/hsm"
	"coffre/ingest/envelope"
)

// InitOptions are the inputs of `coffre init`.
type InitOptions struct {
	State       string
	Keystore    hsm.Config // Dir defaults to STATE/keystore
	WriteQuorum int
	Soft        hsm.SoftParams // KDF cost of a new soft keystore
	// Measure, for a TPM keystore, is what coffred will measure at start
	// (its binary and config): the keys are sealed to that measurement.
	Measure []firmware.Input
	Log     *slog.Logger
}

// Init provisions a new appliance: a vault id, the ingest key (OpenPGP
// P-521), the vault record key, the audit signing key (Ed25519 note key), the
// catalog key and the key that wraps the record key in drive superblocks —
// all sealed in the keystore — and STATE/vault.json with the public parts.
// It refuses a state directory that already holds a vault.
func Init(o InitOptions) (*Identity, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if _, err := os.Stat(identityPath(o.State)); err == nil {
		return nil, fmt.Errorf("appliance: %s already holds a vault; refusing to overwrite it", o.State)
	}
	if err := os.MkdirAll(o.State, 0o700); err != nil {
		return nil, fmt.Errorf("appliance: %w", err)
	}
	for _, d := range []string{receiptsDir, couriersDir} {
		if err := os.MkdirAll(filepath.Join(o.State, d), 0o700); err != nil {
			return nil, fmt.Errorf("appliance: %w", err)
		}
	}
	if err := hsm.SelfTest(); err != nil {
		return nil, fmt.Errorf("appliance: self-test failed, refusing to create keys: %w", err)
	}
	cfg := o.Keystore
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(o.State, keystoreDir)
	}
	ks, err := createKeystore(cfg, o.Soft, o.Measure)
	if err != nil {
		return nil, err
	}
	defer ks.Close()

	var vid [16]byte
	rand.Read(vid[:])
	id := &Identity{
		Format:      1,
		VaultID:     hex.EncodeToString(vid[:]),
		Keystore:    ks.Backend(),
		WriteQuorum: o.WriteQuorum,
		Created:     time.Now().UTC().Truncate(time.Second),
	}
	if id.WriteQuorum == 0 {
		id.WriteQuorum = 3
	}
	id.Origin = "coffre.vault/" + id.VaultID

	// Ingest key: the online side seals to its public part.
	ing, err := envelope.GenerateIngestKey("Coffre ingest " + id.VaultID[:8])
	if err != nil {
		return nil, fmt.Errorf("appliance: ingest key: %w", err)
	}
	var priv, pub bytes.Buffer
	if err := envelope.WritePrivateKey(&priv, ing); err != nil {
		return nil, err
	}
	if err := envelope.WritePublicKey(&pub, ing); err != nil {
		return nil, err
	}
	id.IngestKey = pub.String()
	secrets := map[string][]byte{keyIngest: priv.Bytes()}
	defer func() {
		for _, s := range secrets {
			clear(s)
		}
	}()

	// Audit key: Ed25519, in the signed-note format.
	skey, vkey, err := note.GenerateKey(rand.Reader, id.Origin)
	if err != nil {
		return nil, err
	}
	if err := pairwiseNote(skey, vkey); err != nil {
		return nil, err
	}
	id.AuditKey = vkey
	secrets[keyAudit] = []byte(skey)
	for _, name := range []string{keyRecord, keyCatalog, keyWrap} {
		k := make([]byte, 32)
		rand.Read(k)
		secrets[name] = k
	}
	for _, name := range []string{keyIngest, keyAudit, keyRecord, keyCatalog, keyWrap} {
		if err := ks.Seal(name, secrets[name]); err != nil {
			return nil, fmt.Errorf("appliance: sealing %s: %w", name, err)
		}
	}
	if err := id.Save(o.State); err != nil {
		return nil, err
	}
	o.Log.Info("vault initialised", "vault", id.VaultID, "keystore", ks.Backend(), "state", o.State)
	return id, nil
}

func createKeystore(cfg hsm.Config, soft hsm.SoftParams, measure []firmware.Input) (hsm.Keystore, error) {
	switch cfg.Backend {
	case "", hsm.BackendSoft:
		if cfg.Production {
			return nil, hsm.ErrSoftInProduction
		}
		if soft == (hsm.SoftParams{}) {
			soft = hsm.DefaultSoftParams
		}
		return hsm.CreateSoft(cfg.Dir, cfg.Passphrase, soft)
	case hsm.BackendTPM:
		if len(measure) == 0 {
			return nil, errors.New("appliance: a TPM keystore is sealed to what coffred measures: give the coffred binary and config to measure")
		}
		// Provisioning measures what coffred will measure at every start,
		// then binds the keystore to the resulting PCR value.
		bank, err := hsm.OpenPCRBank(cfg.TPM.Device, cfg.TPM.MeasurePCR)
		if err != nil {
			return nil, err
		}
		_, err = firmware.MeasureInto(bank, measure)
		bank.Close()
		if err != nil {
			return nil, err
		}
		opts := cfg.TPM
		if len(cfg.Passphrase) > 0 && opts.PIN == nil {
			opts.PIN = cfg.Passphrase
		}
		return hsm.CreateTPM(cfg.Dir, opts)
	}
	return nil, fmt.Errorf("appliance: keystore backend %q: want soft or tpm", cfg.Backend)
}

// pairwiseNote signs and verifies once with a freshly generated note key.
func pairwiseNote(skey, vkey string) error {
	s, err := note.NewSigner(skey)
	if err != nil {
		return err
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return err
	}
	msg, err := note.Sign(&note.Note{Text: "pairwise check\n"}, s)
	if err != nil {
		return err
	}
	if _, err := note.Open(msg, note.VerifierList(v)); err != nil {
		return errors.New("appliance: audit key failed its pair-wise check")
	}
	return nil
}
