package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"coffre/appliance"
	"coffre/bailiff"
	"coffre/bailiff/policy"
	"coffre/internal/fsutil"
)

// The quorum kinds of `coffre reencap run` (roster change, escrow
// rotation) and the commands that prepare them. The bailiffs unlock as for
// `coffre restitute`: --bailiff KEY:PASSFILE for those present, --share-card
// / --share-cards / --share-qr for those who open their share messages with
// GnuPG (`coffre reencap shares` exports them).

func init() {
	reencapKinds["roster"] = reencapRunRoster
	reencapKinds["escrow"] = reencapRunEscrow
	reencapSubs["draft-roster"] = reencapDraftRoster
	reencapSubs["draft-order"] = reencapDraftOrder
	reencapSubs["shares"] = reencapShares
}

// quorumFlags are the unlock flags every quorum kind takes.
type quorumFlags struct {
	bailiffs, cards, qrs, orderSigs listFlag
	cardDir, order, reason          *string
	limit                           *int
}

func (q *quorumFlags) register(fs *flag.FlagSet) {
	fs.Var(&q.bailiffs, "bailiff", "a bailiff present: SECRETKEY.asc:PASSPHRASE_FILE (repeatable); signs the order and opens their shares")
	fs.Var(&q.cards, "share-card", "a share card a bailiff opened with GnuPG (repeatable; matched to its escrow by split id)")
	q.cardDir = fs.String("share-cards", "", "a directory of share cards (*.card), e.g. `gpg --decrypt` of each message `coffre reencap shares` wrote")
	fs.Var(&q.qrs, "share-qr", "a share card brought back as a QR code picture (repeatable)")
	q.order = fs.String("order", "", "an order drafted with `coffre reencap draft-order` (signatures in it or in --order-sig)")
	fs.Var(&q.orderSigs, "order-sig", "a detached signature over the order's body, `gpg --detach-sign ORDER.body` (repeatable)")
	q.reason = fs.String("reason", "", "why (printed in the order the bailiffs sign)")
	q.limit = fs.Int("max", -1, "do at most this many escrows (roster) or users (escrow) in this run; -1: all")
}

func (q *quorumFlags) unlock() (appliance.QuorumUnlock, error) {
	var u appliance.QuorumUnlock
	var err error
	if u.Bailiffs, err = bailiffSecrets(q.bailiffs); err != nil {
		return u, err
	}
	read := func(f string) ([]byte, error) {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, usagef("%v", err)
		}
		return b, nil
	}
	for _, c := range q.cards {
		b, err := read(c)
		if err != nil {
			return u, err
		}
		u.ShareCards = append(u.ShareCards, b)
	}
	if *q.cardDir != "" {
		ents, err := os.ReadDir(*q.cardDir)
		if err != nil {
			return u, usagef("--share-cards: %v", err)
		}
		for _, e := range ents {
			if e.IsDir() || filepath.Ext(e.Name()) != ".card" {
				continue
			}
			b, err := read(filepath.Join(*q.cardDir, e.Name()))
			if err != nil {
				return u, err
			}
			u.ShareCards = append(u.ShareCards, b)
		}
	}
	for _, f := range q.qrs {
		pic, err := read(f)
		if err != nil {
			return u, err
		}
		card, err := bailiff.ReadShareQR(pic)
		if err != nil {
			return u, usagef("share QR %s: %v", f, err)
		}
		u.ShareCards = append(u.ShareCards, card)
	}
	if *q.order != "" {
		if u.Order, err = read(*q.order); err != nil {
			return u, err
		}
	}
	for _, s := range q.orderSigs {
		b, err := read(s)
		if err != nil {
			return u, err
		}
		u.OrderSigs = append(u.OrderSigs, b)
	}
	return u, nil
}

// jobEnd prints how a quorum job ended.
func jobEnd(job *appliance.ReencapJob, err error, what string) int {
	if err != nil {
		if job != nil {
			fmt.Fprintf(os.Stderr, "\nstopped after %d of %d %s; run the same command again (with the quorum) to resume\n", job.Done, job.Total, what)
		}
		return fail(err)
	}
	if job.Status != "done" {
		fmt.Printf("%s: %d of %d %s done; run again to continue\n", job.Kind, job.Done, job.Total, what)
		return exitOK
	}
	fmt.Printf("%s done (order %s…): %d %s rebuilt under the quorum and superseded (the old records stay until a quorum retires them)\n", job.Kind, job.Order[:16], job.Total, what)
	return exitOK
}

func reencapRunRoster(args []string) int {
	fs := newFlags("reencap run", "--state DIR --kind roster [--new-roster ROSTER.txt [--roster-sig SIG]... [--new-bailiff KEY.asc:PASSFILE]...] --bailiff KEY.asc:PASSFILE ... [--share-card FILE ...]")
	var k keystoreFlags
	k.register(fs)
	fs.String("kind", "", "roster: re-split every escrow to a new roster (quorum of the old roster)")
	newRoster := fs.String("new-roster", "", "the new roster (coffre reencap draft-roster), to start a roster change")
	var rsigs, newBs listFlag
	fs.Var(&rsigs, "roster-sig", "a new bailiff's detached signature over the new roster's body (repeatable)")
	fs.Var(&newBs, "new-bailiff", "a joining bailiff present: SECRETKEY.asc:PASSPHRASE_FILE (repeatable); signs the new roster")
	batch := fs.Int("batch", 0, "escrows per atomic batch of records (default and most: 64)")
	var qf quorumFlags
	qf.register(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *batch < 0 {
		return fail(usagef("--batch %d: want a positive number", *batch))
	}
	o := appliance.RosterChangeOptions{Reason: *qf.reason, Max: *qf.limit, Batch: *batch, Say: say}
	var err error
	if *newRoster != "" {
		if o.NewRoster, err = os.ReadFile(*newRoster); err != nil {
			return fail(usagef("%v", err))
		}
	}
	for _, s := range rsigs {
		b, err := os.ReadFile(s)
		if err != nil {
			return fail(usagef("%v", err))
		}
		o.RosterSigs = append(o.RosterSigs, b)
	}
	if o.NewBailiffs, err = bailiffSecrets(newBs); err != nil {
		return fail(err)
	}
	if o.Unlock, err = qf.unlock(); err != nil {
		return fail(err)
	}
	return withJob(k, "re-splitting escrows", func(ctx context.Context, a *appliance.Appliance, progress func(done, total int)) int {
		o.Progress = progress
		fmt.Println("roster change:")
		job, err := a.RosterChange(ctx, o)
		return jobEnd(job, err, "escrows")
	})
}

func reencapRunEscrow(args []string) int {
	fs := newFlags("reencap run", "--state DIR --kind escrow [--user ID ...] --bailiff KEY.asc:PASSFILE ... [--share-card FILE ...]")
	var k keystoreFlags
	k.register(fs)
	fs.String("kind", "", "escrow: new escrow key for the users, items re-wrapped (quorum)")
	var users listFlag
	fs.Var(&users, "user", "a user whose escrow key is rotated (repeatable), to start a rotation")
	var qf quorumFlags
	qf.register(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	o := appliance.RotationOptions{Users: users, Reason: *qf.reason, Max: *qf.limit, Say: say}
	var err error
	if o.Unlock, err = qf.unlock(); err != nil {
		return fail(err)
	}
	return withJob(k, "re-wrapping items", func(ctx context.Context, a *appliance.Appliance, progress func(done, total int)) int {
		o.Progress = progress
		fmt.Println("escrow rotation:")
		job, err := a.RotateEscrows(ctx, o)
		return jobEnd(job, err, "items")
	})
}

// writeDraft writes a document to sign: FILE (the document with no
// signatures) and FILE.body (the exact bytes to sign).
func writeDraft(out string, doc, body []byte) error {
	if err := fsutil.CreateExclusive(out, doc, 0o644); err != nil {
		return err
	}
	return fsutil.CreateExclusive(out+".body", body, 0o644)
}

func reencapDraftRoster(args []string) int {
	fs := newFlags("reencap draft-roster", "--state DIR [--threshold K] [--remove FPR]... [--add NAME:PUBKEY.asc]... --out ROSTER.txt")
	var k keystoreFlags
	k.register(fs)
	threshold := fs.Int("threshold", 0, "k of the new roster (default: as now)")
	var rm, add listFlag
	fs.Var(&rm, "remove", "a bailiff who leaves, or whose old key is replaced: fingerprint, or name as on the roster (repeatable)")
	fs.Var(&add, "add", "a bailiff who joins, or a bailiff's new key: NAME:PUBKEY.asc (repeatable)")
	out := fs.String("out", "", "where to write the draft (and OUT.body, the bytes each bailiff signs)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *out == "" || len(rm)+len(add) == 0 && *threshold == 0 {
		fs.Usage()
		return exitUsage
	}
	var adds []appliance.ImportedBailiff
	for _, s := range add {
		name, file, ok := strings.Cut(s, ":")
		if !ok {
			return fail(usagef("--add %q: want NAME:PUBKEY.asc", s))
		}
		pub, err := os.ReadFile(file)
		if err != nil {
			return fail(usagef("%v", err))
		}
		adds = append(adds, appliance.ImportedBailiff{Name: name, Public: pub})
	}
	a, err := k.open()
	if err != nil {
		return fail(err)
	}
	defer a.Close()
	r, err := a.DraftRoster(*threshold, rm, adds)
	if err != nil {
		return fail(usageError{err})
	}
	if err := writeDraft(*out, r.Marshal(), r.Body()); err != nil {
		return fail(err)
	}
	fmt.Printf("new roster drafted: %d of %d, digest %x\n", r.Threshold, len(r.Bailiffs), r.Digest())
	for _, b := range r.Bailiffs {
		fmt.Printf("  %s  %s\n", b.Fingerprint, b.Name)
	}
	fmt.Printf("Every bailiff on it signs %s.body (gpg --detach-sign, or --new-bailiff / --bailiff at the run); then: coffre reencap run --kind roster --new-roster %s ...\n", *out, *out)
	return exitOK
}

func reencapDraftOrder(args []string) int {
	fs := newFlags("reencap draft-order", "--state DIR --kind roster|escrow (--new-roster ROSTER.txt | --user ID ...) --reason TEXT --out ORDER.txt")
	var k keystoreFlags
	k.register(fs)
	kind := fs.String("kind", "", "roster or escrow")
	newRoster := fs.String("new-roster", "", "roster: the new roster drafted with draft-roster")
	var users listFlag
	fs.Var(&users, "user", "escrow: a user whose escrow key is rotated (repeatable)")
	reason := fs.String("reason", "", "why (printed in the order)")
	out := fs.String("out", "", "where to write the order (and OUT.body, the bytes each bailiff signs)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *out == "" || *reason == "" || (*kind != "roster" && *kind != "escrow") {
		fs.Usage()
		return exitUsage
	}
	a, err := k.open()
	if err != nil {
		return fail(err)
	}
	defer a.Close()
	r, err := a.Roster()
	if err != nil {
		return fail(err)
	}
	var o *bailiff.QuorumOrder
	if *kind == "roster" {
		b, err := os.ReadFile(*newRoster)
		if err != nil {
			return fail(usagef("--new-roster: %v", err))
		}
		next, err := bailiff.ParseRoster(b, time.Now())
		if err != nil {
			return fail(usageError{err})
		}
		o, err = bailiff.NewRosterChangeOrder(r, next, *reason, time.Now())
		if err != nil {
			return fail(usageError{err})
		}
	} else {
		if o, err = bailiff.NewRotationOrder(r, users, *reason, time.Now()); err != nil {
			return fail(usageError{err})
		}
	}
	if err := writeDraft(*out, o.Marshal(), o.Body()); err != nil {
		return fail(err)
	}
	fmt.Printf("%s order drafted (id %s); %d bailiffs of the roster in force sign %s.body (gpg --detach-sign), then: coffre reencap run --kind %s --order %s --order-sig SIG ...\n", o.Kind, o.ID(), r.Threshold, *out, *kind, *out)
	return exitOK
}

func reencapShares(args []string) int {
	fs := newFlags("reencap shares", "--state DIR --bailiff FPR [--user ID ...] --out DIR")
	var k keystoreFlags
	k.register(fs)
	fpr := fs.String("bailiff", "", "the fingerprint of the bailiff who opens shares with GnuPG")
	var users listFlag
	fs.Var(&users, "user", "only the escrow of this user (repeatable; default: every escrow the next quorum job opens)")
	out := fs.String("out", "", "a new directory for the share messages")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *fpr == "" || *out == "" {
		fs.Usage()
		return exitUsage
	}
	a, err := k.open()
	if err != nil {
		return fail(err)
	}
	defer a.Close()
	msgs, err := a.ShareMessages(strings.ToLower(*fpr), users)
	if err != nil {
		return fail(err)
	}
	if err := os.Mkdir(*out, 0o700); err != nil {
		return fail(usagef("%v", err))
	}
	names := make([]string, 0, len(msgs))
	for u := range msgs {
		names = append(names, u)
	}
	sort.Strings(names)
	var index strings.Builder
	for i, u := range names {
		f := fmt.Sprintf("share-%05d.pgp", i+1)
		if err := fsutil.CreateExclusive(filepath.Join(*out, f), msgs[u], 0o600); err != nil {
			return fail(err)
		}
		fmt.Fprintf(&index, "%s %s\n", f, u)
	}
	if err := fsutil.CreateExclusive(filepath.Join(*out, "index.txt"), []byte(index.String()), 0o600); err != nil {
		return fail(err)
	}
	fmt.Printf("%d share message(s) for %s in %s. Open each with your own key:\n  for f in %s/*.pgp; do gpg --decrypt --output \"${f%%.pgp}.card\" \"$f\"; done\nand bring the directory back: coffre reencap run ... --share-cards %s\n", len(names), *fpr, *out, *out, *out)
	return exitOK
}

// printQuorumJobs prints the quorum jobs for `coffre reencap status`.
func printQuorumJobs(jobs map[string]*appliance.ReencapJob) {
	kinds := make([]string, 0, len(jobs))
	for k := range jobs {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		j := jobs[k]
		what := "escrows"
		if k == bailiff.ReencapEscrowRotation {
			what = "items"
		}
		fmt.Printf("%s (order %s…, record %d): %s, %d of %d %s %s\n", k, j.Order[:16], j.Record, j.Status, j.Done, j.Total, what, bar(100*float64(j.Done)/float64(max(1, j.Total)), 30))
	}
}

// printPlanHints says, under the plan's table, whether each kind of work
// needs the quorum and how to run it.
func printPlanHints(plan *policy.PlanResult) {
	runs := map[policy.WorkKind]string{
		policy.RecordRekey:    "coffre reencap run --kind record --new-epoch",
		policy.RosterChange:   "coffre reencap draft-roster, then coffre reencap run --kind roster",
		policy.EscrowRotation: "coffre reencap run --kind escrow --user ID",
	}
	for _, g := range plan.Groups {
		q := "no"
		if g.Quorum {
			q = "yes"
		}
		how := runs[g.Kind]
		if how == "" {
			how = "not run by this version"
		}
		fmt.Printf("kind %d %s: %d objects, quorum needed: %s; %s\n", int(g.Kind), g.Kind, g.Objects, q, how)
	}
}
