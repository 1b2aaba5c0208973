// Package policy is the vault's crypto policy for re-encapsulation: for each
// algorithm name that stored objects record (bailiff.AlgKey, AlgPKESK,
// AlgData, the record-layer AEAD, checkpoint signatures, …) whether it is
// preferred, acceptable until a date (with warnings from an earlier date),
// or forbidden, and what replaces it. The policy is a canonical text
// document (docs/formats/policy.md) signed by at least k bailiffs of the
// roster with OpenPGP detached signatures, like a restitution order.
//
// Check judges the algorithms of one object at a date and fails closed on
// names the policy does not know. Plan groups the failing objects of the
// vault by the kind of work they need (record-layer rekey, roster change,
// escrow rotation, algorithm upgrade) for `coffre reencap plan`.
//
// Default follows NIST IR 8547 (initial public draft, 2024): ECDH, ECDSA
// (P-521 included), Ed25519 and X25519 are acceptable until 2035-12-31 with
// warnings from 2030-01-01; AES-256, SHA-256/512, XChaCha20-Poly1305 and
// Shamir sharing are acceptable without end; the upgrade target is the
// post-quantum hybrids go-crypto v1.5.2 implements (ML-KEM-1024+X448 with
// ML-DSA-87+Ed448 on a v6 key, or an ML-KEM-768+X25519 subkey on a v4 key).
package policy
