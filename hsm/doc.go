// Package hsm is Coffre's key custody: the appliance's own secrets (ingest
// OpenPGP private key, vault record key, audit Ed25519 key, catalog key,
// key-wrapping key) are named secrets in a Keystore.
//
// Two backends implement Keystore: Soft (a passphrase-protected directory,
// Argon2id + XChaCha20-Poly1305, for development only — it says so loudly)
// and TPM (TPM 2.0 through go-tpm: secrets sealed as keyed-hash objects under
// the storage root key, bound to measured PCRs through a PolicyAuthorize
// policy, with salted, parameter-encrypted sessions). The on-disk format of
// both is specified in docs/formats/keystore.md.
//
// SelfTest runs known-answer tests of every algorithm the appliance uses and
// must pass before any key is used; PairwiseCheck verifies every generated key.
package hsm
