package aesgcm_test

import (
	"bytes"
	"testing"
)

// FuzzSealOpen compares Seal with the standard library's for a
// fuzzer-chosen key, nonce, additional data and plaintext, and checks that
// Open returns the plaintext and fails for the sealed message with a bit
// flipped. The key is cut or zero-extended to 16, 24 or 32 bytes (keySel
// mod 3) and the nonce to 12; keySel also picks the flipped byte.
func FuzzSealOpen(f *testing.F) {
	for _, v := range gcmSpecVectors {
		key := unhex(f, v.key)
		f.Add(key, unhex(f, v.iv), unhex(f, v.ad), unhex(f, v.pt), uint8(len(key)/8-2))
	}
	f.Add([]byte{}, []byte{}, []byte{}, []byte{}, uint8(1))                    // all empty
	f.Add([]byte{1}, []byte{2}, make([]byte, 8), make([]byte, 1400), uint8(2)) // ESP-like
	f.Add([]byte{3}, []byte{4}, make([]byte, 12), make([]byte, 255), uint8(0)) // 17-block tail
	f.Add([]byte{5}, []byte{6}, make([]byte, 300), make([]byte, 4097), uint8(1))
	f.Fuzz(func(t *testing.T, keyIn, nonceIn, ad, pt []byte, keySel uint8) {
		key := make([]byte, []int{16, 24, 32}[keySel%3])
		copy(key, keyIn)
		nonce := make([]byte, 12)
		copy(nonce, nonceIn)
		p := newPair(t, key)
		want := p.std.Seal(nil, nonce, pt, ad)
		got := p.ours.Seal(nil, nonce, pt, ad)
		if !bytes.Equal(got, want) {
			t.Fatalf("Seal got %x, want %x", got, want)
		}
		opened, err := p.ours.Open(nil, nonce, got, ad)
		if err != nil || !bytes.Equal(opened, pt) {
			t.Fatalf("Open: %v (plaintext equal %v)", err, bytes.Equal(opened, pt))
		}
		bad := bytes.Clone(got)
		i := int(keySel) % len(bad)
		bad[i] ^= 0x80
		if opened, err := p.ours.Open(nil, nonce, bad, ad); err == nil {
			t.Fatalf("Open of the sealed message with byte %d flipped succeeded: %x", i, opened)
		}
	})
}
