// Package firmware decides what the appliance runs and may run: signed
// release manifests (component digests, a monotonic version, k-of-n
// OpenPGP signatures by the release keys of a trust root), measurement of
// the running binary and configuration into a TPM PCR before any key is
// unsealed, and signed update bundles that arrive through the diode and are
// verified, staged and authorised — the sealed keys move to the new
// measurements only for a verified, newer release (anti-rollback through a
// TPM NV counter). Formats: docs/formats/firmware.md.
package firmware
