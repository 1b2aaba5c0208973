package canon

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestReaderRules(t *testing.T) {
	good := "doc v1\nname Alice Martin\nn 3\n"
	r, err := NewReader("doc", []byte(good), 100)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := r.Field("doc"); err != nil || v != "v1" {
		t.Fatalf("%q %v", v, err)
	}
	if v, err := r.Text("name", 20); err != nil || v != "Alice Martin" {
		t.Fatalf("%q %v", v, err)
	}
	if _, err := r.Field("n"); err != nil {
		t.Fatal(err)
	}
	if err := r.End(); err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string]string{
		"crlf":       "doc v1\r\n",
		"no final":   "doc v1",
		"blank line": "doc v1\n\nn 3\n",
		"control":    "doc v\x01\n",
		"del":        "doc v\x7f\n",
		"bad utf8":   "doc \xff\n",
		"too long":   strings.Repeat("a", 101) + "\n",
	} {
		if _, err := NewReader("doc", []byte(bad), 100); !errors.Is(err, ErrSyntax) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	r, _ = NewReader("doc", []byte("doc  v1\nname  x\nk a b\n"), 100)
	if _, err := r.Field("doc"); err == nil {
		t.Error("double space accepted")
	}
	r, _ = NewReader("doc", []byte("k a b\nextra 1\n"), 100)
	if _, err := r.Fields("k", 1); err == nil {
		t.Error("wrong value count accepted")
	}
	if _, err := r.Fields("k", 2); err != nil {
		t.Error(err)
	}
	if err := r.End(); err == nil {
		t.Error("trailing line accepted")
	}
}

func TestValueRules(t *testing.T) {
	if _, err := Uint("07", 0, 10); err == nil {
		t.Error("leading zero accepted")
	}
	if _, err := Uint("-1", -5, 10); err == nil {
		t.Error("sign accepted")
	}
	if n, err := Uint("0", 0, 10); err != nil || n != 0 {
		t.Error("0 refused")
	}
	if _, err := Hex("AB", 1); err == nil {
		t.Error("upper-case hex accepted")
	}
	if _, err := B64("YQ", 10); err == nil {
		t.Error("unpadded base64 accepted")
	}
	if _, err := B64("YR==", 10); err == nil {
		t.Error("non-canonical base64 (trailing bits) accepted")
	}
	if b, err := B64("YQ==", 10); err != nil || string(b) != "a" {
		t.Error("canonical base64 refused")
	}
	if _, err := Time("2026-11-23T10:00:00+01:00"); err == nil {
		t.Error("offset time accepted")
	}
	if _, err := Time("2026-11-23T10:00:00.5Z"); err == nil {
		t.Error("fractional seconds accepted")
	}
	tm, err := Time("2026-11-23T10:00:00Z")
	if err != nil || EncTime(tm) != "2026-11-23T10:00:00Z" || !tm.Equal(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)) {
		t.Error("time round trip")
	}
	if CheckID("user 1", 10) == nil || CheckID("", 10) == nil || CheckID("u/1", 10) == nil || CheckID("user-1@x:y", 20) != nil {
		t.Error("id rules")
	}
	if CheckText(" a", 10) == nil || CheckText("a ", 10) == nil || CheckText("a  b", 10) == nil || CheckText("a b", 10) != nil {
		t.Error("text rules")
	}
}
