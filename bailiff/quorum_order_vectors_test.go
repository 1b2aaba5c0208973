package bailiff

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Re-encapsulation order vectors live in testdata/quorum-order/ (vectors.json
// and the files), signed with the roster vector keys
// (testdata/roster/bailiff-N.sec.asc). next-roster.txt is the new roster
// the roster-change vectors name: bailiffs 1 and 2, 2 of 2, signed by both.
// Regenerate with COFFRE_WRITE_QUORUM_ORDER_VECTORS=1 (it leaves the other
// vector directories alone).

func FuzzParseQuorumOrder(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join(testdataRoot, "roster-pq", "change.txt")); err == nil {
		f.Add(b) // a roster change to post-quantum bailiffs
	}
	if vs, err := os.ReadFile(filepath.Join(testdataRoot, "quorum-order", "vectors.json")); err == nil {
		var list []fileVector
		json.Unmarshal(vs, &list)
		for _, v := range list {
			if b, err := os.ReadFile(filepath.Join(testdataRoot, "quorum-order", v.File)); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := ParseQuorumOrder(b)
		if err != nil {
			return
		}
		if !bytes.Equal(o.Marshal(), b) {
			t.Fatal("accepted reencap order does not re-encode to the same bytes")
		}
	})
}

func TestQuorumOrderVectors(t *testing.T) {
	r := vectorRoster(t)
	nb, err := os.ReadFile(filepath.Join(testdataRoot, "quorum-order", "next-roster.txt"))
	if err != nil {
		t.Fatal(err)
	}
	next, err := ParseRoster(nb, vectorTime)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range loadVectors(t, "quorum-order") {
		t.Run(v.Name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(testdataRoot, "quorum-order", v.File))
			if err != nil {
				t.Fatal(err)
			}
			o, err := ParseQuorumOrder(b)
			if v.Expect == "parse-error" {
				if err == nil {
					t.Fatal("parsed, want a parse error")
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if !bytes.Equal(o.Marshal(), b) {
				t.Fatal("re-encoding differs")
			}
			if o.Kind == ReencapRosterChange {
				err = o.VerifyChange(r, next)
			} else {
				err = o.Verify(r)
			}
			switch v.Expect {
			case "valid":
				if err != nil {
					t.Fatal(err)
				}
			case "rejected":
				if err == nil {
					t.Fatal("verified, want rejection")
				}
			default:
				t.Fatalf("unknown expectation %q", v.Expect)
			}
		})
	}
}

func TestWriteQuorumOrderVectors(t *testing.T) {
	if os.Getenv("COFFRE_WRITE_QUORUM_ORDER_VECTORS") != "1" {
		return
	}
	dir := filepath.Join(testdataRoot, "quorum-order")
	os.MkdirAll(dir, 0o755)
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	keys := vectorBailiffKeys(t)
	r := vectorRoster(t)
	next, err := NewRoster(r.VaultID, 2, r.Bailiffs[:2], vectorTime.Add(24*3600e9))
	if err != nil {
		t.Fatal(err)
	}
	byFpr := func(f string) int {
		for i, k := range keys {
			if Fingerprint(k) == f {
				return i
			}
		}
		t.Fatalf("no vector key %s", f)
		return -1
	}
	for _, b := range next.Bailiffs {
		sig, err := detachSign(keys[byFpr(b.Fingerprint)], next.Body(), vectorTime)
		if err != nil {
			t.Fatal(err)
		}
		next.Signatures[b.Fingerprint] = sig
	}
	write("next-roster.txt", next.Marshal())
	sign := func(o *QuorumOrder, idx ...int) {
		for _, i := range idx {
			if err := o.Sign(r, keys[i], vectorTime); err != nil {
				t.Fatal(err)
			}
		}
	}
	var vs []fileVector
	add := func(name, expect, desc string, b []byte) {
		write(name+".txt", b)
		vs = append(vs, fileVector{Name: name, File: name + ".txt", Expect: expect, Description: desc})
	}
	rot, err := NewRotationOrder(r, []string{"vector-user", "vector-other"}, "recipient change asked by the user", vectorTime)
	if err != nil {
		t.Fatal(err)
	}
	sign(rot, 0, 1)
	rb := rot.Marshal()
	add("rotation-ok", "valid", "escrow rotation of two users signed by bailiffs 1 and 2 (k = 2)", rb)
	{
		o, _ := ParseQuorumOrder(rb)
		delete(o.Signatures, Fingerprint(keys[1]))
		add("rotation-one-signature", "rejected", "only one bailiff signed (k = 2)", o.Marshal())
		o2, _ := ParseQuorumOrder(rb)
		o2.Users = append(o2.Users, "vector-zz")
		add("rotation-user-added", "rejected", "a user added after signing", o2.Marshal())
		o3, _ := ParseQuorumOrder(rb)
		o3.RosterDigest[0] ^= 1
		add("rotation-other-roster", "rejected", "bound to another roster", o3.Marshal())
	}
	ch, err := NewRosterChangeOrder(r, next, "Vector Bailiff 3 retires", vectorTime)
	if err != nil {
		t.Fatal(err)
	}
	sign(ch, 1, 2)
	cb := ch.Marshal()
	add("change-ok", "valid", "roster change to next-roster.txt signed by bailiffs 2 and 3 of the old roster", cb)
	{
		o, _ := ParseQuorumOrder(cb)
		o.NewRoster[0] ^= 1
		add("change-other-new-roster", "rejected", "names another new roster than next-roster.txt", o.Marshal())
	}
	add("bad-version", "parse-error", "version v2", []byte(strings.Replace(string(rb), "order v1", "order v2", 1)))
	add("bad-kind", "parse-error", "unknown kind", []byte(strings.Replace(string(rb), "kind escrow-rotation", "kind algorithm-upgrade", 1)))
	add("bad-users-unsorted", "parse-error", "users not in ascending order", []byte(strings.NewReplacer("user vector-other\n", "user vector-user\n", "user vector-user\n", "user vector-other\n").Replace(string(rb))))
	add("bad-rotation-new-roster", "parse-error", "an escrow rotation naming a new roster", []byte(strings.Replace(string(rb), "new-roster -\n", "new-roster "+strings.Repeat("ab", 32)+"\n", 1)))
	add("bad-change-no-roster", "parse-error", "a roster change naming no new roster", []byte(strings.Replace(string(cb), "new-roster "+strings.Split(strings.Split(string(cb), "new-roster ")[1], "\n")[0]+"\n", "new-roster -\n", 1)))
	add("bad-trailing", "parse-error", "a line after the signatures", append(bytes.Clone(rb), "extra x\n"...))
	add("bad-reason-spaces", "parse-error", "reason with a double space", []byte(strings.Replace(string(rb), "recipient change", "recipient  change", 1)))
	b, _ := json.MarshalIndent(vs, "", "  ")
	write("vectors.json", append(b, '\n'))
	for _, k := range keys {
		WipeKey(k)
	}
}

// FuzzParseStoredEscrow: the stored-bundle parse is as strict and
// canonical as ParseEscrow (seeds: the escrow vectors).
func FuzzParseStoredEscrow(f *testing.F) {
	if vs, err := os.ReadFile(filepath.Join(testdataRoot, "escrow", "vectors.json")); err == nil {
		var list []fileVector
		json.Unmarshal(vs, &list)
		for _, v := range list {
			if b, err := os.ReadFile(filepath.Join(testdataRoot, "escrow", v.File)); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseStoredEscrow(b)
		if err != nil {
			return
		}
		if !bytes.Equal(e.Marshal(), b) {
			t.Fatal("accepted escrow bundle does not re-encode to the same bytes")
		}
	})
}
