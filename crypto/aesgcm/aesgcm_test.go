package aesgcm_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/drovernet/drover/crypto/aesgcm"
)

// pair is this package's AEAD and the standard library's for one key.
type pair struct {
	ours, std cipher.AEAD
}

func newPair(t testing.TB, key []byte) pair {
	t.Helper()
	a, err := aesgcm.New(key)
	if err != nil {
		t.Fatalf("New(%d-byte key): %v", len(key), err)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	s, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	return pair{a, s}
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// diffLens: every length up to 600 (every tail shape of the 16-block loop
// twice over, the partial-block and 17-block paths included), then lengths
// around the loop's steps, the ESP MTU and the largest packets.
func diffLens() []int {
	var ls []int
	for n := range 601 {
		ls = append(ls, n)
	}
	return append(ls, 767, 768, 769, 1023, 1024, 1025, 1279, 1280, 1281, 1384, 1399, 1400, 1401,
		1407, 1408, 1409, 1500, 2047, 2048, 4095, 4096, 4097, 8191, 8192, 8193, 9000,
		16383, 16400, 32768, 65519, 65535, 65536, 65537, 70000)
}

// TestDifferential checks Seal byte for byte against the standard library
// and Open round trips, in place and out of place, for random keys, nonces
// and additional data.
func TestDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, kl := range []int{16, 24, 32} {
		p := newPair(t, randBytes(r, kl))
		for _, n := range diffLens() {
			nonce := randBytes(r, aesgcm.NonceSize)
			ad := randBytes(r, r.IntN(41))
			pt := randBytes(r, n)
			want := p.std.Seal(nil, nonce, pt, ad)

			// Out of place, appending to a prefix.
			prefix := []byte("prefix")
			got := p.ours.Seal(bytes.Clone(prefix), nonce, pt, ad)
			if !bytes.Equal(got[:len(prefix)], prefix) || !bytes.Equal(got[len(prefix):], want) {
				t.Fatalf("key %d, len %d, ad %d: Seal got %x, want %x", kl, n, len(ad), got, want)
			}
			opened, err := p.ours.Open(bytes.Clone(prefix), nonce, want, ad)
			if err != nil || !bytes.Equal(opened[len(prefix):], pt) {
				t.Fatalf("key %d, len %d, ad %d: Open got %v, plaintext equal %v", kl, n, len(ad), err, err == nil && bytes.Equal(opened[len(prefix):], pt))
			}

			// In place: Seal(p[:0], …, p, …) and Open(c[:0], …, c, …).
			buf := make([]byte, n, n+aesgcm.TagSize)
			copy(buf, pt)
			sealed := p.ours.Seal(buf[:0], nonce, buf, ad)
			if !bytes.Equal(sealed, want) || &sealed[0] != &buf[:1][0] {
				t.Fatalf("key %d, len %d: in-place Seal got %x, want %x (same buffer: %v)", kl, n, sealed, want, &sealed[0] == &buf[:1][0])
			}
			opened, err = p.ours.Open(sealed[:0], nonce, sealed, ad)
			if err != nil || !bytes.Equal(opened, pt) {
				t.Fatalf("key %d, len %d: in-place Open got %v, plaintext equal %v", kl, n, err, bytes.Equal(opened, pt))
			}
		}
	}
}

// TestLongAdditionalData covers additional data longer than the 16-block
// loop, which ESP never sends but the AEAD contract allows.
func TestLongAdditionalData(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	p := newPair(t, randBytes(r, 16))
	for _, adLen := range []int{255, 256, 257, 300, 511, 512, 1000, 4096} {
		for _, n := range []int{0, 1, 17, 256, 1400} {
			nonce, ad, pt := randBytes(r, 12), randBytes(r, adLen), randBytes(r, n)
			want := p.std.Seal(nil, nonce, pt, ad)
			if got := p.ours.Seal(nil, nonce, pt, ad); !bytes.Equal(got, want) {
				t.Fatalf("ad %d, len %d: Seal got %x, want %x", adLen, n, got, want)
			}
			if got, err := p.ours.Open(nil, nonce, want, ad); err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("ad %d, len %d: Open: %v", adLen, n, err)
			}
		}
	}
}

// TestAdditionalDataShapes pairs every length of additional data up to 34
// bytes (each way of reading a partial block, exactly one block, and the
// longer path) with messages that end in every kind of tail: no block, a
// partial block, an odd full block with or without a partial one, pairs,
// 16 blocks, and a tail after whole 256-byte groups. Up to 16 bytes of
// additional data are multiplied in with the first group that is reduced,
// by a power of H that depends on the message length, which this covers.
func TestAdditionalDataShapes(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	lens := []int{0, 1, 7, 8, 15, 16, 17, 24, 31, 32, 33, 48, 64, 120, 127, 128, 129, 240, 241, 255,
		256, 257, 272, 376, 511, 512, 513, 1400, 1408, 1536}
	for _, kl := range []int{16, 24, 32} {
		p := newPair(t, randBytes(r, kl))
		for adLen := range 35 {
			for _, n := range lens {
				nonce, ad, pt := randBytes(r, 12), randBytes(r, adLen), randBytes(r, n)
				want := p.std.Seal(nil, nonce, pt, ad)
				if got := p.ours.Seal(nil, nonce, pt, ad); !bytes.Equal(got, want) {
					t.Fatalf("key %d, ad %d, len %d: Seal got %x, want %x", kl, adLen, n, got, want)
				}
				buf := bytes.Clone(want)
				if got, err := p.ours.Open(buf[:0], nonce, buf, ad); err != nil || !bytes.Equal(got, pt) {
					t.Fatalf("key %d, ad %d, len %d: in-place Open: %v (plaintext equal %v)", kl, adLen, n, err, err == nil && bytes.Equal(got, pt))
				}
			}
		}
	}
}

// TestOpenTampered flips one bit of the ciphertext, the tag or the
// additional data: Open must fail and leave the plaintext it wrote zeroed,
// in place and out of place.
func TestOpenTampered(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, kl := range []int{16, 32} {
		p := newPair(t, randBytes(r, kl))
		for _, n := range []int{0, 1, 15, 16, 17, 31, 32, 100, 255, 256, 257, 300, 511, 512, 513, 1400, 4097, 65535} {
			nonce, ad, pt := randBytes(r, 12), randBytes(r, 1+r.IntN(40)), randBytes(r, n)
			sealed := p.ours.Seal(nil, nonce, pt, ad)
			type tamper struct {
				name   string
				ct, ad []byte
			}
			var cases []tamper
			if n > 0 {
				c := bytes.Clone(sealed)
				c[r.IntN(n)] ^= 1 << r.IntN(8)
				cases = append(cases, tamper{"ciphertext", c, ad})
			}
			c := bytes.Clone(sealed)
			c[n+r.IntN(aesgcm.TagSize)] ^= 1 << r.IntN(8)
			cases = append(cases, tamper{"tag", c, ad})
			a := bytes.Clone(ad)
			a[r.IntN(len(a))] ^= 1 << r.IntN(8)
			cases = append(cases, tamper{"ad", sealed, a})
			cases = append(cases, tamper{"truncated", sealed[:len(sealed)-1], ad})

			for _, tc := range cases {
				// Out of place, into a buffer of 0xff so zeroing shows.
				dst := bytes.Repeat([]byte{0xff}, len(tc.ct))
				got, err := p.ours.Open(dst[:0], nonce, tc.ct, tc.ad)
				if err == nil || got != nil {
					t.Fatalf("key %d, len %d, %s tampered: Open got %x, %v; want nil, error", kl, n, tc.name, got, err)
				}
				if m := len(tc.ct) - aesgcm.TagSize; m > 0 && !bytes.Equal(dst[:m], make([]byte, m)) {
					t.Fatalf("key %d, len %d, %s tampered: dst after failed Open is %x, want zeros", kl, n, tc.name, dst[:m])
				}
				// The standard library agrees that it fails.
				if _, err := p.std.Open(nil, nonce, tc.ct, tc.ad); err == nil {
					t.Fatalf("key %d, len %d, %s tampered: stdlib Open succeeded", kl, n, tc.name)
				}
				// In place.
				c := bytes.Clone(tc.ct)
				if _, err := p.ours.Open(c[:0], nonce, c, tc.ad); err == nil {
					t.Fatalf("key %d, len %d, %s tampered: in-place Open succeeded", kl, n, tc.name)
				}
				if m := len(c) - aesgcm.TagSize; m > 0 && !bytes.Equal(c[:m], make([]byte, m)) {
					t.Fatalf("key %d, len %d, %s tampered: buffer after failed in-place Open is %x, want zeros", kl, n, tc.name, c[:m])
				}
			}
		}
	}
}

func TestOpenShort(t *testing.T) {
	p := newPair(t, make([]byte, 16))
	for n := range aesgcm.TagSize {
		if got, err := p.ours.Open(nil, make([]byte, 12), make([]byte, n), nil); err == nil || got != nil {
			t.Errorf("Open of %d bytes: got %x, %v; want nil, error", n, got, err)
		}
	}
}

func TestNewKeySizes(t *testing.T) {
	for _, n := range []int{0, 1, 15, 17, 20, 31, 33, 64} {
		if a, err := aesgcm.New(make([]byte, n)); err == nil {
			t.Errorf("New(%d-byte key): got %v, nil; want an error", n, a)
		}
	}
	for _, n := range []int{16, 24, 32} {
		a, err := aesgcm.New(make([]byte, n))
		if err != nil {
			t.Fatalf("New(%d-byte key): %v", n, err)
		}
		if a.NonceSize() != 12 || a.Overhead() != 16 {
			t.Errorf("New(%d-byte key): NonceSize %d, Overhead %d; want 12, 16", n, a.NonceSize(), a.Overhead())
		}
	}
}

// TestPanics: the standard library's panics for misuse, kept.
func TestPanics(t *testing.T) {
	a, err := aesgcm.New(make([]byte, 16))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"Seal short nonce", func() { a.Seal(nil, make([]byte, 11), nil, nil) }},
		{"Seal long nonce", func() { a.Seal(nil, make([]byte, 13), nil, nil) }},
		{"Open short nonce", func() { _, _ = a.Open(nil, make([]byte, 8), make([]byte, 16), nil) }},
		{"Seal inexact overlap", func() { a.Seal(buf[1:1], make([]byte, 12), buf[:50], nil) }},
		{"Seal overlap with ad", func() { a.Seal(buf[:0], make([]byte, 12), buf[60:70], buf[:8]) }},
		{"Open inexact overlap", func() { _, _ = a.Open(buf[1:1], make([]byte, 12), buf[:50], nil) }},
		{"Open overlap with ad", func() { _, _ = a.Open(buf[:0], make([]byte, 12), buf[60:90], buf[:8]) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", tc.name)
				}
			}()
			tc.f()
		})
	}
}

// TestConcurrent shares one AEAD among goroutines, as the router's workers
// share an SA's (run with -race).
func TestConcurrent(t *testing.T) {
	p := newPair(t, make([]byte, 32))
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for range 200 {
				nonce, ad, pt := randBytes(r, 12), randBytes(r, 8), randBytes(r, r.IntN(2000))
				want := p.std.Seal(nil, nonce, pt, ad)
				if got := p.ours.Seal(nil, nonce, pt, ad); !bytes.Equal(got, want) {
					t.Errorf("goroutine %d, len %d: Seal differs from the standard library", g, len(pt))
					return
				}
				if got, err := p.ours.Open(nil, nonce, want, ad); err != nil || !bytes.Equal(got, pt) {
					t.Errorf("goroutine %d, len %d: Open: %v", g, len(pt), err)
					return
				}
			}
		})
	}
	wg.Wait()
}
