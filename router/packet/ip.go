package packet

import (
	"encoding/binary"
	"net/netip"
)

const (
	// IPv4HeaderLen is the length of an IPv4 header without options (RFC 791 §3.1).
	IPv4HeaderLen = 20
	// IPv6HeaderLen is the length of the fixed IPv6 header (RFC 8200 §3).
	IPv6HeaderLen = 40

	// ProtoICMP, ProtoTCP, ProtoUDP and ProtoICMPv6 are IANA protocol numbers
	// (the IPv4 Protocol / IPv6 Next Header field).
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// IPv4 header offsets (RFC 791 §3.1).
const (
	v4TotalLen = 2  // total length, 16 bits
	v4ID       = 4  // identification, 16 bits
	v4Flags    = 6  // flags (3 bits) + fragment offset (13 bits)
	v4TTL      = 8  // time to live
	v4Proto    = 9  // protocol
	v4Checksum = 10 // header checksum
	v4Src      = 12 // source address
	v4Dst      = 16 // destination address

	v4FlagDF      = 0x4000 // don't fragment, in the flags/offset word
	v4FlagMF      = 0x2000 // more fragments
	v4FragOffMask = 0x1fff // fragment offset, in 8-byte units
)

// IPv6 header offsets (RFC 8200 §3).
const (
	v6PayloadLen = 4  // payload length, 16 bits
	v6NextHeader = 6  // next header
	v6HopLimit   = 7  // hop limit
	v6Src        = 8  // source address
	v6Dst        = 24 // destination address
)

// IP is a decoded inner IP header (a packet read from the TUN device or
// taken out of a tunnel). It holds values, not references: the buffer may be
// reused as soon as Parse returns.
type IP struct {
	// Version is 4 or 6.
	Version uint8
	// Src and Dst are the source and destination addresses (Is4 or Is6;
	// never IPv4-mapped, never zoned).
	Src, Dst netip.Addr
	// Proto is the IPv4 Protocol or the IPv6 Next Header field as found in
	// the fixed header. IPv6 extension headers are not walked, so Proto is
	// 0 (Hop-by-Hop), 44 (Fragment), ... when they are present.
	Proto uint8
	// DF is the IPv4 Don't Fragment flag. For IPv6 it is always true:
	// routers never fragment IPv6 (RFC 8200 §5), so a too-big IPv6 packet
	// always gets a Packet Too Big, exactly like a too-big IPv4 packet with DF.
	DF bool
	// HeaderLen is the IPv4 header length (IHL*4, options included) or 40
	// for IPv6.
	HeaderLen int
	// TotalLen is the datagram length the header claims (IPv4 Total Length,
	// or 40 + IPv6 Payload Length). It is at most len(b): bytes after it
	// (link-layer padding) are not part of the packet.
	TotalLen int
}

// Parse decodes the IP header at the start of b. It validates what the
// forwarding path relies on: version 4 or 6; for IPv4 IHL >= 5 (RFC 791
// §3.1), the header (options included) inside b, and IHL*4 <= Total Length
// <= len(b); for IPv6 the 40-byte header and 40 + Payload Length <= len(b)
// (RFC 8200 §3). It does not verify the IPv4 header checksum (packets come
// from the local kernel through the TUN device or out of an authenticated
// tunnel) and does not walk IPv6 extension headers.
//
// A Payload Length of 0 (RFC 2675 jumbograms) parses as a 40-byte packet.
//
// Parse never panics and does not allocate. On error p is left unchanged;
// the error is ErrShort, ErrVersion or ErrHeader.
func (p *IP) Parse(b []byte) error {
	if len(b) < 1 {
		return ErrShort
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) < IPv4HeaderLen {
			return ErrShort
		}
		hl := int(b[0]&0x0f) * 4
		if hl < IPv4HeaderLen {
			return ErrHeader
		}
		if hl > len(b) {
			return ErrShort
		}
		tl := int(binary.BigEndian.Uint16(b[v4TotalLen:]))
		if tl < hl {
			return ErrHeader
		}
		if tl > len(b) {
			return ErrShort
		}
		*p = IP{
			Version:   4,
			Src:       netip.AddrFrom4([4]byte(b[v4Src : v4Src+4])),
			Dst:       netip.AddrFrom4([4]byte(b[v4Dst : v4Dst+4])),
			Proto:     b[v4Proto],
			DF:        binary.BigEndian.Uint16(b[v4Flags:])&v4FlagDF != 0,
			HeaderLen: hl,
			TotalLen:  tl,
		}
		return nil
	case 6:
		if len(b) < IPv6HeaderLen {
			return ErrShort
		}
		tl := IPv6HeaderLen + int(binary.BigEndian.Uint16(b[v6PayloadLen:]))
		if tl > len(b) {
			return ErrShort
		}
		*p = IP{
			Version:   6,
			Src:       netip.AddrFrom16([16]byte(b[v6Src : v6Src+16])),
			Dst:       netip.AddrFrom16([16]byte(b[v6Dst : v6Dst+16])),
			Proto:     b[v6NextHeader],
			DF:        true,
			HeaderLen: IPv6HeaderLen,
			TotalLen:  tl,
		}
		return nil
	default:
		return ErrVersion
	}
}

// DstAddr returns the destination address of the IP packet in b: the fast
// path for forwarding lookups. It reads only the version nibble and the
// address, checking just that b is long enough for the fixed header; the
// caller validates the rest (Parse) where it matters. ok is false for an
// unknown version or a short buffer. It never panics and does not allocate.
func DstAddr(b []byte) (addr netip.Addr, ok bool) {
	return addrAt(b, v4Dst, v6Dst)
}

// SrcAddr is DstAddr for the source address (ingress checks that the inner
// source belongs to the sending peer).
func SrcAddr(b []byte) (addr netip.Addr, ok bool) {
	return addrAt(b, v4Src, v6Src)
}

func addrAt(b []byte, off4, off6 int) (netip.Addr, bool) {
	if len(b) < 1 {
		return netip.Addr{}, false
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) < IPv4HeaderLen {
			return netip.Addr{}, false
		}
		return netip.AddrFrom4([4]byte(b[off4 : off4+4])), true
	case 6:
		if len(b) < IPv6HeaderLen {
			return netip.Addr{}, false
		}
		return netip.AddrFrom16([16]byte(b[off6 : off6+16])), true
	}
	return netip.Addr{}, false
}
