package qr

// Limits of the frame format. A header that exceeds any of them is rejected
// before anything is allocated for it.
const (
	// FormatVersion is the only frame format version this package reads
	// and writes.
	FormatVersion = 1

	// Prefix starts every frame text; base45 of the binary frame follows.
	Prefix = "CQ"

	// HeaderLen is the size of the binary frame header; ChecksumLen the
	// size of the CRC-32 that ends every frame; DigestLen the size of the
	// SHA-256 digest appended to the message before it is fragmented.
	HeaderLen   = 24
	ChecksumLen = 4
	DigestLen   = 32

	// MinFragmentSize and MaxFragmentSize bound the payload of one frame.
	// MaxFragmentSize fits a version 40-L QR code in alphanumeric mode.
	MinFragmentSize = 16
	MaxFragmentSize = 2832

	// MaxFragmentCount caps the number of fragments of one transfer.
	MaxFragmentCount = 1 << 16

	// MaxMessageLen is the hard cap on a message; Limits.MaxMessageLen may
	// only lower it.
	MaxMessageLen = 64 << 20

	// MaxSeq caps the sequence number of a frame: an encoder may emit this
	// many frames for one transfer.
	MaxSeq = 1<<31 - 1

	// MaxFrameText is the longest frame text accepted (the alphanumeric
	// capacity of a version 40 QR code).
	MaxFrameText = 4296

	// MaxTransfers caps Limits.MaxTransfers.
	MaxTransfers = 64

	// MaxGaussUnknowns bounds the dense Gaussian elimination the decoder
	// runs when peeling stalls: it is only tried with at most this many
	// missing fragments, on at most MaxGaussUnknowns+64 rows of as many
	// bits (about 2 MiB), plus a copy of those rows' payloads when it
	// solves something (at most 4160 × MaxFragmentSize, about 12 MiB).
	// This transient memory is not counted in Limits.MaxMemory.
	MaxGaussUnknowns = 4096

	// MaxImagePixels bounds the images and luminance planes scanned.
	MaxImagePixels = 8192 * 8192

	// MaxImageFileBytes bounds an image file read from a directory.
	MaxImageFileBytes = 32 << 20

	// MaxVideoSide bounds the width and height of the pictures read from
	// a video: larger videos are scaled down by ffmpeg to fit.
	MaxVideoSide = 1920

	// MaxCompletedRemembered is how many completed transfer ids a decoder
	// remembers, so that a looping display does not restart them.
	MaxCompletedRemembered = 256
)

// Defaults for Limits fields left zero.
const (
	DefaultMaxMessageLen = 16 << 20
	DefaultMaxTransfers  = 4
	DefaultMaxMemory     = 256 << 20
)

// Limits bound a Decoder. Zero fields take the defaults above.
type Limits struct {
	// MaxMessageLen rejects transfers announcing a longer message.
	MaxMessageLen int
	// MaxTransfers is how many transfers are followed at once; when a new
	// one arrives the least recently active one is dropped.
	MaxTransfers int
	// MaxMemory bounds the bytes held for fragments and pending mixes
	// across all transfers in flight. Mixed frames that do not fit are
	// dropped (counted); a transfer that cannot fit is refused.
	MaxMemory int
	// Transfer, when set, pins the decoder to one transfer id: frames of
	// any other transfer are rejected with ErrForeign.
	Transfer *TransferID
}

func (l Limits) withDefaults() Limits {
	if l.MaxMessageLen <= 0 {
		l.MaxMessageLen = DefaultMaxMessageLen
	}
	if l.MaxMessageLen > MaxMessageLen {
		l.MaxMessageLen = MaxMessageLen
	}
	if l.MaxTransfers <= 0 {
		l.MaxTransfers = DefaultMaxTransfers
	}
	if l.MaxTransfers > MaxTransfers {
		l.MaxTransfers = MaxTransfers
	}
	if l.MaxMemory <= 0 {
		l.MaxMemory = DefaultMaxMemory
	}
	return l
}
