package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"coffre/appliance"
	"coffre/firmware"
	"coffre/hsm"
)

func init() {
	register("init", "provision a new appliance's keys (ingest, record, audit) in the keystore", cmdInit)
	register("drive", "format | list | add | retire | sync the vault's drives", cmdDrive)
	register("status", "drives, uploads in flight, last errors and what to do", cmdStatus)
	register("ingest", "one-shot ingest: qr FRAMES_DIR | usb IMAGE_OR_DIR | envelope FILE", cmdIngest)
	register("scrub", "find damaged records on a drive and repair them from a verified copy", cmdScrub)
	register("catalog", "rebuild the catalog from one drive replica", cmdCatalog)
}

// keystoreFlags are the flags every command that opens the keystore takes.
type keystoreFlags struct {
	state, backend, passFile, device string
	quorum                           int
	drives                           string
}

func (k *keystoreFlags) register(fs interface {
	StringVar(*string, string, string, string)
	IntVar(*int, string, int, string)
}) {
	fs.StringVar(&k.state, "state", "", "the appliance state directory (required)")
	fs.StringVar(&k.backend, "keystore", "soft", `keystore backend: "soft" (development) or "tpm"`)
	fs.StringVar(&k.passFile, "passphrase-file", "", "file holding the keystore passphrase (soft) or PIN (tpm); default: $COFFRE_PASSPHRASE")
	fs.StringVar(&k.device, "tpm", "", "TPM device or unix:SOCKET for swtpm")
	fs.IntVar(&k.quorum, "quorum", 0, "write quorum (default: the vault's)")
	fs.StringVar(&k.drives, "drives", "", "comma-separated drive paths (default: the vault's known drives)")
}

func (k *keystoreFlags) options() (appliance.OpenOptions, error) {
	if k.state == "" {
		return appliance.OpenOptions{}, usagef("--state is required")
	}
	pass, err := passphrase(k.passFile)
	if err != nil {
		return appliance.OpenOptions{}, err
	}
	o := appliance.OpenOptions{
		Keystore:    hsm.Config{Backend: k.backend, Passphrase: pass, TPM: hsm.TPMOptions{Device: k.device}},
		WriteQuorum: k.quorum,
		Log:         newLogger(),
	}
	if k.drives != "" {
		o.Drives = strings.Split(k.drives, ",")
	}
	return o, nil
}

func (k *keystoreFlags) open() (*appliance.Appliance, error) {
	o, err := k.options()
	if err != nil {
		return nil, err
	}
	return appliance.Open(k.state, o)
}

// passphrase reads the keystore passphrase from a file or $COFFRE_PASSPHRASE.
func passphrase(file string) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, usagef("passphrase file: %v", err)
		}
		return []byte(strings.TrimRight(string(b), "\r\n")), nil
	}
	if p := os.Getenv("COFFRE_PASSPHRASE"); p != "" {
		return []byte(p), nil
	}
	return nil, usagef("no keystore passphrase: give --passphrase-file FILE or set COFFRE_PASSPHRASE")
}

func cmdInit(args []string) int {
	fs := newFlags("init", "--state DIR [--passphrase-file FILE] [--quorum 3]")
	var k keystoreFlags
	k.register(fs)
	fast := fs.Bool("fast-kdf", false, "cheap Argon2id parameters (tests and the demo only)")
	daemonBin := fs.String("measure-binary", "/usr/local/bin/coffred", "tpm: the coffred binary the keys are sealed to")
	daemonCfg := fs.String("measure-config", "/etc/coffre/coffred.json", "tpm: the coffred config the keys are sealed to")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	var o appliance.OpenOptions
	var err error
	if k.backend == hsm.BackendTPM && k.passFile == "" && os.Getenv("COFFRE_PASSPHRASE") == "" {
		// A TPM keystore needs no passphrase (a PIN is optional).
		o = appliance.OpenOptions{Keystore: hsm.Config{Backend: k.backend, TPM: hsm.TPMOptions{Device: k.device}}, Log: newLogger()}
		if k.state == "" {
			return fail(usagef("--state is required"))
		}
	} else if o, err = k.options(); err != nil {
		return fail(err)
	}
	var measure []firmware.Input
	if k.backend == hsm.BackendTPM {
		measure = []firmware.Input{{Name: "coffred", Path: *daemonBin}, {Name: "config", Path: *daemonCfg}}
	}
	soft := hsm.DefaultSoftParams
	if *fast {
		soft = hsm.TestSoftParams
	}
	id, err := appliance.Init(appliance.InitOptions{State: k.state, Keystore: o.Keystore, WriteQuorum: k.quorum, Soft: soft, Log: o.Log, Measure: measure})
	if err != nil {
		return fail(err)
	}
	fmt.Printf("vault %s initialised in %s (keystore: %s)\n", id.VaultID, k.state, id.Keystore)
	fmt.Printf("audit verifier key (print it, have the bailiffs countersign it):\n  %s\n", id.AuditKey)
	return exitOK
}

func cmdDrive(args []string) int {
	return subcommand("drive", args, map[string]func([]string) int{
		"format": driveFormat,
		"list":   driveList,
		"add":    driveAdd,
		"retire": driveRetire,
		"sync":   driveSync,
	})
}

func driveFormat(args []string) int {
	fs := newFlags("drive format", "--state DIR --slot N [--size BYTES] PATH")
	var k keystoreFlags
	k.register(fs)
	slot := fs.Int("slot", 0, "drive slot, 1 to 4")
	size := fs.Int64("size", 0, "create or extend an image file to this many bytes (0: the device's size)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 || *slot < 1 || *slot > 4 {
		fs.Usage()
		return exitUsage
	}
	o, err := k.options()
	if err != nil {
		return fail(err)
	}
	info, err := appliance.FormatDrive(k.state, o, *slot, fs.Arg(0), *size)
	if err != nil {
		return fail(err)
	}
	fmt.Printf("drive %s formatted in slot %d: uuid %x, %d bytes\n", fs.Arg(0), *slot, info.UUID, info.Size)
	return exitOK
}

func driveList(args []string) int {
	fs := newFlags("drive list", "--state DIR [--json]")
	var k keystoreFlags
	k.register(fs)
	asJSON := fs.Bool("json", false, "JSON output")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	st, err := statusOf(&k)
	if err != nil {
		return fail(err)
	}
	if *asJSON {
		return printJSON(st.Drives)
	}
	printDrives(os.Stdout, st.Drives)
	return exitOK
}

// driveOp runs a drive operation through the daemon when it runs, else
// directly on the drives.
func driveOp(name string, args []string, needUUID bool, run func(a *appliance.Appliance, arg string) error) int {
	fs := newFlags("drive "+name, "--state DIR UUID_OR_PATH")
	var k keystoreFlags
	k.register(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	if sock := daemonSocket(k.state); sock != "" {
		key := "uuid"
		if !needUUID {
			key = "path"
		}
		if err := appliance.Call(sock, "drive-"+name, map[string]string{key: fs.Arg(0)}, nil); err != nil {
			return fail(err)
		}
		fmt.Printf("drive %s: %s done (through coffred)\n", fs.Arg(0), name)
		return exitOK
	}
	a, err := k.open()
	if err != nil {
		return fail(err)
	}
	defer a.Close()
	if err := run(a, fs.Arg(0)); err != nil {
		return fail(err)
	}
	fmt.Printf("drive %s: %s done\n", fs.Arg(0), name)
	return exitOK
}

func driveAdd(args []string) int {
	return driveOp("add", args, false, func(a *appliance.Appliance, p string) error {
		return a.AddDrive(p, progressBar("catching up"))
	})
}

func driveRetire(args []string) int {
	return driveOp("retire", args, true, func(a *appliance.Appliance, u string) error { return a.RetireDrive(u) })
}

func driveSync(args []string) int {
	return driveOp("sync", args, true, func(a *appliance.Appliance, u string) error {
		return a.SyncDrive(context.Background(), u, progressBar("syncing"))
	})
}

// daemonSocket returns the control socket of a running coffred for state.
func daemonSocket(state string) string {
	if state == "" {
		return ""
	}
	p := state + "/control.sock"
	if fi, err := os.Stat(p); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if appliance.Call(p, "status", nil, nil) == nil {
			return p
		}
	}
	return ""
}

func statusOf(k *keystoreFlags) (appliance.Status, error) {
	if sock := daemonSocket(k.state); sock != "" {
		var st appliance.Status
		return st, appliance.Call(sock, "status", nil, &st)
	}
	a, err := k.open()
	if err != nil {
		return appliance.Status{}, err
	}
	defer a.Close()
	return a.Status(), nil
}

func cmdStatus(args []string) int {
	fs := newFlags("status", "--state DIR [--json]")
	var k keystoreFlags
	k.register(fs)
	asJSON := fs.Bool("json", false, "JSON output")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	st, err := statusOf(&k)
	if err != nil {
		return fail(err)
	}
	if *asJSON {
		return printJSON(st)
	}
	fmt.Printf("vault %s  (%s keystore)  %d records  write quorum %d\n", st.Vault, st.Keystore, st.Records, st.Quorum)
	if st.Daemon {
		fmt.Printf("coffred: %d stored, %d replays, %d rejected\n", st.Stored, st.Replays, st.Rejected)
	} else {
		fmt.Println("coffred: not running (status read from the drives)")
	}
	printDrives(os.Stdout, st.Drives)
	if len(st.Inflight) > 0 {
		fmt.Println("\nin flight:")
		for _, f := range st.Inflight {
			fmt.Printf("  %-50s %s %5.1f%%\n", f.What, bar(f.Percent, 20), f.Percent)
		}
	}
	if len(st.LastErrors) > 0 {
		fmt.Println("\nlast errors:")
		for _, e := range st.LastErrors {
			fmt.Printf("  %s  %s: %s\n", e.Time.Format("15:04:05"), e.Source, e.Error)
			if e.Advice != "" {
				fmt.Printf("      → %s\n", e.Advice)
			}
		}
	}
	problems := 0
	for _, d := range st.Drives {
		if d.State != "active" {
			problems++
		}
	}
	if problems > 0 {
		return exitProblem
	}
	return exitOK
}

func printDrives(w io.Writer, ds []appliance.DriveReport) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "slot\tuuid\tstate\tfill\trecords\tlag\tcheckpoint\tpath")
	for _, d := range ds {
		fill := "-"
		if d.Size > 0 {
			fill = fmt.Sprintf("%.1f%%", 100*float64(d.Used)/float64(d.Size))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", d.Slot, d.UUID, d.State, fill, d.Records, d.Lag, d.Checkpoint, d.Path)
	}
	tw.Flush()
	for _, d := range ds {
		if d.Error != "" || d.Advice != "" {
			fmt.Fprintf(w, "  slot %d: %s %s\n", d.Slot, d.Error, d.Advice)
		}
	}
}

func printJSON(v any) int {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fail(err)
	}
	return exitOK
}

func bar(pct float64, width int) string {
	n := int(pct / 100 * float64(width))
	n = max(0, min(width, n))
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}

// progressBar returns a progress callback drawing on stderr.
func progressBar(what string) func(done, total uint64) {
	last := -1
	return func(done, total uint64) {
		if total == 0 {
			return
		}
		pct := int(100 * done / total)
		if pct == last {
			return
		}
		last = pct
		fmt.Fprintf(os.Stderr, "\r%s %s %3d%% (%d/%d)", what, bar(float64(pct), 30), pct, done, total)
		if done >= total {
			fmt.Fprintln(os.Stderr)
		}
	}
}

func openAppliance(state string, o appliance.OpenOptions) (*appliance.Appliance, error) {
	return appliance.Open(state, o)
}
