package esp_test

import (
	"testing"

	"github.com/drovernet/drover/crypto/esp"
)

const benchLen = 1400

func BenchmarkSeal(b *testing.B) {
	for _, c := range ciphers {
		b.Run(c.String(), func(b *testing.B) {
			out, _ := newPair(b, c, false, esp.DefaultWindow)
			buf := make([]byte, esp.Headroom+benchLen+esp.Tailroom)
			copy(buf[esp.Headroom:], ipv4(benchLen, false))
			b.SetBytes(benchLen)
			b.ReportAllocs()
			for b.Loop() {
				// Sealing in place again encrypts the previous ciphertext:
				// the cost is the same and only the version nibble matters.
				buf[esp.Headroom] = 0x45
				if _, err := out.Seal(buf, esp.Headroom, benchLen); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSealTo seals a packet out of place, as the router seals the
// segments of a GSO frame.
func BenchmarkSealTo(b *testing.B) {
	for _, c := range ciphers {
		b.Run(c.String(), func(b *testing.B) {
			out, _ := newPair(b, c, false, esp.DefaultWindow)
			src := make([]byte, benchLen+esp.MaxTrailer)
			copy(src, ipv4(benchLen, false))
			dst := make([]byte, esp.SealedLen(benchLen))
			b.SetBytes(benchLen)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := out.SealTo(dst, src[:benchLen]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOpen opens a ring of distinct packets (each with its own sequence
// number) through the replay window; the time includes copying each packet
// into the receive buffer, as Open decrypts in place.
func BenchmarkOpen(b *testing.B) {
	const ring = 512
	for _, c := range ciphers {
		b.Run(c.String(), func(b *testing.B) {
			out, in := newPair(b, c, false, esp.DefaultWindow)
			pkts := make([][]byte, ring)
			for i := range pkts {
				pkts[i] = seal(b, out, ipv4(benchLen, false))
			}
			buf := make([]byte, esp.SealedLen(benchLen))
			b.SetBytes(benchLen)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if i == ring {
					i = 0
					esp.ResetReplay(in, 0)
				}
				copy(buf, pkts[i])
				i++
				if _, _, err := in.Open(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestSealOpenNoAllocs(t *testing.T) {
	inner := ipv4(benchLen, false)
	for _, c := range ciphers {
		for _, esn := range []bool{false, true} {
			out, in := newPair(t, c, esn, esp.DefaultWindow)
			buf := make([]byte, esp.Headroom+benchLen+esp.Tailroom)
			dst := make([]byte, esp.SealedLen(benchLen))
			var err error
			a := testing.AllocsPerRun(200, func() {
				copy(buf[esp.Headroom:], inner)
				var pkt []byte
				if pkt, err = out.Seal(buf, esp.Headroom, benchLen); err == nil {
					_, _, err = in.Open(pkt)
				}
				if err == nil {
					copy(buf[esp.Headroom:], inner)
					_, err = out.SealTo(dst, buf[esp.Headroom:esp.Headroom+benchLen])
				}
			})
			if err != nil {
				t.Fatalf("%v esn %v: %v", c, esn, err)
			}
			if a != 0 {
				t.Fatalf("%v esn %v: Seal+Open of %d bytes: %v allocs/op, want 0", c, esn, benchLen, a)
			}
		}
	}
}
