package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"coffre/appliance"
)

func init() {
	reencapKinds["upgrade"] = reencapUpgrade // kind 4, under a quorum: its own flags
	reencapSubs["retire"] = reencapRetire
}

// reencapUpgrade is `coffre reencap run --kind upgrade`: the algorithm
// upgrade (kind 4) under a bailiff quorum.
func reencapUpgrade(args []string) int {
	fs := newFlags("reencap run --kind upgrade", "--state DIR --kind upgrade [--at YYYY-MM-DD] [--policy FILE|default] [--user ID ...] [--max-users N] --bailiff KEY.sec.asc:PASSFILE ...")
	var k keystoreFlags
	k.register(fs)
	fs.String("kind", "upgrade", "upgrade: algorithm upgrade to post-quantum escrow keys (quorum)")
	polFile := fs.String("policy", "default", "a crypto policy signed by the bailiff quorum, or \"default\" (NIST IR 8547 dates)")
	at := fs.String("at", "", "upgrade what falls below the policy on this date (default: today; a later date moves ahead of the policy)")
	maxUsers := fs.Int("max-users", 0, "upgrade at most this many users in this run (a bounded maintenance window; 0: all)")
	batch := fs.Int("batch", 0, "items per atomic batch of records (default 1000)")
	var bs, users listFlag
	fs.Var(&bs, "bailiff", "a bailiff present: SECRETKEY.asc:PASSPHRASE_FILE (repeatable; at least k)")
	fs.Var(&users, "user", "upgrade only this user (repeatable)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if len(bs) == 0 {
		fs.Usage()
		return exitUsage
	}
	o := appliance.UpgradeOptions{MaxUsers: *maxUsers, BatchItems: *batch, Users: users, Say: say}
	if *at != "" {
		t, err := time.Parse("2006-01-02", *at)
		if err != nil {
			return fail(usagef("--at %q: want YYYY-MM-DD", *at))
		}
		o.At = t
	}
	var err error
	if *polFile != "default" {
		if o.Policy, err = os.ReadFile(*polFile); err != nil {
			return fail(usagef("%v", err))
		}
	}
	if o.Bailiffs, err = bailiffSecrets(bs); err != nil {
		return fail(err)
	}
	return withJob(k, "upgrading items", func(ctx context.Context, a *appliance.Appliance, progress func(done, total int)) int {
		o.Progress = progress
		job, err := a.Upgrade(ctx, o)
		if err != nil {
			if job != nil {
				fmt.Fprintf(os.Stderr, "\nstopped after %d of %d items (%d of %d users); run the same command again to resume\n", job.Done, job.Total, job.UsersDone, job.Users)
			}
			return fail(err)
		}
		if job.Users == 0 {
			fmt.Printf("nothing to upgrade on %s under this policy\n", job.At[:10])
			return exitOK
		}
		if job.Status != "done" {
			fmt.Printf("algorithm upgrade: %d of %d users, %d of %d items done; run again to continue\n", job.UsersDone, job.Users, job.Done, job.Total)
			return exitOK
		}
		fmt.Printf("algorithm upgrade done: %d users on post-quantum escrow keys (%s), %d items re-encrypted and superseded (the old records stay until `coffre reencap retire`)\n",
			job.Users, job.Target, job.Done)
		return exitOK
	})
}

// reencapRetire is `coffre reencap retire`: a quorum retires the
// superseded records.
func reencapRetire(args []string) int {
	fs := newFlags("reencap retire", "--state DIR [--dry-run] [--max N] --bailiff KEY.sec.asc:PASSFILE ...")
	var k keystoreFlags
	k.register(fs)
	dry := fs.Bool("dry-run", false, "list what would be retired and why some would not; retire nothing")
	maxN := fs.Int("max", 0, "retire at most this many records (0: up to 100000)")
	var bs listFlag
	fs.Var(&bs, "bailiff", "a bailiff present: SECRETKEY.asc:PASSPHRASE_FILE (repeatable; at least k)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if len(bs) == 0 && !*dry {
		fs.Usage()
		return exitUsage
	}
	secrets, err := bailiffSecrets(bs)
	if err != nil {
		return fail(err)
	}
	a, err := k.open()
	if err != nil {
		return fail(err)
	}
	defer a.Close()
	if *dry {
		ok, refused, err := a.RetireCandidates()
		if err != nil {
			return fail(err)
		}
		for _, s := range refused {
			fmt.Println("  not retirable: " + s)
		}
		fmt.Printf("%d superseded records can be retired, %d cannot yet\n", len(ok), len(refused))
		return exitOK
	}
	res, err := a.Retire(context.Background(), appliance.RetireOptions{Bailiffs: secrets, Max: *maxN, Say: say})
	if err != nil {
		return fail(err)
	}
	if len(res.Records) == 0 {
		fmt.Println("nothing to retire")
		return exitOK
	}
	fmt.Printf("%d superseded records retired by record %d (order %s); their bytes stay on the drives, the appliance never serves them again\n", len(res.Records), res.Record, res.Order[:16])
	if res.Left > 0 {
		fmt.Printf("%d more can be retired: run the command again\n", res.Left)
	}
	return exitOK
}

// upgradeStatus gives the algorithm upgrade job for `reencap status` (nil
// and "" when none ran).
func upgradeStatus(a *appliance.Appliance) (*appliance.UpgradeJob, string, error) {
	j, ok, err := a.UpgradeStatus()
	if err != nil || !ok {
		return nil, "", err
	}
	return j, fmt.Sprintf("algorithm upgrade to %s (plan date %s): %s, %d of %d users, %d of %d items %s",
		j.Target, j.At[:10], j.Status, j.UsersDone, j.Users, j.Done, j.Total, bar(100*float64(j.Done)/float64(max(1, j.Total)), 30)), nil
}
