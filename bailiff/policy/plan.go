package policy

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Object kinds (Object.Kind).
const (
	KindItem   = "item"   // a sealed item: escrow key, PKESK, data packet
	KindEscrow = "escrow" // a user's escrow bundle: escrow key, AEAD, shares
	KindRoster = "roster" // the roster: bailiff keys and their signatures
	KindRecord = "record" // the record layer: AEAD, key epoch, checkpoints
)

// Object is one stored object as the catalogue describes it.
type Object struct {
	Record     uint64 // record number on the drives
	Kind       string // KindItem, KindEscrow, KindRoster or KindRecord
	UserID     string // owner ("" for roster and record-layer objects)
	Size       int64  // bytes to rewrite
	Algorithms []string
}

// WorkKind is the kind of re-encapsulation work an object needs.
type WorkKind int

const (
	// RecordRekey re-encrypts records under a new record-layer key epoch
	// or AEAD and re-signs checkpoints; the appliance does it alone (no
	// quorum).
	RecordRekey WorkKind = 1
	// RosterChange rewrites the roster or the share messages of escrow
	// bundles (a bailiff key or the sharing scheme ages); quorum.
	RosterChange WorkKind = 2
	// EscrowRotation makes a new escrow key and re-wraps each item's
	// session key to it (the data packet is kept); quorum. Plan never
	// chooses it: it is for recipient changes asked for explicitly. It is
	// not enough for a move to post-quantum: the old session key stays
	// exposed to whoever kept the old PKESK.
	EscrowRotation WorkKind = 3
	// AlgorithmUpgrade opens each item and writes a fresh session key, a
	// new PKESK to a new escrow key and a new encrypted data packet;
	// quorum.
	AlgorithmUpgrade WorkKind = 4
)

// String names the kind as `coffre reencap plan` prints it.
func (k WorkKind) String() string {
	switch k {
	case RecordRekey:
		return "record-rekey"
	case RosterChange:
		return "roster-change"
	case EscrowRotation:
		return "escrow-rotation"
	case AlgorithmUpgrade:
		return "algorithm-upgrade"
	}
	return fmt.Sprintf("work-kind-%d", int(k))
}

// Quorum reports whether the kind needs k bailiffs present.
func (k WorkKind) Quorum() bool { return k != RecordRekey }

// Group is the work of one kind.
type Group struct {
	Kind    WorkKind
	Quorum  bool
	Objects int
	Bytes   int64
	Users   int      // distinct non-empty UserIDs
	Records []uint64 // record numbers, ascending
	// Failing counts the objects per failing algorithm name.
	Failing map[string]int
	// Replacement maps failing algorithms to their replacement.
	Replacement map[string]string
}

// PlanResult is the re-encapsulation plan at a date.
type PlanResult struct {
	At            time.Time
	PolicyVersion int
	Groups        []Group // only kinds with work, in kind order
	// Warned counts the objects that pass but carry an algorithm past its
	// warning date; WarnedBytes their size.
	Warned      int
	WarnedBytes int64
}

// Empty reports whether nothing must be done.
func (r *PlanResult) Empty() bool { return len(r.Groups) == 0 }

// Group returns the group of kind k, or nil.
func (r *PlanResult) Group(k WorkKind) *Group {
	for i := range r.Groups {
		if r.Groups[i].Kind == k {
			return &r.Groups[i]
		}
	}
	return nil
}

// kindFor chooses the work for a failing object (docs/formats/policy.md,
// "Planning"). Each object lands in exactly one kind: the one that fixes
// all its failures.
func kindFor(p *Policy, o Object, v Verdict) WorkKind {
	switch o.Kind {
	case KindRecord:
		return RecordRekey
	case KindRoster:
		return RosterChange
	case KindEscrow:
		// Only the bailiff layer failing — the sharing scheme, or the key
		// packets of the share messages, which are as strong as the
		// bailiffs' keys and nothing else: the shares are re-split and
		// re-encrypted to the roster, the escrow key stays. A new escrow
		// key would not help (its shares go to the same bailiff keys).
		// Anything else (the escrow key, its AEAD, or a name the policy
		// does not know) needs a new escrow key for the user's items,
		// which is part of the algorithm upgrade.
		if len(v.Failing) == 0 {
			return AlgorithmUpgrade
		}
		for _, a := range v.Failing {
			if !shareLayer(p, a) {
				return AlgorithmUpgrade
			}
		}
		return RosterChange
	default:
		// Items and unknown kinds (fail closed): an ageing public key or
		// cipher needs a fresh session key and a new data packet.
		return AlgorithmUpgrade
	}
}

// shareLayer reports whether a failing name of an escrow object belongs
// to the bailiff layer: the secret sharing, or a key packet (names starting
// "openpgp-pkesk-"): in an escrow bundle the only key packets are those of
// the share messages to the bailiffs.
func shareLayer(p *Policy, alg string) bool {
	if r := p.Rule(alg); r != nil && r.Class == ClassSecretSharing {
		return true
	}
	return strings.HasPrefix(alg, SharePKESKPrefix)
}

// SharePKESKPrefix starts the names of key packets; in an escrow object
// they describe the share messages to the bailiffs.
const SharePKESKPrefix = "openpgp-pkesk-"

// Plan judges every object at the instant at and groups the failing ones
// by the work they need.
func Plan(p *Policy, objs []Object, at time.Time) *PlanResult {
	return plan(p, objs, at, "")
}

// PlanRotation plans an explicit recipient change for one user (a new
// escrow key, EscrowRotation): the user's escrow bundle and items go to
// kind 3, except those the policy fails at the instant at, which need the
// kind Plan gives them (a re-wrap would not fix them). Other objects are
// judged as by Plan.
func PlanRotation(p *Policy, objs []Object, userID string, at time.Time) *PlanResult {
	return plan(p, objs, at, userID)
}

func plan(p *Policy, objs []Object, at time.Time, rotate string) *PlanResult {
	res := &PlanResult{At: at.UTC(), PolicyVersion: p.Version}
	groups := map[WorkKind]*Group{}
	users := map[WorkKind]map[string]bool{}
	for _, o := range objs {
		v := p.Check(o.Algorithms, at)
		var k WorkKind
		switch {
		case !v.OK:
			k = kindFor(p, o, v)
		case rotate != "" && o.UserID == rotate && (o.Kind == KindItem || o.Kind == KindEscrow):
			k = EscrowRotation
		default:
			if v.Warn {
				res.Warned++
				res.WarnedBytes += o.Size
			}
			continue
		}
		g := groups[k]
		if g == nil {
			g = &Group{Kind: k, Quorum: k.Quorum(), Failing: map[string]int{}, Replacement: map[string]string{}}
			groups[k] = g
			users[k] = map[string]bool{}
		}
		g.Objects++
		g.Bytes += o.Size
		g.Records = append(g.Records, o.Record)
		if o.UserID != "" {
			users[k][o.UserID] = true
		}
		if len(v.Failing) == 0 && !v.OK {
			g.Failing["(none named)"]++
		}
		for _, a := range v.Failing {
			g.Failing[a]++
			if r, ok := v.Replacement[a]; ok {
				g.Replacement[a] = r
			}
		}
	}
	for _, k := range []WorkKind{RecordRekey, RosterChange, EscrowRotation, AlgorithmUpgrade} {
		if g := groups[k]; g != nil {
			g.Users = len(users[k])
			slices.Sort(g.Records)
			res.Groups = append(res.Groups, *g)
		}
	}
	return res
}

// String prints the plan as a table for `coffre reencap plan`.
func (r *PlanResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "re-encapsulation plan at %s under policy v%d\n", r.At.Format(time.DateOnly), r.PolicyVersion)
	if r.Empty() {
		b.WriteString("nothing to do\n")
	} else {
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "KIND\tWORK\tQUORUM\tOBJECTS\tUSERS\tBYTES\tFAILING -> REPLACEMENT")
		for _, g := range r.Groups {
			q := "no"
			if g.Quorum {
				q = "yes"
			}
			algs := make([]string, 0, len(g.Failing))
			for a := range g.Failing {
				algs = append(algs, a)
			}
			slices.Sort(algs)
			var fs []string
			for _, a := range algs {
				s := fmt.Sprintf("%s (%d)", a, g.Failing[a])
				if rep := g.Replacement[a]; rep != "" {
					s += " -> " + rep
				}
				fs = append(fs, s)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%d\t%s\n", int(g.Kind), g.Kind, q, g.Objects, g.Users, g.Bytes, strings.Join(fs, "; "))
		}
		tw.Flush()
	}
	if r.Warned > 0 {
		fmt.Fprintf(&b, "warning: %d objects (%d bytes) use algorithms past their warning date\n", r.Warned, r.WarnedBytes)
	}
	return b.String()
}
