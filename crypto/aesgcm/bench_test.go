package aesgcm_test

import (
	"crypto/cipher"
	"strconv"
	"testing"

	"github.com/drovernet/drover/crypto/aesgcm"
)

var benchSizes = []int{64, 1400, 8192, 65536}

// benchAEADs returns this package's AEAD and the standard library's for one
// AES-128 key, so that one run shows the ratio.
func benchAEADs(b *testing.B) []struct {
	name string
	aead cipher.AEAD
} {
	p := newPair(b, make([]byte, 16))
	return []struct {
		name string
		aead cipher.AEAD
	}{{"aesgcm", p.ours}, {"stdlib", p.std}}
}

func BenchmarkSeal(b *testing.B) {
	for _, n := range benchSizes {
		for _, c := range benchAEADs(b) {
			b.Run(strconv.Itoa(n)+"/"+c.name, func(b *testing.B) {
				nonce, ad := make([]byte, aesgcm.NonceSize), make([]byte, 8)
				buf := make([]byte, n+aesgcm.TagSize)
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for b.Loop() {
					c.aead.Seal(buf[:0], nonce, buf[:n], ad)
				}
			})
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	for _, n := range benchSizes {
		for _, c := range benchAEADs(b) {
			b.Run(strconv.Itoa(n)+"/"+c.name, func(b *testing.B) {
				nonce, ad := make([]byte, aesgcm.NonceSize), make([]byte, 8)
				sealed := c.aead.Seal(nil, nonce, make([]byte, n), ad)
				out := make([]byte, n)
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for b.Loop() {
					// Out of place: in place, each Open would need a
					// fresh copy of the ciphertext.
					if _, err := c.aead.Open(out[:0], nonce, sealed, ad); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
