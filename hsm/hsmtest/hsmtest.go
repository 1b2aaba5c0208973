// Package hsmtest is the conformance suite every hsm.Keystore backend passes:
// the soft keystore and the TPM keystore run the same Run.
package hsmtest

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"coffre/hsm"
)

// Backend describes a keystore under test.
type Backend struct {
	// Create makes a new, empty keystore in a fresh directory and returns
	// it with a reopen function that opens the same keystore again (after
	// Close) with the right credentials.
	Create func(t *testing.T) (ks hsm.Keystore, reopen func(t *testing.T) hsm.Keystore)
	// ReopenWrong, when set, opens the same keystore with a wrong passphrase
	// or PIN and returns the error it gets (nil if it opened, which fails the
	// suite). For backends where the PIN is checked at Unseal, it returns the
	// error of the first Unseal.
	ReopenWrong func(t *testing.T, ks hsm.Keystore, name string) error
}

// Run runs the conformance suite against b.
func Run(t *testing.T, b Backend) {
	t.Run("RoundTrip", func(t *testing.T) {
		ks, _ := b.Create(t)
		defer ks.Close()
		for _, sz := range []int{1, 32, 66, 4096, hsm.MaxSecretLen} {
			name := fmt.Sprintf("k-%d", sz)
			secret := pattern(sz)
			if err := ks.Seal(name, secret); err != nil {
				t.Fatalf("Seal(%s): %v", name, err)
			}
			got, err := ks.Unseal(name)
			if err != nil {
				t.Fatalf("Unseal(%s): %v", name, err)
			}
			if !bytes.Equal(got, secret) {
				t.Fatalf("Unseal(%s) returned different bytes", name)
			}
		}
	})
	t.Run("Limits", func(t *testing.T) {
		ks, _ := b.Create(t)
		defer ks.Close()
		if err := ks.Seal("empty", nil); err == nil {
			t.Error("Seal of an empty secret succeeded")
		}
		if err := ks.Seal("big", pattern(hsm.MaxSecretLen+1)); err == nil {
			t.Error("Seal of an oversized secret succeeded")
		}
		for _, bad := range []string{"", "../x", "A", ".hidden", "a/b", strings.Repeat("a", hsm.MaxNameLen+1), "keystore.hdr\x00"} {
			if err := ks.Seal(bad, []byte("x")); !errors.Is(err, hsm.ErrBadName) {
				t.Errorf("Seal(%q) = %v, want ErrBadName", bad, err)
			}
			if _, err := ks.Unseal(bad); !errors.Is(err, hsm.ErrBadName) {
				t.Errorf("Unseal(%q) = %v, want ErrBadName", bad, err)
			}
		}
	})
	t.Run("ExistsNotFound", func(t *testing.T) {
		ks, _ := b.Create(t)
		defer ks.Close()
		if ks.Has("a") {
			t.Fatal("Has(a) on an empty keystore")
		}
		if _, err := ks.Unseal("a"); !errors.Is(err, hsm.ErrNotFound) {
			t.Fatalf("Unseal(missing) = %v, want ErrNotFound", err)
		}
		if err := ks.Delete("a"); !errors.Is(err, hsm.ErrNotFound) {
			t.Fatalf("Delete(missing) = %v, want ErrNotFound", err)
		}
		if err := ks.Seal("a", []byte("first")); err != nil {
			t.Fatal(err)
		}
		if err := ks.Seal("a", []byte("second")); !errors.Is(err, hsm.ErrExists) {
			t.Fatalf("second Seal = %v, want ErrExists", err)
		}
		got, err := ks.Unseal("a")
		if err != nil || string(got) != "first" {
			t.Fatalf("Unseal after refused overwrite = %q, %v; want first", got, err)
		}
		if !ks.Has("a") {
			t.Fatal("Has(a) false after Seal")
		}
	})
	t.Run("NamesDelete", func(t *testing.T) {
		ks, _ := b.Create(t)
		defer ks.Close()
		want := []string{"audit.ed25519", "catalog", "ingest.pgp", "record-key", "wrap_key"}
		for _, n := range []string{"wrap_key", "ingest.pgp", "audit.ed25519", "record-key", "catalog"} {
			if err := ks.Seal(n, []byte("secret of "+n)); err != nil {
				t.Fatal(err)
			}
		}
		got, err := ks.Names()
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("Names = %v, %v; want %v", got, err, want)
		}
		if err := ks.Delete("catalog"); err != nil {
			t.Fatal(err)
		}
		if ks.Has("catalog") {
			t.Fatal("Has after Delete")
		}
		got, _ = ks.Names()
		if !slices.Equal(got, []string{"audit.ed25519", "ingest.pgp", "record-key", "wrap_key"}) {
			t.Fatalf("Names after Delete = %v", got)
		}
		if err := ks.Seal("catalog", []byte("again")); err != nil {
			t.Fatalf("Seal after Delete: %v", err)
		}
	})
	t.Run("Persistence", func(t *testing.T) {
		ks, reopen := b.Create(t)
		secrets := map[string][]byte{"one": pattern(17), "two": pattern(300)}
		for n, s := range secrets {
			if err := ks.Seal(n, s); err != nil {
				t.Fatal(err)
			}
		}
		if err := ks.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := ks.Unseal("one"); !errors.Is(err, hsm.ErrClosed) {
			t.Fatalf("Unseal after Close = %v, want ErrClosed", err)
		}
		ks2 := reopen(t)
		defer ks2.Close()
		for n, s := range secrets {
			got, err := ks2.Unseal(n)
			if err != nil || !bytes.Equal(got, s) {
				t.Fatalf("after reopen Unseal(%s) = %v, err %v", n, got != nil, err)
			}
		}
	})
	t.Run("Concurrent", func(t *testing.T) {
		ks, _ := b.Create(t)
		defer ks.Close()
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n := fmt.Sprintf("c%d", i)
				if err := ks.Seal(n, pattern(10+i)); err != nil {
					errs <- err
					return
				}
				got, err := ks.Unseal(n)
				if err != nil || !bytes.Equal(got, pattern(10+i)) {
					errs <- fmt.Errorf("unseal %s: %v", n, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
	if b.ReopenWrong != nil {
		t.Run("WrongCredential", func(t *testing.T) {
			ks, _ := b.Create(t)
			secret := []byte("correct horse battery staple 0123456789")
			if err := ks.Seal("w", secret); err != nil {
				t.Fatal(err)
			}
			err := b.ReopenWrong(t, ks, "w")
			if err == nil {
				t.Fatal("wrong passphrase/PIN accepted")
			}
			if strings.Contains(err.Error(), string(secret)) {
				t.Fatal("error carries the secret")
			}
		})
	}
	t.Run("NoSecretInErrorsOrLogs", func(t *testing.T) {
		var logs bytes.Buffer
		old := slog.Default()
		slog.SetDefault(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
		defer slog.SetDefault(old)
		ks, _ := b.Create(t)
		defer ks.Close()
		secret := []byte("SECRET-MARKER-7f3a9c")
		if err := ks.Seal("s", secret); err != nil {
			t.Fatal(err)
		}
		var errs []error
		errs = append(errs, ks.Seal("s", secret))
		_, err := ks.Unseal("nope")
		errs = append(errs, err, ks.Delete("nope"), ks.Seal("BAD", secret))
		for _, err := range errs {
			if err == nil {
				t.Fatal("expected an error")
			}
			if strings.Contains(err.Error(), string(secret)) {
				t.Fatalf("error %q carries the secret", err)
			}
		}
		if bytes.Contains(logs.Bytes(), secret) {
			t.Fatal("logs carry the secret")
		}
	})
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + n)
	}
	return b
}
