package packet_test

import (
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"testing"

	"github.com/drovernet/drover/router/packet"
)

// Golden packets captured from Linux (shared/interop/vectors). The IP ones are
// the inner_packet of ESP vectors (the forwarded plaintext, TTL/hop limit
// already decremented; checksums verified by the interop tooling); the frames
// are inner_frame of the VXLAN vectors.
const (
	// esp-vectors.json gcm128-ab-1-icmp: 10.0.1.2 → 10.0.2.2, ICMP echo
	// request, DF, TTL 63, 84 bytes.
	hexV4EchoRequest = "450000544ccf40003f01d7d60a0001020a0002020800688116e100015e64036b00000000ffbd0800000000005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
	// gcm128-ba-1-icmp: the echo reply 10.0.2.2 → 10.0.1.2, DF clear.
	hexV4EchoReply = "450000542bf100003f0138b50a0002020a0001020000708116e100015e64036b00000000ffbd0800000000005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
	// gcm128-ab-4-icmp: odd length (87 bytes), exercises the odd checksum byte.
	hexV4EchoOdd = "450000574cd840003f01d7ca0a0001020a00020208000b1116e400015e64036b00000000a7d00900000000005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
	// gcm128-ab-5-icmpv6: fd00:1::2 → fd00:2::2, ICMPv6 echo request,
	// hop limit 63, flow label 0xa11db, 104 bytes.
	hexV6EchoRequest = "600a11db00403a3ffd000001000000000000000000000002fd0000020000000000000000000000028000207d16e500015e64036b00000000d33a0a00000000005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
	// gcm128-ba-5-icmpv6: the echo reply fd00:2::2 → fd00:1::2.
	hexV6EchoReply = "60095e3300403a3ffd000002000000000000000000000002fd00000100000000000000000000000281001f7d16e500015e64036b00000000d33a0a00000000005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"

	// vxlan-vectors.json vxlan-vni1042-1: broadcast ARP request, 42 bytes
	// (Linux does not pad): who has 10.42.2.1? tell 10.42.1.1.
	hexARPRequestFrame = "ffffffffffff02420a2a01010806000108000604000102420a2a01010a2a01010000000000000a2a0201"
	// vxlan-vni1042-2: the kernel's reply, 10.42.2.1 is at 02:42:0a:2a:02:01.
	hexARPReplyFrame = "02420a2a010102420a2a02010806000108000604000202420a2a02010a2a020102420a2a01010a2a0101"
	// vxlan-vni1042-3: Ethernet + IPv4 ICMP echo 10.42.1.1 → 10.42.2.1.
	hexEthIPv4Frame = "02420a2a020102420a2a01010800450000543d2140004001e6320a2a01010a2a0201080076374d8f00013465036b00000000e0580d00000000005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
)

func unhex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatalf("hex %q: %v", s, err)
	}
	return b
}

func mustMAC(tb testing.TB, s string) packet.MAC {
	tb.Helper()
	m, err := packet.ParseMAC(s)
	if err != nil {
		tb.Fatalf("ParseMAC(%q): %v", s, err)
	}
	return m
}

// buildIPv4 returns a valid IPv4 packet (correct header checksum, TTL 64)
// with the given options (a multiple of 4 bytes) and payload. flags is the
// 16-bit flags/fragment-offset word.
func buildIPv4(src, dst netip.Addr, proto uint8, flags uint16, opts, payload []byte) []byte {
	hl := packet.IPv4HeaderLen + len(opts)
	b := make([]byte, hl+len(payload))
	b[0] = 0x40 | byte(hl/4)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[4:], 0x1234)
	binary.BigEndian.PutUint16(b[6:], flags)
	b[8] = 64
	b[9] = proto
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	copy(b[20:], opts)
	binary.BigEndian.PutUint16(b[10:], packet.Checksum(b[:hl], 0))
	copy(b[hl:], payload)
	return b
}

// buildIPv6 returns an IPv6 packet with the given next header and payload
// (which includes any extension headers).
func buildIPv6(src, dst netip.Addr, nh uint8, payload []byte) []byte {
	b := make([]byte, packet.IPv6HeaderLen+len(payload))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(payload)))
	b[6] = nh
	b[7] = 64
	s, d := src.As16(), dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	copy(b[40:], payload)
	return b
}

// seqBytes returns n bytes 0, 1, 2, ... so quoted data shows its offset.
func seqBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

var (
	v4A = netip.MustParseAddr("10.0.1.2")
	v4B = netip.MustParseAddr("10.0.2.2")
	v4R = netip.MustParseAddr("10.0.1.1") // the router
	v6A = netip.MustParseAddr("fd00:1::2")
	v6B = netip.MustParseAddr("fd00:2::2")
	v6R = netip.MustParseAddr("fd00:1::1")
)
