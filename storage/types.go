package storage

import "fmt"

// RecordType says what a record holds. The registry lives here and in
// docs/formats/drive.md; unknown types are kept and verified but not
// interpreted.
type RecordType uint8

// The registry of record types. Zero is invalid.
const (
	TypeCheckpoint  RecordType = 1 // signed checkpoint note, clear body, written by the store
	TypeItem        RecordType = 2 // an escrowed user item
	TypeEscrow      RecordType = 3 // a user escrow key (wrapped)
	TypeRoster      RecordType = 4 // bailiff roster
	TypeCeremony    RecordType = 5 // key ceremony transcript
	TypeRestitution RecordType = 6 // restitution event
	TypeReencap     RecordType = 7 // re-encapsulation step
	TypeSupersede   RecordType = 8 // marks an older record superseded
	TypeDriveEvent  RecordType = 9 // drive added, retired, failed, repaired
)

var typeNames = map[RecordType]string{
	TypeCheckpoint:  "checkpoint",
	TypeItem:        "item",
	TypeEscrow:      "escrow",
	TypeRoster:      "roster",
	TypeCeremony:    "ceremony",
	TypeRestitution: "restitution",
	TypeReencap:     "reencap",
	TypeSupersede:   "supersede",
	TypeDriveEvent:  "drive-event",
}

func (t RecordType) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("type-%d", uint8(t))
}

// Known reports whether t is in the registry.
func (t RecordType) Known() bool { _, ok := typeNames[t]; return ok }
