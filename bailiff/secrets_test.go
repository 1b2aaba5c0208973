package bailiff

import (
	"bytes"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	pecdh "github.com/ProtonMail/go-crypto/openpgp/ecdh"
	pecdsa "github.com/ProtonMail/go-crypto/openpgp/ecdsa"

	"coffre/bailiff/shamir"
)

// TestNoSecretInLogsOrErrors runs a full restitution, with the usual
// mistakes (wrong passphrase, mistyped card, tampered share, wrong user's
// share), capturing every slog record and every error text, and greps them
// for passphrases, share bytes, K and the escrow private key.
func TestNoSecretInLogsOrErrors(t *testing.T) {
	v := getVault(t)
	var logs bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer slog.SetDefault(old)
	var errs []string
	note := func(err error) {
		if err != nil {
			errs = append(errs, err.Error())
		}
	}

	_, benPub := newBeneficiary(t)
	esc, _ := NewEscrow("user-logs", v.roster)
	other, _ := NewEscrow("user-other", v.roster)
	items := []ItemSource{source("x", 1, sealBytes(t, esc, []byte("the plaintext item")))}
	o := v.signedOrder(t, "user-logs", benPub, 0, 1)
	u, err := NewUnlock(v.roster, o, esc, UnlockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = u.AddShareWithKey(v.secrets[0], []byte("not "+v.pass[0]))
	note(err)
	k := v.openKey(t, 1)
	card, _ := decryptBytes(bytes.NewReader(esc.Shares[1].Message), openpgp.EntityList{k}, 8192)
	otherCard, _ := decryptBytes(bytes.NewReader(other.Shares[1].Message), openpgp.EntityList{k}, 8192)
	WipeKey(k)
	cardText := string(card)
	mistyped := strings.Replace(cardText, "\n", "\nQ", 2)
	_, err = u.AddShareCard([]byte(mistyped))
	note(err)
	s, _ := shamir.ParseCard(cardText)
	tampered := s
	tampered.Value = bytes.Clone(s.Value)
	tampered.Value[0] ^= 1
	tc, _ := tampered.CardText()
	_, err = u.AddShareCard([]byte(tc))
	note(err)
	_, err = u.AddShareCard(bytes.Clone(otherCard))
	note(err)
	_, err = u.AddShareWithKey(v.secrets[0], []byte(v.pass[0]))
	note(err)
	_, err = u.AddShareCard([]byte(cardText))
	note(err)
	signer, _ := newBeneficiary(t)
	_, err = Restitute(u, items, []byte("designations"), filepath.Join(t.TempDir(), "p"), signer)
	if err != nil {
		t.Fatal(err)
	}

	// the secrets to look for
	secrets := map[string][]byte{}
	for i, p := range v.pass {
		secrets["passphrase "+string(rune('0'+i))] = []byte(p)
	}
	shares := quorumShares(t, v, esc, 0, 1, 2)
	for i, sh := range shares {
		secrets["share value "+string(rune('1'+i))] = sh.Value
		b, _ := sh.MarshalBinary()
		secrets["share binary "+string(rune('1'+i))] = b
	}
	kk, err := shamir.Combine(shares)
	if err != nil {
		t.Fatal(err)
	}
	secrets["K"] = kk
	key, err := esc.openKey(shares, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	secrets["escrow ecdsa D"] = key.PrivateKey.PrivateKey.(*pecdsa.PrivateKey).D.Bytes()
	enc, _ := key.EncryptionKey(time.Now())
	secrets["escrow ecdh D"] = bytes.Clone(enc.PrivateKey.PrivateKey.(*pecdh.PrivateKey).D)
	WipeKey(key)
	secrets["plaintext"] = []byte("the plaintext item")
	body := strings.Join(strings.Fields(strings.Join(strings.Split(cardText, "\n")[2:], " ")), "")
	hay := logs.String() + "\n" + strings.Join(errs, "\n")
	if len(errs) < 4 || !strings.Contains(logs.String(), "restitution package written") {
		t.Fatalf("test did not exercise the paths: %d errors, logs:\n%s", len(errs), logs.String())
	}
	if strings.Contains(strings.ToUpper(hay), body[:24]) {
		t.Error("share card body appears in logs or errors")
	}
	for name, sec := range secrets {
		for _, form := range []string{string(sec), hex.EncodeToString(sec), strings.ToUpper(hex.EncodeToString(sec)), base64.StdEncoding.EncodeToString(sec), base32.StdEncoding.EncodeToString(sec)} {
			probe := form
			if len(probe) > 24 {
				probe = probe[:24]
			}
			if len(probe) >= 8 && strings.Contains(hay, probe) {
				t.Errorf("%s appears in logs or errors", name)
			}
		}
	}
}
