package hsm

// Named limits of the keystore format (docs/formats/keystore.md).
const (
	// MaxNameLen is the longest secret name.
	MaxNameLen = 64
	// MaxSecretLen is the largest secret a keystore holds (an armored
	// OpenPGP P-521 private key is well under this).
	MaxSecretLen = 16 << 10
	// MaxSecrets is the most secrets one keystore directory holds.
	MaxSecrets = 256
	// MaxFileLen bounds every keystore file read from disk.
	MaxFileLen = 64 << 10
	// MaxPassphraseLen bounds the soft keystore passphrase and TPM PIN.
	MaxPassphraseLen = 1024
	// MinPassphraseLen is the shortest passphrase CreateSoft accepts.
	MinPassphraseLen = 8

	// MaxPCR is the highest PCR index a keystore may bind to (PC Client TPMs
	// have PCRs 0-23).
	MaxPCR = 23

	// Argon2id parameter bounds accepted from a keystore header: they keep a
	// forged header from making OpenSoft allocate without limit or spin.
	MinArgonTime    = 1
	MaxArgonTime    = 64
	MinArgonMemory  = 8 // KiB (the Argon2 minimum for one lane is 8 KiB)
	MaxArgonMemory  = 4 << 20
	MinArgonThreads = 1
	MaxArgonThreads = 16
)
