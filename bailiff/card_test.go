package bailiff

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"

	"coffre/bailiff/shamir"
)

func TestKeyCardRoundTripSizes(t *testing.T) {
	for _, n := range []int{1, 399, 400, 401, 1100, 1500, 3200} {
		for rep := 0; rep < 5; rep++ {
			key := make([]byte, n)
			rand.Read(key)
			c, err := NewKeyCard(key, "00")
			if err != nil {
				t.Fatal(err)
			}
			back, err := ReadKeyCard(c.PNG)
			if err != nil {
				t.Fatalf("%d bytes: %v", n, err)
			}
			if !bytes.Equal(back, key) {
				t.Fatalf("%d bytes: different key scanned back", n)
			}
		}
	}
	if _, err := NewKeyCard(make([]byte, cardChunk*MaxCardParts+1), "00"); err == nil {
		t.Fatal("oversized key accepted")
	}
}

func TestKeyCardRejectsForeignImage(t *testing.T) {
	c, err := NewKeyCard([]byte("0123456789"), "00")
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(c.PNG)
	bad[len(bad)/2] ^= 0xff
	if _, err := ReadKeyCard(bad); err == nil || !strings.HasPrefix(err.Error(), "bailiff: ") {
		t.Fatalf("damaged PNG: err = %v", err)
	}
}

func TestShareQRRoundTrip(t *testing.T) {
	shares, err := shamir.Split(bytes.Repeat([]byte{7}, 32), 2, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	card, _ := shares[1].CardText()
	pic, err := ShareQR([]byte(card))
	if err != nil {
		t.Fatal(err)
	}
	back, err := ReadShareQR(pic)
	if err != nil {
		t.Fatal(err)
	}
	s, err := shamir.ParseCard(string(back))
	if err != nil || s.Index != 2 || !bytes.Equal(s.Value, shares[1].Value) {
		t.Fatalf("share QR round trip: %v", err)
	}
	if _, err := ShareQR([]byte("not a card")); err == nil {
		t.Fatal("non-card rendered")
	}
}
