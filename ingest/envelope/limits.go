package envelope

// Fixed limits of the format. A value outside them is rejected with
// ErrTooLarge (or ErrFormat for a length below its minimum); they are part of
// format version 1 (docs/formats/envelope.md).
const (
	// MaxUserID is the largest user id, in bytes (UTF-8).
	MaxUserID = 128
	// MaxItemID is the largest item id, in bytes.
	MaxItemID = 128
	// MaxKind is the largest kind, in bytes.
	MaxKind = 32
	// MaxContentType is the largest content type, in bytes.
	MaxContentType = 128
	// MaxBeneficiaries is the largest number of beneficiary designations.
	MaxBeneficiaries = 32
	// MaxDesignationName is the largest beneficiary name, in bytes (UTF-8).
	MaxDesignationName = 128
	// MaxDesignationEmail is the largest beneficiary email, in bytes.
	MaxDesignationEmail = 254
	// MaxDesignationNote is the largest free-form note of a designation, in
	// bytes (UTF-8).
	MaxDesignationNote = 1024
	// MaxShare is the largest share of one designation, in basis points
	// (10000 = 100 %).
	MaxShare = 10000
	// MaxManifest is the largest encoded manifest, in bytes.
	MaxManifest = 64 << 10
	// MaxSignature is the largest courier signature packet, in bytes.
	MaxSignature = 1024
	// MaxRecipients bounds the public-key encrypted session key packets
	// read (and tried) per sealed part.
	MaxRecipients = 16
	// MaxKeyFile is the largest key file ReadKeys accepts, in bytes.
	MaxKeyFile = 1 << 20

	// UploadIDSize is the size of an upload id, in bytes (hex: twice that).
	UploadIDSize = 16

	// DefaultMaxContent is the default limit on an item's content size.
	DefaultMaxContent = 256 << 20
	// SealOverhead bounds what the OpenPGP layer and the item header add to
	// the content: DefaultMaxSealed is DefaultMaxContent plus this.
	SealOverhead = 1 << 20
	// DefaultMaxSealed is the default limit on the sealed part's size.
	DefaultMaxSealed = DefaultMaxContent + SealOverhead
	// HardMaxContent is the ceiling Limits cannot raise MaxContent above.
	HardMaxContent = 4 << 30
)

// Limits are the per-appliance size limits applied by Open and Bind. A zero
// field means its default; values above the hard ceiling are clamped to it.
type Limits struct {
	// MaxContent is the largest content size (Manifest.Size) accepted.
	MaxContent int64
	// MaxSealed is the largest sealed part (OpenPGP message) accepted.
	MaxSealed int64
}

func (l Limits) withDefaults() Limits {
	if l.MaxContent <= 0 {
		l.MaxContent = DefaultMaxContent
	}
	if l.MaxContent > HardMaxContent {
		l.MaxContent = HardMaxContent
	}
	if l.MaxSealed <= 0 {
		l.MaxSealed = l.MaxContent + SealOverhead
	}
	if l.MaxSealed > HardMaxContent+SealOverhead {
		l.MaxSealed = HardMaxContent + SealOverhead
	}
	return l
}
