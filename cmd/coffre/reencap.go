package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"coffre/appliance"
)

func init() {
	register("reencap", "plan | run | status: re-encapsulate what ageing algorithms protect", cmdReencap)
}

// reencapSubs and reencapKinds are extended by the files of other kinds
// of work (init functions): sub-verbs of `coffre reencap`, and the
// `reencap run --kind` values run by their own function.
var (
	reencapSubs  = map[string]func([]string) int{}
	reencapKinds = map[string]func([]string) int{}
)

func cmdReencap(args []string) int {
	subs := map[string]func([]string) int{
		"plan":   reencapPlan,
		"run":    reencapRun,
		"status": reencapStatus,
	}
	for k, f := range reencapSubs {
		subs[k] = f
	}
	return subcommand("reencap", args, subs)
}

// kindArg returns the value of --kind in args, if any.
func kindArg(args []string) string {
	for i, a := range args {
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if v, ok := strings.CutPrefix(a, "kind="); ok {
			return v
		}
		if a == "kind" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func reencapRun(args []string) int {
	if run := reencapKinds[kindArg(args)]; run != nil {
		return run(args)
	}
	fs := newFlags("reencap run", "--state DIR --kind record [--new-epoch]   (--kind roster|escrow: see coffre reencap run --kind roster -h)")
	var k keystoreFlags
	k.register(fs)
	kind := fs.String("kind", "", "the kind of work: record (record-layer rekey, no quorum), roster, escrow or upgrade (quorum; see coffre reencap run --kind roster -h)")
	newEpoch := fs.Bool("new-epoch", false, "record: create a fresh record key epoch first (otherwise resume the job in flight)")
	limit := fs.Int("max", -1, "re-encrypt at most this many records in this run (a bounded maintenance window; -1: all)")
	batch := fs.Int("batch", 0, "records per atomic batch (default and most: 512, or 32 MiB; a record over 4 MiB goes alone)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *batch < 0 {
		return fail(usagef("--batch %d: want a positive number", *batch))
	}
	if *kind != "record" {
		return fail(usagef("--kind %q: want record (record-layer rekey, no quorum), roster (roster change, quorum), escrow (escrow key rotation, quorum) or upgrade (algorithm upgrade to post-quantum, quorum)", *kind))
	}
	return withJob(k, "re-encrypting records", func(ctx context.Context, a *appliance.Appliance, progress func(done, total int)) int {
		job, err := a.Rekey(ctx, appliance.RekeyOptions{NewEpoch: *newEpoch, Max: *limit, Batch: *batch, Progress: progress})
		if err != nil {
			if job != nil {
				fmt.Fprintf(os.Stderr, "stopped after %d of %d records; run the same command again to resume\n", job.Done, job.Total)
			}
			return fail(err)
		}
		if job.Status != "done" {
			fmt.Printf("record-layer rekey to epoch %d: %d of %d records done; run again to continue\n", job.Epoch, job.Done, job.Total)
			return exitOK
		}
		fmt.Printf("record-layer rekey to epoch %d done: %d records re-encrypted and superseded (the old ones stay until a quorum retires them)\n", job.Epoch, job.Done)
		return exitOK
	})
}

func reencapStatus(args []string) int {
	fs := newFlags("reencap status", "--state DIR [--json]")
	var k keystoreFlags
	k.register(fs)
	asJSON := fs.Bool("json", false, "JSON output")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	a, err := k.open()
	if err != nil {
		return fail(err)
	}
	defer a.Close()
	job, ok, err := a.RekeyStatus()
	if err != nil {
		return fail(err)
	}
	epochs, err := a.RecordEpochs()
	if err != nil {
		return fail(err)
	}
	qjobs, err := a.ReencapStatus()
	if err != nil {
		return fail(err)
	}
	upgrade, upgradeLine, err := upgradeStatus(a)
	if err != nil {
		return fail(err)
	}
	if *asJSON {
		return printJSON(map[string]any{"job": job, "live_records_by_epoch": epochs, "quorum_jobs": qjobs, "upgrade": upgrade})
	}
	printQuorumJobs(qjobs)
	if upgradeLine != "" {
		fmt.Println(upgradeLine)
	}
	if !ok {
		if len(qjobs) == 0 && upgradeLine == "" {
			fmt.Println("no re-encapsulation job has run")
		}
	} else {
		fmt.Printf("record-layer rekey to epoch %d: %s, %d of %d records %s\n", job.Epoch, job.Status, job.Done, job.Total, bar(100*float64(job.Done)/float64(max(1, job.Total)), 30))
	}
	for e, n := range epochs {
		fmt.Printf("  epoch %d: %d live records\n", e, n)
	}
	return exitOK
}

func reencapPlan(args []string) int {
	fs := newFlags("reencap plan", "--state DIR [--policy FILE|default] [--at YYYY-MM-DD] [--json]")
	var k keystoreFlags
	k.register(fs)
	polFile := fs.String("policy", "default", "a crypto policy signed by the bailiff quorum, or \"default\" (NIST IR 8547 dates)")
	at := fs.String("at", "", "plan as of this date (default: today)")
	asJSON := fs.Bool("json", false, "JSON output")
	rotate := fs.String("rotate", "", "also plan an escrow key rotation (recipient change) for this user")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	when := time.Now().UTC()
	if *at != "" {
		t, err := time.Parse("2006-01-02", *at)
		if err != nil {
			return fail(usagef("--at %q: want YYYY-MM-DD", *at))
		}
		when = t
	}
	a, err := k.open()
	if err != nil {
		return fail(err)
	}
	defer a.Close()
	var pol []byte
	if *polFile != "default" {
		if pol, err = os.ReadFile(*polFile); err != nil {
			return fail(usagef("%v", err))
		}
	}
	plan, err := a.ReencapPlan(pol, when)
	if *rotate != "" {
		plan, err = a.ReencapPlanRotation(pol, when, *rotate)
	}
	if err != nil {
		return fail(err)
	}
	if *asJSON {
		return printJSON(plan)
	}
	fmt.Print(plan.String())
	printPlanHints(plan)
	if plan.Empty() {
		fmt.Printf("nothing falls below the policy on %s\n", when.Format("2006-01-02"))
	}
	return exitOK
}

// withJob opens the appliance for a long job that SIGINT and SIGTERM stop
// cleanly (the job saves its place; the same command resumes it) and runs
// it with a progress bar labelled what.
func withJob(k keystoreFlags, what string, run func(ctx context.Context, a *appliance.Appliance, progress func(done, total int)) int) int {
	a, err := k.open()
	if err != nil {
		return fail(err)
	}
	defer a.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	bar := progressBar(what)
	return run(ctx, a, func(done, total int) { bar(uint64(done), uint64(total)) })
}
