package bailiff

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Vectors of the post-quantum escrow bundle (testdata/escrow-v2/) and of
// re-encapsulation orders and steps (testdata/reencap/), made with the
// vector bailiffs and roster of testdata/roster/. Regenerate with
// `go test -tags vectorgen -run TestWritePQVectors ./bailiff/` (after COFFRE_WRITE_VECTORS=1 when the roster
// vectors change); testdata/item-key-pq.sec, the fixed key of
// FuzzOpenItemPQ, is written then too.

func TestEscrowV2Vectors(t *testing.T) { checkEscrowVectors(t, "escrow-v2", 2) }

func TestReencapVectors(t *testing.T) {
	keys := vectorBailiffKeys(t)
	r := vectorRoster(t)
	signer := keys[0] // the vectors' steps are signed by bailiff 1 standing in for the appliance
	for _, v := range loadVectors(t, "reencap") {
		t.Run(v.Name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(testdataRoot, "reencap", v.File))
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(v.Name, "step") {
				s, err := ParseReencapStep(b)
				if v.Expect == "parse-error" {
					if err == nil {
						t.Fatal("parsed, want a parse error")
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(s.Marshal(), b) {
					t.Fatal("re-encoding differs")
				}
				if err := s.Verify(signer); (err == nil) != (v.Expect == "valid") {
					t.Fatalf("verify: %v, want %s", err, v.Expect)
				}
				return
			}
			o, err := ParseReencapOrder(b)
			if v.Expect == "parse-error" {
				if err == nil {
					t.Fatal("parsed, want a parse error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(o.Marshal(), b) {
				t.Fatal("re-encoding differs")
			}
			if err := o.Verify(r); (err == nil) != (v.Expect == "valid") {
				t.Fatalf("verify: %v, want %s", err, v.Expect)
			}
		})
	}
}
