package firmware

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrBundle wraps every bundle container error.
var ErrBundle = errors.New("firmware: malformed update bundle")

const bundleMagic = "CFFWBNDL"
const bundleVersion = 1

// Entry types.
const (
	entryManifest  = 1
	entrySignature = 2
	entryComponent = 3
)

// Bundle is a decoded update bundle container (not yet verified).
type Bundle struct {
	Manifest   []byte            // canonical manifest text
	Signatures [][]byte          // detached OpenPGP signatures over Manifest
	Files      map[string][]byte // component name -> bytes
}

// Marshal encodes the canonical container: magic, version, entry count,
// then the manifest, the signatures (in the given order) and the components
// sorted by name.
func (b *Bundle) Marshal() ([]byte, error) {
	m, err := ParseManifest(b.Manifest)
	if err != nil {
		return nil, err
	}
	n := 1 + len(b.Signatures) + len(b.Files)
	if len(b.Signatures) == 0 || len(b.Signatures) > MaxSignatures {
		return nil, fmt.Errorf("%w: %d signatures (1 to %d)", ErrBundle, len(b.Signatures), MaxSignatures)
	}
	var out bytes.Buffer
	out.WriteString(bundleMagic)
	out.WriteByte(bundleVersion)
	binary.Write(&out, binary.BigEndian, uint16(n))
	put := func(typ byte, name string, data []byte) {
		out.WriteByte(typ)
		out.WriteByte(byte(len(name)))
		out.WriteString(name)
		binary.Write(&out, binary.BigEndian, uint32(len(data)))
		out.Write(data)
	}
	put(entryManifest, "", b.Manifest)
	for _, s := range b.Signatures {
		put(entrySignature, "", s)
	}
	if len(b.Files) != len(m.Components) {
		return nil, fmt.Errorf("%w: %d files for %d components", ErrBundle, len(b.Files), len(m.Components))
	}
	for _, c := range m.Components {
		data, ok := b.Files[c.Name]
		if !ok {
			return nil, fmt.Errorf("%w: component %q has no file", ErrBundle, c.Name)
		}
		put(entryComponent, c.Name, data)
	}
	if out.Len() > MaxBundleSize {
		return nil, fmt.Errorf("%w: %d bytes (max %d)", ErrBundle, out.Len(), MaxBundleSize)
	}
	return out.Bytes(), nil
}

// ParseBundle decodes the container strictly (it does not verify
// signatures or digests: Verify does).
func ParseBundle(data []byte) (*Bundle, error) {
	if len(data) > MaxBundleSize {
		return nil, fmt.Errorf("%w: %d bytes (max %d)", ErrBundle, len(data), MaxBundleSize)
	}
	if len(data) < len(bundleMagic)+3 || string(data[:len(bundleMagic)]) != bundleMagic {
		return nil, fmt.Errorf("%w: bad magic: not a Coffre update bundle", ErrBundle)
	}
	p := data[len(bundleMagic):]
	if p[0] != bundleVersion {
		return nil, fmt.Errorf("%w: version %d not supported (want %d)", ErrBundle, p[0], bundleVersion)
	}
	n := int(binary.BigEndian.Uint16(p[1:]))
	p = p[3:]
	if n < 3 || n > 1+MaxSignatures+MaxComponents {
		return nil, fmt.Errorf("%w: %d entries", ErrBundle, n)
	}
	b := &Bundle{Files: map[string][]byte{}}
	var lastName string
	for i := 0; i < n; i++ {
		if len(p) < 2 {
			return nil, fmt.Errorf("%w: entry %d truncated", ErrBundle, i+1)
		}
		typ, nl := p[0], int(p[1])
		if len(p) < 2+nl+4 {
			return nil, fmt.Errorf("%w: entry %d truncated", ErrBundle, i+1)
		}
		name := string(p[2 : 2+nl])
		dl := int64(binary.BigEndian.Uint32(p[2+nl:]))
		p = p[2+nl+4:]
		if dl > int64(len(p)) {
			return nil, fmt.Errorf("%w: entry %d: length %d past the end", ErrBundle, i+1, dl)
		}
		d := p[:dl]
		p = p[dl:]
		switch {
		case i == 0:
			if typ != entryManifest || name != "" || dl > MaxManifestLen {
				return nil, fmt.Errorf("%w: the first entry must be the manifest", ErrBundle)
			}
			b.Manifest = d
		case typ == entrySignature && lastName == "":
			if name != "" || dl == 0 || dl > MaxSignatureLen || len(b.Signatures) == MaxSignatures {
				return nil, fmt.Errorf("%w: entry %d: bad signature entry", ErrBundle, i+1)
			}
			b.Signatures = append(b.Signatures, d)
		case typ == entryComponent:
			if !validName(name) || name <= lastName || dl > MaxComponentSize {
				return nil, fmt.Errorf("%w: entry %d: component %q not valid, sorted and unique", ErrBundle, i+1, truncate(name))
			}
			b.Files[name] = d
			lastName = name
		default:
			return nil, fmt.Errorf("%w: entry %d: unexpected type %d here", ErrBundle, i+1, typ)
		}
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrBundle, len(p))
	}
	if len(b.Signatures) == 0 || len(b.Files) == 0 {
		return nil, fmt.Errorf("%w: needs signatures and components", ErrBundle)
	}
	return b, nil
}

// Verify checks an update bundle against the trust root: the container,
// the manifest, threshold signatures by distinct release keys, and that the
// files are exactly the manifest's components with matching size, SHA-256
// and SHA-512. It returns the verified manifest.
func Verify(bundle []byte, root *TrustRoot) (*Manifest, error) {
	b, err := ParseBundle(bundle)
	if err != nil {
		return nil, err
	}
	return b.Verify(root)
}

// Verify checks a decoded bundle (see the package-level Verify).
func (b *Bundle) Verify(root *TrustRoot) (*Manifest, error) {
	m, err := ParseManifest(b.Manifest)
	if err != nil {
		return nil, err
	}
	if _, err := root.verifySignatures(b.Manifest, b.Signatures); err != nil {
		return nil, err
	}
	if len(b.Files) != len(m.Components) {
		return nil, fmt.Errorf("firmware: bundle has %d files for %d manifest components: refused", len(b.Files), len(m.Components))
	}
	for _, c := range m.Components {
		d, ok := b.Files[c.Name]
		if !ok {
			return nil, fmt.Errorf("firmware: bundle lacks component %q: refused", c.Name)
		}
		if err := c.check(d); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (c Component) check(d []byte) error {
	h256 := sha256.Sum256(d)
	h512 := sha512.Sum512(d)
	if int64(len(d)) != c.Size || subtle.ConstantTimeCompare(h256[:], c.SHA256[:]) != 1 || subtle.ConstantTimeCompare(h512[:], c.SHA512[:]) != 1 {
		return fmt.Errorf("firmware: component %q does not match its manifest digests: the bundle was altered, refused", c.Name)
	}
	return nil
}
