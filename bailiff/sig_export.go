package bailiff

import (
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
)

// Thin exported wrappers over the detached-signature helpers, for the
// documents bailiffs sign outside this package (bailiff/policy). They use
// the same GnuPG 2.2 profile as Order and Roster.

// SignDetached makes a binary detached OpenPGP signature (v4, SHA-512) over
// msg with an opened bailiff key.
func SignDetached(key *openpgp.Entity, msg []byte, now time.Time) ([]byte, error) {
	return detachSign(key, msg, now)
}

// NormalizeSignature accepts a binary or armored detached signature (as
// `gpg --detach-sign` writes it) and returns it binary, bounded by
// MaxSignatureLen.
func NormalizeSignature(sig []byte) ([]byte, error) { return normalizeSignature(sig) }

// VerifyDetached checks that sig is a valid detached signature over msg by
// this bailiff's key (primary or signing subkey, SHA-256 or stronger).
func (k *BailiffKey) VerifyDetached(msg, sig []byte) error { return verifyDetached(k.entity, msg, sig) }
