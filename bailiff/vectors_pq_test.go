package bailiff

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"

	"coffre/bailiff/shamir"
)

// Vectors of the post-quantum escrow bundle (testdata/escrow-v2/) and of
// re-encapsulation orders and steps (testdata/reencap/), made with the
// vector bailiffs and roster of testdata/roster/. Regenerate with
// `go test -tags vectorgen -run TestWritePQVectors ./bailiff/` (after COFFRE_WRITE_VECTORS=1 when the roster
// vectors change); testdata/item-key-pq.sec, the fixed key of
// FuzzOpenItemPQ, is written then too.

func TestEscrowV2Vectors(t *testing.T) {
	keys := vectorBailiffKeys(t)
	r := vectorRoster(t)
	item, err := os.ReadFile(filepath.Join(testdataRoot, "escrow-v2", "item.pgp"))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range loadVectors(t, "escrow-v2") {
		t.Run(v.Name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(testdataRoot, "escrow-v2", v.File))
			if err != nil {
				t.Fatal(err)
			}
			e, err := ParseEscrow(b, vectorTime)
			if v.Expect == "parse-error" {
				if err == nil {
					t.Fatal("parsed, want a parse error")
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if !bytes.Equal(e.Marshal(), b) || e.Version != 2 {
				t.Fatal("re-encoding differs or not v2")
			}
			var shares []shamir.Share
			var openErr error
			for i := 0; i < 2; i++ {
				s, err := e.openShareMessage(keys[i])
				if err != nil {
					openErr = err
					break
				}
				shares = append(shares, s)
			}
			var key *openpgp.Entity
			if openErr == nil {
				key, openErr = e.openKey(shares, vectorTime)
			}
			switch v.Expect {
			case "opens":
				if openErr != nil {
					t.Fatal(openErr)
				}
				defer WipeKey(key)
				if Fingerprint(key) != v.Fingerprint {
					t.Fatalf("escrow key %s, want %s", Fingerprint(key), v.Fingerprint)
				}
				r, err := openItemAny(bytes.NewReader(item), openpgp.EntityList{key})
				if err != nil {
					t.Fatal(err)
				}
				pt, err := io.ReadAll(r)
				if err != nil || string(pt) != v.Plaintext {
					t.Fatalf("item.pgp: %q %v", pt, err)
				}
			case "open-error":
				if openErr == nil {
					WipeKey(key)
					t.Fatal("opened, want an error")
				}
			default:
				t.Fatalf("unknown expectation %q", v.Expect)
			}
		})
	}
	_ = r
}

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
