package storage

// Named limits of the drive format and the store. The spec
// (docs/formats/drive.md) repeats them; a parser rejects anything beyond.
const (
	// BlockSize is the alignment unit of every write and of every record.
	BlockSize = 4096
	// SuperblockSize is the size of each superblock copy.
	SuperblockSize = BlockSize
	// DataStart is the byte offset of the first record.
	DataStart = SuperblockSize
	// MinDriveSize is the smallest drive Format accepts (superblocks plus
	// room for a few records).
	MinDriveSize = 64 * BlockSize
	// MaxSlots is the number of drive slots of a vault.
	MaxSlots = 4
	// MaxMetaSize bounds Record.Meta.
	MaxMetaSize = 64 << 10
	// MaxBodySize bounds the plaintext body of one record.
	MaxBodySize = 1 << 40
	// MaxBatch bounds the number of records of one Append.
	MaxBatch = 4096
	// MaxWrappedKeySize bounds one wrapped record key in the superblock.
	MaxWrappedKeySize = 512
	// MaxKeyEpochs bounds the number of wrapped record keys (one per epoch)
	// the superblock carries.
	MaxKeyEpochs = 4
	// MaxCheckpointSize bounds a signed checkpoint note (superblock copy and
	// checkpoint record body).
	MaxCheckpointSize = 1024
	// MaxOriginSize bounds the checkpoint origin line.
	MaxOriginSize = 256
	// ChunkSize is the plaintext size of one STREAM chunk.
	ChunkSize = 64 << 10
	// HeaderSize is the size of a record header.
	HeaderSize = 160
	// RecordKeySize is the size of the vault record key.
	RecordKeySize = 32
	// DefaultWriteQuorum is the write quorum when Options.WriteQuorum is 0.
	DefaultWriteQuorum = 3
)
