package main

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"coffre/storage"
)

func init() {
	register("audit", "verify drive replicas offline with the audit public key only", cmdAudit)
}

// cmdAudit needs no secret: it opens every drive read-only and checks
// superblocks, records, the tree against every signed checkpoint, agreement
// between replicas and, with --since, append-only growth since a checkpoint
// kept from an earlier visit.
func cmdAudit(args []string) int {
	fs := newFlags("audit", "[--json] --audit-key FILE [--since CHECKPOINT] [--keep FILE] DRIVE...")
	asJSON := fs.Bool("json", false, "JSON report")
	keyFile := fs.String("audit-key", "", "the vault's audit verifier key (audit.pub)")
	since := fs.String("since", "", "a checkpoint kept from an earlier visit: the drives must have grown from it, append-only")
	keep := fs.String("keep", "", "write the latest verified checkpoint to FILE for the next visit")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *keyFile == "" || fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	kb, err := os.ReadFile(*keyFile)
	if err != nil {
		return fail(usagef("audit key: %v", err))
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(kb)))
	if err != nil {
		return fail(usagef("audit key %s: %v", *keyFile, err))
	}
	opts := storage.AuditOptions{Verifier: v}
	if *since != "" {
		if opts.Since, err = os.ReadFile(*since); err != nil {
			return fail(usagef("--since: %v", err))
		}
	}
	rep, err := storage.Audit(fs.Args(), opts)
	if err != nil {
		return fail(usageError{err})
	}
	if *asJSON {
		printJSON(rep)
	} else {
		fmt.Print(rep.String())
	}
	if *keep != "" && rep.OK && len(rep.Checkpoint) > 0 {
		if err := os.WriteFile(*keep, []byte(rep.Checkpoint), 0o644); err != nil {
			return fail(err)
		}
		if !*asJSON {
			fmt.Printf("checkpoint kept in %s for the next visit (--since %s)\n", *keep, *keep)
		}
	}
	if !rep.OK {
		return exitProblem
	}
	return exitOK
}
