package catalog

// Limits of the meta encoding (docs/formats/catalog-meta.md). Every length
// in a meta blob is bounded by one of these; ParseMeta and EncodeMeta reject
// anything beyond them.
const (
	// MaxIDLen bounds UserID (UTF-8 text without control characters, as
	// the upload envelope allows) and ItemID (printable ASCII, no space).
	MaxIDLen = 128
	// UploadIDLen is the exact length of a non-empty UploadID (lowercase hex
	// of 16 random bytes).
	UploadIDLen = 32
	// MaxItemKindLen bounds ItemKind ([a-z0-9-]).
	MaxItemKindLen = 32
	// MaxContentTypeLen bounds ContentType (printable ASCII).
	MaxContentTypeLen = 128
	// MaxItemSize bounds Size (1 TiB); Size is never negative.
	MaxItemSize = 1 << 40
	// MaxAlgorithms bounds the number of Algorithms entries.
	MaxAlgorithms = 16
	// MaxAlgorithmLen bounds one Algorithms entry ([a-z0-9:._+-]).
	MaxAlgorithmLen = 64
	// MaxAttrs bounds the number of Attrs entries.
	MaxAttrs = 16
	// MaxAttrKeyLen bounds an Attrs key ([a-z0-9._-]).
	MaxAttrKeyLen = 32
	// MaxAttrValueLen bounds an Attrs value (valid UTF-8).
	MaxAttrValueLen = 16 << 10
	// MaxAttrsValueTotal bounds the sum of the lengths of all Attrs values.
	MaxAttrsValueTotal = 16 << 10

	// MaxMetaSize is the largest encoding the limits above allow; ParseMeta
	// rejects a longer input before reading it.
	MaxMetaSize = 4 + // magic, format version, kind
		2*(1+MaxIDLen) + // user id, item id
		4 + // version
		1 + UploadIDLen +
		1 + MaxItemKindLen +
		1 + MaxContentTypeLen +
		8 + 32 + 8 + // size, digest, supersedes
		1 + MaxAlgorithms*(1+MaxAlgorithmLen) +
		1 + MaxAttrs*(1+MaxAttrKeyLen+2) + MaxAttrsValueTotal
)

// Limits of the catalog's own state.
const (
	// MaxDriveIDLen bounds a drive uuid given to SetDriveState.
	MaxDriveIDLen = 64
	// MaxDriveNoteLen bounds DriveState.Note.
	MaxDriveNoteLen = 1024
	// MaxJobIDLen bounds a job id given to PutJob.
	MaxJobIDLen = 128
	// MaxJobStateSize bounds the state bytes of one job.
	MaxJobStateSize = 64 << 10
	// KeySize is the catalog key length (AES-256, from the keystore).
	KeySize = 32
	// rebuildBatch is how many records Rebuild indexes per transaction
	// (when the scan is not in index order).
	rebuildBatch = 1024
	// RebuildSortMemory bounds the memory Rebuild holds the keys it must
	// sort in (item, upload, user and supersession keys, about 100 bytes
	// per item record); beyond it they are spilled to encrypted runs on
	// disk and merged. Rebuild's other memory is badger's: at most four
	// streams' table builders and sixteen tables being written (about
	// 4-6 × BaseTableSize each), and its caches; so Rebuild's peak does
	// not grow with the vault. Measured at a million records, with the
	// collector at GOGC=50: 120-300 MiB anonymous resident memory (the
	// high end when other processes starve badger's table writers), plus
	// the table files' mapped pages.
	RebuildSortMemory = 16 << 20
)

// Badger tuning for a small machine. Badger's defaults reserve more than
// 500 MiB (64 MiB memtables ×5, 256 MiB block cache, 1 GiB value log files
// mapped); these bound badger's fixed buffers (memtables, caches) to about
// 30 MiB. Bulk indexing still allocates transiently in compactions and in
// decrypting tables: see the bench figures in the package's report.
const (
	MemTableSize        = 8 << 20
	NumMemtables        = 2
	BlockCacheSize      = 8 << 20
	IndexCacheSize      = 4 << 20 // must be > 0 with encryption, or badger panics
	ValueLogFileSize    = 16 << 20
	BaseTableSize       = 2 << 20
	BaseLevelSize       = 8 << 20
	LevelSizeMultiplier = 10
	TableSizeMultiplier = 1
	ValueThreshold      = 4 << 10
	NumCompactors       = 2
	NumLevelZeroTables  = 3
	NumGoroutines       = 2
)
