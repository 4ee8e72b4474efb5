//go:build linux

package aesgcm_test

import (
	"bytes"
	"math/rand/v2"
	"os"
	"syscall"
	"testing"

	"github.com/drovernet/drover/crypto/aesgcm"
)

// guardedPage returns a page of memory between two pages that fault on any
// access, unmapped when the test ends.
func guardedPage(t *testing.T) []byte {
	t.Helper()
	page := os.Getpagesize()
	mem, err := syscall.Mmap(-1, 0, 3*page, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Skipf("mmap: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Munmap(mem) })
	if err := syscall.Mprotect(mem[:page], syscall.PROT_NONE); err != nil {
		t.Fatalf("mprotect: %v", err)
	}
	if err := syscall.Mprotect(mem[2*page:], syscall.PROT_NONE); err != nil {
		t.Fatalf("mprotect: %v", err)
	}
	return mem[page : 2*page : 2*page]
}

// place returns n bytes of pg at its start or ending at its end.
func place(pg []byte, n int, atEnd bool) []byte {
	if atEnd {
		return pg[len(pg)-n:]
	}
	return pg[:n:n]
}

// TestGuardPages runs Seal and Open on additional data, inputs and outputs
// that start right after or end right before a page that faults, so that
// touching one byte outside them crashes the test: the assembly reads
// partial blocks with loads that must stay inside the caller's slices, and
// writes partial blocks byte-exact.
func TestGuardPages(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	adPage, srcPage, dstPage := guardedPage(t), guardedPage(t), guardedPage(t)
	p := newPair(t, randBytes(r, 16))
	var lens []int
	for n := range 80 {
		lens = append(lens, n)
	}
	lens = append(lens, 120, 255, 256, 257, 264, 1400)
	for _, adLen := range []int{0, 1, 7, 8, 12, 15, 16, 17, 33} {
		for _, n := range lens {
			for layout := range 8 {
				adEnd, srcEnd, dstEnd := layout&1 != 0, layout&2 != 0, layout&4 != 0
				nonce, pt := randBytes(r, 12), randBytes(r, n)
				ad := place(adPage, adLen, adEnd)
				copy(ad, randBytes(r, adLen))
				want := p.std.Seal(nil, nonce, pt, ad)

				// Out of place: plaintext and output at the edges.
				src := place(srcPage, n, srcEnd)
				copy(src, pt)
				dst := place(dstPage, n+aesgcm.TagSize, dstEnd)
				if got := p.ours.Seal(dst[:0], nonce, src, ad); !bytes.Equal(got, want) {
					t.Fatalf("ad %d, len %d, layout %d: Seal got %x, want %x", adLen, n, layout, got, want)
				}
				ct := place(srcPage, n+aesgcm.TagSize, srcEnd)
				copy(ct, want)
				out := place(dstPage, n, dstEnd)
				if got, err := p.ours.Open(out[:0], nonce, ct, ad); err != nil || !bytes.Equal(got, pt) {
					t.Fatalf("ad %d, len %d, layout %d: Open: %v (plaintext equal %v)", adLen, n, layout, err, err == nil && bytes.Equal(got, pt))
				}

				// In place, at either edge.
				buf := place(srcPage, n+aesgcm.TagSize, dstEnd)
				copy(buf, pt)
				if got := p.ours.Seal(buf[:0], nonce, buf[:n], ad); !bytes.Equal(got, want) {
					t.Fatalf("ad %d, len %d, layout %d: in-place Seal got %x, want %x", adLen, n, layout, got, want)
				}
				if got, err := p.ours.Open(buf[:0], nonce, buf, ad); err != nil || !bytes.Equal(got, pt) {
					t.Fatalf("ad %d, len %d, layout %d: in-place Open: %v", adLen, n, layout, err)
				}
			}
		}
	}
}
