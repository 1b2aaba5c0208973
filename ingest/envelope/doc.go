// Package envelope is the upload format that crosses the diode: an item
// sealed by the user's client to the appliance's ingest key (OpenPGP, GnuPG
// 2.2-compatible profile), wrapped by the online courier in an envelope whose
// header carries a signed binding of user id, upload id and the SHA-256 of the
// sealed part.
//
// The three roles map to three functions:
//
//   - SealItem (the user's client) writes the sealed part: an OpenPGP message
//     (PKESK v3 to a v4 P-521 ECDH key, SEIPDv1 with MDC, AES-256, one binary
//     literal data packet, no compression) whose plaintext is the item: a
//     manifest followed by the content.
//   - Bind (the courier, online) prefixes the sealed part with the envelope
//     header and its detached OpenPGP signature.
//   - Open (the appliance, offline) verifies the courier signature against the
//     pinned courier keys before anything is decrypted, rejects replays
//     through a callback, decrypts in bounded memory and hands the content on
//     as a stream whose Read returns an error — never io.EOF — unless every
//     check (sizes, content digest, MDC, ciphertext digest, trailing data)
//     passed. Call Upload.Close when done with an upload.
//
// SEIPDv1 is decrypted by a streaming decrypter in this package (seipd.go)
// that decrypts a chunk at a time in place (coffre/internal/cfb: AES-NI,
// eight blocks at once) and runs the MDC SHA-1, the content SHA-256 and the
// ciphertext SHA-256 on helper goroutines, so an upload of any size opens in
// well under 2 MiB of heap. SEIPDv2 (AEAD), which
// other OpenPGP tools write to keys that advertise it, is decrypted by
// go-crypto.
//
// The byte format is specified in docs/formats/envelope.md; vectors are in
// testdata/envelope/.
package envelope
