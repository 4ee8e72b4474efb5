package packet_test

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/drovernet/drover/router/packet"
)

func TestIPParseGolden(t *testing.T) {
	tests := []struct {
		name string
		hex  string
		want packet.IP
	}{
		{"v4 echo request", hexV4EchoRequest, packet.IP{
			Version: 4, Src: v4A, Dst: v4B, Proto: packet.ProtoICMP, DF: true, HeaderLen: 20, TotalLen: 84}},
		{"v4 echo reply", hexV4EchoReply, packet.IP{
			Version: 4, Src: v4B, Dst: v4A, Proto: packet.ProtoICMP, DF: false, HeaderLen: 20, TotalLen: 84}},
		{"v4 odd length", hexV4EchoOdd, packet.IP{
			Version: 4, Src: v4A, Dst: v4B, Proto: packet.ProtoICMP, DF: true, HeaderLen: 20, TotalLen: 87}},
		{"v4 in vxlan frame", hexEthIPv4Frame[2*packet.EthHeaderLen:], packet.IP{
			Version: 4, Src: netip.MustParseAddr("10.42.1.1"), Dst: netip.MustParseAddr("10.42.2.1"),
			Proto: packet.ProtoICMP, DF: true, HeaderLen: 20, TotalLen: 84}},
		{"v6 echo request", hexV6EchoRequest, packet.IP{
			Version: 6, Src: v6A, Dst: v6B, Proto: packet.ProtoICMPv6, DF: true, HeaderLen: 40, TotalLen: 104}},
		{"v6 echo reply", hexV6EchoReply, packet.IP{
			Version: 6, Src: v6B, Dst: v6A, Proto: packet.ProtoICMPv6, DF: true, HeaderLen: 40, TotalLen: 104}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := unhex(t, tt.hex)
			var got packet.IP
			if err := got.Parse(b); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got != tt.want {
				t.Fatalf("Parse: got %+v, want %+v", got, tt.want)
			}
			if dst, ok := packet.DstAddr(b); !ok || dst != tt.want.Dst {
				t.Errorf("DstAddr: got %v, %v; want %v, true", dst, ok, tt.want.Dst)
			}
			if src, ok := packet.SrcAddr(b); !ok || src != tt.want.Src {
				t.Errorf("SrcAddr: got %v, %v; want %v, true", src, ok, tt.want.Src)
			}
			// Link-layer padding after the datagram is not part of it.
			padded := append(b, make([]byte, 13)...)
			var p2 packet.IP
			if err := p2.Parse(padded); err != nil || p2 != tt.want {
				t.Errorf("Parse with 13 trailing bytes: got %+v, %v; want %+v, nil", p2, err, tt.want)
			}
		})
	}
}

func TestIPParseOptions(t *testing.T) {
	opts := []byte{0x94, 0x04, 0x00, 0x00} // Router Alert (RFC 2113), 4 bytes
	b := buildIPv4(v4A, v4B, packet.ProtoUDP, 0, opts, seqBytes(8))
	var p packet.IP
	if err := p.Parse(b); err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if p.HeaderLen != 24 || p.TotalLen != 32 || p.Proto != packet.ProtoUDP || p.DF {
		t.Fatalf("Parse: got %+v, want HeaderLen 24, TotalLen 32, Proto 17, DF false", p)
	}
}

func TestIPParseErrors(t *testing.T) {
	v4 := unhex(t, hexV4EchoRequest)
	v6 := unhex(t, hexV6EchoRequest)
	mod := func(b []byte, f func(c []byte)) []byte {
		c := append([]byte(nil), b...)
		f(c)
		return c
	}
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"nil", nil, packet.ErrShort},
		{"empty", []byte{}, packet.ErrShort},
		{"version 0", []byte{0x05}, packet.ErrVersion},
		{"version 5", mod(v4, func(c []byte) { c[0] = 0x55 }), packet.ErrVersion},
		{"version 15", mod(v6, func(c []byte) { c[0] = 0xf0 }), packet.ErrVersion},
		{"v4 only the version byte", []byte{0x45}, packet.ErrShort},
		{"v4 19 bytes", v4[:19], packet.ErrShort},
		{"v4 IHL 4", mod(v4, func(c []byte) { c[0] = 0x44 }), packet.ErrHeader},
		{"v4 IHL 0", mod(v4[:20], func(c []byte) { c[0] = 0x40 }), packet.ErrHeader},
		// IHL 15: 60-byte header, beyond a 24-byte buffer.
		{"v4 IHL 15 beyond buffer", mod(v4[:24], func(c []byte) { c[0] = 0x4f; c[2], c[3] = 0, 24 }), packet.ErrShort},
		{"v4 total length < IHL*4", mod(v4, func(c []byte) { c[2], c[3] = 0, 19 }), packet.ErrHeader},
		{"v4 total length 0", mod(v4, func(c []byte) { c[2], c[3] = 0, 0 }), packet.ErrHeader},
		{"v4 total length > buffer", mod(v4, func(c []byte) { c[2], c[3] = 0, 85 }), packet.ErrShort},
		{"v4 truncated by one byte", v4[:83], packet.ErrShort},
		{"v6 39 bytes", v6[:39], packet.ErrShort},
		{"v6 payload length > buffer", mod(v6, func(c []byte) { c[4], c[5] = 0, 65 }), packet.ErrShort},
		{"v6 truncated by one byte", v6[:103], packet.ErrShort},
		{"v6 payload length 0xffff", mod(v6, func(c []byte) { c[4], c[5] = 0xff, 0xff }), packet.ErrShort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := packet.IP{Version: 9, TotalLen: -1}
			err := p.Parse(tt.b)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse(%x): got %v, want %v", tt.b, err, tt.want)
			}
			if p != (packet.IP{Version: 9, TotalLen: -1}) {
				t.Fatalf("Parse error modified p: got %+v", p)
			}
		})
	}
}

func TestIPParseBoundaries(t *testing.T) {
	// Smallest valid packets: a bare IPv4 header and a bare IPv6 header.
	v4 := buildIPv4(v4A, v4B, 253, 0, nil, nil)
	var p packet.IP
	if err := p.Parse(v4); err != nil || p.TotalLen != 20 || p.HeaderLen != 20 || p.Proto != 253 {
		t.Errorf("bare IPv4 header: got %+v, %v; want TotalLen 20, Proto 253", p, err)
	}
	v6 := buildIPv6(v6A, v6B, 59, nil) // No Next Header
	if err := p.Parse(v6); err != nil || p.TotalLen != 40 || p.Proto != 59 {
		t.Errorf("bare IPv6 header: got %+v, %v; want TotalLen 40, Proto 59", p, err)
	}
	// IPv4 with IHL 15 and total length 60: all options, no payload.
	opts := make([]byte, 40)
	v4 = buildIPv4(v4A, v4B, 253, 0, opts, nil)
	if err := p.Parse(v4); err != nil || p.HeaderLen != 60 || p.TotalLen != 60 {
		t.Errorf("IHL 15: got %+v, %v; want HeaderLen 60, TotalLen 60", p, err)
	}
	// IPv4-in-the-address-field never turns into 4in6: Src/Dst are Is4.
	if err := p.Parse(unhex(t, hexV4EchoRequest)); err != nil || !p.Src.Is4() || !p.Dst.Is4() {
		t.Errorf("IPv4 addresses: got %v, %v (err %v); want Is4", p.Src, p.Dst, err)
	}
}

func TestAddrFastPath(t *testing.T) {
	v4 := unhex(t, hexV4EchoRequest)
	v6 := unhex(t, hexV6EchoRequest)
	tests := []struct {
		name     string
		b        []byte
		src, dst netip.Addr
		ok       bool
	}{
		{"v4", v4, v4A, v4B, true},
		{"v4 header only", v4[:20], v4A, v4B, true},
		{"v6", v6, v6A, v6B, true},
		{"v6 header only", v6[:40], v6A, v6B, true},
		{"nil", nil, netip.Addr{}, netip.Addr{}, false},
		{"v4 19 bytes", v4[:19], netip.Addr{}, netip.Addr{}, false},
		{"v6 39 bytes", v6[:39], netip.Addr{}, netip.Addr{}, false},
		{"v6 20 bytes (v4 length)", v6[:20], netip.Addr{}, netip.Addr{}, false},
		{"version 5", append([]byte{0x55}, v4[1:]...), netip.Addr{}, netip.Addr{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, ok := packet.DstAddr(tt.b); got != tt.dst || ok != tt.ok {
				t.Errorf("DstAddr: got %v, %v; want %v, %v", got, ok, tt.dst, tt.ok)
			}
			if got, ok := packet.SrcAddr(tt.b); got != tt.src || ok != tt.ok {
				t.Errorf("SrcAddr: got %v, %v; want %v, %v", got, ok, tt.src, tt.ok)
			}
		})
	}
}
