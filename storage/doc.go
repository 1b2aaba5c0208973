// Package storage is Coffre's drive store: the on-drive format (superblock
// with a backup copy, an append-only log of 4 KiB-aligned records whose
// bodies are XChaCha20-Poly1305 STREAM-encrypted, RFC 6962 leaf hashes and
// signed C2SP checkpoints), replication of identical record streams across up
// to four drives with a write quorum, crash recovery, audit without secrets,
// and scrub/repair.
//
// The byte format is specified in docs/formats/drive.md; vectors live in
// testdata/drive/.
package storage
