// Package storage is Coffre's drive store: the on-drive format (superblock
// with a backup copy, an append-only log of 4 KiB-aligned records whose
// bodies are XChaCha20-Poly1305 STREAM-encrypted, RFC 6962 leaf hashes and
// signed C2SP checkpoints), replication of identical record streams across up
// to four drives with a write quorum, crash recovery, audit without secrets,
// and scrub/repair.
//
// I/O: a writer opens each drive exclusively with O_DIRECT and fdatasyncs
// every batch before it is acknowledged; a batch of more than 16 MiB also
// starts a background flush of each drive every 16 MiB (write-behind, see
// writeBehindBytes), so the final fdatasync has little left. Only one
// fdatasync of a drive runs at a time, and a failed one fails every later
// one of that handle (Linux reports a writeback error once). Records
// already durable are read
// back (Get) through a second, read-only handle that uses the page cache,
// as read-only openers (audit, catalog rebuild) do: the kernel reads ahead,
// and direct writes invalidate the pages they cover. Recovery, index
// loading and scrub read direct.
//
// Concurrency: writers (Append, AppendEach, AddDrive, Sync, Retire,
// Scrub, Close) hold Vault.wmu for their whole run and take Vault.mu only
// to change the vault's state; readers take mu alone for a moment, so a
// Get, Records or Scan never waits for an Append's writes and syncs, and
// sees a batch only once it is durable on the write quorum. AppendEach
// writes one batch while the batch before it is synced and published (by
// a goroutine of its own, under mu): the drives do not idle through each
// fdatasync. Batches are acknowledged in order, and one that fails takes
// down the batch written after it, which chains to it.
//
// The byte format is specified in docs/formats/drive.md; vectors live in
// testdata/drive/.
package storage
