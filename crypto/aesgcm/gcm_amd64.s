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
//
// An ESP packet is a few such iterations, so the work around them counts
// too, and is kept to one reduction and no memory round trips where it
// can be (a store then a load of the same bytes costs a store-to-load
// forwarding delay, or a stall when one load spans several stores):
//   - J0 is built in a register from the nonce (PROLOGUE), and the first
//     counters stay in a register for the first AES batch.
//   - Additional data of up to 16 bytes (ESP's) is one block, multiplied
//     in the prologue together with the lengths block, both by the power
//     of H they take in their reductions, and reduced with others (hashAD).
//   - The last 16-block group takes powers above H^16, so that it, the
//     last bytes and the lengths block share one reduction.
//   - The last bytes (fewer than 256) get only the AES blocks they need,
//     kept in registers, and are encrypted (or decrypted), stored and
//     hashed in one pass, the partial block read and written byte-exact
//     (tailKeystream, sealTail, openTail).
//   - Open compares the tag in constant time itself.

// Layout of gcmKey (gcm_amd64.go checks these offsets at compile time).
#define HTAB 0
#define KTAB 544
#define RK 1088
#define ROUNDS 1328

// H16 is the offset of H^16 in htab (and of its entry in ktab): H^34..H^17
// come first. KOFF is ktab's distance from htab, for a pointer into htab
// to find the matching ktab entry; it is also the end of htab, where the
// powers for the last m blocks of a message, H^m..H^1, end.
#define H16 288
#define KOFF 544

// Registers shared by gcmSeal, gcmOpen and their helpers:
//   DI   *gcmKey
//   R12  rounds (10, 12 or 14)
//   R10  &rk[rounds], the last round key
//   R13  the caller's frame (see gcmSeal)
//   BX   in the loops, the powers of H for the group being hashed
//   Y0..Y7  AES state, 16 blocks; in the tail, its keystream
//   Y8, Y9  GHASH temporaries (Y8 also the counter, in CTR8)
//   Y10, Y11, Y12  the unreduced low, Karatsuba middle and high 128-bit
//        parts of a sum of products, one sum per lane, reduced by REDUCE.
//        Between groups of blocks they hold what the next group adds to
//        its sum: zero (REDUCE leaves them so), or, before the first
//        reduction, the product of the additional data with its power of
//        H (hashAD).
//   X13  the GHASH accumulator, byte-reversed, carried from one reduction
//        into the first block of the next group. Its upper lane is kept 0
//        (VEX.128 writes clear it), so VPXOR Y13 adds it to the first
//        block of a pair only.
//   Y14  the round key, broadcast to both lanes
//   Y15  bswapMask
// Registers are all in use in the stitched loops, so the next two counter
// blocks live in the frame at CTR(R13): byte-reversed, so that VPADDD steps
// the big-endian 32-bit counter (inc32 of SP 800-38D §6.2), counter c in
// lane 0 and c+1 in lane 1. The prologue also leaves the first two in Y7.
//
// The frame of gcmSeal and gcmOpen, at R13 (the hardware SP):
//   CTR      [0, 32)    the counters
//   TAGMASK  [32, 48)   E(K, J0)
//   LPROD    [48, 144)  the lengths block's products (hashAD), for the
//                       last reduction: low, middle and high, 32 bytes
//                       each, the product in lane 0 and lane 1 zero
#define CTR 0
#define TAGMASK 32
#define LPROD 48

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

// j0One is the 0^31‖1 that ends J0 for a 12-byte nonce (SP 800-38D §7.1).
DATA j0One<>+0x00(SB)/8, $0
DATA j0One<>+0x08(SB)/8, $0x0100000000000000
GLOBL j0One<>(SB), RODATA|NOPTR, $16

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
// powers HADDR (32 bytes, in memory or a register) to Y10..Y12, lane by
// lane, with Karatsuba:
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
// position of a 16-block group whose powers start at B in htab: H^16..H^1
// at B = &htab[H16], or, for the last group of a message, H^(m+16)..
// H^(m+1), so that it and the m blocks after it (the tail and the lengths
// block) share one reduction. Clobbers Y8, Y9.
#define GHPAIR(P, off, B) \
	VMOVDQU off(P), Y8; \
	VPSHUFB Y15, Y8, Y8; \
	GHMUL(Y8, off(B), KOFF+off(B))

// GHPAIR0 is GHPAIR for the first pair, which carries the accumulator.
// The loops hash it last, which keeps the chain from one iteration's
// accumulator to the next short.
#define GHPAIR0(P, B) \
	VMOVDQU 0(P), Y8; \
	VPSHUFB Y15, Y8, Y8; \
	VPXOR   Y13, Y8, Y8; \
	GHMUL(Y8, (B), KOFF(B))

#define ZEROACC \
	VPXOR Y10, Y10, Y10; \
	VPXOR Y11, Y11, Y11; \
	VPXOR Y12, Y12, Y12

// GHASH8 multiplies the 16 blocks at P, the first plus the accumulator, by
// the 16 powers at B (see GHPAIR) and adds the products to Y10..Y12;
// REDUCE finishes the step.
#define GHASH8(P, B) \
	GHPAIR(P, 32, B); \
	GHPAIR(P, 64, B); \
	GHPAIR(P, 96, B); \
	GHPAIR(P, 128, B); \
	GHPAIR(P, 160, B); \
	GHPAIR(P, 192, B); \
	GHPAIR(P, 224, B); \
	GHPAIR0(P, B)

// REDUCE adds the two lanes of Y10..Y12, turns the Karatsuba middle into
// the middle product (middle ⊕ low ⊕ high), forms the 256-bit product
// X12:X10 and reduces it into X13: a Montgomery reduction by 2^128 modulo
// the reflected polynomial, 64 bits at a time (see mul in gcm_amd64.go,
// which does the same in Go), and leaves Y10..Y12 zero for the next group.
// Clobbers Y9.
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
	VPXOR        X12, X10, X13; \
	ZEROACC

// CTRSTEPS2 puts the counter pairs Y8 and Y8+2 in Y0 and Y1 as AES takes
// them and steps Y8 past them; CTR4STEPS and CTR8STEPS do the same for
// Y0..Y3 and Y0..Y7. CTR8 does it for Y0..Y7 from the counters in
// CTR(R13), and stores the stepped counters back. They clobber Y8.
#define CTRSTEPS2 \
	VPSHUFB Y15, Y8, Y0; \
	VPADDD  ctrTwo<>(SB), Y8, Y8; \
	VPSHUFB Y15, Y8, Y1; \
	VPADDD  ctrTwo<>(SB), Y8, Y8

#define CTR4STEPS \
	CTRSTEPS2; \
	VPSHUFB Y15, Y8, Y2; \
	VPADDD  ctrTwo<>(SB), Y8, Y8; \
	VPSHUFB Y15, Y8, Y3; \
	VPADDD  ctrTwo<>(SB), Y8, Y8

#define CTR8STEPS \
	CTR4STEPS; \
	VPSHUFB Y15, Y8, Y4; \
	VPADDD  ctrTwo<>(SB), Y8, Y8; \
	VPSHUFB Y15, Y8, Y5; \
	VPADDD  ctrTwo<>(SB), Y8, Y8; \
	VPSHUFB Y15, Y8, Y6; \
	VPADDD  ctrTwo<>(SB), Y8, Y8; \
	VPSHUFB Y15, Y8, Y7; \
	VPADDD  ctrTwo<>(SB), Y8, Y8

#define CTR8 \
	VMOVDQU CTR(R13), Y8; \
	CTR8STEPS; \
	VMOVDQU Y8, CTR(R13)

// KEY8(op, k) applies one round to Y0..Y7 (op VPXOR for the whitening,
// VAESENC, VAESENCLAST) with the round key at k, broadcast to Y14; KEY4 to
// Y0..Y3, KEY2 to Y0 and Y1, KEYY1 to Y0. (One load per round: VAESENC
// with a memory operand would load once per register, and loads are then
// what limits the loop.)
#define KEYY1(op, k) \
	VBROADCASTI128 k, Y14; \
	op Y14, Y0, Y0

#define KEY2(op, k) \
	VBROADCASTI128 k, Y14; \
	op Y14, Y0, Y0; \
	op Y14, Y1, Y1

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
// 1..9 on Y0..Y7, each round with one pair of blocks of GHASH from P, with
// the powers at B, added to Y10..Y12. The caller then runs the other
// rounds (ROUNDSLAST), stores, and reduces: REDUCE after the stores
// overlaps with the next iteration's first rounds.
#define STITCHED(P, B) \
	KEY8(VPXOR, RK(DI)); \
	KEY8(VAESENC, RK+16(DI)); \
	GHPAIR(P, 32, B); \
	KEY8(VAESENC, RK+32(DI)); \
	GHPAIR(P, 64, B); \
	KEY8(VAESENC, RK+48(DI)); \
	GHPAIR(P, 96, B); \
	KEY8(VAESENC, RK+64(DI)); \
	GHPAIR(P, 128, B); \
	KEY8(VAESENC, RK+80(DI)); \
	GHPAIR(P, 160, B); \
	KEY8(VAESENC, RK+96(DI)); \
	GHPAIR(P, 192, B); \
	KEY8(VAESENC, RK+112(DI)); \
	GHPAIR(P, 224, B); \
	KEY8(VAESENC, RK+128(DI)); \
	GHPAIR0(P, B); \
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

// LOADPART loads the N (1..15) bytes at P into X, zero-padded, reading
// exactly those bytes: the N&7 bytes after the first N&8 are gathered in
// AX from the last one down (1, 2, then 4 bytes), then the first 8 bytes,
// if N&8, join them. Loads this size are served by the stores that wrote
// the bytes, where a 16-byte load of a copy made piecemeal would wait for
// the stores to reach the cache (no store-to-load forwarding from several
// stores to one load). Clobbers AX, T, U.
#define LOADPART(P, N, X, T, U, l2, l4, l8, ldone) \
	LEAQ    (P)(N*1), T; \
	XORL    AX, AX; \
	TESTQ   $1, N; \
	JZ      l2; \
	MOVBQZX -1(T), AX; \
	DECQ    T; \
l2: \
	TESTQ   $2, N; \
	JZ      l4; \
	SHLQ    $16, AX; \
	MOVWQZX -2(T), U; \
	ORQ     U, AX; \
	SUBQ    $2, T; \
l4: \
	TESTQ   $4, N; \
	JZ      l8; \
	SHLQ    $32, AX; \
	MOVL    -4(T), U; \
	ORQ     U, AX; \
l8: \
	VMOVQ   AX, X; \
	TESTQ   $8, N; \
	JZ      ldone; \
	VMOVQ   (P), X; \
	VPINSRQ $1, AX, X, X; \
ldone:

// KEY1 applies one round to the single block in X0 (VEX.128, AES-NI).
#define KEY1(op, k) op k, X0, X0

// PROLOGUE sets up the shared registers; builds J0 = nonce‖0^31‖1 (SP
// 800-38D §7.1) in X0 from loads of 4 and 8 bytes (so that stores of the
// nonce's salt and IV forward to them) and from it the first counters;
// computes the tag mask E(K, J0) into TAGMASK(SP) and the lengths block
// (§7.1: len(A) then len(C) in bits, 64 bits each, big-endian;
// byte-reversed, len(C) is the low word) into X6; starts GHASH with the
// additional data and the lengths block (hashAD); and leaves SI, DX, CX =
// src, dst, len(src), and the first counters in Y7 as well as CTR(SP), for
// the first AES batch not to wait for a store and load. The counters come
// first: that batch waits for them, while the tag mask is wanted only at
// the end.
#define PROLOGUE(lj0) \
	MOVQ    k+0(FP), DI; \
	MOVQ    ROUNDS(DI), R12; \
	MOVQ    R12, R10; \
	SHLQ    $4, R10; \
	LEAQ    RK(DI)(R10*1), R10; \
	LEAQ    0(SP), R13; \
	VMOVDQU bswapMask<>(SB), Y15; \
	MOVQ    nonce+80(FP), AX; \
	VMOVQ   4(AX), X0; \
	VPSLLDQ $4, X0, X0; \
	VPINSRD $0, (AX), X0, X0; \
	VPOR    j0One<>(SB), X0, X0; \
	VPSHUFB X15, X0, X7; \
	VINSERTI128 $1, X7, Y7, Y7; \
	VPADDD  ctrFirst<>(SB), Y7, Y7; \
	VMOVDQU Y7, CTR(SP); \
	ROUNDS1TO9(KEY1); \
	ROUNDSLAST(KEY1, lj0); \
	VMOVDQU X0, TAGMASK(SP); \
	MOVQ    src_len+40(FP), CX; \
	MOVQ    CX, AX; \
	SHLQ    $3, AX; \
	VMOVQ   AX, X6; \
	MOVQ    ad_len+64(FP), R9; \
	MOVQ    R9, AX; \
	SHLQ    $3, AX; \
	VPINSRQ $1, AX, X6, X6; \
	MOVQ    ad_base+56(FP), R8; \
	CALL    hashAD<>(SB); \
	MOVQ    src_base+32(FP), SI; \
	MOVQ    dst_base+8(FP), DX; \
	MOVQ    src_len+40(FP), CX

// SEALEND writes the tag, GHASH ⊕ E(K, J0), to *tag.
#define SEALEND \
	VPSHUFB X15, X13, X13; \
	VPXOR   TAGMASK(SP), X13, X13; \
	MOVQ    tag+88(FP), AX; \
	VMOVDQU X13, (AX); \
	VZEROUPPER; \
	RET

// OPENEND compares the tag, GHASH ⊕ E(K, J0), with *tag in constant time
// (no branch or memory access depends on either) and returns whether they
// are equal.
#define OPENEND \
	VPSHUFB X15, X13, X13; \
	VPXOR   TAGMASK(SP), X13, X13; \
	MOVQ    tag+88(FP), AX; \
	VPXOR   (AX), X13, X13; \
	VPTEST  X13, X13; \
	SETEQ   ret+96(FP); \
	VZEROUPPER; \
	RET

// LASTPOWERS sets B to where the powers of the last 16-block group start
// when CX bytes follow it: H^(m+16), for the m = ceil(CX/16)+1 blocks
// after it (the lengths block included), at &htab[H16-16m]. Clobbers AX.
#define LASTPOWERS(B) \
	LEAQ 31(CX), AX; \
	ANDQ $-16, AX; \
	NEGQ AX; \
	LEAQ HTAB+H16(DI)(AX*1), B

// func gcmSeal(k *gcmKey, dst, src, ad []byte, nonce *[12]byte, tag *[16]byte)
// The frame is laid out as CTR..LPROD above. BX points at the powers
// for the group being hashed.
TEXT ·gcmSeal(SB), 0, $144-96
	PROLOGUE(sealJ0)
	CMPQ CX, $256
	JB   sealShort

	// The first 256 bytes: encrypt only; the loop hashes them.
	VMOVDQA Y7, Y8
	CTR8STEPS
	VMOVDQU Y8, CTR(R13)
	ROUNDS1TO9(KEY8)
	ROUNDSLAST(KEY8, sealFirstLast)
	XOR8
	ADDQ $256, SI
	ADDQ $256, DX
	SUBQ $256, CX
	LEAQ HTAB+H16(DI), BX

sealLoop:
	// Encrypt the next 256 bytes, hashing the previous 256 of ciphertext.
	CMPQ CX, $256
	JB   sealFlush
	LEAQ -256(DX), R8
	CTR8
	STITCHED(R8, BX)
	ROUNDSLAST(KEY8, sealLast)
	XOR8
	REDUCE
	ADDQ $256, SI
	ADDQ $256, DX
	SUBQ $256, CX
	JMP  sealLoop

sealFlush:
	// The keystream for the last bytes (fewer than 256), then the hash of
	// the last 256 bytes of ciphertext (independent of that keystream, so
	// the two overlap), left unreduced for sealTail to add the last bytes
	// and the lengths block's products to and reduce once.
	TESTQ   CX, CX
	JZ      sealHashLast
	VMOVDQU CTR(R13), Y8
	CALL    tailKeystream<>(SB)

sealHashLast:
	LEAQ -256(DX), R8
	LASTPOWERS(BX)
	GHASH8(R8, BX)
	// The accumulator is in the sums now: sealTail must not add it again.
	VPXOR X13, X13, X13
	MOVQ src_base+32(FP), R11
	CALL sealTail<>(SB)
	SEALEND

sealShort:
	// Fewer than 256 bytes in all.
	TESTQ   CX, CX
	JZ      sealShortHash
	VMOVDQA Y7, Y8
	CALL    tailKeystream<>(SB)

sealShortHash:
	MOVQ src_base+32(FP), R11
	CALL sealTail<>(SB)
	SEALEND

// func gcmOpen(k *gcmKey, dst, src, ad []byte, nonce *[12]byte, tag *[16]byte) bool
// Same frame as gcmSeal. Each 256 bytes of ciphertext are hashed before
// they are decrypted, as dst may be src.
TEXT ·gcmOpen(SB), 0, $144-97
	PROLOGUE(openJ0)
	CMPQ CX, $256
	JB   openShort

openLoop:
	// The last group takes the powers that let the last bytes and the
	// lengths block share its reduction, as in gcmSeal (LASTPOWERS of the
	// CX-256 bytes after it).
	LEAQ HTAB+H16(DI), BX
	CMPQ CX, $512
	JAE  openGroup
	SUBQ $256, CX
	LASTPOWERS(BX)
	ADDQ $256, CX

openGroup:
	CTR8
	STITCHED(SI, BX)
	ROUNDSLAST(KEY8, openLastRound)
	XOR8
	ADDQ $256, SI
	ADDQ $256, DX
	SUBQ $256, CX
	CMPQ CX, $256
	JB   openFlush
	REDUCE
	JMP  openLoop

openFlush:
	// The last group's sums are left unreduced for openTail, and the
	// accumulator is in them: openTail must not add it again. Then the
	// keystream for the last bytes (fewer than 256), and their hash and
	// decryption.
	VPXOR   X13, X13, X13
	TESTQ   CX, CX
	JZ      openHashLast
	VMOVDQU CTR(R13), Y8
	CALL    tailKeystream<>(SB)

openHashLast:
	MOVQ src_base+32(FP), R11
	CALL openTail<>(SB)
	OPENEND

openShort:
	// Fewer than 256 bytes in all.
	TESTQ   CX, CX
	JZ      openHashLast
	VMOVDQA Y7, Y8
	CALL    tailKeystream<>(SB)
	JMP     openHashLast

// hashAD starts GHASH with the additional data, R9 bytes at R8, and the
// lengths block X6, for a message of CX bytes of ciphertext, without a
// reduction of its own. Up to 16 bytes of additional data (ESP's 8 or 12)
// make one block A; longer data is hashed by ghashAD into the accumulator
// X13, which then stands for A one power lower (it is what the first
// block of ciphertext would carry). A takes the power after those of the
// blocks it is reduced with: H^17 ahead of the first 16-block group if 32
// or more follow (CX >= 512), else H^(t+2) ahead of all t = ceil(CX/16)
// blocks and the lengths block (at most H^34). The lengths block takes H^1
// in the last reduction. The two are multiplied as one pair, [A, L] by
// [H^p, H^1]: A's products go into Y10..Y12, to be added to its group's;
// L's are parked at LPROD(R13), lane 1 moved to lane 0 and the rest zero,
// for the tail to add before the last reduction. X13 is then 0.
// Clobbers AX, BX, R8, R9, R11, R14, Y4, Y5, Y8, Y9.
TEXT hashAD<>(SB), NOSPLIT, $0
	VPXOR X13, X13, X13
	ZEROACC
	// BX = the offset of H^(t+2) in htab, 16*(32-t), or of H^17, 272.
	LEAQ    15(CX), AX
	ANDQ    $-16, AX
	MOVQ    $512, BX
	SUBQ    AX, BX
	MOVQ    $272, AX
	CMPQ    CX, $512
	CMOVQCC AX, BX
	VPXOR   X8, X8, X8
	TESTQ   R9, R9
	JZ      adMul
	CMPQ    R9, $16
	JA      adLong
	JEQ     adFull
	LOADPART(R8, R9, X8, R11, R14, ad2, ad4, ad8, adRead)
	VPSHUFB X15, X8, X8
	JMP     adMul

adFull:
	VMOVDQU (R8), X8
	VPSHUFB X15, X8, X8
	JMP     adMul

adLong:
	MOVQ    BX, R11
	CALL    ghashAD<>(SB)
	LEAQ    16(R11), BX
	VMOVDQA X13, X8
	VPXOR   X13, X13, X13

adMul:
	ADDQ        DI, BX
	VINSERTI128 $1, X6, Y8, Y8
	VMOVDQU     HTAB(BX), X4
	VINSERTI128 $1, HTAB+KOFF-16(DI), Y4, Y4
	VMOVDQU     KTAB(BX), X5
	VINSERTI128 $1, KTAB+KOFF-16(DI), Y5, Y5
	GHMUL(Y8, Y4, Y5)
	VEXTRACTI128 $1, Y10, X4
	VMOVDQU      Y4, LPROD(R13)
	VEXTRACTI128 $1, Y11, X4
	VMOVDQU      Y4, LPROD+32(R13)
	VEXTRACTI128 $1, Y12, X4
	VMOVDQU      Y4, LPROD+64(R13)
	VMOVDQA      X10, X10
	VMOVDQA      X11, X11
	VMOVDQA      X12, X12
	RET

// ghashAD adds the R9 (> 16) bytes of additional data at R8 to the GHASH
// accumulator X13, the last block zero-padded (SP 800-38D §6.4, §7.1): 16
// blocks per reduction, then the m <= 16 blocks left multiplied by
// H^m..H^1 and reduced once. The last partial block is read with one load
// ending at the end of the data (which is longer than 16 bytes).
// Expects Y10..Y12 zero and leaves them so.
// Clobbers AX, BX, R8, R9, Y8, Y9.
TEXT ghashAD<>(SB), NOSPLIT, $0
	LEAQ HTAB+H16(DI), BX

ghLoop:
	CMPQ R9, $256
	JB   ghRest
	GHASH8(R8, BX)
	REDUCE
	ADDQ $256, R8
	SUBQ $256, R9
	JMP  ghLoop

ghRest:
	// BX = 16*m for the m blocks left.
	LEAQ 15(R9), BX
	ANDQ $-16, BX
	JZ   ghDone
	// The m blocks take H^m..H^1, which start at htab[16*(npow-m)].
	NEGQ BX
	LEAQ HTAB+KOFF(DI)(BX*1), BX

ghPairs:
	CMPQ    R9, $32
	JB      ghOne
	VMOVDQU (R8), Y8
	VPSHUFB Y15, Y8, Y8
	// The accumulator goes into the first block only: clear it once added.
	VPXOR   Y13, Y8, Y8
	VPXOR   X13, X13, X13
	GHMUL(Y8, (BX), KOFF(BX))
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
	GHMUL(Y8, (BX), KOFF(BX))
	ADDQ    $16, R8
	ADDQ    $16, BX
	SUBQ    $16, R9

ghPartial:
	TESTQ   R9, R9
	JZ      ghReduce
	VMOVDQU -16(R8)(R9*1), X8
	LEAQ    revShiftCtl<>(SB), AX
	VPSHUFB (AX)(R9*1), X8, X8
	VPXOR   X13, X8, X8
	VPXOR   X13, X13, X13
	GHMUL(Y8, (BX), KOFF(BX))

ghReduce:
	REDUCE

ghDone:
	RET

// tailKeystream puts the keystream for the last CX (1..255) bytes, the
// ceil(CX/16) counter blocks from those in Y8, rounded up to 2, 4, 8 or
// 16, in Y0, Y0..Y1, Y0..Y3 or Y0..Y7: no more AES than the tail needs.
// Clobbers Y8, Y14.
TEXT tailKeystream<>(SB), NOSPLIT, $0
	CMPQ    CX, $128
	JA      ks16
	CMPQ    CX, $64
	JA      ks8
	CMPQ    CX, $32
	JA      ks4
	VPSHUFB Y15, Y8, Y0
	ROUNDS1TO9(KEYY1)
	ROUNDSLAST(KEYY1, ks2Last)
	RET

ks4:
	CTRSTEPS2
	ROUNDS1TO9(KEY2)
	ROUNDSLAST(KEY2, ks4Last)
	RET

ks8:
	CTR4STEPS
	ROUNDS1TO9(KEY4)
	ROUNDSLAST(KEY4, ks8Last)
	RET

ks16:
	CTR8STEPS
	ROUNDS1TO9(KEY8)
	ROUNDSLAST(KEY8, ks16Last)
	RET

// The last CX (< 256) bytes, after tailKeystream, are handled in one pass
// (sealTail, openTail): pair k of blocks takes the keystream in register
// Yk, is encrypted (or decrypted) and stored, and is hashed from its
// register, with fixed offsets k*32 from SI, DX and BX. The pairs are
// unrolled, and where they stop (fewer than 32 bytes left) a stub moves
// the next keystream register to Y0 and the offset to AX for the rest: a
// full block and a partial block (zero-padded for GHASH, stored byte by
// byte) hashed as a pair, or either alone. The keystream never goes
// through memory. The lengths block is not among them: hashAD has
// multiplied it already, and the tail adds its products (LPROD) before
// the last reduction. The accumulator X13 is 0 here (the last group, if
// any, took it).

// TAILSTART begins sealTail and openTail: BX = &htab[16*(npow-m)], where
// H^m..H^2 start, for the m-1 = ceil(CX/16) blocks left (H^1 is the
// lengths block's); and, if the last block is partial, its CX&15 input
// bytes in X14, zero-padded. They are read first, as dst may be src: with
// one load that ends at the end of src if src is readable from R11 on,
// else (a message shorter than 16 bytes) with LOADPART. Ends at the label
// lpairs. Clobbers AX, R11, R14.
#define TAILSTART(lpairs, lsmall, l2, l4, l8, lread) \
	LEAQ    31(CX), BX; \
	ANDQ    $-16, BX; \
	NEGQ    BX; \
	LEAQ    HTAB+KOFF(DI)(BX*1), BX; \
	MOVQ    CX, AX; \
	ANDQ    $15, AX; \
	JZ      lpairs; \
	LEAQ    -16(SI)(CX*1), R14; \
	CMPQ    R14, R11; \
	JB      lsmall; \
	VMOVDQU (R14), X14; \
	LEAQ    shiftCtl<>+16(SB), R14; \
	SUBQ    AX, R14; \
	VPSHUFB (R14), X14, X14; \
	JMP     lpairs; \
lsmall: \
	LOADPART(SI, CX, X14, R11, R14, l2, l4, l8, lread); \
lpairs:

// STOREPART writes the low N (1..15) bytes of X to P, in at most four
// stores (8, 4, 2, 1 bytes), so it touches exactly N bytes. Clobbers AX, P.
#define STOREPART(X, N, P, l4, l2, l1, ldone) \
	VMOVQ   X, AX; \
	TESTQ   $8, N; \
	JZ      l4; \
	MOVQ    AX, (P); \
	VPEXTRQ $1, X, AX; \
	ADDQ    $8, P; \
l4: \
	TESTQ   $4, N; \
	JZ      l2; \
	MOVL    AX, (P); \
	SHRQ    $32, AX; \
	ADDQ    $4, P; \
l2: \
	TESTQ   $2, N; \
	JZ      l1; \
	MOVW    AX, (P); \
	SHRQ    $16, AX; \
	ADDQ    $2, P; \
l1: \
	TESTQ   $1, N; \
	JZ      ldone; \
	MOVB    AX, (P); \
ldone:

// SEALPAIR encrypts the pair of blocks at off(SI) with the keystream in
// YK to off(DX) and hashes the ciphertext with the powers at off(BX).
#define SEALPAIR(off, YK) \
	VPXOR   off(SI), YK, YK; \
	VMOVDQU YK, off(DX); \
	VPSHUFB Y15, YK, Y8; \
	GHMUL(Y8, off(BX), KOFF+off(BX))

// OPENPAIR hashes the pair of blocks of ciphertext at off(SI) with the
// powers at off(BX) and decrypts it with the keystream in YK to off(DX).
#define OPENPAIR(off, YK) \
	VMOVDQU off(SI), Y8; \
	VPXOR   Y8, YK, YK; \
	VMOVDQU YK, off(DX); \
	VPSHUFB Y15, Y8, Y8; \
	GHMUL(Y8, off(BX), KOFF+off(BX))

// PAIRS runs up to 7 pairs (CX < 256), then goes to lrest with AX = the
// bytes they took (AX is 0 on entry) and the next keystream register in
// Y0. Labels are arguments.
#define PAIRS(PAIR, l1, l2, l3, l4, l5, l6, lrest) \
	CMPQ    CX, $32; \
	JB      lrest; \
	PAIR(0, Y0); \
	CMPQ    CX, $64; \
	JB      l1; \
	PAIR(32, Y1); \
	CMPQ    CX, $96; \
	JB      l2; \
	PAIR(64, Y2); \
	CMPQ    CX, $128; \
	JB      l3; \
	PAIR(96, Y3); \
	CMPQ    CX, $160; \
	JB      l4; \
	PAIR(128, Y4); \
	CMPQ    CX, $192; \
	JB      l5; \
	PAIR(160, Y5); \
	CMPQ    CX, $224; \
	JB      l6; \
	PAIR(192, Y6); \
	MOVL    $224, AX; \
	VMOVDQA Y7, Y0; \
	JMP     lrest; \
l6: \
	MOVL    $192, AX; \
	VMOVDQA Y6, Y0; \
	JMP     lrest; \
l5: \
	MOVL    $160, AX; \
	VMOVDQA Y5, Y0; \
	JMP     lrest; \
l4: \
	MOVL    $128, AX; \
	VMOVDQA Y4, Y0; \
	JMP     lrest; \
l3: \
	MOVL    $96, AX; \
	VMOVDQA Y3, Y0; \
	JMP     lrest; \
l2: \
	MOVL    $64, AX; \
	VMOVDQA Y2, Y0; \
	JMP     lrest; \
l1: \
	MOVL    $32, AX; \
	VMOVDQA Y1, Y0; \
	JMP     lrest

// RESTSTART steps SI, DX, BX past the pairs and CX down, and goes to
// lnofull if no full block is left.
#define RESTSTART(lnofull) \
	ADDQ AX, SI; \
	ADDQ AX, DX; \
	ADDQ AX, BX; \
	SUBQ AX, CX; \
	CMPQ CX, $16; \
	JB   lnofull

// TAILEND adds the lengths block's products (hashAD) to the sums, reduces
// them into X13 and returns.
#define TAILEND \
	VPXOR LPROD(R13), Y10, Y10; \
	VPXOR LPROD+32(R13), Y11, Y11; \
	VPXOR LPROD+64(R13), Y12, Y12; \
	REDUCE; \
	RET

// sealTail encrypts the last CX (< 256) bytes from SI to DX with the
// keystream in Y0..Y7 (tailKeystream), hashes them with powers H^m..H^2,
// added to Y10..Y12, adds the lengths block's products and reduces into
// X13.
// Clobbers AX, BX, CX, SI, DX, R11, R14, Y0..Y9, Y14.
TEXT sealTail<>(SB), NOSPLIT, $0
	TAILSTART(stPairs, stSmall, st2, st4, st8, stRead)
	XORL AX, AX
	PAIRS(SEALPAIR, stP1, stP2, stP3, stP4, stP5, stP6, stRest)

stRest:
	RESTSTART(stNoFull)
	VPXOR   (SI), X0, X2
	VMOVDQU X2, (DX)
	VPSHUFB X15, X2, X8
	SUBQ    $16, CX
	JZ      stOne
	// A full block and a partial block, whose keystream is lane 1 of Y0.
	ADDQ         $16, DX
	VEXTRACTI128 $1, Y0, X0
	VPXOR        X0, X14, X14
	LEAQ         maskTbl<>+16(SB), AX
	SUBQ         CX, AX
	VPAND        (AX), X14, X14
	VPSHUFB      X15, X14, X3
	VINSERTI128  $1, X3, Y8, Y8
	GHMUL(Y8, (BX), KOFF(BX))
	STOREPART(X14, CX, DX, st4o, st2o, st1o, stOut)
	TAILEND

stNoFull:
	TESTQ   CX, CX
	JZ      stEnd
	// A partial block.
	VPXOR   X0, X14, X14
	LEAQ    maskTbl<>+16(SB), AX
	SUBQ    CX, AX
	VPAND   (AX), X14, X14
	VPSHUFB X15, X14, X8
	STOREPART(X14, CX, DX, st4p, st2p, st1p, stOutP)

stOne:
	// One block in lane 0 of Y8; lane 1 is zero and adds nothing.
	GHMUL(Y8, (BX), KOFF(BX))

stEnd:
	TAILEND

// openTail hashes the last CX (< 256) bytes of ciphertext at SI as
// sealTail does, and decrypts them to DX with the keystream in Y0..Y7.
// Clobbers AX, BX, CX, SI, DX, R11, R14, Y0..Y9, Y14.
TEXT openTail<>(SB), NOSPLIT, $0
	TAILSTART(otPairs, otSmall, ot2, ot4, ot8, otRead)
	XORL AX, AX
	PAIRS(OPENPAIR, otP1, otP2, otP3, otP4, otP5, otP6, otRest)

otRest:
	RESTSTART(otNoFull)
	VMOVDQU (SI), X2
	VPSHUFB X15, X2, X8
	VPXOR   X2, X0, X2
	VMOVDQU X2, (DX)
	SUBQ    $16, CX
	JZ      otOne
	// A full block and a partial block, whose keystream is lane 1 of Y0.
	ADDQ         $16, DX
	VEXTRACTI128 $1, Y0, X0
	VPSHUFB      X15, X14, X3
	VINSERTI128  $1, X3, Y8, Y8
	GHMUL(Y8, (BX), KOFF(BX))
	VPXOR        X0, X14, X14
	STOREPART(X14, CX, DX, ot4o, ot2o, ot1o, otOut)
	TAILEND

otNoFull:
	TESTQ   CX, CX
	JZ      otEnd
	// A partial block.
	VPSHUFB X15, X14, X8
	VPXOR   X0, X14, X14
	STOREPART(X14, CX, DX, ot4p, ot2p, ot1p, otOutP)

otOne:
	// One block in lane 0 of Y8; lane 1 is zero and adds nothing.
	GHMUL(Y8, (BX), KOFF(BX))

otEnd:
	TAILEND

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
