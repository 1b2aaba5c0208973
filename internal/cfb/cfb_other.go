//go:build !amd64 || purego

package cfb

const haveAsm = false

func expandKey256(key *byte, xk *uint32) { panic("cfb: no assembly") }

func encryptBlocks256(xk *uint32, dst, src *byte, n int) { panic("cfb: no assembly") }

func encryptCFB256(xk *uint32, iv *[16]byte, dst, src *byte, n int) { panic("cfb: no assembly") }

func decryptCFB256(xk *uint32, iv *[16]byte, dst, src *byte, n int) { panic("cfb: no assembly") }
