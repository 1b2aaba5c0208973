package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"coffre/bailiff"
)

// Status of an algorithm.
const (
	Preferred  = "preferred"  // the target: new objects use it
	Acceptable = "acceptable" // may stay, until Until if set
	Forbidden  = "forbidden"  // must be moved away from now
)

// Class of an algorithm (descriptive; Plan uses it for escrow objects).
const (
	ClassPublicKey     = "public-key"     // recipient keys and key wrapping (PKESK)
	ClassCipher        = "cipher"         // data encryption without AEAD (SEIPD v1)
	ClassAEAD          = "aead"           // AEAD modes (SEIPD v2, escrow and record AEAD)
	ClassHash          = "hash"           // digests
	ClassSignature     = "signature"      // signatures (bailiff, checkpoints)
	ClassRecordAEAD    = "record-aead"    // record-layer key epochs
	ClassKDF           = "kdf"            // passphrase key derivation
	ClassSecretSharing = "secret-sharing" // threshold sharing of escrow keys
)

var classes = []string{ClassPublicKey, ClassCipher, ClassAEAD, ClassHash, ClassSignature, ClassRecordAEAD, ClassKDF, ClassSecretSharing}

// Algorithm names beyond those of package bailiff. The post-quantum names
// match what go-crypto v1.5.2 implements: packet.PubKeyAlgoMlkem768X25519
// (35, v4 or v6 keys), PubKeyAlgoMlkem1024X448 (36, v6 only),
// PubKeyAlgoMldsa87Ed448 (31, v6 only), SEIPD v2 with AES-256/OCB.
const (
	// AlgKeyPQ is the upgrade target for item and escrow keys: a v6 key
	// with an ML-DSA-87+Ed448 primary and an ML-KEM-1024+X448 subkey.
	AlgKeyPQ = bailiff.AlgKeyPQ
	// AlgKeyPQv4 is the v4 hybrid: ECDSA P-521 primary (classical, so it
	// ages with P-521) and an ML-KEM-768+X25519 encryption subkey.
	AlgKeyPQv4 = "openpgp-v4-ecdsa-p521+mlkem768-x25519"
	// AlgKeyX25519 is a v4 Ed25519 primary with an X25519 (ECDH) subkey.
	AlgKeyX25519 = "openpgp-v4-eddsa-ed25519+ecdh-x25519"
	// AlgPKESKPQ wraps a session key to AlgKeyPQ (PKESK v6, anonymous).
	AlgPKESKPQ = bailiff.AlgPKESKPQ
	// AlgPKESKPQv4 wraps a session key to AlgKeyPQv4 (PKESK v3).
	AlgPKESKPQv4 = "openpgp-pkesk-v3-mlkem768-x25519-hidden"
	// AlgDataPQ is SEIPD v2 with AES-256 in OCB mode.
	AlgDataPQ = bailiff.AlgDataPQ
	// AlgSignaturePQ is a v6 signature by an ML-DSA-87+Ed448 key (a
	// post-quantum bailiff's).
	AlgSignaturePQ = bailiff.AlgSignaturePQ
	// AlgPKESKPQNamed wraps a share's session key to a post-quantum
	// bailiff key (PKESK v6 naming the key).
	AlgPKESKPQNamed = bailiff.AlgPKESKPQNamed
	// AlgCheckpoint is the checkpoint signature (C2SP signed note).
	AlgCheckpoint = "ed25519"
	// AlgCheckpointPQ is the hybrid replacement for checkpoints. Nothing
	// in the tree implements it yet; it names the target.
	AlgCheckpointPQ = "mldsa65-ed25519"
	// AlgRecordAEAD is the record-layer AEAD (same primitive as the
	// escrow AEAD, hence the same name).
	AlgRecordAEAD = bailiff.AlgEscrowAEAD
	// AlgShamir is the escrow key sharing.
	AlgShamir = "shamir-gf256"
	// AlgS2KArgon2 is the preferred passphrase KDF.
	AlgS2KArgon2 = bailiff.AlgS2KArgon2
	// KeyEpochPrefix starts the pseudo-algorithm "key-epoch-N" naming the
	// record-layer key epoch of a record; it fails when N < MinKeyEpoch.
	KeyEpochPrefix = "key-epoch-"
)

// Policy is a signed crypto policy (docs/formats/policy.md).
type Policy struct {
	// Version increases with every new policy of a vault; the appliance
	// refuses a policy older than the one it runs (roll-back).
	Version      int
	VaultID      [32]byte
	RosterDigest [32]byte
	Created      time.Time
	// MinKeyEpoch: records whose record-layer key epoch is below it fail
	// (pseudo-algorithm "key-epoch-N").
	MinKeyEpoch uint64
	Rules       []Rule            // sorted by Algorithm, unique
	Signatures  map[string][]byte // bailiff fingerprint -> detached signature over Body()
}

// Rule is the status of one algorithm name.
type Rule struct {
	Algorithm string
	Class     string
	Status    string    // Preferred, Acceptable or Forbidden
	WarnFrom  time.Time // zero = no warning; only for Acceptable
	Until     time.Time // zero = no end; last acceptable instant; only for Acceptable
	// Replacement is the algorithm to move to ("" = none); it must have a
	// rule of its own that is not Forbidden.
	Replacement string
}

func date(y int, m time.Month, d int, end bool) time.Time {
	if end {
		return time.Date(y, m, d, 23, 59, 59, 0, time.UTC)
	}
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// Default returns the default policy (version 1, unbound: call Bind before
// signing). See the package comment for its dates.
func Default() *Policy {
	warn, until := date(2030, 1, 1, false), date(2035, 12, 31, true)
	ageing := func(alg, class, repl string) Rule {
		return Rule{Algorithm: alg, Class: class, Status: Acceptable, WarnFrom: warn, Until: until, Replacement: repl}
	}
	ok := func(alg, class, repl string) Rule {
		return Rule{Algorithm: alg, Class: class, Status: Acceptable, Replacement: repl}
	}
	pref := func(alg, class string) Rule { return Rule{Algorithm: alg, Class: class, Status: Preferred} }
	bad := func(alg, class, repl string) Rule {
		return Rule{Algorithm: alg, Class: class, Status: Forbidden, Replacement: repl}
	}
	p := &Policy{
		Version: 1,
		Created: date(2026, 11, 23, false),
		Rules: []Rule{
			// public keys and key wrapping
			ageing(bailiff.AlgKey, ClassPublicKey, AlgKeyPQ),
			ageing(AlgKeyPQv4, ClassPublicKey, AlgKeyPQ),
			ageing(AlgKeyX25519, ClassPublicKey, AlgKeyPQ),
			pref(AlgKeyPQ, ClassPublicKey),
			ageing(bailiff.AlgPKESK, ClassPublicKey, AlgPKESKPQ),
			ageing(bailiff.AlgPKESKNamed, ClassPublicKey, AlgPKESKPQNamed),
			ok(AlgPKESKPQv4, ClassPublicKey, AlgPKESKPQ),
			pref(AlgPKESKPQ, ClassPublicKey),
			pref(AlgPKESKPQNamed, ClassPublicKey),
			bad("openpgp-v4-rsa1024", ClassPublicKey, AlgKeyPQ),
			bad("openpgp-v4-dsa+elgamal", ClassPublicKey, AlgKeyPQ),
			// data encryption
			ok(bailiff.AlgData, ClassCipher, AlgDataPQ),
			pref(AlgDataPQ, ClassAEAD),
			bad("openpgp-seipd-v1-cast5-mdc", ClassCipher, AlgDataPQ),
			bad("openpgp-seipd-v1-3des-mdc", ClassCipher, AlgDataPQ),
			bad("openpgp-sed-aes256", ClassCipher, AlgDataPQ),
			// AEAD (escrow and record layer)
			pref(bailiff.AlgEscrowAEAD, ClassAEAD),
			// hashes
			pref("sha256", ClassHash),
			pref("sha512", ClassHash),
			bad("sha1", ClassHash, "sha256"),
			bad("md5", ClassHash, "sha256"),
			// signatures
			ageing(bailiff.AlgSignature, ClassSignature, AlgSignaturePQ),
			pref(AlgSignaturePQ, ClassSignature),
			ageing(AlgCheckpoint, ClassSignature, AlgCheckpointPQ),
			pref(AlgCheckpointPQ, ClassSignature),
			// KDF
			ok(bailiff.AlgS2K, ClassKDF, AlgS2KArgon2),
			pref(AlgS2KArgon2, ClassKDF),
			// secret sharing
			pref(AlgShamir, ClassSecretSharing),
		},
		Signatures: map[string][]byte{},
	}
	sortRules(p.Rules)
	return p
}

// Bind ties the policy to a vault and roster and drops any signatures
// (they covered another body).
func (p *Policy) Bind(r *bailiff.Roster) {
	p.VaultID = r.VaultID
	p.RosterDigest = r.Digest()
	p.Signatures = map[string][]byte{}
}

// Rule returns the rule for alg, or nil.
func (p *Policy) Rule(alg string) *Rule {
	for i := range p.Rules {
		if p.Rules[i].Algorithm == alg {
			return &p.Rules[i]
		}
	}
	return nil
}

// Validate checks the policy's own consistency (what Parse and Sign
// enforce): version, names, classes, statuses, dates, replacements.
func (p *Policy) Validate() error {
	if p.Version < 1 || p.Version > MaxVersion {
		return fmt.Errorf("policy: version %d outside 1..%d", p.Version, MaxVersion)
	}
	if p.MinKeyEpoch > MaxKeyEpoch {
		return fmt.Errorf("policy: min-key-epoch %d exceeds %d", p.MinKeyEpoch, MaxKeyEpoch)
	}
	if len(p.Rules) == 0 || len(p.Rules) > MaxRules {
		return fmt.Errorf("policy: %d rules, want 1..%d", len(p.Rules), MaxRules)
	}
	for i, r := range p.Rules {
		if err := checkName(r.Algorithm); err != nil {
			return fmt.Errorf("policy: rule %d: algorithm: %w", i+1, err)
		}
		if strings.HasPrefix(r.Algorithm, KeyEpochPrefix) {
			return fmt.Errorf("policy: rule %s: names starting %q are reserved for key epochs (use min-key-epoch)", r.Algorithm, KeyEpochPrefix)
		}
		if i > 0 && p.Rules[i-1].Algorithm >= r.Algorithm {
			return fmt.Errorf("policy: rule %s: rules out of order or repeated (sort by algorithm, bytewise)", r.Algorithm)
		}
		if !validClass(r.Class) {
			return fmt.Errorf("policy: rule %s: unknown class %q (want one of %s)", r.Algorithm, r.Class, strings.Join(classes, ", "))
		}
		switch r.Status {
		case Preferred, Forbidden:
			if !r.WarnFrom.IsZero() || !r.Until.IsZero() {
				return fmt.Errorf("policy: rule %s: a %s algorithm takes no dates", r.Algorithm, r.Status)
			}
		case Acceptable:
			if !r.WarnFrom.IsZero() && !r.Until.IsZero() && !r.WarnFrom.Before(r.Until) {
				return fmt.Errorf("policy: rule %s: warn-from %s is not before until %s", r.Algorithm, r.WarnFrom.UTC().Format(time.DateOnly), r.Until.UTC().Format(time.DateOnly))
			}
		default:
			return fmt.Errorf("policy: rule %s: unknown status %q (want preferred, acceptable or forbidden)", r.Algorithm, r.Status)
		}
		for _, t := range []time.Time{r.WarnFrom, r.Until} {
			if !t.IsZero() && (t.Location() != time.UTC || t.Nanosecond() != 0 || t.Year() < 1970 || t.Year() > 9999) {
				return fmt.Errorf("policy: rule %s: dates must be UTC, whole seconds, years 1970..9999", r.Algorithm)
			}
		}
	}
	for _, r := range p.Rules {
		if r.Replacement == "" {
			continue
		}
		if r.Replacement == r.Algorithm {
			return fmt.Errorf("policy: rule %s: replaced by itself", r.Algorithm)
		}
		to := p.Rule(r.Replacement)
		if to == nil {
			return fmt.Errorf("policy: rule %s: replacement %s has no rule", r.Algorithm, r.Replacement)
		}
		if to.Status == Forbidden {
			return fmt.Errorf("policy: rule %s: replacement %s is forbidden", r.Algorithm, r.Replacement)
		}
	}
	return nil
}

func validClass(c string) bool {
	for _, k := range classes {
		if c == k {
			return true
		}
	}
	return false
}

// checkName checks an algorithm name: 1..MaxAlgorithmLen bytes of a-z 0-9
// and . _ - + : starting with a letter or digit.
func checkName(v string) error {
	if v == "" || len(v) > MaxAlgorithmLen {
		return fmt.Errorf("length %d outside 1..%d", len(v), MaxAlgorithmLen)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || strings.IndexByte("._-+:", c) < 0) {
			return fmt.Errorf("character %q at %d not allowed (a-z 0-9, then also . _ - + :)", c, i)
		}
	}
	return nil
}

// keyEpoch parses "key-epoch-N".
func keyEpoch(alg string) (uint64, bool) {
	s, ok := strings.CutPrefix(alg, KeyEpochPrefix)
	if !ok || s == "" || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > MaxKeyEpoch || strconv.FormatUint(n, 10) != s {
		return 0, false
	}
	return n, true
}

// KeyEpoch names a record-layer key epoch for Object.Algorithms.
func KeyEpoch(n uint64) string { return KeyEpochPrefix + strconv.FormatUint(n, 10) }
