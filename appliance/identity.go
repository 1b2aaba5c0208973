package appliance

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/mod/sumdb/note"

	"coffre/internal/fsutil"
)

// Identity is the vault's public identity, kept in STATE/vault.json. It
// holds no secret: the keys themselves are in the keystore.
type Identity struct {
	Format      int       `json:"format"`
	VaultID     string    `json:"vault_id"` // 32 lowercase hex
	Origin      string    `json:"origin"`   // checkpoint origin line
	AuditKey    string    `json:"audit_key"`
	IngestKey   string    `json:"ingest_key"` // armored OpenPGP public key
	Keystore    string    `json:"keystore"`   // backend
	WriteQuorum int       `json:"write_quorum"`
	Created     time.Time `json:"created"`
	// Drives remembers the drives of the vault by uuid, with the path they
	// were last seen at (drives are recognised by uuid, never by path).
	Drives []DriveRef `json:"drives"`
}

// DriveRef is one drive of the vault.
type DriveRef struct {
	UUID string `json:"uuid"`
	Slot int    `json:"slot"`
	Path string `json:"path"`
}

// Names of the appliance's secrets in the keystore.
const (
	keyIngest  = "ingest.pgp"
	keyRecord  = "record.key"
	keyAudit   = "audit.ed25519"
	keyCatalog = "catalog.key"
	keyWrap    = "wrap.key"
)

// State directory layout.
const (
	identityFile = "vault.json"
	keystoreDir  = "keystore"
	catalogDir   = "catalog"
	receiptsDir  = "receipts"
	couriersDir  = "couriers"
)

func identityPath(state string) string { return filepath.Join(state, identityFile) }

// LoadIdentity reads STATE/vault.json.
func LoadIdentity(state string) (*Identity, error) {
	b, err := os.ReadFile(identityPath(state))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("appliance: %s has no vault: run `coffre init --state %s` first", state, state)
	}
	if err != nil {
		return nil, fmt.Errorf("appliance: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var id Identity
	if err := dec.Decode(&id); err != nil {
		return nil, fmt.Errorf("appliance: %s: %w", identityPath(state), err)
	}
	if id.Format != 1 {
		return nil, fmt.Errorf("appliance: %s: format %d is not supported by this version", identityPath(state), id.Format)
	}
	return &id, nil
}

// Save writes the identity durably.
func (id *Identity) Save(state string) error {
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(identityPath(state), append(b, '\n'), 0o644)
}

func noteVerifier(vkey string) (note.Verifier, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("appliance: audit key: %w", err)
	}
	return v, nil
}
