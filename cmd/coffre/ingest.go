package main

import (
	"context"
	"fmt"
	"os"

	"coffre/appliance"
	"coffre/ingest/qr"
)

func cmdIngest(args []string) int {
	run := func(kind string) func([]string) int {
		return func(args []string) int {
			fs := newFlags("ingest "+kind, "--state DIR [--json] SOURCE")
			var k keystoreFlags
			k.register(fs)
			asJSON := fs.Bool("json", false, "JSON output")
			if code, ok := parse(fs, args); !ok {
				return code
			}
			if fs.NArg() != 1 {
				fs.Usage()
				return exitUsage
			}
			a, err := k.open()
			if err != nil {
				return fail(err)
			}
			defer a.Close()
			ctx := context.Background()
			var outs []appliance.Outcome
			switch kind {
			case "qr":
				outs, err = a.IngestQRDir(ctx, fs.Arg(0), qrProgress())
			case "usb":
				outs, err = a.IngestBundle(ctx, fs.Arg(0))
			case "envelope":
				var o appliance.Outcome
				o, err = a.IngestFile(ctx, fs.Arg(0))
				outs = []appliance.Outcome{o}
			}
			if err != nil && len(outs) == 0 {
				return fail(usageError{err})
			}
			if *asJSON {
				printJSON(outs)
			}
			bad := 0
			for _, o := range outs {
				switch {
				case o.Error != "":
					bad++
					fmt.Fprintf(os.Stderr, "rejected: %s: %s (nothing was stored from it)\n", o.Source, o.Error)
				case *asJSON:
				case o.Result.Replay:
					fmt.Printf("already stored: upload %s (user %s, item %s v%d) is record %d\n", o.Result.UploadID, o.Result.UserID, o.Result.ItemID, o.Result.Version, o.Result.Index)
				default:
					fmt.Printf("stored: upload %s (user %s, item %s v%d, %d bytes) as record %d; receipt %s\n", o.Result.UploadID, o.Result.UserID, o.Result.ItemID, o.Result.Version, o.Result.Size, o.Result.Index, o.Result.ReceiptPath)
				}
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "coffre: %v\n", err)
				bad++
			}
			if bad > 0 {
				return exitUsage
			}
			return exitOK
		}
	}
	return subcommand("ingest", args, map[string]func([]string) int{
		"qr": run("qr"), "usb": run("usb"), "envelope": run("envelope"),
	})
}

func qrProgress() func(qr.Progress) {
	last := map[string]int{}
	return func(p qr.Progress) {
		id := p.Transfer.String()
		pct := int(p.Percent)
		if last[id] == pct && !p.Done {
			return
		}
		last[id] = pct
		fmt.Fprintf(os.Stderr, "\rQR transfer %s %s %3d%% (%d/%d fragments, %d frames)", id[:8], bar(p.Percent, 30), pct, p.Received, p.Needed, p.Frames)
		if p.Done {
			fmt.Fprintln(os.Stderr)
		}
	}
}

func cmdScrub(args []string) int {
	fs := newFlags("scrub", "--state DIR [--json]")
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
	rep, err := a.Scrub(context.Background(), progressBar("scrubbing"))
	if err != nil {
		return fail(err)
	}
	if *asJSON {
		return printJSON(rep)
	}
	fmt.Printf("scrubbed %d records on %d drives: %d repaired, %d not repairable\n", rep.Records, rep.Drives, len(rep.Repairs)-rep.Unrepaired(), rep.Unrepaired())
	for _, r := range rep.Repairs {
		fmt.Printf("  %s\n", r)
	}
	if rep.Unrepaired() > 0 {
		return exitProblem
	}
	return exitOK
}

func cmdCatalog(args []string) int {
	return subcommand("catalog", args, map[string]func([]string) int{
		"rebuild": func(args []string) int {
			fs := newFlags("catalog rebuild", "--state DIR [--from DRIVE]")
			var k keystoreFlags
			k.register(fs)
			from := fs.String("from", "", "the drive replica to rebuild from (default: the first known drive)")
			if code, ok := parse(fs, args); !ok {
				return code
			}
			o, err := k.options()
			if err != nil {
				return fail(err)
			}
			drive := *from
			if drive == "" {
				id, err := appliance.LoadIdentity(k.state)
				if err != nil {
					return fail(err)
				}
				if len(id.Drives) == 0 {
					return fail(usagef("the vault knows no drive: give --from DRIVE"))
				}
				drive = id.Drives[0].Path
			}
			d, n, err := appliance.RebuildCatalog(k.state, o, drive)
			if err != nil {
				return fail(err)
			}
			fmt.Printf("catalog rebuilt from %s: %d records indexed, digest %x\n", drive, n, d)
			return exitOK
		},
	})
}
