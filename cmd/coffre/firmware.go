package main

import (
	"encoding/hex"
	"fmt"
	"os"

	"coffre/firmware"
)

func init() {
	register("firmware", "verify | measure | update: signed releases and updates through the diode", cmdFirmware)
}

func cmdFirmware(args []string) int {
	return subcommand("firmware", args, map[string]func([]string) int{
		"verify":  firmwareVerify,
		"measure": firmwareMeasure,
		"update":  firmwareUpdate,
	})
}

func firmwareVerify(args []string) int {
	fs := newFlags("firmware verify", "--trust-root FILE BUNDLE")
	rootFile := fs.String("trust-root", "", "the release keys and threshold")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *rootFile == "" || fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	rb, err := os.ReadFile(*rootFile)
	if err != nil {
		return fail(usagef("%v", err))
	}
	root, err := firmware.ParseTrustRoot(rb)
	if err != nil {
		return fail(usageError{err})
	}
	bundle, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return fail(usagef("%v", err))
	}
	m, err := firmware.Verify(bundle, root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "coffre: firmware:", err)
		return exitProblem
	}
	fmt.Printf("%s version %d (%s): signatures verified (%d of the trust root's keys needed)\n", m.Product, m.Version, m.SemVer, root.Threshold)
	for _, c := range m.Components {
		fmt.Printf("  %-20s %10d bytes  sha256 %x\n", c.Name, c.Size, c.SHA256)
	}
	return exitOK
}

func firmwareMeasure(args []string) int {
	fs := newFlags("firmware measure", "NAME=FILE...")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	var inputs []firmware.Input
	for _, a := range fs.Args() {
		name, path, ok := cutEq(a)
		if !ok {
			return fail(usagef("%q: want NAME=FILE (e.g. coffred=/usr/local/bin/coffred)", a))
		}
		inputs = append(inputs, firmware.Input{Name: name, Path: path})
	}
	m, err := firmware.MeasureInto(nopExtender{}, inputs)
	if err != nil {
		return fail(err)
	}
	for _, e := range m.Events {
		fmt.Printf("  %-12s sha256 %x\n", e.Name, e.SHA256)
	}
	fmt.Printf("PCR value after these measurements (from reset): %s\n", hex.EncodeToString(m.PCRValue()))
	return exitOK
}

func cutEq(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '=' {
			return s[:i], s[i+1:], i > 0 && i < len(s)-1
		}
	}
	return "", "", false
}

// nopExtender computes a measurement without a TPM.
type nopExtender struct{}

func (nopExtender) MeasurePCR() int { return 0 }
func (nopExtender) PCRs(pcrs ...int) (map[int][]byte, error) {
	out := map[int][]byte{}
	for _, p := range pcrs {
		out[p] = make([]byte, 32)
	}
	return out, nil
}
func (nopExtender) Extend(int, []byte) error { return nil }

func firmwareUpdate(args []string) int {
	fs := newFlags("firmware update", "--state DIR --trust-root FILE BUNDLE")
	var k keystoreFlags
	k.register(fs)
	rootFile := fs.String("trust-root", "", "the release keys and threshold")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *rootFile == "" || fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	o, err := k.options()
	if err != nil {
		return fail(err)
	}
	o.NoDrives = true
	a, err := openAppliance(k.state, o)
	if err != nil {
		return fail(err)
	}
	defer a.Close()
	st, err := a.ApplyUpdate(fs.Arg(0), *rootFile)
	if err != nil {
		return fail(err)
	}
	fmt.Printf("update to version %d (%s) verified and staged in %s; the keys are authorised for it. Install it and reboot.\n", st.Manifest.Version, st.Manifest.SemVer, st.Dir)
	return exitOK
}
