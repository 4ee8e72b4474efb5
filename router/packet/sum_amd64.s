//go:build !purego

#include "textflag.h"

// Low 16 bits of each 32-bit lane.
DATA lowWords<>+0(SB)/8, $0x0000ffff0000ffff
DATA lowWords<>+8(SB)/8, $0x0000ffff0000ffff
DATA lowWords<>+16(SB)/8, $0x0000ffff0000ffff
DATA lowWords<>+24(SB)/8, $0x0000ffff0000ffff
GLOBL lowWords<>(SB), RODATA|NOPTR, $32

// func sumAVX2(b []byte) uint64
//
// len(b) is a multiple of 64 and at most 1 MiB. Each 32-bit lane of the
// four accumulators collects the low or the high 16-bit word of the lanes
// loaded, zero-extended, so no carry is lost (RFC 1071 §2(C): defer the
// carries). Four independent chains keep both vector adders busy.
TEXT ·sumAVX2(SB), NOSPLIT, $0-32
	MOVQ b_base+0(FP), SI
	MOVQ b_len+8(FP), CX
	VMOVDQU lowWords<>(SB), Y7
	VPXOR Y0, Y0, Y0
	VPXOR Y1, Y1, Y1
	VPXOR Y2, Y2, Y2
	VPXOR Y3, Y3, Y3
	SHRQ $6, CX
	JZ   done

loop:
	VMOVDQU 0(SI), Y4
	VMOVDQU 32(SI), Y5
	VPSRLD $16, Y4, Y6
	VPAND Y7, Y4, Y4
	VPADDD Y4, Y0, Y0
	VPADDD Y6, Y1, Y1
	VPSRLD $16, Y5, Y6
	VPAND Y7, Y5, Y5
	VPADDD Y5, Y2, Y2
	VPADDD Y6, Y3, Y3
	ADDQ $64, SI
	DECQ CX
	JNZ  loop

done:
	// Widen the 32-bit lanes to 64 bits before adding them together:
	// four accumulators of eight lanes could exceed 32 bits.
	VPADDD Y2, Y0, Y0 // lanes stay below 2^31 (see vecMax)
	VPADDD Y3, Y1, Y1
	VPXOR Y6, Y6, Y6
	VPUNPCKLDQ Y6, Y0, Y2
	VPUNPCKHDQ Y6, Y0, Y3
	VPADDQ Y3, Y2, Y2
	VPUNPCKLDQ Y6, Y1, Y4
	VPUNPCKHDQ Y6, Y1, Y5
	VPADDQ Y5, Y4, Y4
	VPADDQ Y4, Y2, Y2
	VEXTRACTI128 $1, Y2, X3
	VPADDQ X3, X2, X2
	VPSHUFD $0x4e, X2, X3
	VPADDQ X3, X2, X2
	VMOVQ X2, AX
	VZEROUPPER
	MOVQ AX, ret+24(FP)
	RET
