package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"coffre/appliance"
	"coffre/bailiff"
	"coffre/internal/fsutil"
)

func init() {
	register("ceremony", "enrol | genesis | verify-shares | sign: key ceremonies with the bailiffs", cmdCeremony)
	register("restitute", "release one user's items to a beneficiary, under a bailiff quorum", cmdRestitute)
}

func cmdCeremony(args []string) int {
	return subcommand("ceremony", args, map[string]func([]string) int{
		"enrol":         ceremonyEnrol,
		"genesis":       ceremonyGenesis,
		"sign":          ceremonySign,
		"verify-shares": ceremonyVerifyShares,
	})
}

func say(format string, a ...any) { fmt.Printf("  "+format+"\n", a...) }

// bailiffSpec parses NAME:EMAIL:PASSPHRASE_FILE (generated on the appliance).
func bailiffSpec(s string) (appliance.NewBailiff, error) {
	p := strings.SplitN(s, ":", 3)
	if len(p) != 3 {
		return appliance.NewBailiff{}, usagef("--generate %q: want NAME:EMAIL:PASSPHRASE_FILE", s)
	}
	pass, err := os.ReadFile(p[2])
	if err != nil {
		return appliance.NewBailiff{}, usagef("passphrase of %s: %v", p[0], err)
	}
	return appliance.NewBailiff{Name: p[0], Email: p[1], Passphrase: []byte(strings.TrimRight(string(pass), "\r\n"))}, nil
}

// ceremonyEnrol makes one bailiff's key on the appliance — exported
// passphrase-protected for the token and as a key card that is scanned back
// before the command succeeds, then wiped — or checks a public key the
// bailiff made elsewhere. Genesis (or draft-roster) then imports the public
// key; the bailiff signs the roster from their token (gpg --detach-sign, or
// `coffre ceremony sign` for a post-quantum key).
func ceremonyEnrol(args []string) int {
	fs := newFlags("ceremony enrol", "(--name NAME --email EMAIL --passphrase-file FILE [--pq] --out DIR | --check PUBKEY.asc)")
	pq := fs.Bool("pq", false, "make a post-quantum key (OpenPGP v6: ML-DSA-87+Ed448, ML-KEM-1024+X448), which GnuPG 2.2 cannot use")
	name := fs.String("name", "", "the bailiff's name")
	email := fs.String("email", "", "the bailiff's email")
	passFile := fs.String("passphrase-file", "", "the bailiff's passphrase for the exported key")
	out := fs.String("out", "", "directory for NAME.sec.asc (token), NAME.card.png (paper) and NAME.pub.asc")
	check := fs.String("check", "", "check a public key the bailiff made with GnuPG or on a smartcard")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	now := time.Now()
	if *check != "" {
		pub, err := os.ReadFile(*check)
		if err != nil {
			return fail(usagef("%v", err))
		}
		who := *name
		if who == "" {
			who = "the bailiff" // --check needs no name: the roster gets it at genesis or draft-roster
		}
		k, err := bailiff.ImportBailiffKey(who, pub, now)
		if err != nil {
			return fail(usageError{err})
		}
		profile := "P-521, signing and encryption"
		if k.PQ() {
			profile = "post-quantum v6: ML-DSA-87+Ed448 signing, ML-KEM-1024+X448 encryption"
		}
		fmt.Printf("%s: acceptable bailiff key %s (%s)\n", *check, k.Fingerprint, profile)
		return exitOK
	}
	if *name == "" || *email == "" || *passFile == "" || *out == "" {
		fs.Usage()
		return exitUsage
	}
	b, err := bailiffSpec(*name + ":" + *email + ":" + *passFile)
	if err != nil {
		return fail(err)
	}
	generate := bailiff.GenerateBailiffKey
	if *pq {
		generate = bailiff.GenerateBailiffKeyPQ
	}
	g, err := generate(b.Name, b.Email, b.Passphrase, now)
	if err != nil {
		return fail(err)
	}
	defer g.Wipe()
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return fail(err)
	}
	base := filepath.Join(*out, strings.ReplaceAll(*name, " ", "-"))
	pub, _ := g.Key.ArmoredPublic()
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{base + ".sec.asc", g.ArmoredSecret, 0o600}, {base + ".card.png", g.Card.PNG, 0o600}, {base + ".pub.asc", pub, 0o644}} {
		if err := fsutil.CreateExclusive(f.path, f.data, f.mode); err != nil {
			return fail(err)
		}
	}
	fmt.Printf("bailiff key %s for %s: token file %s.sec.asc, key card %s.card.png (card %s, scanned back and verified), public key %s.pub.asc\n",
		g.Key.Fingerprint, *name, base, base, g.Card.ID, base)
	fmt.Print(g.Card.Caption())
	fmt.Println("The unprotected key is wiped from the appliance. At genesis: --import '" + *name + ":" + base + ".pub.asc'")
	return exitOK
}

// ceremonySign makes a bailiff's detached signature over a document body
// (a roster, an order, a policy) with their protected key: what `gpg
// --detach-sign` does for a P-521 key, for a post-quantum key too, which
// GnuPG 2.2 cannot use. It runs on the bailiff's own offline machine or on
// the appliance; the key is wiped when it is done.
func ceremonySign(args []string) int {
	fs := newFlags("ceremony sign", "--key SECRETKEY.asc --passphrase-file FILE --out SIG BODY")
	keyFile := fs.String("key", "", "the bailiff's protected secret key (token file)")
	passFile := fs.String("passphrase-file", "", "its passphrase")
	out := fs.String("out", "", "where to write the binary detached signature (created, never overwritten)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *keyFile == "" || *passFile == "" || *out == "" || fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	secrets, err := bailiffSecrets([]string{*keyFile + ":" + *passFile})
	if err != nil {
		return fail(err)
	}
	body, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return fail(usagef("%v", err))
	}
	k, err := bailiff.OpenBailiffKey(secrets[0].SecretKey, secrets[0].Passphrase)
	if err != nil {
		return fail(err)
	}
	defer bailiff.WipeKey(k)
	sig, err := bailiff.SignDetached(k, body, time.Now())
	if err != nil {
		return fail(err)
	}
	if err := fsutil.CreateExclusive(*out, sig, 0o644); err != nil {
		return fail(err)
	}
	fmt.Printf("%s: signed by %s (%d bytes)\n", *out, bailiff.Fingerprint(k), len(sig))
	return exitOK
}

func ceremonyGenesis(args []string) int {
	fs := newFlags("ceremony genesis", "--state DIR --threshold K --out DIR (--generate NAME:EMAIL:PASSFILE | --import NAME:PUBKEY.asc)...")
	var k keystoreFlags
	k.register(fs)
	threshold := fs.Int("threshold", 0, "how many bailiffs must act together (k of n)")
	out := fs.String("out", "", "directory for the key files, key cards, roster and transcript to print and hand out")
	var gens, imps listFlag
	fs.Var(&gens, "generate", "a bailiff whose key is generated here: NAME:EMAIL:PASSPHRASE_FILE (repeatable)")
	fs.Var(&imps, "import", "a bailiff who brings a public key: NAME:PUBKEY.asc (repeatable); they sign OUT/roster.body with gpg --detach-sign into OUT/FINGERPRINT.sig")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *threshold < 1 || *out == "" || len(gens)+len(imps) == 0 {
		fs.Usage()
		return exitUsage
	}
	o := appliance.GenesisOptions{Threshold: *threshold, OutDir: *out, Say: say}
	for _, g := range gens {
		b, err := bailiffSpec(g)
		if err != nil {
			return fail(err)
		}
		o.Generate = append(o.Generate, b)
	}
	for _, s := range imps {
		name, file, ok := strings.Cut(s, ":")
		if !ok {
			return fail(usagef("--import %q: want NAME:PUBKEY.asc", s))
		}
		pub, err := os.ReadFile(file)
		if err != nil {
			return fail(usagef("%v", err))
		}
		o.Import = append(o.Import, appliance.ImportedBailiff{Name: name, Public: pub})
	}
	a, err := k.open()
	if err != nil {
		return fail(err)
	}
	defer a.Close()
	fmt.Println("genesis ceremony:")
	res, err := a.Genesis(context.Background(), o)
	if err != nil {
		return fail(err)
	}
	fmt.Printf("roster: %d of %d, record %d. Print %s and have every bailiff sign it.\n", res.Roster.Threshold, len(res.Roster.Bailiffs), res.RosterIndex, res.Transcript)
	return exitOK
}

// bailiffSecrets parses KEYFILE:PASSPHRASE_FILE pairs.
func bailiffSecrets(specs []string) ([]appliance.BailiffSecret, error) {
	var out []appliance.BailiffSecret
	for _, s := range specs {
		kf, pf, ok := strings.Cut(s, ":")
		if !ok {
			return nil, usagef("--bailiff %q: want SECRETKEY.asc:PASSPHRASE_FILE", s)
		}
		key, err := os.ReadFile(kf)
		if err != nil {
			return nil, usagef("%v", err)
		}
		pass, err := os.ReadFile(pf)
		if err != nil {
			return nil, usagef("%v", err)
		}
		out = append(out, appliance.BailiffSecret{Label: kf, SecretKey: key, Passphrase: []byte(strings.TrimRight(string(pass), "\r\n"))})
	}
	return out, nil
}

func ceremonyVerifyShares(args []string) int {
	fs := newFlags("ceremony verify-shares", "--state DIR --bailiff SECRETKEY.asc:PASSPHRASE_FILE ...")
	var k keystoreFlags
	k.register(fs)
	var bs listFlag
	fs.Var(&bs, "bailiff", "a bailiff's protected key and passphrase file (repeatable)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if len(bs) == 0 {
		fs.Usage()
		return exitUsage
	}
	secrets, err := bailiffSecrets(bs)
	if err != nil {
		return fail(err)
	}
	o, err := k.options()
	if err != nil {
		return fail(err)
	}
	a, err := appliance.Open(k.state, o)
	if err != nil {
		return fail(err)
	}
	defer a.Close()
	lines, err := a.VerifyShares(secrets)
	for _, l := range lines {
		fmt.Println("  " + l)
	}
	if err != nil {
		return fail(err)
	}
	fmt.Println("every bailiff present can open their share; nothing real was opened")
	return exitOK
}

func cmdRestitute(args []string) int {
	fs := newFlags("restitute", "--state DIR --user ID --to BENEFICIARY.asc --reference REF --out DIR [--image FILE] --bailiff KEY.asc:PASSFILE ... [--share-card FILE ...] [--order SIGNED_ORDER]")
	var k keystoreFlags
	k.register(fs)
	user := fs.String("user", "", "the user whose items are released")
	to := fs.String("to", "", "the beneficiary's OpenPGP public key")
	ref := fs.String("reference", "", "legal reference (court decision, notary deed)")
	out := fs.String("out", "", "directory for the restitution package")
	image := fs.String("image", "", "also write the package as a FAT32 image")
	order := fs.String("order", "", "a restitution order already signed by the bailiffs")
	var bs, cards, qrs listFlag
	fs.Var(&bs, "bailiff", "a bailiff present: SECRETKEY.asc:PASSPHRASE_FILE (repeatable)")
	fs.Var(&cards, "share-card", "a share a bailiff opened with GnuPG, as card text (repeatable)")
	fs.Var(&qrs, "share-qr", "the same share card brought back as a QR code picture (repeatable)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *out == "" || (*order == "" && (*user == "" || *to == "" || *ref == "")) {
		fs.Usage()
		return exitUsage
	}
	ro := appliance.RestituteOptions{UserID: *user, Reference: *ref, OutDir: *out, Image: *image, Say: say}
	var err error
	if *to != "" {
		if ro.Beneficiary, err = os.ReadFile(*to); err != nil {
			return fail(usagef("%v", err))
		}
	}
	if *order != "" {
		if ro.Order, err = os.ReadFile(*order); err != nil {
			return fail(usagef("%v", err))
		}
	}
	if ro.Bailiffs, err = bailiffSecrets(bs); err != nil {
		return fail(err)
	}
	for _, c := range cards {
		b, err := os.ReadFile(c)
		if err != nil {
			return fail(usagef("%v", err))
		}
		ro.ShareCards = append(ro.ShareCards, b)
	}
	for _, q := range qrs {
		pic, err := os.ReadFile(q)
		if err != nil {
			return fail(usagef("%v", err))
		}
		card, err := bailiff.ReadShareQR(pic)
		if err != nil {
			return fail(usagef("share QR %s: %v", q, err))
		}
		ro.ShareCards = append(ro.ShareCards, card)
	}
	a, err := k.open()
	if err != nil {
		return fail(err)
	}
	defer a.Close()
	res, err := a.Restitute(context.Background(), ro)
	if err != nil {
		return fail(err)
	}
	fmt.Printf("restitution of %d item version(s) written to %s; the act is record %d\n", res.Items, *out, res.Record)
	return exitOK
}
