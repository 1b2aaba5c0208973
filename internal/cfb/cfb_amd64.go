//go:build !purego

package cfb

import "golang.org/x/sys/cpu"

// haveAsm: AESENC/AESKEYGENASSIST need AES-NI; the shuffles are SSE2.
var haveAsm = cpu.X86.HasAES && cpu.X86.HasSSE2

// expandKey256 writes the 15 AES-256 encryption round keys of key (32
// bytes) to xk (60 words).
//
//go:noescape
func expandKey256(key *byte, xk *uint32)

// encryptBlocks256 encrypts n independent blocks (ECB), n ≥ 1.
//
//go:noescape
func encryptBlocks256(xk *uint32, dst, src *byte, n int)

// encryptCFB256 CFB-encrypts n ≥ 1 whole blocks; iv is the feedback
// register, updated to the last ciphertext block. dst may equal src.
//
//go:noescape
func encryptCFB256(xk *uint32, iv *[16]byte, dst, src *byte, n int)

// decryptCFB256 CFB-decrypts n ≥ 1 whole blocks, eight at a time; iv is
// updated to the last ciphertext block. dst may equal src.
//
//go:noescape
func decryptCFB256(xk *uint32, iv *[16]byte, dst, src *byte, n int)
