package hsm

import (
	"encoding/binary"
	"fmt"
)

// Wire constants of docs/formats/keystore.md.
const (
	headerMagic   = "CFKS"
	secretMagic   = "CFKE"
	formatVersion = 1

	backendCodeSoft = 1
	backendCodeTPM  = 2

	idLen       = 16
	saltLen     = 32
	checkLen    = 32
	nonceLen    = 24 // XChaCha20-Poly1305
	tagLen      = 16
	softBodyLen = 4 + 4 + 1 + saltLen + checkLen

	headerPrefixLen = 4 + 1 + 1 + idLen + 2
	secretPrefixLen = 4 + 1 + 1
)

// header is the decoded keystore.hdr.
type header struct {
	backend byte
	id      [idLen]byte
	body    []byte
}

func (h *header) marshal() []byte {
	b := make([]byte, 0, headerPrefixLen+len(h.body))
	b = append(b, headerMagic...)
	b = append(b, formatVersion, h.backend)
	b = append(b, h.id[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.body)))
	return append(b, h.body...)
}

// parseHeader decodes keystore.hdr strictly: magic, version, a known
// backend, and a body length that matches the file exactly.
func parseHeader(b []byte) (*header, error) {
	if len(b) < headerPrefixLen {
		return nil, fmt.Errorf("hsm: keystore header is %d bytes, shorter than %d", len(b), headerPrefixLen)
	}
	if string(b[:4]) != headerMagic {
		return nil, fmt.Errorf("hsm: keystore header has bad magic: not a Coffre keystore")
	}
	if b[4] != formatVersion {
		return nil, fmt.Errorf("hsm: keystore header version %d is not supported (want %d)", b[4], formatVersion)
	}
	h := &header{backend: b[5]}
	if h.backend != backendCodeSoft && h.backend != backendCodeTPM {
		return nil, fmt.Errorf("hsm: keystore header names unknown backend %d", h.backend)
	}
	copy(h.id[:], b[6:6+idLen])
	n := int(binary.BigEndian.Uint16(b[6+idLen:]))
	if len(b)-headerPrefixLen != n {
		return nil, fmt.Errorf("hsm: keystore header body is %d bytes, header says %d", len(b)-headerPrefixLen, n)
	}
	h.body = b[headerPrefixLen:]
	return h, nil
}

// softParamsBody is the soft header body without its check value.
type softBody struct {
	params SoftParams
	salt   [saltLen]byte
	check  [checkLen]byte
}

func (s *softBody) marshal() []byte {
	b := make([]byte, 0, softBodyLen)
	b = binary.BigEndian.AppendUint32(b, s.params.Time)
	b = binary.BigEndian.AppendUint32(b, s.params.MemoryKiB)
	b = append(b, s.params.Threads)
	b = append(b, s.salt[:]...)
	return append(b, s.check[:]...)
}

func parseSoftBody(b []byte) (*softBody, error) {
	if len(b) != softBodyLen {
		return nil, fmt.Errorf("hsm: soft keystore header body is %d bytes, want %d", len(b), softBodyLen)
	}
	s := &softBody{}
	s.params.Time = binary.BigEndian.Uint32(b[0:])
	s.params.MemoryKiB = binary.BigEndian.Uint32(b[4:])
	s.params.Threads = b[8]
	copy(s.salt[:], b[9:])
	copy(s.check[:], b[9+saltLen:])
	if err := s.params.check(); err != nil {
		return nil, err
	}
	return s, nil
}

// secretFile is a decoded <name>.key file.
type secretFile struct {
	backend byte
	body    []byte
}

func (s *secretFile) marshal() []byte {
	b := make([]byte, 0, secretPrefixLen+len(s.body))
	b = append(b, secretMagic...)
	b = append(b, formatVersion, s.backend)
	return append(b, s.body...)
}

func parseSecretFile(b []byte) (*secretFile, error) {
	if len(b) < secretPrefixLen {
		return nil, fmt.Errorf("hsm: secret file is %d bytes, too short", len(b))
	}
	if string(b[:4]) != secretMagic {
		return nil, fmt.Errorf("hsm: secret file has bad magic")
	}
	if b[4] != formatVersion {
		return nil, fmt.Errorf("hsm: secret file version %d is not supported (want %d)", b[4], formatVersion)
	}
	if b[5] != backendCodeSoft && b[5] != backendCodeTPM {
		return nil, fmt.Errorf("hsm: secret file names unknown backend %d", b[5])
	}
	return &secretFile{backend: b[5], body: b[secretPrefixLen:]}, nil
}

// secretAD is the associated data binding a soft secret to its keystore and
// name: "coffre keystore v1 " || kind || 0x00 || id || len(name) || name.
func secretAD(kind string, id [idLen]byte, name string) []byte {
	ad := []byte("coffre keystore v1 " + kind)
	ad = append(ad, 0)
	ad = append(ad, id[:]...)
	ad = append(ad, byte(len(name)))
	return append(ad, name...)
}
