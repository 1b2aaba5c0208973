//go:build deps

// Package deps pins the module dependencies that packages adopt as the work
// needs them, so that go mod tidy keeps go.mod stable while parts are built.
package deps

import (
	_ "github.com/ProtonMail/go-crypto/openpgp/v2"
	_ "github.com/dgraph-io/badger/v4"
	_ "github.com/diskfs/go-diskfs/filesystem/fat32"
	_ "github.com/google/go-tpm/tpm2"
	_ "github.com/makiuchi-d/gozxing/qrcode"
	_ "github.com/skip2/go-qrcode"
	_ "golang.org/x/crypto/argon2"
	_ "golang.org/x/crypto/chacha20poly1305"
	_ "golang.org/x/mod/sumdb/note"
	_ "golang.org/x/mod/sumdb/tlog"
	_ "golang.org/x/sys/unix"
)
