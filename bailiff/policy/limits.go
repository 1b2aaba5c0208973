package policy

import "coffre/bailiff"

// Named limits of the policy format (docs/formats/policy.md). Parse rejects
// anything beyond them before allocating.
const (
	// MaxPolicyLen bounds a signed policy file in bytes.
	MaxPolicyLen = 256 << 10
	// MaxRules bounds the rules of one policy.
	MaxRules = 512
	// MaxAlgorithmLen bounds an algorithm name in bytes.
	MaxAlgorithmLen = 96
	// MaxVersion bounds the policy version number.
	MaxVersion = 1 << 30
	// MaxKeyEpoch bounds min-key-epoch and the N of a "key-epoch-N" name.
	MaxKeyEpoch = 1 << 30
	// MaxSignatures bounds the signatures of a policy: one per bailiff.
	MaxSignatures = bailiff.MaxBailiffs
	// MaxSignatureLen bounds one binary detached signature.
	MaxSignatureLen = bailiff.MaxSignatureLen
	// MaxCheckAlgorithms bounds the algorithm names Check judges for one
	// object; more fail closed.
	MaxCheckAlgorithms = 64
)
