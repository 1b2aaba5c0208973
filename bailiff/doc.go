// Package bailiff holds the quorum side of Coffre: bailiff keys (OpenPGP
// P-521, v4, GnuPG 2.2 readable; or post-quantum v6 ML-DSA-87+Ed448 /
// ML-KEM-1024+X448, bailiff_pq.go), the signed roster, the genesis ceremony and
// its transcript, verify-shares, per-user escrow keys whose private part is
// sealed under a key K split k-of-n among the bailiffs (package shamir),
// item sealing to an escrow key, and restitution of exactly one user's items
// to a beneficiary under a restitution order signed by k bailiffs.
//
// No single party can open a user's items: the appliance keeps only escrow
// bundles (public key, sealed private key, shares encrypted to bailiffs) and
// never a bailiff private key or an escrow private key in the clear. An
// Unlock session is bound to one escrow; shares of another user's escrow are
// refused by name, so a restitution never rebuilds another user's key.
//
// Formats: docs/formats/roster.md, escrow.md, restitution.md, shares.md.
// Every message a person opens with their own tools (restitution packages,
// share messages to P-521 bailiffs) uses the GnuPG 2.2 profile: v4 keys,
// PKESK v3, SEIPD v1 with MDC, AES-256. Share messages to a post-quantum
// bailiff use the PQ profile, which only the appliance reads today.
//
// bailiff imports neither ingest nor storage: the appliance hands it
// plaintext streams and stores what it returns.
package bailiff
