package storage

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

// The seed corpora live in testdata/fuzz/FuzzXxx/ and are replayed by every
// go test run. Regenerate them from the vectors with
// COFFRE_UPDATE_CORPUS=1 go test -run TestWriteCorpus ./storage/.

func FuzzSuperblock(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseSuperblock(b)
		if err != nil {
			return
		}
		re, err := encodeSuperblock(s)
		if err != nil || !bytes.Equal(re, b) {
			t.Fatalf("accepted a non-canonical superblock: %v", err)
		}
	})
}

func FuzzRecordHeader(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHeader(b)
		if err != nil {
			return
		}
		if !bytes.Equal(h.encode(), b[:HeaderSize]) {
			t.Fatal("header does not re-encode to the same bytes")
		}
		if h.RecordLen() < BlockSize || h.RecordLen()%BlockSize != 0 {
			t.Fatalf("record length %d", h.RecordLen())
		}
	})
}

func FuzzCheckpoint(f *testing.F) {
	_, vkey := vectorSigner(f)
	v, err := note.NewVerifier(vkey)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if c, err := ParseCheckpointText(string(b)); err == nil && c.Text() != string(b) {
			t.Fatalf("checkpoint text does not round-trip: %q", b)
		}
		if c, err := OpenCheckpoint(b, v, ""); err == nil {
			if _, err := ParseCheckpointText(c.Text()); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// FuzzRecord decrypts arbitrary record bytes with the vector key: it must
// fail cleanly or yield a body of the declared length.
func FuzzRecord(f *testing.F) {
	f.Fuzz(func(t *testing.T, rb []byte) {
		h, err := parseHeader(rb)
		if err != nil || h.RecordLen() > int64(len(rb)) {
			return
		}
		mem := &memDevice{b: rb}
		r := newBlockReader(mem, int64(len(rb)), 1<<16)
		aead, _ := newAEAD(fixedKey())
		meta, body, err := openPayload(h, aead, fixedVault(), newSection(r, HeaderSize, int64(h.PayloadLen)))
		if err != nil {
			return
		}
		var n uint64
		buf := make([]byte, 4096)
		for {
			m, err := body.Read(buf)
			n += uint64(m)
			if err != nil {
				if err.Error() == "EOF" && (n != h.BodyLen || uint32(len(meta)) != h.MetaLen) {
					t.Fatalf("body %d bytes, header says %d", n, h.BodyLen)
				}
				return
			}
		}
	})
}

// FuzzDriveImage walks an arbitrary drive image (superblocks and log) as
// Open and Audit do.
func FuzzDriveImage(f *testing.F) {
	_, vkey := vectorSigner(f)
	v, _ := note.NewVerifier(vkey)
	f.Fuzz(func(t *testing.T, img []byte) {
		b := make([]byte, MinDriveSize)
		copy(b, img)
		if len(img) > SuperblockSize {
			// also place the first block as the backup superblock
			copy(b[MinDriveSize-SuperblockSize:], img[:SuperblockSize])
		}
		mem := &memDevice{b: b}
		sb, _ := readSuperblock(mem)
		if sb == nil {
			return
		}
		if sb.Size > int64(len(b)) {
			return
		}
		for _, full := range []bool{false, true} {
			s, err := scanLog(mem, sb, scanOpts{verifier: v, full: full, trusted: sb.TreeSize})
			if err != nil {
				continue
			}
			if s.cut > len(s.recs) || (s.cut > 0 && s.end() > sb.DataEnd) {
				t.Fatalf("cut %d of %d records, end %d", s.cut, len(s.recs), s.end())
			}
		}
	})
}

func TestWriteCorpus(t *testing.T) {
	if os.Getenv("COFFRE_UPDATE_CORPUS") != "1" {
		return
	}
	write := func(fuzz string, name string, b []byte) {
		dir := filepath.Join("testdata", "fuzz", fuzz)
		os.MkdirAll(dir, 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var sbs []superblockVector
	loadJSON(t, "superblocks.json", &sbs)
	for _, v := range sbs {
		b, _ := hex.DecodeString(v.Hex)
		write("FuzzSuperblock", v.Name, b)
	}
	var recs []recordVector
	loadJSON(t, "records.json", &recs)
	for _, v := range recs {
		b, _ := hex.DecodeString(v.Record)
		write("FuzzRecordHeader", v.Name, b[:HeaderSize])
		if len(b) <= 2*BlockSize {
			write("FuzzRecord", v.Name, b)
		}
	}
	var cps []checkpointVector
	loadJSON(t, "checkpoints.json", &cps)
	for _, v := range cps {
		write("FuzzCheckpoint", v.Name, []byte(v.Note))
	}
	// A small drive image with a few records, from the real store.
	k := newTestKeys(t)
	s, vkey := vectorSigner(t)
	k.signer = s
	k.verifier, _ = note.NewVerifier(vkey)
	p := imageDrives(t, k, 1, MinDriveSize)[0]
	vt := openVault(t, k, []string{p}, 1)
	appendItems(t, vt, nil, 10, 5000)
	vt.Close()
	img, _ := os.ReadFile(p)
	write("FuzzDriveImage", "three-records", img[:DataStart+4*BlockSize])
}
