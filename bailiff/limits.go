package bailiff

import "time"

// Named limits of the bailiff formats (docs/formats/roster.md, escrow.md,
// restitution.md). Parsers reject anything beyond them before allocating.
const (
	// MaxBailiffs is the largest roster (n).
	MaxBailiffs = 32
	// MinThreshold is the smallest quorum: one bailiff alone never opens
	// anything.
	MinThreshold = 2
	// MaxNameLen bounds a bailiff's name in bytes.
	MaxNameLen = 128
	// MaxIDLen bounds user ids and item ids in bytes.
	MaxIDLen = 128
	// MaxReferenceLen bounds the legal reference of a restitution order.
	MaxReferenceLen = 256
	// MaxPublicKeyLen bounds one binary OpenPGP public key (transferable
	// public key) carried in a roster or order.
	MaxPublicKeyLen = 16 << 10
	// MaxSignatureLen bounds one binary detached OpenPGP signature (a v6
	// ML-DSA-87+Ed448 signature is about 4.8 KB).
	MaxSignatureLen = 8 << 10
	// MaxRosterLen bounds a signed roster file (32 post-quantum bailiffs:
	// about 1 MiB).
	MaxRosterLen = 2 << 20
	// MaxOrderLen bounds a signed restitution order file.
	MaxOrderLen = 512 << 10
	// MaxSealedKeyLen bounds the AEAD-sealed escrow private key.
	MaxSealedKeyLen = 16 << 10
	// MaxPublicKeyLenPQ bounds the post-quantum escrow public key of a v2
	// escrow bundle (v6, ML-DSA-87+Ed448 and ML-KEM-1024+X448: about 14 KB)
	// and a post-quantum bailiff key (the same with a user id: about 19 KB).
	MaxPublicKeyLenPQ = 24 << 10
	// MaxSealedKeyLenPQ bounds the sealed post-quantum escrow private key
	// of a v2 escrow bundle (about 14 KB).
	MaxSealedKeyLenPQ = 24 << 10
	// MaxShareMessageLen bounds one OpenPGP message carrying a share.
	MaxShareMessageLen = 8 << 10
	// MaxBundleLen bounds an escrow bundle.
	MaxBundleLen = 512 << 10
	// MaxItems bounds the items (versions) in one restitution.
	MaxItems = 100000
	// MaxReencapEntries bounds the users or records one re-encapsulation
	// order lists (larger work is split over several orders).
	MaxReencapEntries = 100000
	// MaxReencapOrderLen bounds a signed re-encapsulation order file.
	MaxReencapOrderLen = 16 << 20
	// MaxDesignationsLen bounds the beneficiary designations blob.
	MaxDesignationsLen = 1 << 20
	// MaxPrivateKeyLen bounds an armored or binary bailiff private key
	// handed to the appliance (token, QR card).
	MaxPrivateKeyLen = 64 << 10
	// MaxCardParts bounds the QR codes of one key card (a post-quantum
	// card's secret-key packets are about 4.6 KB: 12 codes).
	MaxCardParts = 16
	// MaxTranscriptSteps bounds a ceremony transcript.
	MaxTranscriptSteps = 1000
	// DefaultUnlockTTL is how long an unlock session stays usable.
	DefaultUnlockTTL = 2 * time.Hour
	// DefaultUnlockUses is how many restitutions an unlock session allows.
	DefaultUnlockUses = 1
)
