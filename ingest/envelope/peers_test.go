package envelope

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"coffre/internal/testenv"
)

// TestSequoia: Sequoia (sq) decrypts what SealItem writes, and what
// `sq encrypt` writes to the ingest certificate opens once bound.
func TestSequoia(t *testing.T) {
	sq := testenv.RequireTool(t, "sq", "sq")
	k := getKeys(t)
	dir := t.TempDir()
	var pub, sec bytes.Buffer
	if err := WritePublicKey(&pub, k.ingest); err != nil {
		t.Fatal(err)
	}
	if err := WritePrivateKey(&sec, k.ingest); err != nil {
		t.Fatal(err)
	}
	pubPath, secPath := filepath.Join(dir, "ingest.pub.asc"), filepath.Join(dir, "ingest.sec.asc")
	os.WriteFile(pubPath, pub.Bytes(), 0o600)
	os.WriteFile(secPath, sec.Bytes(), 0o600)
	run := func(stdin []byte, args ...string) []byte {
		t.Helper()
		cmd := exec.Command(sq, args...)
		cmd.Env = append(os.Environ(), "HOME="+dir)
		cmd.Stdin = bytes.NewReader(stdin)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("sq %v: %v\n%s", args, err, errb.Bytes())
		}
		return out.Bytes()
	}
	content := []byte("sequoia interop")
	m := testManifest(content)
	item, _ := EncodeItem(m)

	got := run(seal(t, k.ingest, m, content), "decrypt", "--recipient-key", secPath)
	if !bytes.Equal(got, append(item, content...)) {
		t.Fatal("sq decrypt output differs from the item layout")
	}

	sealed := run(append(item, content...), "encrypt", "--binary", "--recipient-cert", pubPath)
	_, out, err := openAll(bind(t, k.courier, m.UserID, NewUploadID(), sealed), params(k))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, content) {
		t.Fatal("content differs")
	}
}

// TestRNP: RNP decrypts what SealItem writes, and what `rnp --encrypt`
// writes to the ingest key opens once bound.
func TestRNP(t *testing.T) {
	rnp := testenv.RequireTool(t, "rnp", "rnp")
	rnpkeys := testenv.RequireTool(t, "rnpkeys", "rnp")
	k := getKeys(t)
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	var sec bytes.Buffer
	if err := WritePrivateKey(&sec, k.ingest); err != nil {
		t.Fatal(err)
	}
	secPath := filepath.Join(dir, "ingest.sec.asc")
	os.WriteFile(secPath, sec.Bytes(), 0o600)
	run := func(bin string, args ...string) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--homedir", home}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", bin, args, err, out)
		}
	}
	run(rnpkeys, "--import", secPath)
	content := []byte("rnp interop")
	m := testManifest(content)
	item, _ := EncodeItem(m)

	sealedPath, outPath := filepath.Join(dir, "sealed.pgp"), filepath.Join(dir, "out.bin")
	os.WriteFile(sealedPath, seal(t, k.ingest, m, content), 0o600)
	run(rnp, "--decrypt", sealedPath, "--output", outPath)
	got, err := os.ReadFile(outPath)
	if err != nil || !bytes.Equal(got, append(item, content...)) {
		t.Fatalf("rnp --decrypt output differs from the item layout (%v)", err)
	}

	plainPath, encPath := filepath.Join(dir, "item.bin"), filepath.Join(dir, "enc.pgp")
	os.WriteFile(plainPath, append(item, content...), 0o600)
	run(rnp, "--encrypt", "-r", hexs(k.ingest.PrimaryKey.Fingerprint), plainPath, "--output", encPath)
	sealed, err := os.ReadFile(encPath)
	if err != nil {
		t.Fatal(err)
	}
	_, out, err := openAll(bind(t, k.courier, m.UserID, NewUploadID(), sealed), params(k))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, content) {
		t.Fatal("content differs")
	}
}
