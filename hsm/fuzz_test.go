package hsm

import (
	"bytes"
	"testing"
)

// FuzzParseHeader: keystore.hdr parsing is strict and canonical.
func FuzzParseHeader(f *testing.F) {
	f.Add([]byte("CFKS"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHeader(b)
		if err != nil {
			return
		}
		if !bytes.Equal(h.marshal(), b) {
			t.Fatalf("header re-encodes differently")
		}
		switch h.backend {
		case backendCodeSoft:
			if sb, err := parseSoftBody(h.body); err == nil && !bytes.Equal(sb.marshal(), h.body) {
				t.Fatalf("soft body re-encodes differently")
			}
		case backendCodeTPM:
			if tb, err := parseTPMBody(h.body); err == nil && !bytes.Equal(tb.marshal(), h.body) {
				t.Fatalf("TPM body re-encodes differently")
			}
		}
	})
}

// FuzzParseSecretFile: <name>.key files of both backends.
func FuzzParseSecretFile(f *testing.F) {
	f.Add([]byte("CFKE\x01\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		sf, err := parseSecretFile(b)
		if err != nil {
			return
		}
		if !bytes.Equal(sf.marshal(), b) {
			t.Fatalf("secret file re-encodes differently")
		}
		if sf.backend == backendCodeTPM {
			parseTPMBlob(sf.body)
		}
	})
}

// FuzzParseApproval: pcr-<digest>.pol files.
func FuzzParseApproval(f *testing.F) {
	f.Add([]byte("CFKP\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := parseApproval(b)
		if err != nil {
			return
		}
		if !bytes.Equal(a.marshal(), b) {
			t.Fatalf("approval re-encodes differently")
		}
	})
}
