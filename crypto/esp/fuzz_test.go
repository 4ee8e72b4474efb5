package esp_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/drovernet/drover/crypto/esp"
)

// openErrs are the only errors Open may return.
var openErrs = []error{esp.ErrShort, esp.ErrSPI, esp.ErrAuth, esp.ErrReplay, esp.ErrStale, esp.ErrPadding, esp.ErrNextHeader}

func isOneOf(err error, errs []error) bool {
	for _, e := range errs {
		if err == e {
			return true
		}
	}
	return false
}

// FuzzOpen feeds arbitrary bytes, mostly mutations of the kernel's vectors,
// to one InSA per captured SA. Threat model: an attacker on the underlay
// controls every byte of the UDP payload but has no key. Open must not
// panic, must return only its sentinels, and must return plaintext only for
// a packet byte-identical to an authentic one: a tampered packet never
// yields plaintext.
func FuzzOpen(f *testing.F) {
	vs := loadVectors(f)
	type sa struct {
		in    *esp.InSA
		top   uint64             // replay state before each input
		valid map[string]*vector // authentic packets of this SA
	}
	type saKey struct {
		spi uint32
		c   esp.Cipher
		esn bool
	}
	var sas []*sa
	byKey := map[saKey]*sa{}
	for i := range vs {
		v := &vs[i]
		k := saKey{v.spi, v.cipher, v.ESN}
		s := byKey[k]
		if s == nil {
			s = &sa{in: newIn(f, v, v.ESN, v.KeyMaterial), valid: map[string]*vector{}}
			if v.SeqHi != nil {
				s.top = uint64(*v.SeqHi) << 32
			}
			byKey[k] = s
			sas = append(sas, s)
		}
		s.valid[string(v.UDPPayload)] = v
		f.Add([]byte(v.UDPPayload))
	}
	f.Add([]byte{})                                             // empty
	f.Add([]byte{0xff})                                         // keepalive
	f.Add(make([]byte, esp.Headroom+2+esp.ICVLen-1))            // one byte short
	f.Add([]byte(vs[0].UDPPayload[:esp.Headroom+2+esp.ICVLen])) // minimum length, wrong ICV
	f.Fuzz(func(t *testing.T, pkt []byte) {
		for _, s := range sas {
			esp.ResetReplay(s.in, s.top)
			inner, nh, err := s.in.Open(bytes.Clone(pkt))
			if err != nil {
				if inner != nil || !isOneOf(err, openErrs) {
					t.Fatalf("Open: got %d bytes, %v; want nil and a sentinel", len(inner), err)
				}
				continue
			}
			v, ok := s.valid[string(pkt)]
			if !ok {
				t.Fatalf("Open returned plaintext for a packet that is not authentic: %x", pkt)
			}
			if !bytes.Equal(inner, v.InnerPacket) || nh != v.NextHeader {
				t.Fatalf("%s: Open = %x nh %d, want %x nh %d", v.Name, inner, nh, v.InnerPacket, v.NextHeader)
			}
		}
	})
}

// FuzzSealOpen checks Open(Seal(x)) == x for any inner packet, on every
// cipher with and without ESN, and that Seal refuses what it must.
func FuzzSealOpen(f *testing.F) {
	for _, v := range loadVectors(f)[:5] {
		f.Add([]byte(v.InnerPacket), uint8(0), false)
	}
	f.Add([]byte{}, uint8(1), true)
	f.Add([]byte{0x45}, uint8(2), false)
	f.Add([]byte{0x60, 0, 0}, uint8(2), true)
	f.Add([]byte{0x00, 1, 2, 3}, uint8(1), false)
	f.Add(bytes.Repeat([]byte{0x45}, 1438), uint8(0), true)
	type pair struct {
		out *esp.OutSA
		in  *esp.InSA
	}
	pairs := map[[2]int]pair{}
	for i, c := range ciphers {
		for e, esn := range []bool{false, true} {
			out, in := newPair(f, c, esn, 64)
			pairs[[2]int{i, e}] = pair{out, in}
		}
	}
	f.Fuzz(func(t *testing.T, inner []byte, sel uint8, esn bool) {
		e := 0
		if esn {
			e = 1
		}
		p := pairs[[2]int{int(sel) % len(ciphers), e}]
		n := len(inner)
		buf := make([]byte, esp.Headroom+n+esp.Tailroom)
		copy(buf[esp.Headroom:], inner)
		pkt, err := p.out.Seal(buf, esp.Headroom, n)
		var wantNH byte
		switch {
		case n == 0:
			if !errors.Is(err, esp.ErrShort) {
				t.Fatalf("Seal(empty): got %v, want ErrShort", err)
			}
			return
		case inner[0]>>4 == 4:
			wantNH = 4
		case inner[0]>>4 == 6:
			wantNH = 41
		default:
			if !errors.Is(err, esp.ErrNextHeader) {
				t.Fatalf("Seal(version %d): got %v, want ErrNextHeader", inner[0]>>4, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("Seal(%d bytes): %v", n, err)
		}
		if len(pkt) != esp.SealedLen(n) || binary.BigEndian.Uint32(pkt) != testSPI {
			t.Fatalf("sealed %d bytes (SealedLen %d), SPI %x", len(pkt), esp.SealedLen(n), pkt[:4])
		}
		got, nh, err := p.in.Open(pkt)
		if err != nil || !bytes.Equal(got, inner) || nh != wantNH {
			t.Fatalf("Open(Seal(%x)) = %x, nh %d, %v; want nh %d", inner, got, nh, err, wantNH)
		}
	})
}

// FuzzClassify: Classify and PeekSPI accept any bytes and agree with
// RFC 3948 §2.2/§2.3 as the kernel applies it.
func FuzzClassify(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0xff})
	f.Add([]byte{0, 0, 0, 0, 'I', 'K', 'E', 'D', 0})
	f.Add([]byte{0, 0, 0x0a, 1, 0, 0, 0, 1})
	f.Add([]byte{0, 0, 0x0a, 1, 0, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, p []byte) {
		k := esp.Classify(p)
		keepalive := len(p) == 1 && p[0] == 0xff
		isESP := len(p) > 8 && (p[0] != 0 || p[1] != 0 || p[2] != 0 || p[3] != 0)
		want := esp.KindNonESP
		if keepalive {
			want = esp.KindKeepalive
		} else if isESP {
			want = esp.KindESP
		}
		if k != want {
			t.Fatalf("Classify(%x) = %v, want %v", p, k, want)
		}
		spi, ok := esp.PeekSPI(p)
		if ok != isESP || (ok && spi != binary.BigEndian.Uint32(p)) || (!ok && spi != 0) {
			t.Fatalf("PeekSPI(%x) = %#x, %v", p, spi, ok)
		}
	})
}
