package packet

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// Sum returns the 16-bit one's complement sum (RFC 1071 §1) of b added to
// initial, folded to 16 bits but not complemented. Use it to chain pieces of
// a checksummed region: every piece except the last must have even length,
// because an odd byte is padded with a zero on the right (RFC 1071 §4.1).
//
// initial is any partial sum (for example from PseudoHeaderSum or a previous
// Sum); it need not be folded.
func Sum(b []byte, initial uint32) uint32 {
	if n := len(b) &^ (vecBlock - 1); n >= vecMin && haveVec {
		// The vector code sums the 16-bit words of b[:n] in the host's
		// (little-endian) byte order; a one's complement sum is byte-order
		// independent (RFC 1071 §2(B)), so swapping the folded result gives
		// the big-endian sum. n is even, so the rest starts on a word.
		v := fold64(sumVec(b[:n]))
		initial = fold64(uint64(initial) + uint64(v>>8|v<<8&0xff00))
		b = b[n:]
	}
	return sumScalar(b, initial)
}

// sumScalar is Sum without the vector code (and its reference in tests).
func sumScalar(b []byte, initial uint32) uint32 {
	// One's complement addition is associative and commutative, and 2^16-1
	// divides 2^64-1, so adding big-endian 64-bit words with end-around carry
	// and folding afterwards gives the same result as adding 16-bit words
	// (RFC 1071 §2(B), "parallel summation").
	acc := uint64(initial)
	var carry uint64
	for len(b) >= 32 {
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[0:8]), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[8:16]), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[16:24]), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[24:32]), carry)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[0:8]), carry)
		b = b[8:]
	}
	if len(b) >= 4 {
		acc, carry = bits.Add64(acc, uint64(binary.BigEndian.Uint32(b[0:4])), carry)
		b = b[4:]
	}
	if len(b) >= 2 {
		acc, carry = bits.Add64(acc, uint64(binary.BigEndian.Uint16(b[0:2])), carry)
		b = b[2:]
	}
	if len(b) == 1 {
		acc, carry = bits.Add64(acc, uint64(b[0])<<8, carry)
	}
	acc, carry = bits.Add64(acc, carry, 0) // end-around carry
	acc += carry                           // cannot carry again
	return fold64(acc)
}

// fold64 folds a 64-bit one's complement sum to 16 bits (at most four
// rounds: each one adds the carries back in, RFC 1071 §4.1).
func fold64(s uint64) uint32 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint32(s)
}

// Checksum returns the Internet checksum (RFC 1071) of b with initial added:
// the one's complement of the one's complement sum. Write it into a header
// whose checksum field was zero while summing; over a region that already
// contains a correct checksum it returns 0.
func Checksum(b []byte, initial uint32) uint16 {
	return ^uint16(Sum(b, initial))
}

// PseudoHeaderSum returns the one's complement sum (folded, not complemented)
// of the pseudo-header that upper-layer checksums cover, to pass as the
// initial value of Checksum or Sum:
//
//   - IPv4 (RFC 768, RFC 793 §3.1): source, destination, zero, protocol,
//     16-bit upper-layer length;
//   - IPv6 (RFC 8200 §8.1): source, destination, 32-bit upper-layer length,
//     three zero bytes, next header.
//
// The family is taken from src and dst, which should both be IPv4 or both
// IPv6 (an IPv4-mapped IPv6 address counts as IPv6, as on the wire). length
// is the upper-layer length (header + payload). A zero Addr contributes zeros.
func PseudoHeaderSum(proto uint8, src, dst netip.Addr, length int) uint32 {
	l := uint32(length)
	s := uint64(proto) + uint64(l>>16) + uint64(l&0xffff)
	s += addrSum(src) + addrSum(dst)
	return fold64(s)
}

// addrSum returns the unfolded sum of the 16-bit words of a (4 or 16 bytes
// as on the wire). As4/As16 return arrays, so nothing escapes or allocates.
func addrSum(a netip.Addr) uint64 {
	if a.Is4() {
		v := a.As4()
		return uint64(binary.BigEndian.Uint16(v[0:2])) + uint64(binary.BigEndian.Uint16(v[2:4]))
	}
	v := a.As16() // zero Addr: all zeros
	var s uint64
	for i := 0; i < 16; i += 2 {
		s += uint64(binary.BigEndian.Uint16(v[i : i+2]))
	}
	return s
}
