package hsm

import (
	"fmt"
	"os"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
	// linuxudstpm talks to swtpm over a unix socket; it is the only path by
	// which package net enters hsm (see the layering test in deps_test.go).
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"
)

// DefaultTPMDevice is the kernel's TPM resource manager.
const DefaultTPMDevice = "/dev/tpmrm0"

// openTransport opens a TPM character device, or a swtpm unix socket when
// the path is a socket.
func openTransport(path string) (transport.TPMCloser, error) {
	if path == "" {
		path = DefaultTPMDevice
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("hsm: TPM %s: %w: check that the TPM is enabled (or swtpm is running)", path, err)
	}
	if fi.Mode()&os.ModeSocket != 0 {
		t, err := linuxudstpm.Open(path)
		if err != nil {
			return nil, fmt.Errorf("hsm: TPM socket %s: %w", path, err)
		}
		return t, nil
	}
	t, err := linuxtpm.Open(path)
	if err != nil {
		return nil, fmt.Errorf("hsm: TPM device %s: %w", path, err)
	}
	return t, nil
}
