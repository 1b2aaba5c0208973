package hsm

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"coffre/hsm/swtpm"
)

var genCorpus = flag.Bool("gencorpus", false, "regenerate the committed fuzz seed corpora in testdata/fuzz")

// TestGenCorpus writes the seed corpora from real keystore files (soft and
// TPM on swtpm). Run with -gencorpus; otherwise it checks they exist.
func TestGenCorpus(t *testing.T) {
	targets := []string{"FuzzParseHeader", "FuzzParseSecretFile", "FuzzParseApproval"}
	if !*genCorpus {
		for _, tg := range targets {
			if ents, _ := os.ReadDir(filepath.Join("testdata", "fuzz", tg)); len(ents) < 3 {
				t.Errorf("testdata/fuzz/%s has %d seeds: run go test -run TestGenCorpus -gencorpus", tg, len(ents))
			}
		}
		return
	}
	seeds := map[string][][]byte{}
	soft := t.TempDir()
	ks, err := CreateSoft(soft, []byte("corpus passphrase"), TestSoftParams)
	if err != nil {
		t.Fatal(err)
	}
	ks.Seal("record", []byte("a secret"))
	ks.Close()
	sim := swtpm.Start(t)
	bank, err := OpenPCRBank(sim.Socket, 16)
	if err != nil {
		t.Fatal(err)
	}
	bank.Extend(16, make([]byte, 32))
	bank.Close()
	tdir := t.TempDir()
	tk, err := CreateTPM(tdir, TPMOptions{Device: sim.Socket, MeasurePCR: 16, PCRs: []int{7, 16}, PIN: []byte("1234")})
	if err != nil {
		t.Fatal(err)
	}
	tk.Seal("record", []byte("a secret"))
	tk.Close()
	for _, d := range []string{soft, tdir} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(d, e.Name()))
			switch filepath.Ext(e.Name()) {
			case ".hdr":
				seeds["FuzzParseHeader"] = append(seeds["FuzzParseHeader"], b, b[:len(b)-1])
			case ".key":
				seeds["FuzzParseSecretFile"] = append(seeds["FuzzParseSecretFile"], b, b[:len(b)/2])
			case ".pol":
				seeds["FuzzParseApproval"] = append(seeds["FuzzParseApproval"], b, b[:len(b)-1])
				c := append([]byte{}, b...)
				c[4] = 2
				seeds["FuzzParseApproval"] = append(seeds["FuzzParseApproval"], c)
			}
		}
	}
	for tg, list := range seeds {
		d := filepath.Join("testdata", "fuzz", tg)
		os.RemoveAll(d)
		os.MkdirAll(d, 0o755)
		for i, b := range list {
			os.WriteFile(filepath.Join(d, fmt.Sprintf("seed-%02d", i)), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)), 0o644)
		}
	}
}
