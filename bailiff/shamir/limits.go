package shamir

// Limits of the share format (docs/formats/shares.md). A parser rejects
// anything beyond them before allocating.
const (
	// MaxSecretLen is the longest secret Split accepts, in bytes.
	MaxSecretLen = 1024
	// MinThreshold is the smallest threshold: one share alone must never
	// open anything.
	MinThreshold = 2
	// MaxShares is the largest number of shares (indexes 1..255).
	MaxShares = 255
	// TagLen is the length of the digest appended to the secret before
	// splitting, checked at combine time.
	TagLen = 16
	// ChecksumLen is the length of the per-share checksum.
	ChecksumLen = 4
	// SplitIDLen is the length of a split id.
	SplitIDLen = 16
	// MaxCardLen bounds the share card text a parser accepts.
	MaxCardLen = 8192
)
