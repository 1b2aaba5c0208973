package storage

import "golang.org/x/sys/cpu"

// vzeroupper clears the upper halves of the AVX registers. The AVX2
// XChaCha20-Poly1305 code can leave them dirty, after which every SSE
// instruction (SHA-NI among them) pays a state-transition penalty on some
// CPUs: measured here as a 25x slower SHA-256 of record headers.
func vzeroupper()

var hasAVX = cpu.X86.HasAVX

func cleanVector() {
	if hasAVX {
		vzeroupper()
	}
}
