//go:build !purego

package aesgcm

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"math/bits"
	"unsafe"

	"golang.org/x/sys/cpu"
)

// useAsm: the assembly needs AVX2 (which in x/sys/cpu also means the OS saves
// YMM state), AES-NI and PCLMULQDQ for its 128-bit VEX forms, and VAES and
// VPCLMULQDQ for the 256-bit ones. x/sys/cpu reports the last two only
// together with AVX-512 (HasAVX512VAES, HasAVX512VPCLMULQDQ), but their VEX
// encodings need just the CPUID bits (leaf 7, ECX bits 9 and 10) plus AVX,
// as on CPUs with VAES and no AVX-512, so hasVAES reads them itself.
var useAsm = cpu.X86.HasAVX2 && cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ && hasVAES()

func hasVAES() bool {
	if maxID, _, _, _ := cpuid(0, 0); maxID < 7 {
		return false
	}
	const vaes, vpclmulqdq = 1 << 9, 1 << 10
	_, _, ecx, _ := cpuid(7, 0)
	return ecx&vaes != 0 && ecx&vpclmulqdq != 0
}

// gcmKey is everything the assembly reads. Its layout is part of the
// assembly: gcm_amd64.s names the offsets HTAB (0), KTAB (544), RK (1088)
// and ROUNDS (1328).
type gcmKey struct {
	// htab[16*i:] is H^(npow-i) for i in 0..npow-1 (H^34 first, H^1
	// last), each multiplied by x and in the byte-reversed form the
	// assembly computes in (see powersOfH), so that 16 consecutive blocks
	// load their powers with 8 consecutive 32-byte loads and the last m
	// blocks of a message start at htab[16*(npow-m):]. The powers above
	// H^16 let blocks that would otherwise be reduced on their own share
	// a reduction: the last 16-block group of a message takes
	// H^(m+16)..H^(m+1) and the m <= 17 blocks after it (the tail and the
	// lengths block) H^m..H^1, and a block of additional data takes the
	// power after those of the blocks it is reduced with (at most 33 of
	// them).
	htab [npow * 16]byte
	// ktab[16*i:] is the XOR of the two 64-bit halves of htab[16*i:], for
	// Karatsuba's middle product (twice, so that it is at either half).
	ktab [npow * 16]byte
	// rk is the AES encryption key schedule (FIPS 197 §5.2): rounds+1
	// round keys of 16 bytes in the order AESENC takes them.
	rk     [15 * 16]byte
	rounds int // 10, 12 or 14
}

// npow is the number of powers of H in gcmKey.
const npow = 34

// The assembly's offsets, checked at compile time: each index is 0 only if
// the field is where gcm_amd64.s expects it.
var (
	_ = [1]struct{}{}[unsafe.Offsetof(gcmKey{}.htab)]
	_ = [1]struct{}{}[unsafe.Offsetof(gcmKey{}.ktab)-544]
	_ = [1]struct{}{}[unsafe.Offsetof(gcmKey{}.rk)-1088]
	_ = [1]struct{}{}[unsafe.Offsetof(gcmKey{}.rounds)-1328]
)

// gcmSeal encrypts src into dst (len(dst) == len(src)) in CTR mode from
// counter block J0+1, where J0 is nonce‖0^31‖1 (SP 800-38D §7.1), GHASHes
// ad and the ciphertext, and writes the tag, GHASH ⊕ E(K, J0), to tag. dst
// and src are identical or disjoint.
//
//go:noescape
func gcmSeal(k *gcmKey, dst, src, ad []byte, nonce *[NonceSize]byte, tag *[TagSize]byte)

// gcmOpen GHASHes ad and the ciphertext src, decrypts src into dst
// (len(dst) == len(src)) and reports whether tag is the tag the ciphertext
// should carry, compared in constant time. It decrypts whatever the
// answer: the caller clears dst if it is false. dst and src are identical
// or disjoint, and tag is neither.
//
//go:noescape
func gcmOpen(k *gcmKey, dst, src, ad []byte, nonce *[NonceSize]byte, tag *[TagSize]byte) bool

//go:noescape
func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)

// gcmAsm is the assembly-backed AEAD. It is not modified after
// newAccelerated, so any number of goroutines may share it.
type gcmAsm struct {
	k gcmKey
}

// maxPlaintext is SP 800-38D's limit for a 96-bit IV: the 32-bit counter
// starts at 2 and must not wrap, so 2^32-2 blocks.
const maxPlaintext = (1<<32 - 2) * 16

var errOpen = errors.New("cipher: message authentication failed") // the standard library's text

func newAccelerated(key []byte) cipher.AEAD {
	if !useAsm {
		return nil
	}
	g := new(gcmAsm)
	g.k.rounds = expandKey(&g.k.rk, key)
	// H = E(K, 0^128), once per key; the standard library's AES is as good
	// as ours for one block.
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil
	}
	var h [16]byte
	b.Encrypt(h[:], h[:])
	powersOfH(&g.k.htab, &g.k.ktab, &h)
	return g
}

func (*gcmAsm) NonceSize() int { return NonceSize }
func (*gcmAsm) Overhead() int  { return TagSize }

func (g *gcmAsm) Seal(dst, nonce, plaintext, ad []byte) []byte {
	if len(nonce) != NonceSize {
		panic("crypto/cipher: incorrect nonce length given to GCM")
	}
	if uint64(len(plaintext)) > maxPlaintext {
		panic("crypto/cipher: message too large for GCM")
	}
	ret, out := sliceForAppend(dst, len(plaintext)+TagSize)
	if inexactOverlap(out, plaintext) {
		panic("crypto/cipher: invalid buffer overlap of output and input")
	}
	if anyOverlap(out, ad) {
		panic("crypto/cipher: invalid buffer overlap of output and additional data")
	}
	n := len(plaintext)
	// The assembly builds J0 from the nonce in a register: a J0 built here
	// with a 12-byte copy and a 1-byte store, then loaded whole, would
	// wait for the stores (no store-to-load forwarding across them).
	gcmSeal(&g.k, out[:n], plaintext, ad, (*[NonceSize]byte)(nonce), (*[TagSize]byte)(out[n:]))
	return ret
}

func (g *gcmAsm) Open(dst, nonce, ciphertext, ad []byte) ([]byte, error) {
	if len(nonce) != NonceSize {
		panic("crypto/cipher: incorrect nonce length given to GCM")
	}
	if len(ciphertext) < TagSize || uint64(len(ciphertext)) > maxPlaintext+TagSize {
		return nil, errOpen
	}
	ret, out := sliceForAppend(dst, len(ciphertext)-TagSize)
	if inexactOverlap(out, ciphertext) {
		panic("crypto/cipher: invalid buffer overlap of output and input")
	}
	if anyOverlap(out, ad) {
		panic("crypto/cipher: invalid buffer overlap of output and additional data")
	}
	n := len(out)
	// out is ciphertext[:n] or disjoint from it, so decrypting leaves the
	// received tag, ciphertext[n:], intact for the assembly's comparison.
	if !gcmOpen(&g.k, out, ciphertext[:n], ad, (*[NonceSize]byte)(nonce), (*[TagSize]byte)(ciphertext[n:])) {
		// Decryption ran before the check: release no unauthenticated
		// plaintext (as the standard library does).
		clear(out)
		return nil, errOpen
	}
	return ret, nil
}

// sliceForAppend returns in extended by n bytes (reallocated only when cap
// is short) and the extension.
func sliceForAppend(in []byte, n int) (head, tail []byte) {
	if total := len(in) + n; cap(in) >= total {
		head = in[:total]
	} else {
		head = make([]byte, total)
		copy(head, in)
	}
	return head, head[len(in):]
}

// anyOverlap reports whether x and y share memory; inexactOverlap whether
// they share it at different indexes (the cipher.AEAD contract allows only
// exact overlap of output and input, none with the additional data).
func anyOverlap(x, y []byte) bool {
	return len(x) > 0 && len(y) > 0 &&
		uintptr(unsafe.Pointer(&x[0])) <= uintptr(unsafe.Pointer(&y[len(y)-1])) &&
		uintptr(unsafe.Pointer(&y[0])) <= uintptr(unsafe.Pointer(&x[len(x)-1]))
}

func inexactOverlap(x, y []byte) bool {
	if len(x) == 0 || len(y) == 0 || &x[0] == &y[0] {
		return false
	}
	return anyOverlap(x, y)
}

// GHASH arithmetic, for the powers of H.
//
// The assembly loads each 16-byte block byte-reversed, so a block b is the
// 128-bit integer BE(b): its first bit, the coefficient of x^0 in GCM's
// bit order (SP 800-38D §6.3), is integer bit 127. With bits so reflected,
// the carry-less product of two elements is their field product reflected
// into 255 bits, one bit short of the 256-bit position, and the reduction
// modulo x^128+x^7+x^2+x+1 becomes a Montgomery reduction by 2^128 modulo
// the reflected polynomial, done 64 bits at a time with the constant
// 0xC2000000_00000000 (bits 57, 62, 63 of the high word: the reflected
// x^7+x^2+x; Gueron and Kounavis, "Intel Carry-Less Multiplication
// Instruction and its Usage for Computing the GCM Mode", on reflected
// operands). Multiplying H by x once, up front, absorbs both the missing
// bit and the Montgomery factor: then mul(a, H·x) is exactly a·H in
// this representation, and mul(H^i·x, H^j·x) is H^(i+j)·x, which is how the
// table is built.

// elem is a field element as the assembly holds it: the 128-bit integer
// hi<<64 | lo.
type elem struct{ lo, hi uint64 }

// reflectedPolyHi is the high word of the reflected reduction polynomial
// 0xC2000000_00000000_00000000_00000001 (the low word's 1 is implicit in
// the reduction).
const reflectedPolyHi = 0xc200000000000000

// clmul returns the 128-bit carry-less product of a and b, without
// branching on either (both derive from H, which is secret).
func clmul(a, b uint64) (lo, hi uint64) {
	for i := range 64 {
		mask := -(b >> i & 1)
		lo ^= a << i & mask
		hi ^= a >> (64 - i) & mask // a>>64 is 0 in Go, so i == 0 adds nothing
	}
	return lo, hi
}

// mul returns the product of a and b reduced as the assembly reduces it
// (see above: b is expected to carry the factor x).
func mul(a, b elem) elem {
	q0, q1 := clmul(a.lo, b.lo)
	q2, q3 := clmul(a.hi, b.hi)
	m0, m1 := clmul(a.lo, b.hi)
	n0, n1 := clmul(a.hi, b.lo)
	q1 ^= m0 ^ n0
	q2 ^= m1 ^ n1
	// Fold q0 and then q1 up into q2 and q3.
	t0, t1 := clmul(q0, reflectedPolyHi)
	q1 ^= t0
	q2 ^= t1 ^ q0
	t0, t1 = clmul(q1, reflectedPolyHi)
	q2 ^= t0
	q3 ^= t1 ^ q1
	return elem{q2, q3}
}

// powersOfH fills htab and ktab from h = E(K, 0^128); see gcmKey.
func powersOfH(htab, ktab *[npow * 16]byte, h *[16]byte) {
	hi, lo := binary.BigEndian.Uint64(h[:8]), binary.BigEndian.Uint64(h[8:])
	// H·x: shift left one bit and, if a bit falls off the top, add the
	// reflected polynomial (branch-free).
	carry := -(hi >> 63)
	hx := elem{lo<<1 ^ 1&carry, (hi<<1 | lo>>63) ^ reflectedPolyHi&carry}
	p := hx
	for i := npow - 1; i >= 0; i-- {
		binary.LittleEndian.PutUint64(htab[16*i:], p.lo)
		binary.LittleEndian.PutUint64(htab[16*i+8:], p.hi)
		binary.LittleEndian.PutUint64(ktab[16*i:], p.lo^p.hi)
		binary.LittleEndian.PutUint64(ktab[16*i+8:], p.lo^p.hi)
		p = mul(p, hx)
	}
}

// expandKey writes the FIPS 197 §5.2 key schedule of key (16, 24 or 32
// bytes) to rk and returns the number of rounds.
func expandKey(rk *[15 * 16]byte, key []byte) int {
	nk := len(key) / 4
	rounds := nk + 6
	var w [4 * 15]uint32
	for i := range nk {
		w[i] = binary.BigEndian.Uint32(key[4*i:])
	}
	rcon := byte(1)
	for i := nk; i < 4*(rounds+1); i++ {
		t := w[i-1]
		switch {
		case i%nk == 0:
			t = subWord(bits.RotateLeft32(t, 8)) ^ uint32(rcon)<<24
			rcon = gfMul8(rcon, 2)
		case nk > 6 && i%nk == 4:
			t = subWord(t)
		}
		w[i] = w[i-nk] ^ t
	}
	for i := range 4 * (rounds + 1) {
		binary.BigEndian.PutUint32(rk[4*i:], w[i])
	}
	return rounds
}

// subWord applies the S-box (FIPS 197 §5.1.1) to each byte of w. It
// computes the S-box rather than looking it up, so key expansion makes no
// key-dependent memory accesses; it runs once per key.
func subWord(w uint32) uint32 {
	var out uint32
	for i := range 4 {
		out |= uint32(sbox(byte(w>>(8*i)))) << (8 * i)
	}
	return out
}

// sbox is FIPS 197 §5.1.1: the inverse in GF(2^8) (b^254, with 0 mapping to
// 0), then the affine transform.
func sbox(b byte) byte {
	// b^254 by square-and-multiply over the exponent 11111110.
	inv := byte(1)
	for i := 7; i >= 0; i-- {
		inv = gfMul8(inv, inv)
		if i != 0 { // a public loop index, not data
			inv = gfMul8(inv, b)
		}
	}
	return inv ^ bits.RotateLeft8(inv, 1) ^ bits.RotateLeft8(inv, 2) ^
		bits.RotateLeft8(inv, 3) ^ bits.RotateLeft8(inv, 4) ^ 0x63
}

// gfMul8 multiplies in GF(2^8) modulo x^8+x^4+x^3+x+1, branch-free.
func gfMul8(a, b byte) byte {
	var p byte
	for range 8 {
		p ^= a & -(b & 1)
		a = a<<1 ^ 0x1b&-(a>>7)
		b >>= 1
	}
	return p
}
