//go:build bench

package appliance_test

import (
	"cmp"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/mlkem"
	"crypto/rand"
	"crypto/sha512"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/mldsa_eddsa"
	"github.com/ProtonMail/go-crypto/openpgp/mlkem_ecdh"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/ProtonMail/go-crypto/openpgp/x448"

	"coffre/appliance"
	"coffre/bailiff"
	"coffre/internal/benchrow"
)

// TestBenchUpgrade measures the algorithm upgrade (kind 4) through
// Appliance.Upgrade — read from the drives, decrypt with the old P-521
// escrow key, seal afresh to the post-quantum one, append with the signed
// step records, index — in items per second, against the floor of the
// public-key operations the same items need, timed alone in the same run
// on the same cores:
//
//   - per item: one P-521 ECDH (the old PKESK; crypto/ecdh), one ML-KEM-1024
//     encapsulation (crypto/mlkem) and one X448 ephemeral key and DH
//     (go-crypto's x448.Encrypt) for the new PKESK;
//   - per user: the new escrow key (ML-DSA-87+Ed448 and ML-KEM-1024+X448 key
//     generation, its two binding signatures), k = 2 share decryptions and
//     n = 3 share encryptions (P-521 ECDH);
//   - per batch: the step record's ECDSA P-521 signature.
//
// Ours is timed from the moment the bailiffs have signed the order (their
// passphrase KDF and signatures, a ceremony cost, are outside) to the last
// batch appended: every user's setup, every item, every append and index.
func TestBenchUpgrade(t *testing.T) {
	// Rounds alternate ours and the floor, each measured right after the
	// other (the machine is shared: a pair sees about the same load); the
	// pair with the median ratio is reported.
	const rounds, usersPerRound, perUser = 5, 5, 100
	e := newVaultSize(t, 256<<20)
	items := map[string][]byte{}
	payload := make([]byte, 1<<10)
	for u := 0; u < rounds*usersPerRound; u++ {
		for i := 0; i < perUser; i++ {
			rand.Read(payload)
			items[fmt.Sprintf("u%02d-%03d", u, i)] = append([]byte(nil), payload...)
		}
	}
	e.ingestItems(items, func(n string) string { return "user" + n[1:3] })

	a := e.open()
	defer a.Close()
	type pair struct{ ours, floor float64 }
	var pairs []pair
	var steady []float64 // items/s between the first and the last append (pipeline full)
	var n, usersIn, batches int
	var oursCPU, floorCPU time.Duration // process CPU time per window, summed over rounds
	var oursItems, floorItems int
	for rd := 0; rd < rounds; rd++ {
		var users []string
		for u := 0; u < usersPerRound; u++ {
			users = append(users, fmt.Sprintf("user%02d", rd*usersPerRound+u))
		}
		var t0, t1, tFirst time.Time
		var c0, c1 time.Duration
		var firstDone int
		bailiff.ForgetVerifiedSignatures() // each job is a new `coffre` process
		job, err := a.Upgrade(context.Background(), appliance.UpgradeOptions{
			At: day2036, Users: users, Bailiffs: e.bailiffSecrets(1, 2),
			Say: func(format string, args ...any) {
				if strings.HasPrefix(fmt.Sprintf(format, args...), "upgrade order signed") {
					t0, c0 = time.Now(), cpuTime() // the last signature starts the window
				}
			},
			Progress: func(done, total int) {
				t1, c1 = time.Now(), cpuTime()
				if tFirst.IsZero() {
					tFirst, firstDone = t1, done
				}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		if job.Status != "done" || job.UsersDone != usersPerRound {
			t.Fatalf("job %+v", job)
		}
		if t0.IsZero() || t1.IsZero() {
			t.Fatal("the job never said it signed the order, or never progressed: no window to time")
		}
		n, usersIn, batches = job.Done, usersPerRound, usersPerRound // one batch per user
		p := pair{ours: float64(n) / t1.Sub(t0).Seconds()}
		steady = append(steady, float64(n-firstDone)/t1.Sub(tFirst).Seconds())
		oursCPU += c1 - c0
		oursItems += n
		c2 := cpuTime()
		p.floor = floorRate(t, n, usersIn, batches)
		floorCPU += cpuTime() - c2
		floorItems += n
		pairs = append(pairs, p)
	}
	slices.SortFunc(pairs, func(a, b pair) int { return cmp.Compare(a.ours/a.floor, b.ours/b.floor) })
	med := pairs[len(pairs)/2]
	slices.Sort(steady)
	floors := make([]float64, len(pairs))
	for i, p := range pairs {
		floors[i] = p.floor
	}
	slices.Sort(floors)
	steadyRatio := steady[len(steady)/2] / floors[len(floors)/2]
	var all []string
	for _, p := range pairs {
		all = append(all, fmt.Sprintf("%.2f", p.ours/p.floor))
	}
	cpuRatio := (float64(floorCPU) / float64(floorItems)) / (float64(oursCPU) / float64(oursItems))
	benchrow.Record(t, benchrow.Row{
		Name: "reencap: items upgraded to post-quantum per second (1 KiB, kind 4) vs public-key floor", Ours: med.ours,
		Peer: "the public-key operations alone (P-521 ECDH + ML-KEM-1024 + X448 per item; escrow keygen/signatures and shares per user; step signature per batch)", PeerValue: med.floor,
		Unit: "items/s", Goal: 0.8, HigherIsBetter: true,
		Note: fmt.Sprintf("whole job after the order is signed; median of %d adjacent pairs (ratios %s) of %d items (%d users, %d batches) each, %d workers; 4 image drives, write quorum 3, fsync per batch; CPU time per item, floor/ours: %.2f; between first and last append (pipeline full): %.2f",
			rounds, strings.Join(all, " "), n, usersIn, batches, runtime.GOMAXPROCS(0), cpuRatio, steadyRatio),
	})
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// floorRate times the public-key operations of n items, u users and b
// batches, on all cores, and returns items per second.
func floorRate(t *testing.T, n, u, b int) float64 {
	oldPriv, _ := ecdh.P521().GenerateKey(rand.Reader)
	senderEph, _ := ecdh.P521().GenerateKey(rand.Reader)
	bailiffPub, _ := ecdh.P521().GenerateKey(rand.Reader)
	dk, _ := mlkem.GenerateKey1024()
	ek := dk.EncapsulationKey()
	xk, err := x448.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edCurve, _ := packet.GetEdDSACurveFromAlgID(packet.PubKeyAlgoMldsa87Ed448)
	dsa, _ := packet.GetMldsaFromAlgID(packet.PubKeyAlgoMldsa87Ed448)
	xCurve, _ := packet.GetECDHCurveFromAlgID(packet.PubKeyAlgoMlkem1024X448)
	kem, _ := packet.GetMlkemFromAlgID(packet.PubKeyAlgoMlkem1024X448)
	stepKey, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	sk := make([]byte, 32)
	msg := sha512.Sum512([]byte("binding signature"))

	item := func() error {
		if _, err := oldPriv.ECDH(senderEph.PublicKey()); err != nil { // old PKESK
			return err
		}
		_, _ = ek.Encapsulate()                                   // new PKESK: ML-KEM-1024 …
		_, _, err := x448.Encrypt(rand.Reader, &xk.PublicKey, sk) // … and X448
		return err
	}
	user := func() error {
		sig, err := mldsa_eddsa.GenerateKey(rand.Reader, uint8(packet.PubKeyAlgoMldsa87Ed448), edCurve, dsa)
		if err != nil {
			return err
		}
		if _, err := mlkem_ecdh.GenerateKey(rand.Reader, uint8(packet.PubKeyAlgoMlkem1024X448), xCurve, kem); err != nil {
			return err
		}
		for i := 0; i < 2; i++ { // direct-key and subkey binding signatures
			if _, _, err := mldsa_eddsa.Sign(sig, msg[:]); err != nil {
				return err
			}
		}
		for i := 0; i < 2; i++ { // k shares opened
			if _, err := oldPriv.ECDH(senderEph.PublicKey()); err != nil {
				return err
			}
		}
		for i := 0; i < 3; i++ { // n shares sealed
			eph, err := ecdh.P521().GenerateKey(rand.Reader)
			if err != nil {
				return err
			}
			if _, err := eph.ECDH(bailiffPub.PublicKey()); err != nil {
				return err
			}
		}
		return nil
	}
	batch := func() error {
		_, err := ecdsa.SignASN1(rand.Reader, stepKey, msg[:])
		return err
	}
	workers := runtime.GOMAXPROCS(0)
	run := func() time.Duration {
		var next atomic.Int64
		var wg sync.WaitGroup
		var failed atomic.Value
		total := n + u + b
		start := time.Now()
		for w := 0; w < workers; w++ {
			wg.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					var err error
					switch {
					case i >= total:
						return
					case i < n:
						err = item()
					case i < n+u:
						err = user()
					default:
						err = batch()
					}
					if err != nil {
						failed.Store(err)
					}
				}
			})
		}
		wg.Wait()
		if e := failed.Load(); e != nil {
			t.Fatal(e)
		}
		return time.Since(start)
	}
	return float64(n) / run().Seconds()
}
