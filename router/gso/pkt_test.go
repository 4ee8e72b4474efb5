package gso

import (
	"encoding/binary"
	"net/netip"

	"github.com/drovernet/drover/router/packet"
)

// Test packets, built field by field, with checksums from refSum: a
// reference written as RFC 1071 §1 describes it (16-bit big-endian words,
// an odd byte padded with zero on the right, end-around carry), on purpose
// not packet.Sum, so that the code under test is checked against something
// it does not share.

var (
	src4 = netip.MustParseAddr("10.1.0.1")
	dst4 = netip.MustParseAddr("10.2.0.2")
	src6 = netip.MustParseAddr("fd00:1::1")
	dst6 = netip.MustParseAddr("fd00:2::2")

	// tsOpts is NOP, NOP, Timestamps (RFC 7323 §3): with it the TCP header
	// is 32 bytes, as on every Linux data segment.
	tsOpts = []byte{1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78}
)

// pktSpec describes one IP packet. The zero values of the fields marked
// so are replaced by defaults.
type pktSpec struct {
	v6, udp      bool
	src, dst     netip.Addr // zero: src4/dst4, or src6/dst6
	sport, dport uint16     // zero: 40000, 443
	tos          uint8      // IPv4 TOS or IPv6 traffic class
	ttl          uint8      // zero: 64 (IPv4 TTL or IPv6 hop limit)
	flowLabel    uint32
	ipOpts       []byte // IPv4 options, a multiple of 4 bytes
	id           uint16
	noDF         bool   // IPv4: leave DF clear (it is set by default)
	frag         uint16 // IPv4: MF and fragment offset bits, or'd in
	tcpOpts      []byte // a multiple of 4 bytes
	seq, ack     uint32
	flags        uint8  // TCP flags; zero: ACK
	win          uint16 // zero: 502
	urg          uint16
	payload      []byte
}

// build returns the packet with valid IPv4 header and transport checksums.
func (p pktSpec) build() []byte {
	src, dst := p.src, p.dst
	if !src.IsValid() {
		src, dst = src4, dst4
		if p.v6 {
			src, dst = src6, dst6
		}
	}
	sport, dport := p.sport, p.dport
	if sport == 0 {
		sport, dport = 40000, 443
	}
	ttl := p.ttl
	if ttl == 0 {
		ttl = 64
	}
	proto := uint8(packet.ProtoTCP)
	l4Len := 20 + len(p.tcpOpts) + len(p.payload)
	if p.udp {
		proto, l4Len = packet.ProtoUDP, 8+len(p.payload)
	}
	ipLen := 20 + len(p.ipOpts)
	if p.v6 {
		ipLen = 40
	}
	b := make([]byte, ipLen+l4Len)
	if p.v6 {
		binary.BigEndian.PutUint32(b[0:], 6<<28|uint32(p.tos)<<20|p.flowLabel&0xfffff)
		binary.BigEndian.PutUint16(b[4:], uint16(l4Len))
		b[6], b[7] = proto, ttl
		copy(b[8:24], src.AsSlice())
		copy(b[24:40], dst.AsSlice())
	} else {
		b[0] = 0x40 | uint8(ipLen/4)
		b[1] = p.tos
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		binary.BigEndian.PutUint16(b[4:], p.id)
		frag := p.frag
		if !p.noDF {
			frag |= 0x4000
		}
		binary.BigEndian.PutUint16(b[6:], frag)
		b[8], b[9] = ttl, proto
		copy(b[12:16], src.AsSlice())
		copy(b[16:20], dst.AsSlice())
		copy(b[20:], p.ipOpts)
		binary.BigEndian.PutUint16(b[10:], ^refSum(b[:ipLen]))
	}
	l4 := b[ipLen:]
	binary.BigEndian.PutUint16(l4[0:], sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	csumAt := 16
	if p.udp {
		binary.BigEndian.PutUint16(l4[4:], uint16(l4Len))
		copy(l4[8:], p.payload)
		csumAt = 6
	} else {
		flags := p.flags
		if flags == 0 {
			flags = tcpACK
		}
		win := p.win
		if win == 0 {
			win = 502
		}
		binary.BigEndian.PutUint32(l4[4:], p.seq)
		binary.BigEndian.PutUint32(l4[8:], p.ack)
		l4[12] = uint8(5+len(p.tcpOpts)/4) << 4
		l4[13] = flags
		binary.BigEndian.PutUint16(l4[14:], win)
		binary.BigEndian.PutUint16(l4[18:], p.urg)
		copy(l4[20:], p.tcpOpts)
		copy(l4[20+len(p.tcpOpts):], p.payload)
	}
	c := ^refSum(append(pseudo(b), l4...))
	if p.udp && c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[csumAt:], c)
	return b
}

// refSum is the one's complement sum of b (RFC 1071 §1), folded, not
// complemented.
func refSum(b []byte) uint16 {
	var s uint32
	for i := 0; i < len(b); i += 2 {
		w := uint32(b[i]) << 8
		if i+1 < len(b) {
			w |= uint32(b[i+1])
		}
		s += w
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// ipHeaderLen returns the IP header length of a packet built by pktSpec
// (no IPv6 extension headers).
func ipHeaderLen(pkt []byte) int {
	if pkt[0]>>4 == 6 {
		return 40
	}
	return int(pkt[0]&0x0f) * 4
}

// pseudo returns the pseudo-header of pkt's transport checksum (RFC 9293
// §3.1, RFC 8200 §8.1), its length taken from the bytes there are.
func pseudo(pkt []byte) []byte {
	ipLen := ipHeaderLen(pkt)
	l4Len := len(pkt) - ipLen
	if pkt[0]>>4 == 6 {
		ph := make([]byte, 40)
		copy(ph, pkt[8:40])
		binary.BigEndian.PutUint32(ph[32:], uint32(l4Len))
		ph[39] = pkt[6]
		return ph
	}
	ph := make([]byte, 12)
	copy(ph, pkt[12:20])
	ph[9] = pkt[9]
	binary.BigEndian.PutUint16(ph[10:], uint16(l4Len))
	return ph
}

// l4ChecksumOK verifies pkt's transport checksum with the reference sum.
func l4ChecksumOK(pkt []byte) bool {
	return refSum(append(pseudo(pkt), pkt[ipHeaderLen(pkt):]...)) == 0xffff
}

// csumOffset is where the checksum field lies in pkt's transport header.
func csumOffset(pkt []byte) int {
	proto := pkt[9]
	if pkt[0]>>4 == 6 {
		proto = pkt[6]
	}
	if proto == packet.ProtoUDP {
		return udpCsum
	}
	return tcpCsum
}

// partial turns a built packet into what the kernel hands over with
// FlagNeedsCsum: the checksum field holds the folded pseudo-header sum.
func partial(pkt []byte) []byte {
	at := ipHeaderLen(pkt) + csumOffset(pkt)
	binary.BigEndian.PutUint16(pkt[at:], refSum(pseudo(pkt)))
	return pkt
}

// superPacket builds p as a GSO super-packet of segment size mss, with
// its virtio-net header.
func superPacket(p pktSpec, mss int) (Hdr, []byte) {
	pkt := partial(p.build())
	ipLen := ipHeaderLen(pkt)
	h := Hdr{Flags: FlagNeedsCsum, Size: uint16(mss), CsumStart: uint16(ipLen)}
	switch {
	case p.udp:
		h.Type, h.CsumOffset, h.HdrLen = TypeUDPL4, udpCsum, uint16(ipLen+8)
	case p.v6:
		h.Type, h.CsumOffset, h.HdrLen = TypeTCPv6, tcpCsum, uint16(ipLen+20+len(p.tcpOpts))
	default:
		h.Type, h.CsumOffset, h.HdrLen = TypeTCPv4, tcpCsum, uint16(ipLen+20+len(p.tcpOpts))
	}
	return h, pkt
}

// zeroSum builds p with its first payload word chosen so that the
// transport checksum computes to zero (the sum is 0xffff): on the wire it
// is then 0xffff for UDP (RFC 768) and 0 or 0xffff for TCP.
func zeroSum(p pktSpec) []byte {
	p.payload = clone(p.payload)
	p.payload[0], p.payload[1] = 0, 0
	b := p.build()
	ipLen, co := ipHeaderLen(b), csumOffset(b)
	b[ipLen+co], b[ipLen+co+1] = 0, 0
	binary.BigEndian.PutUint16(p.payload, 0xffff-refSum(append(pseudo(b), b[ipLen:]...)))
	return p.build()
}

// payload returns n bytes that differ from segment to segment.
func payload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7+i>>8) ^ seed
	}
	return b
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }
