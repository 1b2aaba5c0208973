package policy

import (
	"fmt"
	"time"
)

// Verdict is the judgement of one object's algorithms at a date.
type Verdict struct {
	// OK is false when any algorithm fails (or none was named).
	OK bool
	// Warn is true when an algorithm is acceptable but past its WarnFrom.
	Warn bool
	// Failing lists the algorithms that are forbidden, past Until, unknown
	// to the policy, or key epochs below MinKeyEpoch, in input order.
	Failing []string
	// Reasons explains each failure and warning, one line each.
	Reasons []string
	// Replacement maps failing and warned algorithms to what replaces them
	// (when the policy names a replacement).
	Replacement map[string]string
}

// Check judges algorithms at the instant at. It fails closed: an algorithm
// the policy does not know, a malformed name, an empty list or more than
// MaxCheckAlgorithms names all fail.
func (p *Policy) Check(algorithms []string, at time.Time) Verdict {
	v := Verdict{OK: true, Replacement: map[string]string{}}
	fail := func(alg, reason string) {
		v.OK = false
		v.Failing = append(v.Failing, alg)
		v.Reasons = append(v.Reasons, reason)
	}
	if len(algorithms) == 0 {
		v.OK = false
		v.Reasons = append(v.Reasons, "no algorithm named: fail closed")
		return v
	}
	if len(algorithms) > MaxCheckAlgorithms {
		v.OK = false
		v.Reasons = append(v.Reasons, fmt.Sprintf("%d algorithms named, more than %d: fail closed", len(algorithms), MaxCheckAlgorithms))
		return v
	}
	seen := map[string]bool{}
	for _, alg := range algorithms {
		if seen[alg] {
			continue
		}
		seen[alg] = true
		if err := checkName(alg); err != nil {
			fail(alg, fmt.Sprintf("malformed algorithm name %q: fail closed", trunc(alg)))
			continue
		}
		if n, ok := keyEpoch(alg); ok {
			if n < p.MinKeyEpoch {
				fail(alg, fmt.Sprintf("record key epoch %d is below the minimum %d of policy v%d", n, p.MinKeyEpoch, p.Version))
			}
			continue
		}
		r := p.Rule(alg)
		switch {
		case r == nil:
			fail(alg, fmt.Sprintf("%s is unknown to policy v%d: fail closed", alg, p.Version))
			continue
		case r.Status == Forbidden:
			fail(alg, fmt.Sprintf("%s is forbidden by policy v%d", alg, p.Version))
		case !r.Until.IsZero() && at.After(r.Until):
			fail(alg, fmt.Sprintf("%s was acceptable until %s", alg, canonDate(r.Until)))
		case !r.WarnFrom.IsZero() && !at.Before(r.WarnFrom):
			v.Warn = true
			if r.Until.IsZero() {
				v.Reasons = append(v.Reasons, fmt.Sprintf("%s: warning from %s", alg, canonDate(r.WarnFrom)))
			} else {
				v.Reasons = append(v.Reasons, fmt.Sprintf("%s is acceptable until %s only (warning from %s)", alg, canonDate(r.Until), canonDate(r.WarnFrom)))
			}
		default:
			continue
		}
		if r.Replacement != "" {
			v.Replacement[alg] = r.Replacement
		}
	}
	return v
}

func canonDate(t time.Time) string {
	if t.IsZero() {
		return "no end"
	}
	return t.UTC().Format(time.DateOnly)
}

func trunc(s string) string {
	if len(s) > MaxAlgorithmLen {
		return s[:MaxAlgorithmLen] + "…"
	}
	return s
}
