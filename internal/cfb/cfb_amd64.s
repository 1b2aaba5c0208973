//go:build !purego

#include "textflag.h"

// AES-256 with AES-NI, for CFB-128. Key expansion follows Go's
// crypto/internal/fips140/aes/aes_amd64.s (BSD licence, The Go Authors),
// itself the sequence of Intel's AES-NI white paper.

// EXPAND_A: X0 = next even round key from X0 and AESKEYGENASSIST(X2) in X1.
#define EXPAND_A \
	PSHUFD $0xff, X1, X1; \
	SHUFPS $0x10, X0, X4; \
	PXOR   X4, X0;        \
	SHUFPS $0x8c, X0, X4; \
	PXOR   X4, X0;        \
	PXOR   X1, X0;        \
	MOVUPS X0, (BX);      \
	ADDQ   $0x10, BX

// EXPAND_B: X2 = next odd round key from X2 and AESKEYGENASSIST(X0) in X1.
#define EXPAND_B \
	PSHUFD $0xaa, X1, X1; \
	SHUFPS $0x10, X2, X4; \
	PXOR   X4, X2;        \
	SHUFPS $0x8c, X2, X4; \
	PXOR   X4, X2;        \
	PXOR   X1, X2;        \
	MOVUPS X2, (BX);      \
	ADDQ   $0x10, BX

// func expandKey256(key *byte, xk *uint32)
TEXT ·expandKey256(SB), NOSPLIT, $0-16
	MOVQ   key+0(FP), AX
	MOVQ   xk+8(FP), BX
	MOVUPS (AX), X0
	MOVUPS 16(AX), X2
	MOVUPS X0, (BX)
	MOVUPS X2, 16(BX)
	ADDQ   $0x20, BX
	PXOR   X4, X4
	AESKEYGENASSIST $0x01, X2, X1
	EXPAND_A
	AESKEYGENASSIST $0x01, X0, X1
	EXPAND_B
	AESKEYGENASSIST $0x02, X2, X1
	EXPAND_A
	AESKEYGENASSIST $0x02, X0, X1
	EXPAND_B
	AESKEYGENASSIST $0x04, X2, X1
	EXPAND_A
	AESKEYGENASSIST $0x04, X0, X1
	EXPAND_B
	AESKEYGENASSIST $0x08, X2, X1
	EXPAND_A
	AESKEYGENASSIST $0x08, X0, X1
	EXPAND_B
	AESKEYGENASSIST $0x10, X2, X1
	EXPAND_A
	AESKEYGENASSIST $0x10, X0, X1
	EXPAND_B
	AESKEYGENASSIST $0x20, X2, X1
	EXPAND_A
	AESKEYGENASSIST $0x20, X0, X1
	EXPAND_B
	AESKEYGENASSIST $0x40, X2, X1
	EXPAND_A
	PXOR X0, X0
	PXOR X1, X1
	PXOR X2, X2
	PXOR X4, X4
	RET

// ROUND8 applies the round key at off(AX) to X0..X7.
#define ROUND8(off) \
	MOVUPS off(AX), X8; \
	AESENC X8, X0;      \
	AESENC X8, X1;      \
	AESENC X8, X2;      \
	AESENC X8, X3;      \
	AESENC X8, X4;      \
	AESENC X8, X5;      \
	AESENC X8, X6;      \
	AESENC X8, X7

// ROUND1 applies the round key at off(AX) to X0.
#define ROUND1(off) \
	MOVUPS off(AX), X8; \
	AESENC X8, X0

// ENCRYPT1 encrypts X0 with the schedule at AX (X8 scratch).
#define ENCRYPT1 \
	MOVUPS     (AX), X8; \
	PXOR       X8, X0;   \
	ROUND1(16);          \
	ROUND1(32);          \
	ROUND1(48);          \
	ROUND1(64);          \
	ROUND1(80);          \
	ROUND1(96);          \
	ROUND1(112);         \
	ROUND1(128);         \
	ROUND1(144);         \
	ROUND1(160);         \
	ROUND1(176);         \
	ROUND1(192);         \
	ROUND1(208);         \
	MOVUPS     224(AX), X8; \
	AESENCLAST X8, X0

// func encryptBlocks256(xk *uint32, dst, src *byte, n int)
TEXT ·encryptBlocks256(SB), NOSPLIT, $0-32
	MOVQ xk+0(FP), AX
	MOVQ dst+8(FP), DI
	MOVQ src+16(FP), SI
	MOVQ n+24(FP), CX
eb_loop:
	MOVUPS (SI), X0
	ENCRYPT1
	MOVUPS X0, (DI)
	ADDQ   $16, SI
	ADDQ   $16, DI
	DECQ   CX
	JNZ    eb_loop
	PXOR   X0, X0
	PXOR   X8, X8
	RET

// func decryptCFB256(xk *uint32, iv *[16]byte, dst, src *byte, n int)
//
// P[i] = C[i] ^ E(C[i-1]), C[-1] = iv. The inputs of a group of eight are
// all loaded before any output is stored, so dst may equal src.
TEXT ·decryptCFB256(SB), NOSPLIT, $0-40
	MOVQ   xk+0(FP), AX
	MOVQ   iv+8(FP), BX
	MOVQ   dst+16(FP), DI
	MOVQ   src+24(FP), SI
	MOVQ   n+32(FP), CX
	MOVUPS (BX), X10

dec_loop8:
	CMPQ   CX, $8
	JB     dec_tail
	MOVUPS X10, X0
	MOVUPS 0(SI), X1
	MOVUPS 16(SI), X2
	MOVUPS 32(SI), X3
	MOVUPS 48(SI), X4
	MOVUPS 64(SI), X5
	MOVUPS 80(SI), X6
	MOVUPS 96(SI), X7
	MOVUPS 112(SI), X10
	MOVUPS (AX), X8
	PXOR   X8, X0
	PXOR   X8, X1
	PXOR   X8, X2
	PXOR   X8, X3
	PXOR   X8, X4
	PXOR   X8, X5
	PXOR   X8, X6
	PXOR   X8, X7
	ROUND8(16)
	ROUND8(32)
	ROUND8(48)
	ROUND8(64)
	ROUND8(80)
	ROUND8(96)
	ROUND8(112)
	ROUND8(128)
	ROUND8(144)
	ROUND8(160)
	ROUND8(176)
	ROUND8(192)
	ROUND8(208)
	MOVUPS     224(AX), X8
	AESENCLAST X8, X0
	AESENCLAST X8, X1
	AESENCLAST X8, X2
	AESENCLAST X8, X3
	AESENCLAST X8, X4
	AESENCLAST X8, X5
	AESENCLAST X8, X6
	AESENCLAST X8, X7
	MOVUPS 0(SI), X9
	PXOR   X9, X0
	MOVUPS X0, 0(DI)
	MOVUPS 16(SI), X9
	PXOR   X9, X1
	MOVUPS X1, 16(DI)
	MOVUPS 32(SI), X9
	PXOR   X9, X2
	MOVUPS X2, 32(DI)
	MOVUPS 48(SI), X9
	PXOR   X9, X3
	MOVUPS X3, 48(DI)
	MOVUPS 64(SI), X9
	PXOR   X9, X4
	MOVUPS X4, 64(DI)
	MOVUPS 80(SI), X9
	PXOR   X9, X5
	MOVUPS X5, 80(DI)
	MOVUPS 96(SI), X9
	PXOR   X9, X6
	MOVUPS X6, 96(DI)
	PXOR   X10, X7
	MOVUPS X7, 112(DI)
	ADDQ   $128, SI
	ADDQ   $128, DI
	SUBQ   $8, CX
	JMP    dec_loop8

dec_tail:
	TESTQ  CX, CX
	JZ     dec_done

dec_loop1:
	MOVUPS X10, X0
	MOVUPS (SI), X10
	ENCRYPT1
	PXOR   X10, X0
	MOVUPS X0, (DI)
	ADDQ   $16, SI
	ADDQ   $16, DI
	DECQ   CX
	JNZ    dec_loop1

dec_done:
	MOVUPS X10, (BX)
	PXOR   X0, X0
	PXOR   X1, X1
	PXOR   X2, X2
	PXOR   X3, X3
	PXOR   X4, X4
	PXOR   X5, X5
	PXOR   X6, X6
	PXOR   X7, X7
	PXOR   X8, X8
	PXOR   X9, X9
	PXOR   X10, X10
	RET

// func encryptCFB256(xk *uint32, iv *[16]byte, dst, src *byte, n int)
//
// C[i] = P[i] ^ E(C[i-1]), C[-1] = iv: a chain, so one block at a time,
// with the round keys k1..k14 held in X1..X14. The plaintext is folded into
// the last round key (AESENCLAST with k14^P gives C directly) and k0 into
// the feedback, keeping the chain to the AES rounds and one XOR. dst may
// equal src: each block is read before it is written.
TEXT ·encryptCFB256(SB), NOSPLIT, $0-40
	MOVQ   xk+0(FP), AX
	MOVQ   iv+8(FP), BX
	MOVQ   dst+16(FP), DI
	MOVQ   src+24(FP), SI
	MOVQ   n+32(FP), CX
	MOVUPS 16(AX), X1
	MOVUPS 32(AX), X2
	MOVUPS 48(AX), X3
	MOVUPS 64(AX), X4
	MOVUPS 80(AX), X5
	MOVUPS 96(AX), X6
	MOVUPS 112(AX), X7
	MOVUPS 128(AX), X8
	MOVUPS 144(AX), X9
	MOVUPS 160(AX), X10
	MOVUPS 176(AX), X11
	MOVUPS 192(AX), X12
	MOVUPS 208(AX), X13
	MOVUPS 224(AX), X14
	MOVUPS (BX), X0
	MOVUPS (AX), X15
	PXOR   X15, X0

enc_loop:
	MOVUPS     (SI), X15
	PXOR       X14, X15
	AESENC     X1, X0
	AESENC     X2, X0
	AESENC     X3, X0
	AESENC     X4, X0
	AESENC     X5, X0
	AESENC     X6, X0
	AESENC     X7, X0
	AESENC     X8, X0
	AESENC     X9, X0
	AESENC     X10, X0
	AESENC     X11, X0
	AESENC     X12, X0
	AESENC     X13, X0
	AESENCLAST X15, X0
	MOVUPS     X0, (DI)
	MOVUPS     (AX), X15
	PXOR       X15, X0
	ADDQ       $16, SI
	ADDQ       $16, DI
	DECQ       CX
	JNZ        enc_loop

	MOVUPS (AX), X15
	PXOR   X15, X0
	MOVUPS X0, (BX)
	PXOR   X0, X0
	PXOR   X1, X1
	PXOR   X2, X2
	PXOR   X3, X3
	PXOR   X4, X4
	PXOR   X5, X5
	PXOR   X6, X6
	PXOR   X7, X7
	PXOR   X8, X8
	PXOR   X9, X9
	PXOR   X10, X10
	PXOR   X11, X11
	PXOR   X12, X12
	PXOR   X13, X13
	PXOR   X14, X14
	PXOR   X15, X15
	RET
