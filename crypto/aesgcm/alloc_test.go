package aesgcm_test

import (
	"testing"

	"github.com/drovernet/drover/crypto/aesgcm"
)

func TestSealNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	for _, kl := range []int{16, 32} {
		a := newPair(t, make([]byte, kl)).ours
		nonce, ad := make([]byte, 12), make([]byte, 8)
		buf := make([]byte, 1400+aesgcm.TagSize)
		if n := testing.AllocsPerRun(100, func() { a.Seal(buf[:0], nonce, buf[:1400], ad) }); n != 0 {
			t.Errorf("%d-byte key: Seal: %v allocs/op, want 0", kl, n)
		}
	}
}

func TestOpenNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	for _, kl := range []int{16, 32} {
		a := newPair(t, make([]byte, kl)).ours
		nonce, ad := make([]byte, 12), make([]byte, 8)
		sealed := a.Seal(nil, nonce, make([]byte, 1400), ad)
		out := make([]byte, 1400)
		var err2 error
		if n := testing.AllocsPerRun(100, func() { _, err2 = a.Open(out[:0], nonce, sealed, ad) }); n != 0 {
			t.Errorf("%d-byte key: Open: %v allocs/op, want 0", kl, n)
		}
		if err2 != nil {
			t.Fatal(err2)
		}
		// A failing Open does not allocate either (its error is a sentinel).
		sealed[0] ^= 1
		if n := testing.AllocsPerRun(100, func() { _, _ = a.Open(out[:0], nonce, sealed, ad) }); n != 0 {
			t.Errorf("%d-byte key: failing Open: %v allocs/op, want 0", kl, n)
		}
	}
}
