//go:build !purego

package packet

import "golang.org/x/sys/cpu"

// haveVec: sumVec uses AVX2 (Haswell and later, AMD since Excavator).
var haveVec = cpu.X86.HasAVX2

const (
	// vecBlock is the bytes sumVec takes per loop round; it sums the
	// largest multiple of it.
	vecBlock = 64
	// vecMin is where the vector code starts to pay for its set-up and
	// horizontal add (BenchmarkSum: at 128 bytes both take ~9 ns, at
	// 1448 the vector code is 3.4 times as fast).
	vecMin = 256
	// vecMax bounds one sumVec call: each 32-bit lane of its
	// accumulators adds two 16-bit words per 64 bytes, so 1 MiB adds
	// 2^15 words of at most 2^16-1 per lane, far below 2^32.
	vecMax = 1 << 20
)

// sumVec returns the sum of the little-endian 16-bit words of b, whose
// length is a multiple of vecBlock, as a 64-bit number (not folded).
func sumVec(b []byte) uint64 {
	var s uint64
	for len(b) > vecMax {
		s += sumAVX2(b[:vecMax])
		b = b[vecMax:]
	}
	return s + sumAVX2(b)
}

// sumAVX2 is sumVec for at most vecMax bytes (sum_amd64.s).
//
//go:noescape
func sumAVX2(b []byte) uint64
