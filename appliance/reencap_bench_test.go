//go:build bench

package appliance_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"coffre/appliance"
	"coffre/bailiff"
	"coffre/internal/benchrow"
)

// The public-key floor of the quorum re-encapsulation kinds: the
// operations each object needs, with crypto/ecdh and crypto/ecdsa alone
// (no OpenPGP framing, no parsing, no drives), on the same number of
// workers as the job.
//
// Escrow rotation, per item: one ECDH to open the session key with the old
// escrow key, one ephemeral key and one ECDH to wrap it to the new key.
// Per user: k ECDH to open the shares, the new escrow key (an ECDSA and an
// ECDH key pair, two self-signatures), n ephemeral keys and ECDH to
// encrypt the new shares.
//
// Roster change, per escrow: k ECDH to open the shares, n ephemeral keys
// and ECDH to encrypt the new shares.
type floorKeys struct {
	priv *ecdh.PrivateKey
	pub  *ecdh.PublicKey
}

func newFloorKeys() floorKeys {
	k, _ := ecdh.P521().GenerateKey(rand.Reader)
	return floorKeys{k, k.PublicKey()}
}

func floorDecrypt(k floorKeys) {
	if _, err := k.priv.ECDH(k.pub); err != nil {
		panic(err)
	}
}

func floorEncrypt(to floorKeys) {
	eph, _ := ecdh.P521().GenerateKey(rand.Reader)
	if _, err := eph.ECDH(to.pub); err != nil {
		panic(err)
	}
}

func floorNewKey() {
	sk, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	ecdh.P521().GenerateKey(rand.Reader)
	for i := 0; i < 2; i++ {
		h := sha512.Sum512([]byte{byte(i)})
		if _, err := ecdsa.SignASN1(rand.Reader, sk, h[:]); err != nil {
			panic(err)
		}
	}
}

// processCPU is the process's user+system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measure runs f and returns its wall and CPU time.
func measure(f func()) (wall, cpu time.Duration) {
	c0, t0 := processCPU(), time.Now()
	f()
	return time.Since(t0), processCPU() - c0
}

// best keeps the fastest of several runs (wall time) and its CPU time.
type best struct{ wall, cpu time.Duration }

func (b *best) add(wall, cpu time.Duration) {
	if b.wall == 0 || wall < b.wall {
		b.wall, b.cpu = wall, cpu
	}
}

// runOn runs n jobs on w workers and returns the elapsed time.
func runOn(w, n int, job func(i int)) time.Duration {
	t0 := time.Now()
	var wg sync.WaitGroup
	next := make(chan int)
	for range w {
		wg.Go(func() {
			for i := range next {
				job(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return time.Since(t0)
}

func TestBenchReencapQuorum(t *testing.T) {
	// users × per items are rotated; escrows users in all are re-split.
	const users, per, escrows, k, n, workers, runs = 32, 32, 256, 2, 3, 2, 5
	e := newVaultSize(t, 256<<20)
	var envs []string
	for u := range escrows {
		m := 1
		if u < users {
			m = per
		}
		for i := range m {
			c := bytes.Repeat([]byte(fmt.Sprintf("item %d of user %d. ", i, u)), 100)[:1024]
			envs = append(envs, e.sealFast(fmt.Sprintf("user%d", u), fmt.Sprintf("item%d", i), 1, c))
		}
	}
	e.ingestEnvelopes(envs)
	var userIDs []string
	for u := range users {
		userIDs = append(userIDs, fmt.Sprintf("user%d", u))
	}
	secret := func(i int) appliance.BailiffSecret {
		sec, _ := os.ReadFile(e.path("ceremony", fmt.Sprintf("B%d.sec.asc", i)))
		pass, _ := os.ReadFile(e.path(fmt.Sprintf("pass%d", i)))
		return appliance.BailiffSecret{Label: fmt.Sprint(i), SecretKey: sec, Passphrase: bytes.TrimSpace(pass)}
	}
	fk := newFloorKeys()

	// Escrow rotation: ours (the whole job: keys opened, order signed and
	// recorded, every user rotated and committed) and the floor alternate
	// three times; the best of each counts.
	rotate := func() {
		a := e.open()
		defer a.Close()
		bailiff.ForgetVerifiedSignatures() // each job is a new `coffre` process
		job, err := a.RotateEscrows(context.Background(), appliance.RotationOptions{Users: userIDs, Max: -1,
			Unlock: appliance.QuorumUnlock{Bailiffs: []appliance.BailiffSecret{secret(1), secret(2)}}})
		if err != nil || job.Status != "done" || job.Total != users*per {
			t.Fatalf("rotation: %+v %v", job, err)
		}
	}
	rotateFloor := func() {
		runOn(workers, users, func(int) {
			for range k {
				floorDecrypt(fk)
			}
			floorNewKey()
			for range n {
				floorEncrypt(fk)
			}
			for range per {
				floorDecrypt(fk)
				floorEncrypt(fk)
			}
		})
	}
	var ours, floor best
	for range runs {
		// Opening the appliance is not part of the job.
		a := e.open()
		a.Close()
		ours.add(measure(rotate))
		floor.add(measure(rotateFloor))
	}
	items := float64(users * per)
	benchrow.Record(t, benchrow.Row{Name: "reencap: items re-wrapped per second (escrow rotation, 1 KiB items) vs public-key floor", Ours: items / ours.wall.Seconds(),
		Peer: "crypto/ecdh+crypto/ecdsa ops alone (per item 2 ECDH + keygen; per user k ECDH, new P-521 key pair x2 + 2 signatures, n x (keygen + ECDH))", PeerValue: items / floor.wall.Seconds(),
		Unit: "items/s", Goal: 0.8, HigherIsBetter: true,
		Note: fmt.Sprintf("%d users x %d items, 2 of 3, %d workers; ours is the whole job (2 bailiff keys opened, order signed and recorded, one batch per user on 4 drives, done record); best of %d alternating runs; CPU per item %.2f ms ours, %.2f ms floor", users, per, workers, runs,
			float64(ours.cpu.Microseconds())/1000/items, float64(floor.cpu.Microseconds())/1000/items)})

	// Roster change: B3 and B4 take turns on the roster.
	e.enrol(4)
	in, out := 3, 4
	change := func() {
		a := e.open()
		defer a.Close()
		fps := map[int]string{3: e.fingerprint(3), 4: e.fingerprint(4)}
		pub, _ := os.ReadFile(e.path("ceremony", fmt.Sprintf("B%d.pub.asc", out)))
		next, err := a.DraftRoster(0, []string{fps[in]}, []appliance.ImportedBailiff{{Name: fmt.Sprintf("B%d", out), Public: pub}})
		if err != nil {
			t.Fatal(err)
		}
		var job *appliance.ReencapJob
		bailiff.ForgetVerifiedSignatures() // each job is a new `coffre` process
		w, c := measure(func() {
			job, err = a.RosterChange(context.Background(), appliance.RosterChangeOptions{NewRoster: next.Marshal(), NewBailiffs: []appliance.BailiffSecret{secret(out)}, Max: -1,
				Unlock: appliance.QuorumUnlock{Bailiffs: []appliance.BailiffSecret{secret(1), secret(2)}}})
		})
		if err != nil || job.Status != "done" || job.Total != escrows {
			t.Fatalf("roster change: %+v %v", job, err)
		}
		ours.add(w, c)
		in, out = out, in
	}
	changeFloor := func() {
		runOn(workers, escrows, func(int) {
			for range k {
				floorDecrypt(fk)
			}
			for range n {
				floorEncrypt(fk)
			}
		})
	}
	ours, floor = best{}, best{}
	for range runs {
		change()
		floor.add(measure(changeFloor))
	}
	benchrow.Record(t, benchrow.Row{Name: "reencap: escrows re-split per second (roster change) vs public-key floor", Ours: escrows / ours.wall.Seconds(),
		Peer: "crypto/ecdh ops alone (per escrow k ECDH, n x (keygen + ECDH))", PeerValue: escrows / floor.wall.Seconds(),
		Unit: "escrows/s", Goal: 0.8, HigherIsBetter: true,
		Note: fmt.Sprintf("%d escrows, 2 of 3, %d workers; ours is the whole job (3 bailiff keys opened, new roster and order signed, approve batch with a new verify-shares escrow, done record); best of %d alternating runs; CPU per escrow %.2f ms ours, %.2f ms floor", escrows, workers, runs,
			float64(ours.cpu.Microseconds())/1000/escrows, float64(floor.cpu.Microseconds())/1000/escrows)})
}
