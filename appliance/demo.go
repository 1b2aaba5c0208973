package appliance

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"coffre/bailiff"
	"coffre/hsm"
	"coffre/ingest/envelope"
	"coffre/ingest/qr"
	"coffre/ingest/usb"
	"coffre/internal/loopdev"
	"coffre/storage"
)

// The demo's sample items are embedded so that `coffre demo` is
// self-contained on a fresh machine.
//
//go:embed demodata
var demoData embed.FS

// DemoOptions configure `coffre demo`.
type DemoOptions struct {
	Dir string
	Out io.Writer // the story, step by step
	// Loop selects loop devices over the drive images: "auto" (when root),
	// "yes" or "no".
	Loop string
	// DocumentSize is the size of the demo's large document (default 10 MiB).
	DocumentSize int
	Log          *slog.Logger
}

// Demo passphrases: printed, never for real use.
const (
	demoPassphrase = "coffre-demo-keystore"
	demoDriveSize  = 96 << 20
)

type demo struct {
	o      DemoOptions
	dir    string
	state  string
	ks     hsm.Config
	images []string
	loops  []*loopdev.Device
	step   int
}

func (d *demo) say(format string, a ...any) {
	fmt.Fprintf(d.o.Out, "    "+format+"\n", a...)
}

func (d *demo) section(title string) {
	d.step++
	fmt.Fprintf(d.o.Out, "\n==> %d. %s\n", d.step, title)
}

// Demo runs the whole life of a vault on embedded defaults and leaves DIR as
// DESIGN.md describes: drives/drive1..4.img, audit.pub, frames/, usb.img,
// restitution/, beneficiary.sec.asc and state/.
func Demo(ctx context.Context, o DemoOptions) (err error) {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.DocumentSize == 0 {
		o.DocumentSize = 10 << 20
	}
	if ents, _ := os.ReadDir(o.Dir); len(ents) > 0 {
		return fmt.Errorf("appliance: demo: %s is not empty; remove it or choose another --dir", o.Dir)
	}
	d := &demo{o: o, dir: o.Dir, state: filepath.Join(o.Dir, "state")}
	d.ks = hsm.Config{Backend: hsm.BackendSoft, Passphrase: []byte(demoPassphrase)}
	defer d.detachLoops()
	// The software keystore warns at every open; the demo says it once.
	prev := slog.Default()
	slog.SetDefault(o.Log)
	defer slog.SetDefault(prev)
	start := time.Now()
	fmt.Fprintf(o.Out, "Coffre demo: the whole life of a vault, in %s\n", o.Dir)
	if err := d.run(ctx); err != nil {
		fmt.Fprintf(o.Out, "\nDEMO FAILED at step %d: %v\n", d.step, err)
		return err
	}
	fmt.Fprintf(o.Out, "\nDemo complete in %s.\n", time.Since(start).Round(100*time.Millisecond))
	return nil
}

func (d *demo) openOpts(drives []string) OpenOptions {
	ks := d.ks
	ks.Passphrase = []byte(demoPassphrase)
	return OpenOptions{Keystore: ks, Drives: drives, Log: d.o.Log}
}

func (d *demo) open(drives []string) (*Appliance, error) {
	return Open(d.state, d.openOpts(drives))
}

func (d *demo) run(ctx context.Context) error {
	dir := d.dir
	for _, sub := range []string{"drives", "frames", "courier", "ceremony", "envelopes"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return err
		}
	}

	d.section("Provision the appliance (software keystore — development only)")
	id, err := Init(InitOptions{State: d.state, Keystore: d.ks, Soft: hsm.TestSoftParams, Log: d.o.Log})
	if err != nil {
		return err
	}
	d.say("vault %s; keys sealed in %s/keystore (passphrase %q, demo only)", id.VaultID, d.state, demoPassphrase)
	if err := os.WriteFile(filepath.Join(dir, "audit.pub"), []byte(id.AuditKey+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ingest.pub.asc"), []byte(id.IngestKey), 0o644); err != nil {
		return err
	}
	d.say("audit verifier key → audit.pub; ingest public key → ingest.pub.asc (for the online side)")

	d.section("Format four drives")
	useLoop := d.o.Loop == "yes" || (d.o.Loop != "no" && loopdev.Available())
	var paths []string
	for i := 1; i <= 4; i++ {
		img := filepath.Join(dir, "drives", fmt.Sprintf("drive%d.img", i))
		if err := makeImage(img, demoDriveSize); err != nil {
			return err
		}
		d.images = append(d.images, img)
		p := img
		if useLoop {
			dev, err := loopdev.Attach(img, false)
			if err != nil {
				return err
			}
			d.loops = append(d.loops, dev)
			p = dev.Path
		}
		info, err := FormatDrive(d.state, d.openOpts(nil), i, p, 0)
		if err != nil {
			return err
		}
		paths = append(paths, p)
		d.say("slot %d: %s (%d MiB) uuid %s", i, p, info.Size>>20, storage.UUIDString(info.UUID))
	}
	if useLoop {
		d.say("the drives are loop devices over drives/drive1..4.img (O_DIRECT, fdatasync, O_EXCL)")
	} else {
		d.say("plain image files (run as root for loop devices)")
	}

	a, err := d.open(paths)
	if err != nil {
		return err
	}
	defer func() { a.Close() }()

	d.section("Genesis ceremony: three bailiffs, any two can act")
	var gen []NewBailiff
	for i := 1; i <= 3; i++ {
		gen = append(gen, NewBailiff{Name: fmt.Sprintf("Bailiff %d", i), Email: fmt.Sprintf("bailiff%d@coffre.invalid", i), Passphrase: []byte(demoBailiffPass(i))})
	}
	g, err := a.Genesis(ctx, GenesisOptions{Threshold: 2, Generate: gen, OutDir: filepath.Join(dir, "ceremony"), Say: d.say})
	if err != nil {
		return err
	}
	_ = g

	d.section("The online side: courier key, sealing the users' items")
	courier, err := envelope.GenerateCourierKey("Demo courier", envelope.CourierEd25519)
	if err != nil {
		return err
	}
	var cpub bytes.Buffer
	envelope.WritePublicKey(&cpub, courier)
	os.WriteFile(filepath.Join(dir, "courier", "courier.pub.asc"), cpub.Bytes(), 0o644)
	fp, err := PinCourier(d.state, cpub.Bytes())
	if err != nil {
		return err
	}
	d.say("courier key %s made and pinned on the appliance", fp[:16])
	a.Close()
	if a, err = d.open(paths); err != nil {
		return err
	}
	ingestKey := a.ingest[0]
	seal := func(name, user, item, kind, ctype string, version uint32, content []byte, bens ...envelope.Designation) (string, error) {
		p := filepath.Join(dir, "envelopes", name+".env")
		m := envelope.Manifest{UserID: user, ItemID: item, Version: version, Kind: kind, ContentType: ctype, Beneficiaries: bens}
		if err := SealEnvelope(p, ingestKey, courier, m, envelope.NewUploadID(), bytes.NewReader(content)); err != nil {
			return "", err
		}
		return p, nil
	}
	sample := func(n string) []byte { b, _ := demoData.ReadFile("demodata/" + n); return b }
	ben := envelope.Designation{Name: "Claire (daughter)", Email: "claire@example.invalid"}
	doc := demoDocument(d.o.DocumentSize)
	envs := map[string]string{}
	for _, s := range []struct {
		name, user, item, kind, ctype string
		v                             uint32
		content                       []byte
	}{
		{"alice-password", "alice", "bank-password", "password", "text/plain; charset=utf-8", 1, sample("password.txt")},
		{"alice-seed", "alice", "wallet-seed", "seed-phrase", "text/plain; charset=utf-8", 1, sample("seed-phrase.txt")},
		{"bob-password", "bob", "mail-password", "password", "text/plain; charset=utf-8", 1, sample("bob-password.txt")},
		{"alice-letter", "alice", "letter", "letter", "text/plain; charset=utf-8", 1, sample("letter.txt")},
		{"alice-document", "alice", "deeds", "document", "application/octet-stream", 1, doc},
	} {
		p, err := seal(s.name, s.user, s.item, s.kind, s.ctype, s.v, s.content, ben)
		if err != nil {
			return err
		}
		envs[s.name] = p
		fi, _ := os.Stat(p)
		d.say("%-15s user %-5s item %-14s %8d bytes → envelope %d bytes", s.name, s.user, s.item, len(s.content), fi.Size())
	}

	d.section("Animated QR: three small uploads through the camera path")
	var frameCount int
	for i, n := range []string{"alice-password", "alice-seed", "bob-password"} {
		msg, _ := os.ReadFile(envs[n])
		frames, err := qr.Encode(msg, qr.Options{Redundancy: 0.5})
		if err != nil {
			return err
		}
		sub := filepath.Join(dir, "frames", fmt.Sprintf("t%d", i+1))
		if err := qr.WriteFrames(sub, frames, qr.Options{}); err != nil {
			return err
		}
		// Lose a fifth of the frames, as a shaky camera would.
		ents, _ := os.ReadDir(sub)
		lost := 0
		for j, e := range ents {
			if j%5 == 2 {
				os.Remove(filepath.Join(sub, e.Name()))
				lost++
			}
		}
		frameCount += len(frames) - lost
		d.say("%s: %d frames shown, %d lost on the way", n, len(frames), lost)
		outs, err := a.IngestQRDir(ctx, sub, nil)
		if err != nil {
			return err
		}
		if err := d.reportOutcomes(outs); err != nil {
			return err
		}
	}
	f, _ := os.Create(filepath.Join(dir, "frames", "player.html"))
	msg, _ := os.ReadFile(envs["alice-password"])
	frames, _ := qr.Encode(msg, qr.Options{Redundancy: 0.5})
	qr.WriteHTMLPlayer(f, frames, 5, qr.Options{})
	f.Close()
	d.say("frames kept in frames/; frames/player.html plays one transfer full-screen")

	d.section("USB stick: a letter and a 10 MiB document, read without mounting")
	var files []usb.File
	for _, n := range []string{"alice-letter", "alice-document"} {
		b, _ := os.ReadFile(envs[n])
		files = append(files, usb.BytesFile(n+".env", b))
	}
	usbImg := filepath.Join(dir, "usb.img")
	if _, err := usb.WriteImage(usbImg, files, 0); err != nil {
		return err
	}
	d.say("courier wrote usb.img (FAT32); the appliance parses it in a limited child process")
	outs, err := a.IngestBundle(ctx, usbImg)
	if err != nil {
		return err
	}
	if err := d.reportOutcomes(outs); err != nil {
		return err
	}
	d.say("the same stick plugged again:")
	outs, err = a.IngestBundle(ctx, usbImg)
	if err != nil {
		return err
	}
	for _, o := range outs {
		if o.Result == nil || !o.Result.Replay {
			return fmt.Errorf("re-ingesting %s was not recognised as a replay: %s", o.Source, o.Error)
		}
	}
	d.say("both recognised as already stored (replay): nothing written twice")
	d.printStatus(a)

	d.section("Audit the four replicas with the public key only")
	a.Close()
	a = nil
	rep, err := d.audit(paths, "")
	if err != nil {
		return err
	}
	kept := filepath.Join(dir, "audit.checkpoint")
	os.WriteFile(kept, []byte(rep.Checkpoint), 0o644)
	d.say("checkpoint kept in audit.checkpoint for the next visit")

	d.section("A drive is pulled (offsite rotation); the vault carries on with three")
	three := []string{paths[0], paths[1], paths[3]}
	if a, err = d.open(three); err != nil {
		return err
	}
	p, err := seal("bob-password-v2", "bob", "mail-password", "password", "text/plain; charset=utf-8", 2, []byte("hunter3 — changed after the breach\n"))
	if err != nil {
		return err
	}
	o, err := a.IngestFile(ctx, p)
	if err != nil {
		return err
	}
	if err := d.reportOutcomes([]Outcome{o}); err != nil {
		return err
	}
	d.printStatus(a)
	d.say("drive 3 comes back and catches up from a healthy replica:")
	if err := a.AddDrive(paths[2], func(done, total uint64) {}); err != nil {
		return err
	}
	d.printStatus(a)
	a.Close()
	a = nil
	if _, err := d.audit(paths, kept); err != nil {
		return err
	}
	d.say("append-only since the kept checkpoint, and all four replicas agree")

	d.section("Restitution: Alice has died; two bailiffs release her items to Claire")
	bsec, bpub, err := demoBeneficiary()
	if err != nil {
		return err
	}
	os.WriteFile(filepath.Join(dir, "beneficiary.sec.asc"), bsec, 0o600)
	os.WriteFile(filepath.Join(dir, "beneficiary.pub.asc"), bpub, 0o644)
	if a, err = d.open(paths); err != nil {
		return err
	}
	var present []BailiffSecret
	for i := 1; i <= 2; i++ {
		sec, err := os.ReadFile(filepath.Join(dir, "ceremony", fmt.Sprintf("Bailiff-%d.sec.asc", i)))
		if err != nil {
			return err
		}
		present = append(present, BailiffSecret{Label: fmt.Sprintf("Bailiff %d", i), SecretKey: sec, Passphrase: []byte(demoBailiffPass(i))})
	}
	res, err := a.Restitute(ctx, RestituteOptions{
		UserID: "alice", Beneficiary: bpub, Reference: "Succession 2026/1234, Maître Durand",
		Bailiffs: present, OutDir: filepath.Join(dir, "restitution"), Say: d.say,
	})
	if err != nil {
		return err
	}
	d.say("restitution recorded on the drives as record %d; Bob's escrow key was never rebuilt", res.Record)

	d.section("The beneficiary opens the package with GnuPG")
	if err := d.beneficiaryOpens(res.Manifest); err != nil {
		return err
	}

	d.section("Leave the vault as the auditors will find it")
	a.Close()
	a = nil
	d.detachLoops()
	// Remember the image files so that `coffre audit/scrub/status` work on
	// DIR after the loop devices are gone.
	if a, err = d.open(d.images); err != nil {
		return err
	}
	st := a.Status()
	a.Close()
	a = nil
	d.say("%d records on 4 drives; try:", st.Records)
	d.say("  coffre audit --audit-key %s/audit.pub %s/drives/*.img", dir, dir)
	d.say("  COFFRE_PASSPHRASE=%s coffre scrub --state %s/state", demoPassphrase, dir)
	d.say("  COFFRE_PASSPHRASE=%s coffre status --state %s/state", demoPassphrase, dir)
	return nil
}

func demoBailiffPass(i int) string { return fmt.Sprintf("demo-bailiff-%d-passphrase", i) }

func (d *demo) reportOutcomes(outs []Outcome) error {
	for _, o := range outs {
		if o.Error != "" {
			return fmt.Errorf("%s: %s", o.Source, o.Error)
		}
		r := o.Result
		state := "stored"
		if r.Replay {
			state = "already stored"
		}
		d.say("%s: user %s item %s v%d (%d bytes) → record %d, receipt %s", state, r.UserID, r.ItemID, r.Version, r.Size, r.Index, filepath.Base(r.ReceiptPath))
	}
	return nil
}

func (d *demo) printStatus(a *Appliance) {
	st := a.Status()
	for _, dr := range st.Drives {
		d.say("  slot %d %-8s %3d records  lag %d", dr.Slot, dr.State, dr.Records, dr.Lag)
	}
}

func (d *demo) audit(paths []string, since string) (*storage.AuditReport, error) {
	id, err := LoadIdentity(d.state)
	if err != nil {
		return nil, err
	}
	v, err := noteVerifier(id.AuditKey)
	if err != nil {
		return nil, err
	}
	opts := storage.AuditOptions{Verifier: v}
	if since != "" {
		if opts.Since, err = os.ReadFile(since); err != nil {
			return nil, err
		}
	}
	rep, err := storage.Audit(paths, opts)
	if err != nil {
		return nil, err
	}
	for _, l := range strings.Split(strings.TrimSpace(rep.String()), "\n") {
		d.say("%s", l)
	}
	if !rep.OK {
		return nil, errors.New("the audit found problems")
	}
	return rep, nil
}

func (d *demo) beneficiaryOpens(m *bailiff.PackageManifest) error {
	gpg, err := exec.LookPath("gpg")
	if err != nil {
		return errors.New("gpg is not installed (apt-get install gnupg); the package is in restitution/")
	}
	home, err := os.MkdirTemp("", "coffre-demo-gpg")
	if err != nil {
		return err
	}
	defer os.RemoveAll(home)
	run := func(stdin io.Reader, args ...string) ([]byte, error) {
		cmd := exec.Command(gpg, append([]string{"--homedir", home, "--batch", "--quiet", "--no-tty"}, args...)...)
		cmd.Stdin = stdin
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("gpg %s: %v: %s", args[0], err, errb.String())
		}
		return out.Bytes(), nil
	}
	if _, err := run(nil, "--import", filepath.Join(d.dir, "beneficiary.sec.asc")); err != nil {
		return err
	}
	for _, it := range m.Items {
		p := filepath.Join(d.dir, "restitution", it.File)
		plain, err := run(nil, "--decrypt", p)
		if err != nil {
			return err
		}
		if sha256.Sum256(plain) != it.PlaintextSHA256 {
			return fmt.Errorf("gpg's plaintext of %s does not match the manifest digest", it.File)
		}
		preview := string(plain)
		if i := strings.IndexByte(preview, '\n'); i >= 0 {
			preview = preview[:i]
		}
		if len(plain) > 4096 {
			preview = fmt.Sprintf("(%d bytes of document)", len(plain))
		}
		d.say("gpg --decrypt %-32s OK, digest matches: %s", it.File, preview)
	}
	return nil
}

func (d *demo) detachLoops() {
	for _, l := range d.loops {
		l.Detach()
	}
	d.loops = nil
}

func makeImage(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// demoDocument is a deterministic pseudo-random "scanned document".
func demoDocument(n int) []byte {
	r := rand.New(rand.NewChaCha8([32]byte{'c', 'o', 'f', 'f', 'r', 'e'}))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// demoBeneficiary makes the beneficiary's OpenPGP key (P-521, GnuPG 2.2
// readable), armored secret and public.
func demoBeneficiary() (sec, pub []byte, err error) {
	e, err := envelope.GenerateIngestKey("Claire, demo beneficiary")
	if err != nil {
		return nil, nil, err
	}
	var s, p bytes.Buffer
	if err := envelope.WritePrivateKey(&s, e); err != nil {
		return nil, nil, err
	}
	if err := envelope.WritePublicKey(&p, e); err != nil {
		return nil, nil, err
	}
	return s.Bytes(), p.Bytes(), nil
}
