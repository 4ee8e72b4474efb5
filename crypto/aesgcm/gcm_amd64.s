//go:build !purego

#include "textflag.h"

// AES-GCM with VAES and VPCLMULQDQ on 256-bit (VEX-encoded) registers: two
// blocks per register, 16 blocks (256 bytes) per loop iteration.
//
// GHASH is the Gueron-Kounavis method on byte-reversed blocks (see
// gcm_amd64.go): Karatsuba products of the 16 blocks of an iteration with
// H^16..H^1, summed unreduced, then one reduction. Measured on Zen 4
// (EPYC, family 25 model 17): VAESENC ymm issues twice per cycle,
// VPCLMULQDQ (xmm or ymm) once per two cycles and mostly apart from AES,
// so GHASH, not AES, bounds the loop, and the loops interleave each AES
// round with one pair of blocks of GHASH (the "stitched" loop) for the
// two to overlap. Open hashes the ciphertext it is about to decrypt, Seal
// the ciphertext of the previous iteration.

// Layout of gcmKey (gcm_amd64.go checks these offsets at compile time).
#define HTAB 0
#define KTAB 256
#define RK 512
#define ROUNDS 752

// Registers shared by gcmSeal, gcmOpen and their helpers:
//   DI   *gcmKey
//   R12  rounds (10, 12 or 14)
//   R10  &rk[rounds], the last round key
//   R13  the caller's frame (see gcmSeal)
//   Y0..Y7  AES state, 16 blocks
//   Y8, Y9  GHASH temporaries (Y8 also the counter, in CTR4 and CTR8)
//   Y10, Y11, Y12  the unreduced low, Karatsuba middle and high 128-bit
//        parts of a sum of products, one sum per lane, reduced by REDUCE
//   X13  the GHASH accumulator, byte-reversed. Its upper lane is kept 0
//        (VEX.128 writes clear it), so VPXOR Y13 adds it to the first
//        block of a pair only.
//   Y14  the round key, broadcast to both lanes
//   Y15  bswapMask
// Registers are all in use in the stitched loops, so the next two counter
// blocks live in the frame at CTR(R13): byte-reversed, so that VPADDD steps
// the big-endian 32-bit counter (inc32 of SP 800-38D §6.2), counter c in
// lane 0 and c+1 in lane 1.
//
// The frame of gcmSeal and gcmOpen, at R13 (the hardware SP):
//   KS       [0, 256)   keystream, for ctrTail
//   PART     [256, 272) a partial block, zero-padded
//   TAGMASK  [272, 288) E(K, J0)
//   CTR      [288, 320) the counters
//   LENS     [320, 336) the lengths block, byte-reversed
//   FINAL    [336, 344) 16 when ghashBytes is to add LENS, else 0
#define KS 0
#define PART 256
#define TAGMASK 272
#define CTR 288
#define LENS 320
#define FINAL 336

// bswapMask: VPSHUFB control reversing the 16 bytes of each lane.
DATA bswapMask<>+0x00(SB)/8, $0x08090a0b0c0d0e0f
DATA bswapMask<>+0x08(SB)/8, $0x0001020304050607
DATA bswapMask<>+0x10(SB)/8, $0x08090a0b0c0d0e0f
DATA bswapMask<>+0x18(SB)/8, $0x0001020304050607
GLOBL bswapMask<>(SB), RODATA|NOPTR, $32

// gcmPoly: the reflected reduction polynomial x^128+x^7+x^2+x+1; only its
// high word, 0xC2000000_00000000, is multiplied by.
DATA gcmPoly<>+0x00(SB)/8, $0x0000000000000001
DATA gcmPoly<>+0x08(SB)/8, $0xc200000000000000
GLOBL gcmPoly<>(SB), RODATA|NOPTR, $16

// ctrFirst turns two copies of byte-reversed J0 into J0+1, J0+2.
DATA ctrFirst<>+0x00(SB)/8, $1
DATA ctrFirst<>+0x08(SB)/8, $0
DATA ctrFirst<>+0x10(SB)/8, $2
DATA ctrFirst<>+0x18(SB)/8, $0
GLOBL ctrFirst<>(SB), RODATA|NOPTR, $32

// shiftCtl+16-r, for r in 1..15: VPSHUFB control taking the last r bytes
// of a 16-byte load to the front and zeroing the rest: a partial block
// read with one load that ends where the buffer ends.
DATA shiftCtl<>+0x00(SB)/8, $0x0706050403020100
DATA shiftCtl<>+0x08(SB)/8, $0x0f0e0d0c0b0a0908
DATA shiftCtl<>+0x10(SB)/8, $0x8080808080808080
DATA shiftCtl<>+0x18(SB)/8, $0x8080808080808080
GLOBL shiftCtl<>(SB), RODATA|NOPTR, $32

// revShiftCtl+r: the same, byte-reversed as GHASH takes blocks (the r
// bytes go to the top, in reverse order).
DATA revShiftCtl<>+0x00(SB)/8, $0x8080808080808080
DATA revShiftCtl<>+0x08(SB)/8, $0x8080808080808080
DATA revShiftCtl<>+0x10(SB)/8, $0x08090a0b0c0d0e0f
DATA revShiftCtl<>+0x18(SB)/8, $0x0001020304050607
GLOBL revShiftCtl<>(SB), RODATA|NOPTR, $32

// maskTbl+16-r: r bytes of 0xff, then zeros.
DATA maskTbl<>+0x00(SB)/8, $0xffffffffffffffff
DATA maskTbl<>+0x08(SB)/8, $0xffffffffffffffff
DATA maskTbl<>+0x10(SB)/8, $0
DATA maskTbl<>+0x18(SB)/8, $0
GLOBL maskTbl<>(SB), RODATA|NOPTR, $32

// ctrTwo steps both lanes of the counter pair by two.
DATA ctrTwo<>+0x00(SB)/8, $2
DATA ctrTwo<>+0x08(SB)/8, $0
DATA ctrTwo<>+0x10(SB)/8, $2
DATA ctrTwo<>+0x18(SB)/8, $0
GLOBL ctrTwo<>(SB), RODATA|NOPTR, $32

// GHMUL adds the products of the two byte-reversed blocks in D with the
// powers at HADDR (32 bytes) to Y10..Y12, lane by lane, with Karatsuba:
// low = d0·h0, high = d1·h1, middle = (d0⊕d1)·(h0⊕h1), the last factor
// read from KADDR; REDUCE later removes low and high from middle. Clobbers
// Y9.
#define GHMUL(D, HADDR, KADDR) \
	VPCLMULQDQ $0x00, HADDR, D, Y9; \
	VPXOR      Y9, Y10, Y10; \
	VPCLMULQDQ $0x11, HADDR, D, Y9; \
	VPXOR      Y9, Y12, Y12; \
	VPSHUFD    $0x4e, D, Y9; \
	VPXOR      D, Y9, Y9; \
	VPCLMULQDQ $0x00, KADDR, Y9, Y9; \
	VPXOR      Y9, Y11, Y11

// GHPAIR hashes the pair of blocks at off(P) with the powers for that
// position of a 16-block group. Clobbers Y8, Y9.
#define GHPAIR(P, off) \
	VMOVDQU off(P), Y8; \
	VPSHUFB Y15, Y8, Y8; \
	GHMUL(Y8, HTAB+off(DI), KTAB+off(DI))

// GHPAIR0 is GHPAIR for the first pair, which carries the accumulator.
// The loops hash it last, which keeps the chain from one iteration's
// accumulator to the next short.
#define GHPAIR0(P) \
	VMOVDQU 0(P), Y8; \
	VPSHUFB Y15, Y8, Y8; \
	VPXOR   Y13, Y8, Y8; \
	GHMUL(Y8, HTAB(DI), KTAB(DI))

#define ZEROACC \
	VPXOR Y10, Y10, Y10; \
	VPXOR Y11, Y11, Y11; \
	VPXOR Y12, Y12, Y12

// GHASH8 multiplies the 16 blocks at P, the first plus the accumulator, by
// H^16..H^1 into Y10..Y12 (cleared first); REDUCE finishes the step.
#define GHASH8(P) \
	ZEROACC; \
	GHPAIR(P, 32); \
	GHPAIR(P, 64); \
	GHPAIR(P, 96); \
	GHPAIR(P, 128); \
	GHPAIR(P, 160); \
	GHPAIR(P, 192); \
	GHPAIR(P, 224); \
	GHPAIR0(P)

// REDUCE adds the two lanes of Y10..Y12, turns the Karatsuba middle into
// the middle product (middle ⊕ low ⊕ high), forms the 256-bit product
// X12:X10 and reduces it into X13: a Montgomery reduction by 2^128 modulo
// the reflected polynomial, 64 bits at a time (see mul in gcm_amd64.go,
// which does the same in Go). Clobbers Y9..Y12.
#define REDUCE \
	VEXTRACTI128 $1, Y10, X9; \
	VPXOR        X9, X10, X10; \
	VEXTRACTI128 $1, Y11, X9; \
	VPXOR        X9, X11, X11; \
	VEXTRACTI128 $1, Y12, X9; \
	VPXOR        X9, X12, X12; \
	VPXOR        X10, X11, X11; \
	VPXOR        X12, X11, X11; \
	VPSLLDQ      $8, X11, X9; \
	VPXOR        X9, X10, X10; \
	VPSRLDQ      $8, X11, X11; \
	VPXOR        X11, X12, X12; \
	VPCLMULQDQ   $0x10, gcmPoly<>(SB), X10, X9; \
	VPSHUFD      $0x4e, X10, X10; \
	VPXOR        X9, X10, X10; \
	VPCLMULQDQ   $0x10, gcmPoly<>(SB), X10, X9; \
	VPSHUFD      $0x4e, X10, X10; \
	VPXOR        X9, X10, X10; \
	VPXOR        X12, X10, X13

// CTR8 puts the next 16 counter blocks in Y0..Y7 and steps the counters;
// CTR4 the next 8 in Y0..Y3. Clobber Y8.
#define CTR4STEPS \
	VPSHUFB Y15, Y8, Y0; \
	VPADDD  ctrTwo<>(SB), Y8, Y8; \
	VPSHUFB Y15, Y8, Y1; \
	VPADDD  ctrTwo<>(SB), Y8, Y8; \
	VPSHUFB Y15, Y8, Y2; \
	VPADDD  ctrTwo<>(SB), Y8, Y8; \
	VPSHUFB Y15, Y8, Y3; \
	VPADDD  ctrTwo<>(SB), Y8, Y8

#define CTR4 \
	VMOVDQU CTR(R13), Y8; \
	CTR4STEPS; \
	VMOVDQU Y8, CTR(R13)

#define CTR8 \
	VMOVDQU CTR(R13), Y8; \
	CTR4STEPS; \
	VPSHUFB Y15, Y8, Y4; \
	VPADDD  ctrTwo<>(SB), Y8, Y8; \
	VPSHUFB Y15, Y8, Y5; \
	VPADDD  ctrTwo<>(SB), Y8, Y8; \
	VPSHUFB Y15, Y8, Y6; \
	VPADDD  ctrTwo<>(SB), Y8, Y8; \
	VPSHUFB Y15, Y8, Y7; \
	VPADDD  ctrTwo<>(SB), Y8, Y8; \
	VMOVDQU Y8, CTR(R13)

// KEY8(op, k) applies one round to Y0..Y7 (op VPXOR for the whitening,
// VAESENC, VAESENCLAST) with the round key at k, broadcast to Y14; KEY4 to
// Y0..Y3. (One load per round: VAESENC with a memory operand would load
// once per register, and loads are then what limits the loop.)
#define KEY4OPS(op) \
	op Y14, Y0, Y0; \
	op Y14, Y1, Y1; \
	op Y14, Y2, Y2; \
	op Y14, Y3, Y3

#define KEY4(op, k) \
	VBROADCASTI128 k, Y14; \
	KEY4OPS(op)

#define KEY8(op, k) \
	VBROADCASTI128 k, Y14; \
	KEY4OPS(op); \
	op Y14, Y4, Y4; \
	op Y14, Y5, Y5; \
	op Y14, Y6, Y6; \
	op Y14, Y7, Y7

// STITCHED is the start of a stitched iteration: the whitening and rounds
// 1..9 on Y0..Y7, each round with one pair of blocks of GHASH from P. The
// caller then runs the other rounds (ROUNDSLAST), stores, and reduces:
// REDUCE after the stores overlaps with the next iteration's first rounds.
#define STITCHED(P) \
	ZEROACC; \
	KEY8(VPXOR, RK(DI)); \
	KEY8(VAESENC, RK+16(DI)); \
	GHPAIR(P, 32); \
	KEY8(VAESENC, RK+32(DI)); \
	GHPAIR(P, 64); \
	KEY8(VAESENC, RK+48(DI)); \
	GHPAIR(P, 96); \
	KEY8(VAESENC, RK+64(DI)); \
	GHPAIR(P, 128); \
	KEY8(VAESENC, RK+80(DI)); \
	GHPAIR(P, 160); \
	KEY8(VAESENC, RK+96(DI)); \
	GHPAIR(P, 192); \
	KEY8(VAESENC, RK+112(DI)); \
	GHPAIR(P, 224); \
	KEY8(VAESENC, RK+128(DI)); \
	GHPAIR0(P); \
	KEY8(VAESENC, RK+144(DI))

// ROUNDS1TO9 is the whitening and rounds 1..9 without GHASH.
#define ROUNDS1TO9(KEY) \
	KEY(VPXOR, RK(DI)); \
	KEY(VAESENC, RK+16(DI)); \
	KEY(VAESENC, RK+32(DI)); \
	KEY(VAESENC, RK+48(DI)); \
	KEY(VAESENC, RK+64(DI)); \
	KEY(VAESENC, RK+80(DI)); \
	KEY(VAESENC, RK+96(DI)); \
	KEY(VAESENC, RK+112(DI)); \
	KEY(VAESENC, RK+128(DI)); \
	KEY(VAESENC, RK+144(DI))

// ROUNDSLAST runs rounds 10 and 11 for AES-192 and AES-256 and 12 and 13
// for AES-256 only (VAESENC leaves the flags alone), then the last round.
// Labels are arguments: a macro may appear more than once in a function.
#define ROUNDSLAST(KEY, llast) \
	CMPQ R12, $12; \
	JB   llast; \
	KEY(VAESENC, RK+160(DI)); \
	KEY(VAESENC, RK+176(DI)); \
	JEQ  llast; \
	KEY(VAESENC, RK+192(DI)); \
	KEY(VAESENC, RK+208(DI)); \
llast: \
	KEY(VAESENCLAST, (R10))

// XOR8 adds the 256 bytes at SI to Y0..Y7 and stores them at DX.
#define XOR8 \
	VPXOR   0(SI), Y0, Y0; \
	VPXOR   32(SI), Y1, Y1; \
	VPXOR   64(SI), Y2, Y2; \
	VPXOR   96(SI), Y3, Y3; \
	VPXOR   128(SI), Y4, Y4; \
	VPXOR   160(SI), Y5, Y5; \
	VPXOR   192(SI), Y6, Y6; \
	VPXOR   224(SI), Y7, Y7; \
	VMOVDQU Y0, 0(DX); \
	VMOVDQU Y1, 32(DX); \
	VMOVDQU Y2, 64(DX); \
	VMOVDQU Y3, 96(DX); \
	VMOVDQU Y4, 128(DX); \
	VMOVDQU Y5, 160(DX); \
	VMOVDQU Y6, 192(DX); \
	VMOVDQU Y7, 224(DX)

// COPYTAIL copies N (< 16) bytes from FROM to TO, advancing both, in at most
// four moves (8, 4, 2, 1 bytes), so it touches exactly N bytes of each.
// Clobbers AX.
#define COPYTAIL(N, FROM, TO, l4, l2, l1, ldone) \
	TESTQ $8, N; \
	JZ    l4; \
	MOVQ  (FROM), AX; \
	MOVQ  AX, (TO); \
	ADDQ  $8, FROM; \
	ADDQ  $8, TO; \
l4: \
	TESTQ $4, N; \
	JZ    l2; \
	MOVL  (FROM), AX; \
	MOVL  AX, (TO); \
	ADDQ  $4, FROM; \
	ADDQ  $4, TO; \
l2: \
	TESTQ $2, N; \
	JZ    l1; \
	MOVW  (FROM), AX; \
	MOVW  AX, (TO); \
	ADDQ  $2, FROM; \
	ADDQ  $2, TO; \
l1: \
	TESTQ $1, N; \
	JZ    ldone; \
	MOVB  (FROM), AX; \
	MOVB  AX, (TO); \
ldone:

// KEY1 applies one round to the single block in X0 (VEX.128, AES-NI).
#define KEY1(op, k) op k, X0, X0

// PROLOGUE sets up the shared registers, computes the tag mask E(K, J0)
// into TAGMASK(SP) and the lengths block (SP 800-38D §7.1: len(A) then
// len(C) in bits, 64 bits each, big-endian; byte-reversed, len(C) is the
// low word) into LENS(SP), hashes the additional data and leaves SI, DX,
// CX = src, dst, len(src).
#define PROLOGUE(lj0) \
	MOVQ    k+0(FP), DI; \
	MOVQ    ROUNDS(DI), R12; \
	MOVQ    R12, R10; \
	SHLQ    $4, R10; \
	LEAQ    RK(DI)(R10*1), R10; \
	LEAQ    0(SP), R13; \
	VMOVDQU bswapMask<>(SB), Y15; \
	MOVQ    j0+80(FP), AX; \
	VMOVDQU (AX), X0; \
	ROUNDS1TO9(KEY1); \
	ROUNDSLAST(KEY1, lj0); \
	VMOVDQU X0, TAGMASK(SP); \
	MOVQ    src_len+40(FP), AX; \
	SHLQ    $3, AX; \
	VMOVQ   AX, X0; \
	MOVQ    ad_len+64(FP), AX; \
	SHLQ    $3, AX; \
	VPINSRQ $1, AX, X0, X0; \
	VMOVDQU X0, LENS(SP); \
	MOVQ    $0, FINAL(SP); \
	VPXOR   X13, X13, X13; \
	MOVQ    ad_base+56(FP), R8; \
	MOVQ    ad_len+64(FP), R9; \
	MOVQ    R8, R11; \
	CALL    ghashBytes<>(SB); \
	MOVQ    j0+80(FP), AX; \
	VBROADCASTI128 (AX), Y8; \
	VPSHUFB Y15, Y8, Y8; \
	VPADDD  ctrFirst<>(SB), Y8, Y8; \
	VMOVDQU Y8, CTR(SP); \
	MOVQ    src_base+32(FP), SI; \
	MOVQ    dst_base+8(FP), DX; \
	MOVQ    src_len+40(FP), CX

// EPILOGUE writes the tag, GHASH ⊕ E(K, J0), to *tag.
#define EPILOGUE \
	VPSHUFB X15, X13, X13; \
	VPXOR   TAGMASK(SP), X13, X13; \
	MOVQ    tag+88(FP), AX; \
	VMOVDQU X13, (AX); \
	VZEROUPPER; \
	RET

// func gcmSeal(k *gcmKey, dst, src, ad []byte, j0, tag *[16]byte)
// The frame is laid out as KS..FINAL above.
TEXT ·gcmSeal(SB), 0, $344-96
	PROLOGUE(sealJ0)
	CMPQ CX, $256
	JB   sealShort

	// The first 256 bytes: encrypt only; the loop hashes them.
	CTR8
	ROUNDS1TO9(KEY8)
	ROUNDSLAST(KEY8, sealFirstLast)
	XOR8
	ADDQ $256, SI
	ADDQ $256, DX
	SUBQ $256, CX

sealLoop:
	// Encrypt the next 256 bytes, hashing the previous 256 of ciphertext.
	CMPQ CX, $256
	JB   sealFlush
	LEAQ -256(DX), R8
	CTR8
	STITCHED(R8)
	ROUNDSLAST(KEY8, sealLast)
	XOR8
	REDUCE
	ADDQ $256, SI
	ADDQ $256, DX
	SUBQ $256, CX
	JMP  sealLoop

sealFlush:
	// Encrypt the last bytes (fewer than 256), then hash the last full 256
	// bytes of ciphertext (independent of that encryption, so the two
	// overlap), then the last bytes and the lengths block. ctrTail leaves
	// R8 and R9 alone, and the last partial block of ciphertext at PART.
	LEAQ -256(DX), R8
	MOVQ CX, R9
	MOVQ src_base+32(FP), R11
	CALL ctrTail<>(SB)
	GHASH8(R8)
	REDUCE
	ADDQ $256, R8
	XORL R11, R11
	MOVQ $16, FINAL(SP)
	CALL ghashBytes<>(SB)
	EPILOGUE

sealShort:
	// Fewer than 256 bytes in all.
	MOVQ DX, R8
	MOVQ CX, R9
	MOVQ src_base+32(FP), R11
	CALL ctrTail<>(SB)
	XORL R11, R11
	MOVQ $16, FINAL(SP)
	CALL ghashBytes<>(SB)
	EPILOGUE

// func gcmOpen(k *gcmKey, dst, src, ad []byte, j0, tag *[16]byte)
// Same frame as gcmSeal. Each 256 bytes of ciphertext are hashed before
// they are decrypted, as dst may be src.
TEXT ·gcmOpen(SB), 0, $344-96
	PROLOGUE(openJ0)

openLoop:
	CMPQ CX, $256
	JB   openTail
	CTR8
	STITCHED(SI)
	ROUNDSLAST(KEY8, openLast)
	XOR8
	REDUCE
	ADDQ $256, SI
	ADDQ $256, DX
	SUBQ $256, CX
	JMP  openLoop

openTail:
	// The last bytes and the lengths block, then decrypt the last bytes.
	MOVQ SI, R8
	MOVQ CX, R9
	MOVQ src_base+32(FP), R11
	MOVQ $16, FINAL(SP)
	CALL ghashBytes<>(SB)
	MOVQ src_base+32(FP), R11
	CALL ctrTail<>(SB)
	EPILOGUE

// ghashBytes adds R9 bytes at R8 to the GHASH accumulator X13, the last
// block zero-padded (SP 800-38D §6.4, §7.1), then, if FINAL(R13) is 16,
// the lengths block LENS(R13): 16 blocks per reduction, then the m <= 16
// blocks left multiplied by H^m..H^1 and reduced once.
// The last partial block, if any, is read from memory that R11 says is
// readable from R11 on (one load ending at the buffer's end, if it stays
// inside); R11 == 0 says it is at PART(R13) already, zero-padded.
// Clobbers AX, BX, R8, R9, R11, Y8..Y12 and PART(R13).
TEXT ghashBytes<>(SB), NOSPLIT, $0
ghLoop:
	CMPQ R9, $256
	JB   ghRest
	GHASH8(R8)
	REDUCE
	ADDQ $256, R8
	SUBQ $256, R9
	JMP  ghLoop

ghRest:
	// BX = 16*m for the m blocks left, the lengths block included.
	MOVQ FINAL(R13), BX
	LEAQ 15(R9)(BX*1), BX
	ANDQ $-16, BX
	JZ   ghDone
	CMPQ BX, $256
	JBE  ghFits
	// 17 blocks (more than 240 bytes and the lengths block): hash the
	// first one on its own.
	ZEROACC
	VMOVDQU (R8), X8
	VPSHUFB X15, X8, X8
	VPXOR   X13, X8, X8
	GHMUL(Y8, HTAB+240(DI), KTAB+240(DI))
	REDUCE
	ADDQ    $16, R8
	SUBQ    $16, R9
	SUBQ    $16, BX

ghFits:
	// The m blocks take H^m..H^1, which start at htab[16*(16-m)].
	NEGQ BX
	LEAQ HTAB+256(DI)(BX*1), BX
	ZEROACC

ghPairs:
	CMPQ    R9, $32
	JB      ghOne
	VMOVDQU (R8), Y8
	VPSHUFB Y15, Y8, Y8
	// The accumulator goes into the first block only: clear it once added.
	VPXOR   Y13, Y8, Y8
	VPXOR   X13, X13, X13
	GHMUL(Y8, (BX), 256(BX))
	ADDQ    $32, R8
	ADDQ    $32, BX
	SUBQ    $32, R9
	JMP     ghPairs

ghOne:
	// A single block in lane 0; lane 1 is zero and adds nothing. (The
	// 32-byte loads of powers stay inside gcmKey: ktab and rk follow.)
	CMPQ    R9, $16
	JB      ghPartial
	VMOVDQU (R8), X8
	VPSHUFB X15, X8, X8
	VPXOR   X13, X8, X8
	VPXOR   X13, X13, X13
	GHMUL(Y8, (BX), 256(BX))
	ADDQ    $16, R8
	ADDQ    $16, BX
	SUBQ    $16, R9

ghPartial:
	TESTQ   R9, R9
	JZ      ghLens
	TESTQ   R11, R11
	JNZ     ghPartialMem
	VMOVDQU PART(R13), X8
	VPSHUFB X15, X8, X8
	JMP     ghPartialMul

ghPartialMem:
	LEAQ    -16(R8)(R9*1), AX
	CMPQ    AX, R11
	JB      ghPartialCopy
	VMOVDQU (AX), X8
	LEAQ    revShiftCtl<>(SB), AX
	VPSHUFB (AX)(R9*1), X8, X8
	JMP     ghPartialMul

ghPartialCopy:
	// A buffer shorter than 16 bytes: copy it out.
	VPXOR   X8, X8, X8
	VMOVDQU X8, PART(R13)
	LEAQ    PART(R13), R11
	COPYTAIL(R9, R8, R11, gh4, gh2, gh1, ghCopied)
	VMOVDQU PART(R13), X8
	VPSHUFB X15, X8, X8

ghPartialMul:
	VPXOR   X13, X8, X8
	VPXOR   X13, X13, X13
	GHMUL(Y8, (BX), 256(BX))
	ADDQ    $16, BX

ghLens:
	CMPQ    FINAL(R13), $0
	JEQ     ghReduce
	VMOVDQU LENS(R13), X8
	VPXOR   X13, X8, X8
	VPXOR   X13, X13, X13
	GHMUL(Y8, (BX), 256(BX))

ghReduce:
	REDUCE

ghDone:
	RET

// ctrTail encrypts CX (< 256) bytes from SI to DX with the next counters:
// the keystream of 8 or 16 blocks into KS(R13), then 32, 16 and fewer
// bytes at a time. The last partial block is read, as in ghashBytes, with
// one load ending at the end of src if src is readable from R11 on; it is
// read first, as dst may be src. The output's last partial block is left
// zero-padded at PART(R13), for ghashBytes.
// Clobbers AX, BX, CX, SI, DX, R11, Y0..Y9, KS(R13) and PART(R13).
TEXT ctrTail<>(SB), NOSPLIT, $0
	TESTQ CX, CX
	JZ    ctDone
	// R11 = 1 if X9 holds the input's last partial block, else 0.
	MOVQ  CX, AX
	ANDQ  $15, AX
	JZ    ctNoEarly
	LEAQ  -16(SI)(CX*1), BX
	CMPQ  BX, R11
	JB    ctNoEarly
	VMOVDQU (BX), X9
	LEAQ  shiftCtl<>+16(SB), BX
	SUBQ  AX, BX
	VPSHUFB (BX), X9, X9
	MOVL  $1, R11
	JMP   ctKeystream

ctNoEarly:
	XORL R11, R11

ctKeystream:
	CMPQ CX, $128
	JA   ct16
	CTR4
	ROUNDS1TO9(KEY4)
	ROUNDSLAST(KEY4, ct8Last)
	VMOVDQU Y0, KS+0(R13)
	VMOVDQU Y1, KS+32(R13)
	VMOVDQU Y2, KS+64(R13)
	VMOVDQU Y3, KS+96(R13)
	JMP     ctXor

ct16:
	CTR8
	ROUNDS1TO9(KEY8)
	ROUNDSLAST(KEY8, ct16Last)
	VMOVDQU Y0, KS+0(R13)
	VMOVDQU Y1, KS+32(R13)
	VMOVDQU Y2, KS+64(R13)
	VMOVDQU Y3, KS+96(R13)
	VMOVDQU Y4, KS+128(R13)
	VMOVDQU Y5, KS+160(R13)
	VMOVDQU Y6, KS+192(R13)
	VMOVDQU Y7, KS+224(R13)

ctXor:
	LEAQ KS(R13), BX

ctPairs:
	CMPQ    CX, $32
	JB      ctOne
	VMOVDQU (SI), Y0
	VPXOR   (BX), Y0, Y0
	VMOVDQU Y0, (DX)
	ADDQ    $32, SI
	ADDQ    $32, DX
	ADDQ    $32, BX
	SUBQ    $32, CX
	JMP     ctPairs

ctOne:
	CMPQ    CX, $16
	JB      ctPartial
	VMOVDQU (SI), X0
	VPXOR   (BX), X0, X0
	VMOVDQU X0, (DX)
	ADDQ    $16, SI
	ADDQ    $16, DX
	ADDQ    $16, BX
	SUBQ    $16, CX

ctPartial:
	TESTQ   CX, CX
	JZ      ctDone
	TESTQ   R11, R11
	JNZ     ctHave
	// src is shorter than 16 bytes: copy it out.
	VPXOR   X9, X9, X9
	VMOVDQU X9, PART(R13)
	LEAQ    PART(R13), R11
	COPYTAIL(CX, SI, R11, ct4, ct2, ct1, ctIn)
	VMOVDQU PART(R13), X9

ctHave:
	VPXOR   (BX), X9, X9
	LEAQ    maskTbl<>+16(SB), AX
	SUBQ    CX, AX
	VPAND   (AX), X9, X9
	VMOVDQU X9, PART(R13)
	LEAQ    PART(R13), R11
	COPYTAIL(CX, R11, DX, ct4o, ct2o, ct1o, ctOut)

ctDone:
	RET

// func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL eaxArg+0(FP), AX
	MOVL ecxArg+4(FP), CX
	CPUID
	MOVL AX, eax+8(FP)
	MOVL BX, ebx+12(FP)
	MOVL CX, ecx+16(FP)
	MOVL DX, edx+20(FP)
	RET
