package hsm_test

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffre/hsm"
	"coffre/hsm/hsmtest"
)

var testPass = []byte("test passphrase, not a real one")

func TestSoftConformance(t *testing.T) {
	hsmtest.Run(t, hsmtest.Backend{
		Create: func(t *testing.T) (hsm.Keystore, func(t *testing.T) hsm.Keystore) {
			dir := filepath.Join(t.TempDir(), "ks")
			ks, err := hsm.CreateSoft(dir, testPass, hsm.TestSoftParams)
			if err != nil {
				t.Fatal(err)
			}
			return ks, func(t *testing.T) hsm.Keystore {
				ks, err := hsm.OpenSoft(dir, testPass)
				if err != nil {
					t.Fatal(err)
				}
				return ks
			}
		},
		ReopenWrong: func(t *testing.T, ks hsm.Keystore, name string) error {
			dir := ks.(*hsm.Soft).Dir()
			_, err := hsm.OpenSoft(dir, []byte("wrong passphrase!"))
			if err != nil && !errors.Is(err, hsm.ErrWrongPassphrase) {
				t.Errorf("wrong passphrase gave %v, want ErrWrongPassphrase", err)
			}
			return err
		},
	})
}

func TestSoftRefusedInProduction(t *testing.T) {
	dir := t.TempDir()
	if _, err := hsm.CreateSoft(dir, testPass, hsm.TestSoftParams); err != nil {
		t.Fatal(err)
	}
	_, err := hsm.Open(hsm.Config{Backend: hsm.BackendSoft, Dir: dir, Passphrase: testPass, Production: true})
	if !errors.Is(err, hsm.ErrSoftInProduction) {
		t.Fatalf("Open(soft, production) = %v, want ErrSoftInProduction", err)
	}
	ks, err := hsm.Open(hsm.Config{Backend: hsm.BackendSoft, Dir: dir, Passphrase: testPass})
	if err != nil {
		t.Fatalf("Open(soft, development) = %v", err)
	}
	ks.Close()
}

func TestSoftWarnsLoudly(t *testing.T) {
	var logs bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, nil)))
	defer slog.SetDefault(old)
	dir := t.TempDir()
	ks, err := hsm.CreateSoft(dir, testPass, hsm.TestSoftParams)
	if err != nil {
		t.Fatal(err)
	}
	ks.Close()
	logs.Reset()
	ks, err = hsm.OpenSoft(dir, testPass)
	if err != nil {
		t.Fatal(err)
	}
	ks.Close()
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), hsm.SoftWarning) {
		t.Fatalf("OpenSoft did not warn: %q", logs.String())
	}
	if strings.Contains(logs.String(), string(testPass)) {
		t.Fatal("passphrase in logs")
	}
}

func TestSoftFiles(t *testing.T) {
	dir := t.TempDir()
	ks, err := hsm.CreateSoft(dir, testPass, hsm.TestSoftParams)
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	if _, err := hsm.CreateSoft(dir, testPass, hsm.TestSoftParams); err == nil {
		t.Fatal("CreateSoft over an existing keystore succeeded")
	}
	if err := ks.Seal("record", []byte("0123456789abcdef")); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
		fi, _ := e.Info()
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", e.Name(), fi.Mode().Perm())
		}
	}
	if strings.Join(names, ",") != "keystore.hdr,record.key" {
		t.Fatalf("keystore files = %v (temporary file left behind?)", names)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "record.key"))
	if bytes.Contains(b, []byte("0123456789abcdef")) {
		t.Fatal("secret stored in the clear")
	}
	// A secret file renamed to another name fails authentication (the
	// name is associated data).
	if err := os.WriteFile(filepath.Join(dir, "other.key"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Unseal("other"); err == nil || errors.Is(err, hsm.ErrNotFound) {
		t.Fatalf("Unseal of a renamed secret = %v, want an authentication error", err)
	}
	// A flipped byte fails authentication.
	b[len(b)-1] ^= 1
	os.Remove(filepath.Join(dir, "record.key"))
	if err := os.WriteFile(filepath.Join(dir, "record.key"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Unseal("record"); err == nil {
		t.Fatal("Unseal of a flipped secret succeeded")
	}
}

func TestSoftHeaderTamper(t *testing.T) {
	dir := t.TempDir()
	ks, err := hsm.CreateSoft(dir, testPass, hsm.TestSoftParams)
	if err != nil {
		t.Fatal(err)
	}
	ks.Close()
	hdr := filepath.Join(dir, "keystore.hdr")
	orig, _ := os.ReadFile(hdr)
	for i := range orig {
		b := bytes.Clone(orig)
		b[i] ^= 0x01
		os.WriteFile(hdr, b, 0o600)
		if ks, err := hsm.OpenSoft(dir, testPass); err == nil {
			ks.Close()
			t.Fatalf("OpenSoft accepted a header with byte %d flipped", i)
		}
	}
	os.WriteFile(hdr, orig, 0o600)
	if ks, err := hsm.OpenSoft(dir, testPass); err != nil {
		t.Fatalf("restored header: %v", err)
	} else {
		ks.Close()
	}
}

func TestSoftCounters(t *testing.T) {
	dir := t.TempDir()
	ks, err := hsm.CreateSoft(dir, testPass, hsm.TestSoftParams)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := ks.Counter("ckpt"); err != nil || v != 0 {
		t.Fatalf("new counter = %d, %v", v, err)
	}
	for want := uint64(1); want <= 3; want++ {
		if v, err := ks.Increment("ckpt"); err != nil || v != want {
			t.Fatalf("Increment = %d, %v; want %d", v, err, want)
		}
	}
	ks.Close()
	ks, err = hsm.OpenSoft(dir, testPass)
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	if v, err := ks.Counter("ckpt"); err != nil || v != 3 {
		t.Fatalf("counter after reopen = %d, %v; want 3", v, err)
	}
	if ks.Has("ckpt") {
		t.Fatal("a counter is listed as a secret")
	}
}

func TestCreateSoftRejectsBadParams(t *testing.T) {
	for _, p := range []hsm.SoftParams{{0, 64, 1}, {1, 4, 1}, {1, 64, 0}, {1, 8, 4}, {65, 64, 1}} {
		if _, err := hsm.CreateSoft(t.TempDir(), testPass, p); err == nil {
			t.Errorf("CreateSoft accepted params %+v", p)
		}
	}
	if _, err := hsm.CreateSoft(t.TempDir(), []byte("short"), hsm.TestSoftParams); err == nil {
		t.Error("CreateSoft accepted a 5-byte passphrase")
	}
}
