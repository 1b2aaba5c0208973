//go:build bench

package hsm_test

import (
	"path/filepath"
	"testing"
	"time"

	"coffre/hsm"
	"coffre/hsm/swtpm"
	"coffre/internal/benchrow"

	"golang.org/x/crypto/argon2"
)

func timeIt(n int, f func()) float64 {
	f() // warm up
	start := time.Now()
	for range n {
		f()
	}
	return float64(time.Since(start).Microseconds()) / 1000 / float64(n)
}

// TestBenchUnseal: unseal latency on the TPM (swtpm, salted policy session,
// PolicyAuthorize ticket) beside the soft keystore.
func TestBenchUnseal(t *testing.T) {
	sim := swtpm.Start(t)
	measure(t, sim, "firmware")
	tk, err := hsm.CreateTPM(filepath.Join(t.TempDir(), "tpm"), tpmOpts(sim, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	sk, err := hsm.CreateSoft(t.TempDir(), testPass, hsm.DefaultSoftParams)
	if err != nil {
		t.Fatal(err)
	}
	defer sk.Close()
	secret := make([]byte, 133) // an armored P-521 key is larger; a record key is 32
	for _, ks := range []hsm.Keystore{tk, sk} {
		if err := ks.Seal("k", secret); err != nil {
			t.Fatal(err)
		}
	}
	tpmMs := timeIt(20, func() {
		if _, err := tk.Unseal("k"); err != nil {
			t.Fatal(err)
		}
	})
	softMs := timeIt(200, func() {
		if _, err := sk.Unseal("k"); err != nil {
			t.Fatal(err)
		}
	})
	benchrow.Record(t, benchrow.Row{Name: "hsm: unseal latency, TPM (swtpm) vs soft keystore", Ours: tpmMs,
		Peer: "hsm soft keystore Unseal (file + XChaCha20-Poly1305)", PeerValue: softMs, Unit: "ms",
		Note: "the TPM pays for a salted policy session, LoadExternal, VerifySignature and Load; swtpm is a local process on a unix socket; discrete TPMs are typically 10-100x slower"})
}

// TestBenchOpenSoft: opening the soft keystore (Argon2id default params +
// check) beside a bare Argon2id derivation with the same parameters.
func TestBenchOpenSoft(t *testing.T) {
	dir := t.TempDir()
	p := hsm.DefaultSoftParams
	ks, err := hsm.CreateSoft(dir, testPass, p)
	if err != nil {
		t.Fatal(err)
	}
	ks.Close()
	// Interleaved so that machine noise hits both alike.
	var ours, peer float64
	for range 4 {
		ours += timeIt(1, func() {
			ks, err := hsm.OpenSoft(dir, testPass)
			if err != nil {
				t.Fatal(err)
			}
			ks.Close()
		})
		peer += timeIt(1, func() { argon2.IDKey(testPass, make([]byte, 32), p.Time, p.MemoryKiB, p.Threads, 32) })
	}
	ours, peer = ours/4, peer/4
	benchrow.Record(t, benchrow.Row{Name: "hsm: OpenSoft (Argon2id t=3 m=64MiB p=4)", Ours: ours,
		Peer: "bare argon2.IDKey, same parameters", PeerValue: peer, Unit: "ms",
		Note: "OpenSoft = read header + Argon2id + two HKDF + HMAC check"})
}

// TestBenchSelfTest: the start-up known-answer self-test beside one bare
// Argon2id derivation at default parameters (what start-up costs anyway).
func TestBenchSelfTest(t *testing.T) {
	ours := timeIt(5, func() {
		if err := hsm.SelfTest(); err != nil {
			t.Fatal(err)
		}
	})
	p := hsm.DefaultSoftParams
	peer := timeIt(3, func() { argon2.IDKey(testPass, make([]byte, 32), p.Time, p.MemoryKiB, p.Threads, 32) })
	benchrow.Record(t, benchrow.Row{Name: "hsm: SelfTest (12 KATs) at start-up", Ours: ours,
		Peer: "one bare Argon2id derivation (t=3 m=64MiB p=4)", PeerValue: peer, Unit: "ms"})
}
