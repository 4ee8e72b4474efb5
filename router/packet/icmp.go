package packet

import (
	"encoding/binary"
	"math"
	"net/netip"
)

const (
	// ICMPv4 type/code for "fragmentation needed and DF set" (RFC 792,
	// Destination Unreachable code 4; next-hop MTU field from RFC 1191 §4).
	ICMPv4TypeDestUnreachable = 3
	ICMPv4CodeFragNeeded      = 4
	// ICMPv6TypePacketTooBig is the Packet Too Big message (RFC 4443 §3.2).
	ICMPv6TypePacketTooBig = 2

	// ICMPHeaderLen is the size of the ICMP/ICMPv6 header including the
	// 32-bit field after the checksum (unused + next-hop MTU for frag needed,
	// MTU for Packet Too Big).
	ICMPHeaderLen = 8

	// MaxFragNeededLen bounds the whole ICMPv4 error datagram: "as much of
	// the original datagram as possible without the length of the ICMP
	// datagram exceeding 576 bytes" (RFC 1812 §4.3.2.3).
	MaxFragNeededLen = 576
	// MaxPacketTooBigLen bounds the whole ICMPv6 error packet: "as much of
	// invoking packet as possible without the ICMPv6 packet exceeding the
	// minimum IPv6 MTU" (RFC 4443 §3.2, 1280 bytes per RFC 8200 §5).
	MaxPacketTooBigLen = 1280

	// MinIPv4MTU is the smallest MTU an IPv4 link may have: every module
	// must forward a 68-byte datagram without further fragmentation
	// (RFC 791 §3.2).
	MinIPv4MTU = 68
	// MinIPv6MTU is the IPv6 minimum link MTU (RFC 8200 §5). A Packet Too
	// Big below it is useless: since RFC 8021 deprecated atomic fragments,
	// senders treat it as 1280 anyway, so a tunnel with a smaller MTU must
	// carry such packets by fragmenting the outer datagram instead.
	MinIPv6MTU = 1280

	// errorTTL is the TTL / hop limit of the errors we originate (the
	// Linux default, net.ipv4.ip_default_ttl / hop_limit = 64).
	errorTTL = 64
	// tosInternetControl is IP precedence 6: "All other ICMP error messages
	// ... SHOULD have their precedence value set to 6 (INTERNETWORK CONTROL)
	// or 7" (RFC 1812 §4.3.2.5). Linux does the same and keeps the original
	// TOS bits 3-6 (IPTOS_TOS_MASK, 0x1e), but not the ECN bits.
	tosInternetControl = 0xc0
	tosMask            = 0x1e
)

// AppendFragNeeded builds the ICMPv4 "fragmentation needed and DF set"
// error (RFC 792 type 3 code 4) that the router sends back to the source of
// orig, an IPv4 packet too big for a tunnel of the given mtu.
//
// The message carries the next-hop MTU in the low 16 bits of the word after
// the checksum (RFC 1191 §4) and quotes as much of orig (its first TotalLen
// bytes) as fits in a 576-byte datagram (RFC 1812 §4.3.2.3). The IPv4 header
// has source from, destination orig's source, TTL 64, precedence 6
// (RFC 1812 §4.3.2.5), DF clear and ID 0: the datagram is at most 576 bytes,
// which every IPv4 host must accept, so it is not expected to be fragmented.
// Both checksums are filled in.
//
// The result is written to dst[:0] and returned. It is 28 + min(TotalLen,
// 548) bytes; if cap(dst) is smaller, a new buffer is allocated, as append
// would. dst may be orig's own buffer (building the reply in place): all of
// orig that is needed is read before it is overwritten.
//
// Errors: those of IP.Parse for a malformed orig (RFC 1812 §4.3.2.7: no
// error for a packet that fails header validation), ErrVersion if orig is
// not IPv4, ErrFamily if from is not IPv4 (an IPv4-mapped IPv6 address is
// accepted), ErrMTU if mtu is outside 68..65535, and ErrNoReply where
// RFC 1812 §4.3.2.7 forbids an ICMP error: orig is an ICMP error (or an ICMP
// type not known to be a query), a non-first fragment, addressed to
// multicast/broadcast, or from a source that is not one unicast host
// (0/8, 127/8, 224/4, 240/4). On error the returned slice is dst[:0].
//
// It never panics and, with enough capacity in dst, does not allocate.
func AppendFragNeeded(dst []byte, from netip.Addr, orig []byte, mtu int) ([]byte, error) {
	var ip IP
	if err := ip.Parse(orig); err != nil {
		return dst[:0], err
	}
	if ip.Version != 4 {
		return dst[:0], ErrVersion
	}
	from = from.Unmap()
	if !from.Is4() {
		return dst[:0], ErrFamily
	}
	if mtu < MinIPv4MTU || mtu > math.MaxUint16 {
		return dst[:0], ErrMTU
	}
	if noReplyV4(orig, &ip) {
		return dst[:0], ErrNoReply
	}
	tos := orig[1] // read before dst (possibly orig's buffer) is written

	const hdr = IPv4HeaderLen + ICMPHeaderLen
	q := min(ip.TotalLen, MaxFragNeededLen-hdr)
	n := hdr + q
	out := resize(dst, n)
	copy(out[hdr:], orig[:q]) // memmove: safe when out and orig overlap

	// IPv4 header (RFC 791 §3.1).
	h := out[:IPv4HeaderLen]
	h[0] = 4<<4 | IPv4HeaderLen/4
	h[1] = tosInternetControl | tos&tosMask
	binary.BigEndian.PutUint16(h[v4TotalLen:], uint16(n))
	binary.BigEndian.PutUint16(h[v4ID:], 0)
	binary.BigEndian.PutUint16(h[v4Flags:], 0)
	h[v4TTL] = errorTTL
	h[v4Proto] = ProtoICMP
	binary.BigEndian.PutUint16(h[v4Checksum:], 0)
	putAddr4(h[v4Src:], from)
	putAddr4(h[v4Dst:], ip.Src)
	binary.BigEndian.PutUint16(h[v4Checksum:], Checksum(h, 0))

	// ICMP header (RFC 792; MTU field RFC 1191 §4). The ICMP checksum covers
	// the ICMP message only, no pseudo-header.
	m := out[IPv4HeaderLen:n]
	m[0] = ICMPv4TypeDestUnreachable
	m[1] = ICMPv4CodeFragNeeded
	binary.BigEndian.PutUint16(m[2:], 0)
	binary.BigEndian.PutUint16(m[4:], 0) // unused, must be zero
	binary.BigEndian.PutUint16(m[6:], uint16(mtu))
	binary.BigEndian.PutUint16(m[2:], Checksum(m, 0))
	return out, nil
}

// AppendPacketTooBig builds the ICMPv6 Packet Too Big message (RFC 4443
// §3.2) that the router sends back to the source of orig, an IPv6 packet too
// big for a tunnel of the given mtu.
//
// The message carries the 32-bit MTU and quotes as much of orig (its first
// TotalLen bytes) as fits in a 1280-byte packet (RFC 4443 §3.2). The IPv6
// header has source from, destination orig's source, traffic class and flow
// label 0, hop limit 64; the ICMPv6 checksum includes the pseudo-header
// (RFC 4443 §2.3, RFC 8200 §8.1).
//
// Output buffer and in-place use are as for AppendFragNeeded; the result is
// 48 + min(TotalLen, 1232) bytes.
//
// Errors: those of IP.Parse, ErrVersion if orig is not IPv6, ErrFamily if
// from is not an IPv6 address (IPv4-mapped ones included), ErrMTU if mtu is
// below 1280 or does not fit 32 bits, and ErrNoReply where RFC 4443 §2.4(e)
// forbids an ICMPv6 error: orig is an ICMPv6 error message (found through
// its extension headers; a malformed chain counts as one) or its source is
// unspecified, multicast or loopback. Multicast destinations and non-first
// fragments do get a Packet Too Big (RFC 4443 §2.4(e.3); Linux does the
// same). On error the returned slice is dst[:0].
//
// It never panics and, with enough capacity in dst, does not allocate.
func AppendPacketTooBig(dst []byte, from netip.Addr, orig []byte, mtu int) ([]byte, error) {
	var ip IP
	if err := ip.Parse(orig); err != nil {
		return dst[:0], err
	}
	if ip.Version != 6 {
		return dst[:0], ErrVersion
	}
	if !from.Is6() || from.Is4In6() {
		return dst[:0], ErrFamily
	}
	if mtu < MinIPv6MTU || uint64(mtu) > math.MaxUint32 {
		return dst[:0], ErrMTU
	}
	if noReplyV6(orig[:ip.TotalLen], &ip) {
		return dst[:0], ErrNoReply
	}

	const hdr = IPv6HeaderLen + ICMPHeaderLen
	q := min(ip.TotalLen, MaxPacketTooBigLen-hdr)
	n := hdr + q
	out := resize(dst, n)
	copy(out[hdr:], orig[:q]) // memmove: safe when out and orig overlap

	// IPv6 header (RFC 8200 §3).
	h := out[:IPv6HeaderLen]
	binary.BigEndian.PutUint32(h[0:], 6<<28) // version 6, traffic class 0, flow label 0
	binary.BigEndian.PutUint16(h[v6PayloadLen:], uint16(n-IPv6HeaderLen))
	h[v6NextHeader] = ProtoICMPv6
	h[v6HopLimit] = errorTTL
	src, dstAddr := from.As16(), ip.Src.As16()
	copy(h[v6Src:], src[:])
	copy(h[v6Dst:], dstAddr[:])

	// ICMPv6 Packet Too Big (RFC 4443 §3.2).
	m := out[IPv6HeaderLen:n]
	m[0] = ICMPv6TypePacketTooBig
	m[1] = 0
	binary.BigEndian.PutUint16(m[2:], 0)
	binary.BigEndian.PutUint32(m[4:], uint32(mtu))
	binary.BigEndian.PutUint16(m[2:], Checksum(m, PseudoHeaderSum(ProtoICMPv6, from, ip.Src, len(m))))
	return out, nil
}

// noReplyV4 reports whether RFC 1812 §4.3.2.7 forbids an ICMP error about
// the (parsed, valid) IPv4 packet b. No error is sent for:
//   - any fragment but the first (fragment offset non-zero);
//   - a packet to an IP multicast address or the limited broadcast;
//   - a packet whose source is not a unicast address that identifies one
//     host: network 0 (0.0.0.0/8), loopback (127/8), multicast (224/4),
//     class E and the limited broadcast (240/4) (RFC 1812 §4.3.2.7 and the
//     invalid sources of §5.3.7 / RFC 1122 §3.2.1.3);
//   - an ICMP error message. Like Linux, only the known query/informational
//     types are answerable; an unknown type, or an ICMP packet too short to
//     hold its type byte, is treated as an error message.
//
// Directed broadcasts cannot be recognised without the routing table; the
// router does not forward them into a tunnel in the first place.
func noReplyV4(b []byte, ip *IP) bool {
	if binary.BigEndian.Uint16(b[v4Flags:])&v4FragOffMask != 0 {
		return true
	}
	d := ip.Dst.As4()
	if d[0] >= 224 && d[0] <= 239 || d == [4]byte{255, 255, 255, 255} {
		return true
	}
	s := ip.Src.As4()
	if s[0] == 0 || s[0] == 127 || s[0] >= 224 {
		return true
	}
	if ip.Proto == ProtoICMP {
		if ip.HeaderLen >= ip.TotalLen {
			return true
		}
		return !icmpv4Informational(b[ip.HeaderLen])
	}
	return false
}

// icmpv4Informational reports whether an ICMP type is a query or an
// informational message (not an error): echo (RFC 792), router discovery
// (RFC 1256), timestamp and information (RFC 792), address mask (RFC 950),
// extended echo (RFC 8335).
func icmpv4Informational(t uint8) bool {
	switch t {
	case 0, 8, 9, 10, 13, 14, 15, 16, 17, 18, 42, 43:
		return true
	}
	return false
}

// IPv6 extension headers walked by noReplyV6 (RFC 8200 §4, AH RFC 4302).
const (
	nhHopByHop = 0
	nhRouting  = 43
	nhFragment = 44
	nhAH       = 51
	nhDestOpts = 60
)

// maxExtHeaders bounds the extension-header walk; a legitimate chain has at
// most a handful (RFC 8200 §4.1 lists each at most once or twice).
const maxExtHeaders = 16

// noReplyV6 reports whether RFC 4443 §2.4(e) forbids an ICMPv6 error about
// the (parsed, valid) IPv6 packet b (trimmed to its TotalLen). No error is
// sent for:
//   - an ICMPv6 error message (type < 128, RFC 4443 §2.1), found by walking
//     the extension headers; if the chain is malformed or the ICMPv6 type
//     byte is missing, we cannot prove it is not an error and stay silent;
//   - a packet whose source does not identify a single node: unspecified or
//     multicast (e.6), or loopback, which must never leave a node
//     (RFC 4291 §2.5.3).
//
// Unlike IPv4, a Packet Too Big may answer a multicast destination (the
// exception in e.3) and a non-first fragment (the source fragmented, so it
// is the node that must learn the smaller MTU); Linux does both.
func noReplyV6(b []byte, ip *IP) bool {
	if ip.Src.IsUnspecified() || ip.Src.IsMulticast() || ip.Src.IsLoopback() {
		return true
	}
	nh, off := b[v6NextHeader], IPv6HeaderLen
	for range maxExtHeaders {
		switch nh {
		case nhHopByHop, nhRouting, nhDestOpts:
			// Hdr Ext Len: 8-octet units, not counting the first 8 (RFC 8200 §4.3).
			if off+2 > len(b) {
				return true
			}
			nh, off = b[off], off+(int(b[off+1])+1)*8
		case nhAH:
			// Payload Len: 4-octet units, minus 2 (RFC 4302 §2.2).
			if off+2 > len(b) {
				return true
			}
			nh, off = b[off], off+(int(b[off+1])+2)*4
		case nhFragment:
			if off+8 > len(b) {
				return true
			}
			if binary.BigEndian.Uint16(b[off+2:])&^7 != 0 {
				return false // non-first fragment: no upper-layer header here
			}
			nh, off = b[off], off+8
		case ProtoICMPv6:
			if off >= len(b) {
				return true
			}
			return b[off] < 128
		default:
			return off > len(b) // any other upper layer: answerable if the chain fit
		}
	}
	return true
}

// putAddr4 writes a 4-byte address; a non-IPv4 address writes zeros instead
// of panicking (As4 panics on IPv6).
func putAddr4(b []byte, a netip.Addr) {
	a = a.Unmap()
	if !a.Is4() {
		clear(b[:4])
		return
	}
	v := a.As4()
	copy(b[:4], v[:])
}

// resize returns dst[:n], or a new n-byte buffer if dst is too small.
func resize(dst []byte, n int) []byte {
	if cap(dst) >= n {
		return dst[:n]
	}
	return make([]byte, n)
}
