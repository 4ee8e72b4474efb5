package packet_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"testing"

	"github.com/drovernet/drover/router/packet"
)

// verifyFragNeeded re-parses an ICMPv4 frag-needed error as a receiver would
// and checks every field against what AppendFragNeeded promises.
func verifyFragNeeded(out []byte, from netip.Addr, orig []byte, mtu int) error {
	var o packet.IP
	if err := o.Parse(orig); err != nil {
		return fmt.Errorf("original does not parse: %v", err)
	}
	var p packet.IP
	if err := p.Parse(out); err != nil {
		return fmt.Errorf("output does not parse: %v", err)
	}
	want := packet.IP{Version: 4, Src: from.Unmap(), Dst: o.Src, Proto: packet.ProtoICMP, HeaderLen: 20, TotalLen: len(out)}
	if p != want {
		return fmt.Errorf("IP header: got %+v, want %+v", p, want)
	}
	if len(out) > packet.MaxFragNeededLen {
		return fmt.Errorf("length %d exceeds %d (RFC 1812 §4.3.2.3)", len(out), packet.MaxFragNeededLen)
	}
	if got, want := out[1], byte(0xc0|orig[1]&0x1e); got != want {
		return fmt.Errorf("TOS: got %#02x, want %#02x", got, want)
	}
	if id, ff := binary.BigEndian.Uint16(out[4:]), binary.BigEndian.Uint16(out[6:]); id != 0 || ff != 0 {
		return fmt.Errorf("ID/flags: got %#x/%#x, want 0/0", id, ff)
	}
	if out[8] != 64 {
		return fmt.Errorf("TTL: got %d, want 64", out[8])
	}
	if r := packet.Checksum(out[:20], 0); r != 0 {
		return fmt.Errorf("IPv4 header checksum residue %#x, want 0", r)
	}
	m := out[20:]
	if m[0] != 3 || m[1] != 4 {
		return fmt.Errorf("ICMP type/code: got %d/%d, want 3/4", m[0], m[1])
	}
	if r := packet.Checksum(m, 0); r != 0 {
		return fmt.Errorf("ICMP checksum residue %#x, want 0", r)
	}
	if u := binary.BigEndian.Uint16(m[4:]); u != 0 {
		return fmt.Errorf("unused field: got %#x, want 0", u)
	}
	if got := int(binary.BigEndian.Uint16(m[6:])); got != mtu {
		return fmt.Errorf("next-hop MTU: got %d, want %d", got, mtu)
	}
	q := min(o.TotalLen, packet.MaxFragNeededLen-28)
	if !bytes.Equal(m[8:], orig[:q]) {
		return fmt.Errorf("quote: got %d bytes %x, want the first %d bytes of the original", len(m[8:]), m[8:], q)
	}
	return nil
}

// verifyPacketTooBig is verifyFragNeeded for ICMPv6 Packet Too Big.
func verifyPacketTooBig(out []byte, from netip.Addr, orig []byte, mtu int) error {
	var o packet.IP
	if err := o.Parse(orig); err != nil {
		return fmt.Errorf("original does not parse: %v", err)
	}
	var p packet.IP
	if err := p.Parse(out); err != nil {
		return fmt.Errorf("output does not parse: %v", err)
	}
	want := packet.IP{Version: 6, Src: from, Dst: o.Src, Proto: packet.ProtoICMPv6, DF: true, HeaderLen: 40, TotalLen: len(out)}
	if p != want {
		return fmt.Errorf("IP header: got %+v, want %+v", p, want)
	}
	if len(out) > packet.MaxPacketTooBigLen {
		return fmt.Errorf("length %d exceeds %d (RFC 4443 §3.2)", len(out), packet.MaxPacketTooBigLen)
	}
	if v := binary.BigEndian.Uint32(out[0:]); v != 0x60000000 {
		return fmt.Errorf("version/class/flow: got %#08x, want 0x60000000", v)
	}
	if out[7] != 64 {
		return fmt.Errorf("hop limit: got %d, want 64", out[7])
	}
	m := out[40:]
	if m[0] != 2 || m[1] != 0 {
		return fmt.Errorf("ICMPv6 type/code: got %d/%d, want 2/0", m[0], m[1])
	}
	if r := packet.Checksum(m, packet.PseudoHeaderSum(packet.ProtoICMPv6, p.Src, p.Dst, len(m))); r != 0 {
		return fmt.Errorf("ICMPv6 checksum residue %#x, want 0", r)
	}
	if got := int(binary.BigEndian.Uint32(m[4:])); got != mtu {
		return fmt.Errorf("MTU: got %d, want %d", got, mtu)
	}
	q := min(o.TotalLen, packet.MaxPacketTooBigLen-48)
	if !bytes.Equal(m[8:], orig[:q]) {
		return fmt.Errorf("quote: got %d bytes %x, want the first %d bytes of the original", len(m[8:]), m[8:], q)
	}
	return nil
}

// bigV4 is a 1500-byte IPv4 UDP packet with DF, as a container would send
// before it learns the tunnel MTU.
func bigV4() []byte {
	return buildIPv4(v4A, v4B, packet.ProtoUDP, 0x4000, nil, seqBytes(1480))
}

func bigV6() []byte { return buildIPv6(v6A, v6B, packet.ProtoUDP, seqBytes(1460)) }

func TestFragNeeded(t *testing.T) {
	withOpts := buildIPv4(v4A, v4B, packet.ProtoTCP, 0x4000, []byte{1, 1, 1, 0}, seqBytes(1200)) // NOP NOP NOP EOL
	tos := bigV4()
	tos[1] = 0xbb // DSCP 46 + ECN 3: keep TOS bits 0x1e only, like Linux
	binary.BigEndian.PutUint16(tos[10:], 0)
	binary.BigEndian.PutUint16(tos[10:], packet.Checksum(tos[:20], 0))
	tests := []struct {
		name    string
		orig    []byte
		mtu     int
		wantLen int
	}{
		{"1500-byte UDP, tunnel MTU 1438", bigV4(), 1438, 576},
		{"kernel echo request, whole packet quoted", unhex(t, hexV4EchoRequest), 68, 28 + 84},
		{"odd length", unhex(t, hexV4EchoOdd), 1000, 28 + 87},
		{"padding after total length is not quoted", append(unhex(t, hexV4EchoRequest), 0xee, 0xee), 1400, 28 + 84},
		{"with IPv4 options", withOpts, 1438, 576},
		{"exactly fills 576", buildIPv4(v4A, v4B, packet.ProtoUDP, 0x4000, nil, seqBytes(548-20)), 500, 576},
		{"ICMP echo is a query, answerable", buildIPv4(v4A, v4B, packet.ProtoICMP, 0x4000, nil, append([]byte{8, 0, 0, 0}, seqBytes(1400)...)), 1438, 576},
		{"first fragment (MF, offset 0)", buildIPv4(v4A, v4B, packet.ProtoUDP, 0x2000, nil, seqBytes(1000)), 576, 576},
		{"TOS: precedence 6, original TOS bits kept", tos, 1438, 576},
		{"max MTU", bigV4(), 65535, 576},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := packet.AppendFragNeeded(make([]byte, 0, 1600), v4R, tt.orig, tt.mtu)
			if err != nil {
				t.Fatalf("AppendFragNeeded: %v", err)
			}
			if len(out) != tt.wantLen {
				t.Fatalf("length: got %d, want %d", len(out), tt.wantLen)
			}
			if err := verifyFragNeeded(out, v4R, tt.orig, tt.mtu); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestFragNeededBytes pins the exact encoding for one packet, so a change in
// any field shows up as a diff rather than only as a failed property.
func TestFragNeededBytes(t *testing.T) {
	orig := unhex(t, hexV4EchoRequest)
	out, err := packet.AppendFragNeeded(nil, v4R, orig, 1438)
	if err != nil {
		t.Fatal(err)
	}
	// 45 c0 0070 0000 0000 40 01 cksum 0a000101 0a000102 | 03 04 cksum 0000 059e | orig
	// (checksums computed independently, with Python, from RFC 1071).
	want := unhex(t, "45c0007000000000400163cb"+"0a0001010a000102"+"0304f75d"+"0000059e"+hexV4EchoRequest)
	if !bytes.Equal(out, want) {
		t.Fatalf("got  %x\nwant %x", out, want)
	}
}

func TestPacketTooBig(t *testing.T) {
	hbh := append([]byte{packet.ProtoUDP, 0, 1, 4, 0, 0, 0, 0}, seqBytes(1400)...) // Hop-by-Hop, PadN
	tests := []struct {
		name    string
		orig    []byte
		mtu     int
		wantLen int
	}{
		{"1500-byte UDP, tunnel MTU 1438", bigV6(), 1438, 1280},
		{"kernel echo request, whole packet quoted", unhex(t, hexV6EchoRequest), 1280, 48 + 104},
		{"padding after payload length is not quoted", append(unhex(t, hexV6EchoRequest), 0xee), 1400, 48 + 104},
		{"exactly fills 1280", buildIPv6(v6A, v6B, packet.ProtoUDP, seqBytes(1232-40)), 1280, 1280},
		{"hop-by-hop then UDP", buildIPv6(v6A, v6B, 0, hbh), 1438, 1280},
		{"multicast destination (RFC 4443 §2.4(e.3) exception)", buildIPv6(v6A, netip.MustParseAddr("ff0e::1"), packet.ProtoUDP, seqBytes(1460)), 1438, 1280},
		{"non-first fragment", buildIPv6(v6A, v6B, 44, append([]byte{packet.ProtoICMPv6, 0, 0x05, 0x00, 0, 0, 0, 1}, seqBytes(1400)...)), 1438, 1280},
		{"ICMPv6 echo request", buildIPv6(v6A, v6B, packet.ProtoICMPv6, append([]byte{128, 0, 0, 0}, seqBytes(1400)...)), 1438, 1280},
		{"MTU above 16 bits", bigV6(), 70000, 1280},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := packet.AppendPacketTooBig(make([]byte, 0, 1600), v6R, tt.orig, tt.mtu)
			if err != nil {
				t.Fatalf("AppendPacketTooBig: %v", err)
			}
			if len(out) != tt.wantLen {
				t.Fatalf("length: got %d, want %d", len(out), tt.wantLen)
			}
			if err := verifyPacketTooBig(out, v6R, tt.orig, tt.mtu); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestPacketTooBigBytes(t *testing.T) {
	orig := unhex(t, hexV6EchoRequest)
	out, err := packet.AppendPacketTooBig(nil, v6R, orig, 1438)
	if err != nil {
		t.Fatal(err)
	}
	want := unhex(t, "60000000"+"0070"+"3a40"+
		"fd000001000000000000000000000001"+"fd000001000000000000000000000002"+
		"020051c6"+"0000059e"+hexV6EchoRequest)
	if !bytes.Equal(out, want) {
		t.Fatalf("got  %x\nwant %x", out, want)
	}
}

// TestICMPInPlace: the reply can be built over the offending packet's own
// buffer (the router turns the packet it cannot send into the error).
func TestICMPInPlace(t *testing.T) {
	for _, tt := range []struct {
		name  string
		orig  []byte
		build func([]byte, netip.Addr, []byte, int) ([]byte, error)
		from  netip.Addr
		check func([]byte, netip.Addr, []byte, int) error
	}{
		{"frag needed", bigV4(), packet.AppendFragNeeded, v4R, verifyFragNeeded},
		{"frag needed, small", unhex(t, hexV4EchoRequest), packet.AppendFragNeeded, v4R, verifyFragNeeded},
		{"packet too big", bigV6(), packet.AppendPacketTooBig, v6R, verifyPacketTooBig},
		{"packet too big, small", unhex(t, hexV6EchoRequest), packet.AppendPacketTooBig, v6R, verifyPacketTooBig},
	} {
		t.Run(tt.name, func(t *testing.T) {
			buf := make([]byte, len(tt.orig), 2048)
			copy(buf, tt.orig)
			out, err := tt.build(buf, tt.from, buf, 1400)
			if err != nil {
				t.Fatal(err)
			}
			if &out[0] != &buf[0] {
				t.Fatal("output not written into dst's buffer")
			}
			if err := tt.check(out, tt.from, tt.orig, 1400); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestICMPSmallDst(t *testing.T) {
	// A too-small dst is not an error: a new buffer is allocated, dst untouched.
	dst := make([]byte, 10)
	out, err := packet.AppendFragNeeded(dst, v4R, bigV4(), 1438)
	if err != nil || len(out) != 576 {
		t.Fatalf("got %d bytes, %v; want 576, nil", len(out), err)
	}
	if !bytes.Equal(dst, make([]byte, 10)) {
		t.Fatalf("dst modified: %x", dst)
	}
	out, err = packet.AppendPacketTooBig(nil, v6R, bigV6(), 1438)
	if err != nil || len(out) != 1280 {
		t.Fatalf("got %d bytes, %v; want 1280, nil", len(out), err)
	}
}

func TestFragNeededErrors(t *testing.T) {
	icmp := func(typ byte) []byte {
		return buildIPv4(v4A, v4B, packet.ProtoICMP, 0x4000, nil, append([]byte{typ, 0, 0, 0}, seqBytes(1400)...))
	}
	from := func(src string) []byte {
		return buildIPv4(netip.MustParseAddr(src), v4B, packet.ProtoUDP, 0x4000, nil, seqBytes(1400))
	}
	to := func(dst string) []byte {
		return buildIPv4(v4A, netip.MustParseAddr(dst), packet.ProtoUDP, 0x4000, nil, seqBytes(1400))
	}
	bad := bigV4()
	bad[0] = 0x44 // IHL 4
	tests := []struct {
		name string
		from netip.Addr
		orig []byte
		mtu  int
		want error
	}{
		// RFC 1812 §4.3.2.7: never an ICMP error about an ICMP error.
		{"ICMP dest unreachable", v4R, icmp(3), 1438, packet.ErrNoReply},
		{"ICMP source quench", v4R, icmp(4), 1438, packet.ErrNoReply},
		{"ICMP redirect", v4R, icmp(5), 1438, packet.ErrNoReply},
		{"ICMP time exceeded", v4R, icmp(11), 1438, packet.ErrNoReply},
		{"ICMP parameter problem", v4R, icmp(12), 1438, packet.ErrNoReply},
		{"ICMP unknown type 44 (treated as error)", v4R, icmp(44), 1438, packet.ErrNoReply},
		{"ICMP without a type byte", v4R, buildIPv4(v4A, v4B, packet.ProtoICMP, 0x4000, nil, nil), 1438, packet.ErrNoReply},
		// ... nor about a non-first fragment.
		{"non-first fragment", v4R, buildIPv4(v4A, v4B, packet.ProtoUDP, 0x0001, nil, seqBytes(1400)), 1438, packet.ErrNoReply},
		{"last fragment", v4R, buildIPv4(v4A, v4B, packet.ProtoICMP, 0x00b9, nil, append([]byte{8, 0, 0, 0}, seqBytes(1400)...)), 1438, packet.ErrNoReply},
		// ... nor to a source that is not one unicast host.
		{"source 0.0.0.0", v4R, from("0.0.0.0"), 1438, packet.ErrNoReply},
		{"source 0.1.2.3 (network 0)", v4R, from("0.1.2.3"), 1438, packet.ErrNoReply},
		{"source loopback", v4R, from("127.0.0.1"), 1438, packet.ErrNoReply},
		{"source multicast", v4R, from("224.0.0.1"), 1438, packet.ErrNoReply},
		{"source class E", v4R, from("240.0.0.1"), 1438, packet.ErrNoReply},
		{"source limited broadcast", v4R, from("255.255.255.255"), 1438, packet.ErrNoReply},
		// ... nor about a packet to multicast or broadcast.
		{"destination multicast", v4R, to("239.1.2.3"), 1438, packet.ErrNoReply},
		{"destination limited broadcast", v4R, to("255.255.255.255"), 1438, packet.ErrNoReply},
		// Bad arguments and malformed originals.
		{"IPv6 original", v4R, bigV6(), 1438, packet.ErrVersion},
		{"IPv6 from", v6R, bigV4(), 1438, packet.ErrFamily},
		{"zero from", netip.Addr{}, bigV4(), 1438, packet.ErrFamily},
		{"MTU 67", v4R, bigV4(), 67, packet.ErrMTU},
		{"MTU 65536", v4R, bigV4(), 65536, packet.ErrMTU},
		{"MTU -1", v4R, bigV4(), -1, packet.ErrMTU},
		{"empty original", v4R, nil, 1438, packet.ErrShort},
		{"truncated original", v4R, bigV4()[:1000], 1438, packet.ErrShort},
		{"IHL 4", v4R, bad, 1438, packet.ErrHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := make([]byte, 3, 1600)
			out, err := packet.AppendFragNeeded(dst, tt.from, tt.orig, tt.mtu)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if len(out) != 0 {
				t.Fatalf("got %d output bytes on error, want 0", len(out))
			}
		})
	}
	// The 4in6 form of the router's address is accepted and written as IPv4.
	mapped := netip.AddrFrom16(v4R.As16())
	out, err := packet.AppendFragNeeded(nil, mapped, bigV4(), 1438)
	if err != nil {
		t.Fatalf("IPv4-mapped from: %v", err)
	}
	if err := verifyFragNeeded(out, v4R, bigV4(), 1438); err != nil {
		t.Fatalf("IPv4-mapped from: %v", err)
	}
}

func TestPacketTooBigErrors(t *testing.T) {
	icmp6 := func(typ byte) []byte {
		return buildIPv6(v6A, v6B, packet.ProtoICMPv6, append([]byte{typ, 0, 0, 0}, seqBytes(1400)...))
	}
	from := func(src string) []byte {
		return buildIPv6(netip.MustParseAddr(src), v6B, packet.ProtoUDP, seqBytes(1400))
	}
	// Extension headers in front of an ICMPv6 error still hide an error.
	hbhErr := buildIPv6(v6A, v6B, 0, append([]byte{packet.ProtoICMPv6, 0, 1, 4, 0, 0, 0, 0, 1, 0, 0, 0}, seqBytes(1400)...))
	fragErr := buildIPv6(v6A, v6B, 44, append([]byte{packet.ProtoICMPv6, 0, 0, 1, 0, 0, 0, 7, 3, 0, 0, 0}, seqBytes(1400)...)) // first fragment (M=1), time exceeded
	dstoptsAHErr := buildIPv6(v6A, v6B, 60, append([]byte{51, 0, 1, 4, 0, 0, 0, 0,                                             // Destination Options, PadN
		packet.ProtoICMPv6, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, // AH, 12 bytes (len 1 → (1+2)*4)
		4, 0, 0, 0}, seqBytes(1400)...)) // ICMPv6 parameter problem
	truncChain := buildIPv6(v6A, v6B, 0, []byte{packet.ProtoICMPv6, 200, 1, 4, 0, 0, 0, 0}) // HBH claims 1608 bytes
	icmpNoType := buildIPv6(v6A, v6B, 0, []byte{packet.ProtoICMPv6, 0, 1, 4, 0, 0, 0, 0})   // ICMPv6 header missing
	var loop []byte                                                                         // 17 Destination Options headers
	for range 17 {
		loop = append(loop, 60, 0, 1, 4, 0, 0, 0, 0)
	}
	loop = append(loop, seqBytes(1300)...)
	tests := []struct {
		name string
		from netip.Addr
		orig []byte
		mtu  int
		want error
	}{
		// RFC 4443 §2.4(e.1): never an ICMPv6 error about an ICMPv6 error.
		{"dest unreachable", v6R, icmp6(1), 1438, packet.ErrNoReply},
		{"packet too big", v6R, icmp6(2), 1438, packet.ErrNoReply},
		{"time exceeded", v6R, icmp6(3), 1438, packet.ErrNoReply},
		{"parameter problem", v6R, icmp6(4), 1438, packet.ErrNoReply},
		{"error type 127", v6R, icmp6(127), 1438, packet.ErrNoReply},
		{"error behind hop-by-hop", v6R, hbhErr, 1438, packet.ErrNoReply},
		{"error in first fragment", v6R, fragErr, 1438, packet.ErrNoReply},
		{"error behind dest options and AH", v6R, dstoptsAHErr, 1438, packet.ErrNoReply},
		{"extension header beyond the packet", v6R, truncChain, 1280, packet.ErrNoReply},
		{"ICMPv6 without a type byte", v6R, icmpNoType, 1280, packet.ErrNoReply},
		{"extension chain too long", v6R, buildIPv6(v6A, v6B, 60, loop), 1280, packet.ErrNoReply},
		// (e.6): the source must identify a single node.
		{"source unspecified", v6R, from("::"), 1438, packet.ErrNoReply},
		{"source multicast", v6R, from("ff02::1"), 1438, packet.ErrNoReply},
		{"source loopback", v6R, from("::1"), 1438, packet.ErrNoReply},
		// Bad arguments and malformed originals.
		{"IPv4 original", v6R, bigV4(), 1438, packet.ErrVersion},
		{"IPv4 from", v4R, bigV6(), 1438, packet.ErrFamily},
		{"IPv4-mapped from", netip.AddrFrom16(v4R.As16()), bigV6(), 1438, packet.ErrFamily},
		{"zero from", netip.Addr{}, bigV6(), 1438, packet.ErrFamily},
		{"MTU 1279", v6R, bigV6(), 1279, packet.ErrMTU},
		{"empty original", v6R, nil, 1438, packet.ErrShort},
		{"truncated original", v6R, bigV6()[:1400], 1438, packet.ErrShort},
	}
	if strconv.IntSize == 64 { // an MTU of 2^32 is not an int on 32-bit platforms
		big := uint64(1) << 32
		tests = append(tests, struct {
			name string
			from netip.Addr
			orig []byte
			mtu  int
			want error
		}{"MTU 2^32", v6R, bigV6(), int(big), packet.ErrMTU})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := packet.AppendPacketTooBig(make([]byte, 3, 1600), tt.from, tt.orig, tt.mtu)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if len(out) != 0 {
				t.Fatalf("got %d output bytes on error, want 0", len(out))
			}
		})
	}
}
