package packet_test

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/drovernet/drover/router/packet"
)

// naiveSum is RFC 1071 §4.1 written out: 16-bit big-endian words, odd byte
// padded with zero, carries folded back in.
func naiveSum(b []byte, initial uint32) uint32 {
	s := uint64(initial)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint64(b[i])<<8 | uint64(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint64(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint32(s)
}

func TestChecksumRFC1071Example(t *testing.T) {
	// RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2 (folded).
	b := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if got := packet.Sum(b, 0); got != 0xddf2 {
		t.Fatalf("Sum: got %#04x, want 0xddf2", got)
	}
	if got := packet.Checksum(b, 0); got != 0x220d {
		t.Fatalf("Checksum: got %#04x, want 0x220d", got)
	}
}

func TestChecksumDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		b := make([]byte, r.IntN(200))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if r.IntN(4) == 0 { // all-ones runs stress the carries
			for i := range b {
				b[i] = 0xff
			}
		}
		initial := r.Uint32()
		if got, want := packet.Sum(b, initial), naiveSum(b, initial); got != want {
			t.Fatalf("Sum(%x, %#x): got %#x, want %#x", b, initial, got, want)
		}
		if got, want := packet.Checksum(b, initial), ^uint16(naiveSum(b, initial)); got != want {
			t.Fatalf("Checksum(%x, %#x): got %#x, want %#x", b, initial, got, want)
		}
	}
}

// TestSumLong covers the vector code (amd64 with AVX2, from 128 bytes):
// every length around its block size and threshold, odd starts, the
// all-ones worst case for its lane accumulators, and inputs longer than one
// vector call takes.
func TestSumLong(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	buf := make([]byte, 3<<20+1)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	ones := make([]byte, len(buf))
	for i := range ones {
		ones[i] = 0xff
	}
	var lens []int
	for n := 0; n <= 1100; n++ {
		lens = append(lens, n)
	}
	lens = append(lens, 1400, 1500, 9000, 65535, 65536, 1<<20-1, 1<<20, 1<<20+64, 3<<20+1)
	for _, data := range [][]byte{buf, ones} {
		for _, n := range lens {
			for _, off := range []int{0, 1} {
				if off+n > len(data) {
					continue
				}
				b := data[off : off+n]
				initial := r.Uint32()
				if got, want := packet.Sum(b, initial), naiveSum(b, initial); got != want {
					t.Fatalf("Sum(%d bytes at offset %d, %#x): got %#x, want %#x", n, off, initial, got, want)
				}
			}
		}
	}
}

func TestChecksumChaining(t *testing.T) {
	b := seqBytes(301)
	whole := packet.Checksum(b, 0)
	for _, cut := range []int{0, 2, 8, 32, 100, 300} { // even-length first pieces
		if got := packet.Checksum(b[cut:], packet.Sum(b[:cut], 0)); got != whole {
			t.Errorf("cut at %d: got %#x, want %#x", cut, got, whole)
		}
	}
}

// TestGoldenChecksums: the kernel's own checksums verify (sum over the field
// included gives 0), and recomputing them reproduces the kernel's bytes.
func TestGoldenChecksums(t *testing.T) {
	for _, h := range []string{hexV4EchoRequest, hexV4EchoReply, hexV4EchoOdd} {
		b := unhex(t, h)
		if got := packet.Checksum(b[:20], 0); got != 0 {
			t.Errorf("IPv4 header checksum of %.24s…: got residue %#x, want 0", h, got)
		}
		if got := packet.Checksum(b[20:], 0); got != 0 {
			t.Errorf("ICMP checksum of %.24s…: got residue %#x, want 0", h, got)
		}
		want := binary.BigEndian.Uint16(b[22:])
		b[22], b[23] = 0, 0
		if got := packet.Checksum(b[20:], 0); got != want {
			t.Errorf("ICMP checksum recomputed: got %#04x, want %#04x", got, want)
		}
	}
	for _, h := range []string{hexV6EchoRequest, hexV6EchoReply} {
		b := unhex(t, h)
		var p packet.IP
		if err := p.Parse(b); err != nil {
			t.Fatal(err)
		}
		ph := packet.PseudoHeaderSum(packet.ProtoICMPv6, p.Src, p.Dst, len(b)-40)
		if got := packet.Checksum(b[40:], ph); got != 0 {
			t.Errorf("ICMPv6 checksum of %.24s…: got residue %#x, want 0", h, got)
		}
		want := binary.BigEndian.Uint16(b[42:])
		b[42], b[43] = 0, 0
		if got := packet.Checksum(b[40:], ph); got != want {
			t.Errorf("ICMPv6 checksum recomputed: got %#04x, want %#04x", got, want)
		}
	}
}

func TestPseudoHeaderSum(t *testing.T) {
	// Compare with the pseudo-header laid out as bytes (RFC 768 / RFC 8200 §8.1).
	src4, dst4 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.255")
	ph4 := make([]byte, 12)
	copy(ph4[0:], src4.AsSlice())
	copy(ph4[4:], dst4.AsSlice())
	ph4[9] = packet.ProtoUDP
	binary.BigEndian.PutUint16(ph4[10:], 1480)
	if got, want := packet.PseudoHeaderSum(packet.ProtoUDP, src4, dst4, 1480), naiveSum(ph4, 0); got != want {
		t.Errorf("IPv4: got %#x, want %#x", got, want)
	}

	src6, dst6 := netip.MustParseAddr("fd00:ffff::1"), netip.MustParseAddr("ff02::1:ff00:1")
	ph6 := make([]byte, 40)
	copy(ph6[0:], src6.AsSlice())
	copy(ph6[16:], dst6.AsSlice())
	binary.BigEndian.PutUint32(ph6[32:], 70000) // > 16 bits: both halves count
	ph6[39] = packet.ProtoICMPv6
	if got, want := packet.PseudoHeaderSum(packet.ProtoICMPv6, src6, dst6, 70000), naiveSum(ph6, 0); got != want {
		t.Errorf("IPv6: got %#x, want %#x", got, want)
	}
	if got := packet.PseudoHeaderSum(0, netip.Addr{}, netip.Addr{}, 0); got != 0 {
		t.Errorf("zero addresses: got %#x, want 0", got)
	}
}
