// Package layering holds only a test: it lists the imports of every package
// in the module and fails on a forbidden edge, so the architecture in
// docs/HACKING.md (cmd → appliance → {ingest, bailiff, storage, firmware} →
// hsm; no network in the vault layers) is checked on every `make test`.
package layering
