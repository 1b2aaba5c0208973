package firmware

// Named limits (docs/formats/firmware.md).
const (
	MaxManifestLen   = 64 << 10  // bytes of canonical manifest text
	MaxComponents    = 64        // components per manifest
	MaxNameLen       = 64        // component / product name
	MaxSemVerLen     = 64        // semver string
	MaxSignatures    = 16        // signatures in a bundle
	MaxSignatureLen  = 4 << 10   // one detached OpenPGP signature
	MaxComponentSize = 256 << 20 // one component file
	MaxBundleSize    = 512 << 20 // a whole bundle
	MaxTrustKeys     = 16        // release keys in a trust root
	MaxTrustRootLen  = 256 << 10 // trust root file
	MaxVersionStep   = 1 << 16   // largest version jump one update may make (NV counter increments)
	MaxVersion       = 1<<63 - 1
)
