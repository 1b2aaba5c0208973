// Command coffre is the one CLI of the Coffre vault appliance: for the
// operator (init, drive, ingest, status, scrub, catalog), the bailiffs
// (ceremony, restitute, reencap), the auditors (audit), and the online side
// (courier). `coffre demo` runs the whole life of a vault on embedded
// defaults. Exit codes: 0 success, 1 a verification found a problem, 2 usage
// or input error.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"coffre/ingest/usb"
)

// Exit codes, the same for every command.
const (
	exitOK      = 0
	exitProblem = 1
	exitUsage   = 2
)

// command is one top-level verb.
type command struct {
	summary string
	run     func(args []string) int
}

var commands = map[string]command{}

func register(name, summary string, run func(args []string) int) {
	commands[name] = command{summary, run}
}

func main() {
	usb.RunChildIfRequested()
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(os.Stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "coffre: unknown command %q (see coffre help)\n", args[0])
		return exitUsage
	}
	return c.run(args[1:])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: coffre COMMAND [flags]   (coffre COMMAND -h for a command's flags)")
	fmt.Fprintln(w)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nexit codes: 0 success, 1 a verification found a problem, 2 usage or input error")
}

// newFlags makes a flag set that reports usage errors as exit code 2.
func newFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("coffre "+name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: coffre %s %s\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags; ok false means the caller returns code.
func parse(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	return 0, true
}

// fail prints err and returns the exit code for it.
func fail(err error) int {
	msg := err.Error()
	if !strings.HasPrefix(msg, "coffre") {
		msg = "coffre: " + msg
	}
	fmt.Fprintln(os.Stderr, msg)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitProblem
}

// usageError marks an error caused by the command line or its inputs.
type usageError struct{ error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// subcommand dispatches "coffre NAME SUB ..." to a table of sub-verbs.
func subcommand(name string, args []string, subs map[string]func([]string) int) int {
	if len(args) == 0 || subs[args[0]] == nil {
		keys := make([]string, 0, len(subs))
		for k := range subs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintf(os.Stderr, "usage: coffre %s {%s} [flags]\n", name, strings.Join(keys, "|"))
		return exitUsage
	}
	return subs[args[0]](args[1:])
}
