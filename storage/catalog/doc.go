// Package catalog is the appliance's index of what the drives hold: records
// by user, item and version, the upload ids already seen (replay rejection),
// records by kind, supersession, and the two kinds of state that do not live
// on the drives (drive states and job states).
//
// The catalog is a badger v4 database on the appliance's internal disk,
// encrypted with a 32-byte key from the keystore, written with SyncWrites on,
// checksums verified on every block read and over whole tables after a
// rebuild and at every scrub (VerifyChecksum), and its memory tuned for
// a small machine (see limits.go). Badger's encryption is unauthenticated
// AES-CTR, so the catalog is an index only and is never trusted over the
// drives: Rebuild recreates it from any one drive replica's record stream, and
// Digest proves that two catalogs hold the same record-derived content.
// Rebuild bulk-loads a fresh database (sorted tables written once, straight
// to the bottom level; see load.go) with its sorting bounded to
// RebuildSortMemory, and swaps it in whole.
//
// The package also owns the encoding of the small "meta" blob every drive
// record carries (EncodeMeta, ParseMeta): a strict, bounded, canonical binary
// format specified in docs/formats/catalog-meta.md, with vectors in
// testdata/catalog/.
package catalog
