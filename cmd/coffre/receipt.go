package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	qrcode "github.com/skip2/go-qrcode"
	"golang.org/x/mod/sumdb/note"

	"coffre/appliance"
	"coffre/appliance/receipt"
)

func init() {
	register("receipt", "show an upload's receipt as a QR code for the online side, and verify it", cmdReceipt)
}

// cmdReceipt verifies a receipt against the vault's audit key and shows it
// on the console as a QR code (and optionally as a PNG), so that the online
// side can film it and show the user their item is in the vault — nothing
// flows back on its own.
func cmdReceipt(args []string) int {
	fs := newFlags("receipt", "--state DIR [--png FILE] UPLOAD_ID | --audit-key FILE RECEIPT_FILE")
	state := fs.String("state", "", "the appliance state directory (receipts are in STATE/receipts)")
	auditKey := fs.String("audit-key", "", "verify a receipt file with this audit key instead (online side)")
	png := fs.String("png", "", "also write the QR code as a PNG")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 || (*state == "") == (*auditKey == "") {
		fs.Usage()
		return exitUsage
	}
	var path, vkey, origin string
	if *state != "" {
		id, err := appliance.LoadIdentity(*state)
		if err != nil {
			return fail(err)
		}
		path = filepath.Join(*state, "receipts", fs.Arg(0)+".tlog-proof")
		vkey, origin = id.AuditKey, id.Origin
	} else {
		b, err := os.ReadFile(*auditKey)
		if err != nil {
			return fail(usagef("%v", err))
		}
		vkey, path = strings.TrimSpace(string(b)), fs.Arg(0)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fail(usagef("receipt: %v", err))
	}
	r, err := receipt.Parse(data)
	if err != nil {
		return fail(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return fail(usagef("audit key: %v", err))
	}
	cp, err := r.Verify(v, origin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "coffre:", err)
		return exitProblem
	}
	fmt.Printf("upload %s: user %s, item %s v%d is record %d of the log (checkpoint of %d records, %s) — verified\n",
		r.Extra.UploadID, r.Extra.UserID, r.Extra.ItemID, r.Extra.Version, r.Index, cp.Size, cp.Origin)
	if *state == "" {
		return exitOK
	}
	q, err := qrcode.New(string(data), qrcode.Low)
	if err != nil {
		return fail(fmt.Errorf("receipt: %d bytes do not fit a QR code: %w", len(data), err))
	}
	if *png != "" {
		if err := q.WriteFile(6, *png); err != nil {
			return fail(err)
		}
		fmt.Printf("QR code written to %s\n", *png)
	}
	fmt.Print(q.ToSmallString(false))
	return exitOK
}
