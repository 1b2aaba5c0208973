package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"

	"coffre/appliance"
	"coffre/ingest/envelope"
	"coffre/ingest/qr"
	"coffre/ingest/usb"
)

func init() {
	register("courier", "the online side: keygen | seal | qr | usb | pin", cmdCourier)
}

func cmdCourier(args []string) int {
	return subcommand("courier", args, map[string]func([]string) int{
		"keygen": courierKeygen,
		"seal":   courierSeal,
		"qr":     courierQR,
		"usb":    courierUSB,
		"pin":    courierPin,
	})
}

func courierKeygen(args []string) int {
	fs := newFlags("courier keygen", "--name NAME --out SECRET.asc --pub PUBLIC.asc [--algo ed25519|p521]")
	name := fs.String("name", "Coffre courier", "key name")
	out := fs.String("out", "", "secret key file to create (mode 0600, must not exist)")
	pub := fs.String("pub", "", "public key file to write (pin it on the appliance)")
	algo := fs.String("algo", "ed25519", "ed25519 or p521")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *out == "" || *pub == "" {
		fs.Usage()
		return exitUsage
	}
	a := envelope.CourierEd25519
	switch *algo {
	case "ed25519":
	case "p521":
		a = envelope.CourierP521
	default:
		return fail(usagef("--algo %q: want ed25519 or p521", *algo))
	}
	e, err := envelope.GenerateCourierKey(*name, a)
	if err != nil {
		return fail(err)
	}
	if err := writeKey(*out, e, true); err != nil {
		return fail(err)
	}
	if err := writeKey(*pub, e, false); err != nil {
		return fail(err)
	}
	fmt.Printf("courier key %X: secret in %s, public in %s\n", e.PrimaryKey.Fingerprint, *out, *pub)
	return exitOK
}

func writeKey(path string, e *openpgp.Entity, private bool) error {
	var b bytes.Buffer
	var err error
	if private {
		err = envelope.WritePrivateKey(&b, e)
	} else {
		err = envelope.WritePublicKey(&b, e)
	}
	if err != nil {
		return err
	}
	if !private {
		return os.WriteFile(path, b.Bytes(), 0o644)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b.Bytes()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func readKeyFile(path string) (openpgp.EntityList, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("%v", err)
	}
	return envelope.ReadKeys(bytes.NewReader(b))
}

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func courierSeal(args []string) int {
	fs := newFlags("courier seal", "--ingest-key PUB.asc --courier-key SEC.asc --user ID --item ID [--version N] [--kind K] [--content-type T] [--beneficiary 'Name <email>'] --out ENVELOPE FILE|-")
	ingestKey := fs.String("ingest-key", "", "the appliance's ingest public key")
	courierKey := fs.String("courier-key", "", "the courier's secret key")
	user := fs.String("user", "", "user id")
	item := fs.String("item", "", "item id")
	version := fs.Uint("version", 1, "item version (a new version never overwrites an old one)")
	kind := fs.String("kind", "document", "password, seed-phrase, letter, document, …")
	ctype := fs.String("content-type", "application/octet-stream", "media type")
	uploadID := fs.String("upload-id", "", "upload id (default: random)")
	out := fs.String("out", "", "envelope file to write")
	var bens listFlag
	fs.Var(&bens, "beneficiary", "a beneficiary designation 'Name <email>' (repeatable)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *ingestKey == "" || *courierKey == "" || *user == "" || *item == "" || *out == "" || fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	ing, err := readKeyFile(*ingestKey)
	if err != nil {
		return fail(err)
	}
	cour, err := readKeyFile(*courierKey)
	if err != nil {
		return fail(err)
	}
	if cour[0].PrivateKey == nil {
		return fail(usagef("%s holds no secret key", *courierKey))
	}
	var in io.Reader = os.Stdin
	if fs.Arg(0) == "-" {
		// Sealing needs the size and digest first: spool stdin to a
		// temporary file on this (online) machine.
		tmp, err := os.CreateTemp("", "coffre-seal-*")
		if err != nil {
			return fail(err)
		}
		defer os.Remove(tmp.Name())
		defer tmp.Close()
		if _, err := io.Copy(tmp, os.Stdin); err != nil {
			return fail(err)
		}
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return fail(err)
		}
		in = tmp
	} else {
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			return fail(usagef("%v", err))
		}
		defer f.Close()
		in = f
	}
	m := envelope.Manifest{UserID: *user, ItemID: *item, Version: uint32(*version), Kind: *kind, ContentType: *ctype}
	for _, b := range bens {
		m.Beneficiaries = append(m.Beneficiaries, parseDesignation(b))
	}
	id := *uploadID
	if id == "" {
		id = envelope.NewUploadID()
	}
	if err := appliance.SealEnvelope(*out, ing[0], cour[0], m, id, in); err != nil {
		return fail(err)
	}
	fmt.Printf("sealed upload %s (user %s, item %s v%d) into %s\n", id, *user, *item, *version, *out)
	return exitOK
}

func parseDesignation(s string) envelope.Designation {
	d := envelope.Designation{Name: strings.TrimSpace(s)}
	if i := strings.IndexByte(s, '<'); i >= 0 && strings.HasSuffix(s, ">") {
		d.Name = strings.TrimSpace(s[:i])
		d.Email = s[i+1 : len(s)-1]
	}
	return d
}

func courierQR(args []string) int {
	fs := newFlags("courier qr", "--out DIR [--fps 5] [--html FILE] [--redundancy 0.5] ENVELOPE")
	out := fs.String("out", "", "directory for the numbered PNG frames")
	fps := fs.Float64("fps", 5, "frames per second of the HTML player")
	html := fs.String("html", "", "also write a self-contained HTML player page")
	red := fs.Float64("redundancy", 0.5, "extra frames, as a fraction of the needed ones")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *out == "" || fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	msg, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return fail(usagef("%v", err))
	}
	o := qr.Options{Redundancy: *red}
	frames, err := qr.Encode(msg, o)
	if err != nil {
		return fail(err)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fail(err)
	}
	if err := qr.WriteFrames(*out, frames, o); err != nil {
		return fail(err)
	}
	if *html != "" {
		f, err := os.Create(*html)
		if err != nil {
			return fail(err)
		}
		if err := qr.WriteHTMLPlayer(f, frames, *fps, o); err != nil {
			f.Close()
			return fail(err)
		}
		if err := f.Close(); err != nil {
			return fail(err)
		}
	}
	fmt.Printf("%d frames in %s", len(frames), *out)
	if *html != "" {
		fmt.Printf(", player %s", *html)
	}
	fmt.Println()
	return exitOK
}

func courierUSB(args []string) int {
	fs := newFlags("courier usb", "--out DIR|IMAGE [--image] [--size BYTES] ENVELOPE...")
	out := fs.String("out", "", "bundle directory, or FAT32 image with --image")
	image := fs.Bool("image", false, "write a FAT32 image instead of a directory")
	size := fs.Int64("size", 0, "image size in bytes (default: fitted to the envelopes)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *out == "" || fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	var files []usb.File
	for _, p := range fs.Args() {
		b, err := os.ReadFile(p)
		if err != nil {
			return fail(usagef("%v", err))
		}
		files = append(files, usb.BytesFile(filepath.Base(p), b))
	}
	var err error
	if *image {
		_, err = usb.WriteImage(*out, files, *size)
	} else {
		_, err = usb.WriteDir(*out, files)
	}
	if err != nil {
		return fail(err)
	}
	fmt.Printf("bundle of %d envelopes written to %s\n", len(files), *out)
	return exitOK
}

func courierPin(args []string) int {
	fs := newFlags("courier pin", "--state DIR COURIER.pub.asc")
	state := fs.String("state", "", "the appliance state directory")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *state == "" || fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	b, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return fail(usagef("%v", err))
	}
	fp, err := appliance.PinCourier(*state, b)
	if err != nil {
		return fail(err)
	}
	fmt.Printf("courier key %s pinned: envelopes it signs are accepted\n", fp)
	return exitOK
}
