package bailiff

import (
	"bytes"
	"errors"
	"io"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// readSealedKey reads the escrow secret key that came out of the escrow
// AEAD. Those bytes are authenticated: only the appliance wrote them, under
// K, with the bundle version, user and key fingerprint as associated data,
// and the caller checks the fingerprint. So the self-signatures are not
// verified again (openpgp.ReadKeyRing spends two ECDSA P-521 verifications
// per escrow opened, a sizeable part of opening each escrow in an upgrade
// job); the entity is assembled as openpgp.ReadEntity would (user ids with
// their self-signature, the v6 direct-key signature, subkeys with their
// binding signature) and the packets are otherwise parsed strictly: one
// primary secret key, unencrypted, nothing but user ids, signatures and
// secret subkeys after it.
func readSealedKey(b []byte) (e *openpgp.Entity, err error) {
	defer func() {
		if p := recover(); p != nil {
			e, err = nil, errors.New("malformed secret key (parser panicked)")
		}
	}()
	r := packet.NewReader(bytes.NewReader(b))
	e = &openpgp.Entity{Identities: map[string]*openpgp.Identity{}}
	fail := func(msg string) (*openpgp.Entity, error) {
		wipeEntity(e)
		return nil, errors.New(msg)
	}
	var id *openpgp.Identity
	sub := -1 // index of the last subkey
	for {
		p, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			wipeEntity(e)
			return nil, err
		}
		switch p := p.(type) {
		case *packet.PrivateKey:
			switch {
			case !p.IsSubkey && e.PrivateKey == nil:
				e.PrimaryKey, e.PrivateKey = &p.PublicKey, p
			case p.IsSubkey && e.PrivateKey != nil:
				e.Subkeys = append(e.Subkeys, openpgp.Subkey{PublicKey: &p.PublicKey, PrivateKey: p})
				sub, id = len(e.Subkeys)-1, nil
			default:
				return fail("unexpected secret key packet")
			}
		case *packet.UserId:
			if e.PrivateKey == nil || sub >= 0 {
				return fail("misplaced user id")
			}
			id = &openpgp.Identity{Name: p.Id, UserId: p}
			e.Identities[p.Id] = id
		case *packet.Signature:
			switch {
			case e.PrivateKey == nil:
				return fail("signature before the key")
			case sub >= 0:
				if p.SigType == packet.SigTypeSubkeyBinding {
					e.Subkeys[sub].Sig = p
				}
			case id != nil:
				id.Signatures = append(id.Signatures, p)
				if id.SelfSignature == nil || p.CreationTime.After(id.SelfSignature.CreationTime) {
					id.SelfSignature = p
				}
			case p.SigType == packet.SigTypeDirectSignature:
				e.Signatures = append(e.Signatures, p)
				e.SelfSignature = p
			}
		default:
			return fail("unexpected packet in a secret key")
		}
	}
	if e.PrivateKey == nil || e.PrivateKey.Encrypted {
		return fail("no usable secret key")
	}
	if len(e.Identities) == 0 && e.SelfSignature == nil {
		return fail("no self-signature")
	}
	for _, s := range e.Subkeys {
		if s.Sig == nil || s.PrivateKey.Encrypted {
			return fail("subkey without a binding signature, or encrypted")
		}
	}
	return e, nil
}
