package shamir

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func split(t *testing.T, secret []byte, k, n int) []Share {
	t.Helper()
	s, err := Split(secret, k, n, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSplitCombineEverySubset(t *testing.T) {
	secret := []byte("correct horse battery staple, 32b")
	shares := split(t, secret, 3, 5)
	for a := 0; a < 5; a++ {
		for b := a + 1; b < 5; b++ {
			for c := b + 1; c < 5; c++ {
				got, err := Combine([]Share{shares[c], shares[a], shares[b]})
				if err != nil {
					t.Fatalf("subset %d,%d,%d: %v", a, b, c, err)
				}
				if !bytes.Equal(got, secret) {
					t.Fatalf("subset %d,%d,%d: wrong secret", a, b, c)
				}
			}
		}
	}
	got, err := Combine(shares)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("all shares: %v", err)
	}
}

func TestFewerThanThresholdOpenNothing(t *testing.T) {
	secret := make([]byte, 32)
	rand.Read(secret)
	shares := split(t, secret, 3, 5)
	if _, err := Combine(shares[:2]); !errors.Is(err, ErrTooFewShares) {
		t.Fatalf("2 of 3: err = %v, want ErrTooFewShares", err)
	}
	// Lying about the threshold does not help: the digest catches it.
	forged := []Share{shares[0], shares[1]}
	for i := range forged {
		forged[i].Threshold = 2
	}
	if _, err := Combine(forged); !errors.Is(err, ErrDigest) {
		t.Fatalf("forged threshold: err = %v, want ErrDigest", err)
	}
	// Information-theoretic: for k-1 shares, every value of the first secret
	// byte is consistent with some third share.
	seen := map[byte]bool{}
	for y := 0; y < 256; y++ {
		third := Share{SplitID: shares[0].SplitID, Threshold: 3, Index: 5, Value: bytes.Clone(shares[4].Value)}
		third.Value[0] = byte(y)
		val := interpolate([]Share{shares[0], shares[1], third})
		seen[val[0]] = true
	}
	if len(seen) != 256 {
		t.Fatalf("two shares constrain the first byte to %d values, want 256", len(seen))
	}
}

func interpolate(shares []Share) []byte {
	val := make([]byte, len(shares[0].Value))
	for i, si := range shares {
		li := byte(1)
		for j, sj := range shares {
			if i != j {
				li = gfMul(li, gfDiv(byte(sj.Index), byte(sj.Index)^byte(si.Index)))
			}
		}
		for b := range val {
			val[b] ^= gfMul(li, si.Value[b])
		}
	}
	return val
}

func TestTamperedShareIsNamed(t *testing.T) {
	secret := []byte("the escrow key K, thirty-two b..")
	shares := split(t, secret, 3, 5)
	shares[2].Value[7] ^= 0x40
	// exactly k shares including the bad one: detected, not turned into garbage
	if _, err := Combine(shares[1:4]); !errors.Is(err, ErrDigest) {
		t.Fatalf("k shares with a tampered one: err = %v, want ErrDigest", err)
	}
	// more than k: the bad one is named
	_, err := Combine(shares[:4])
	var bad *BadShareError
	if !errors.As(err, &bad) || bad.Index != 3 {
		t.Fatalf("err = %v, want BadShareError for share 3", err)
	}
	// commitments name it with exactly k
	clean := split(t, secret, 3, 5)
	c := clean[1].Commitment()
	clean[1].Value[0] ^= 1
	err = clean[1].CheckCommitment(c)
	if !errors.As(err, &bad) || bad.Index != 2 {
		t.Fatalf("commitment: err = %v, want BadShareError for share 2", err)
	}
}

func TestShareFromAnotherSplitIsNamed(t *testing.T) {
	a := split(t, []byte("secret of user A, 32 bytes long."), 2, 3)
	b := split(t, []byte("secret of user B, 32 bytes long."), 2, 3)
	_, err := Combine([]Share{a[0], b[1]})
	var bad *BadShareError
	if !errors.As(err, &bad) || bad.Index != 2 || !strings.Contains(bad.Reason, "another split") {
		t.Fatalf("err = %v, want BadShareError for share 2 from another split", err)
	}
}

func TestSplitRejectsBadParameters(t *testing.T) {
	for _, c := range []struct{ k, n, l int }{{1, 3, 32}, {4, 3, 32}, {2, 256, 32}, {2, 3, 0}, {2, 3, MaxSecretLen + 1}} {
		if _, err := Split(make([]byte, c.l), c.k, c.n, nil); err == nil {
			t.Errorf("Split(len %d, %d of %d) succeeded", c.l, c.k, c.n)
		}
	}
}

func TestBinaryAndCardRoundTrip(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	shares := split(t, secret, 2, 3)
	for _, s := range shares {
		bin, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		p, err := ParseShare(bin)
		if err != nil {
			t.Fatal(err)
		}
		if p.Index != s.Index || !bytes.Equal(p.Value, s.Value) || p.SplitID != s.SplitID {
			t.Fatal("binary round trip changed the share")
		}
		card, err := s.CardText()
		if err != nil {
			t.Fatal(err)
		}
		// retyped in lower case with hyphens and CRLF still parses
		retyped := strings.ReplaceAll(strings.ToLower(card), " ", "-")
		retyped = strings.ReplaceAll(retyped, "\n", "\r\n")
		retyped = strings.Replace(retyped, "coffre-share-v1", "COFFRE-SHARE V1", 1)
		retyped = strings.Replace(retyped, "split-", "split ", 1)
		retyped = strings.Replace(retyped, "-share-", " share ", 1)
		retyped = strings.Replace(retyped, "-threshold-", " threshold ", 1)
		c, err := ParseCard(retyped)
		if err != nil {
			t.Fatalf("retyped card: %v\n%s", err, retyped)
		}
		if !bytes.Equal(c.Value, s.Value) {
			t.Fatal("card round trip changed the share")
		}
		// one mistyped body character is caught by the checksum
		lines := strings.Split(card, "\n")
		body := []byte(lines[2])
		if body[0] == 'A' {
			body[0] = 'B'
		} else {
			body[0] = 'A'
		}
		lines[2] = string(body)
		if _, err := ParseCard(strings.Join(lines, "\n")); !errors.Is(err, ErrFormat) {
			t.Fatalf("mistyped card: err = %v, want ErrFormat", err)
		}
	}
}

func TestShareFormattingRedactsValue(t *testing.T) {
	s := split(t, []byte("a secret that must not be printed"), 2, 2)[0]
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		out := fmt.Sprintf(f, s)
		if strings.Contains(out, fmt.Sprint(s.Value[0], " ", s.Value[1])) || strings.Contains(out, fmt.Sprintf("%x", s.Value[:4])) {
			t.Fatalf("%s prints the share value: %s", f, out)
		}
	}
	out := fmt.Sprintf("%v", []Share{s})
	if strings.Contains(out, fmt.Sprintf("%x", s.Value[:4])) || !strings.Contains(out, "redacted") {
		t.Fatalf("slice of shares prints values: %s", out)
	}
}
