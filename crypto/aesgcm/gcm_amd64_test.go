//go:build !purego

package aesgcm

import (
	"testing"

	"golang.org/x/sys/cpu"
)

// TestAcceleratedHere makes sure the other tests exercise the assembly on
// a CPU that can run it, rather than passing on the fallback: x/sys/cpu
// reporting the AVX-512 forms of VAES and VPCLMULQDQ implies the CPUID
// bits hasVAES reads.
func TestAcceleratedHere(t *testing.T) {
	if cpu.X86.HasAVX2 && cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ &&
		cpu.X86.HasAVX512VAES && cpu.X86.HasAVX512VPCLMULQDQ && !useAsm {
		t.Fatal("the CPU has AVX2, VAES and VPCLMULQDQ but Accelerated() is false")
	}
	for _, n := range []int{16, 24, 32} {
		a, err := New(make([]byte, n))
		if err != nil {
			t.Fatal(err)
		}
		if _, isAsm := a.(*gcmAsm); isAsm != useAsm {
			t.Errorf("New(%d-byte key) returned %T; want the assembly: %v", n, a, useAsm)
		}
	}
	t.Logf("Accelerated() = %v", Accelerated())
}

// TestPowersOfH checks the table's first entries against products built
// one multiplication at a time, and the Karatsuba table against htab.
func TestPowersOfH(t *testing.T) {
	h := [16]byte{0x66, 0xe9, 0x4b, 0xd4, 0xef, 0x8a, 0x2c, 0x3b, 0x88, 0x4c, 0xfa, 0x59, 0xca, 0x34, 0x2b, 0x2e} // E(0^128, 0^128)
	var htab, ktab [npow * 16]byte
	powersOfH(&htab, &ktab, &h)
	entry := func(tab *[npow * 16]byte, i int) elem {
		var e elem
		for j := range 8 {
			e.lo |= uint64(tab[16*i+j]) << (8 * j)
			e.hi |= uint64(tab[16*i+8+j]) << (8 * j)
		}
		return e
	}
	h1 := entry(&htab, npow-1)
	p := h1
	for k := 2; k <= npow; k++ {
		p = mul(p, h1)
		if got := entry(&htab, npow-k); got != p {
			t.Errorf("H^%d: got %x, want %x", k, got, p)
		}
	}
	for i := range npow {
		e, k := entry(&htab, i), entry(&ktab, i)
		if k.lo != e.lo^e.hi || k.hi != e.lo^e.hi {
			t.Errorf("ktab[%d] = %x, want both halves %x", i, k, e.lo^e.hi)
		}
	}
	// mul by H·x of the byte-reversed block 1 (x^0, integer bit 127) is H.
	one := elem{0, 1 << 63}
	if got, want := mul(one, h1), (elem{be64(h[8:]), be64(h[:8])}); got != want {
		t.Errorf("1·H: got %x, want H = %x", got, want)
	}
}

func be64(b []byte) uint64 {
	var v uint64
	for _, c := range b[:8] {
		v = v<<8 | uint64(c)
	}
	return v
}
