package packet

import (
	"encoding/binary"
	"net/netip"
)

const (
	// ARPLen is the ARP payload for IPv4 over Ethernet: 8 bytes of fixed
	// fields plus two 6-byte hardware and two 4-byte protocol addresses
	// (RFC 826, "Packet format"). Linux sends it unpadded (42-byte frames).
	ARPLen = 28

	// ARPRequest and ARPReply are the ar$op values of RFC 826.
	ARPRequest = 1
	ARPReply   = 2

	arpHTypeEthernet = 1 // ar$hrd: Ethernet (10Mb), RFC 826 / IANA
)

// ARP is a decoded ARP packet for IPv4 over Ethernet (RFC 826).
type ARP struct {
	// Op is ar$op: ARPRequest, ARPReply, or any other value as found (the
	// caller answers only requests).
	Op uint16
	// SenderMAC/SenderIP are ar$sha/ar$spa; TargetMAC/TargetIP ar$tha/ar$tpa.
	// The IPs are IPv4 (Is4) after Parse.
	SenderMAC MAC
	SenderIP  netip.Addr
	TargetMAC MAC
	TargetIP  netip.Addr
}

// Parse decodes an ARP packet (the Ethernet payload, b[EthHeaderLen:] of an
// EtherTypeARP frame). It accepts only hardware type 1 (Ethernet), protocol
// type 0x0800 (IPv4), hardware length 6 and protocol length 4, the only
// combination the router speaks; anything else is ErrHeader, fewer than
// ARPLen bytes ErrShort. Bytes after ARPLen (Ethernet padding to 60 bytes)
// are ignored. Parse never panics and does not allocate; on error a is left
// unchanged.
func (a *ARP) Parse(b []byte) error {
	if len(b) < ARPLen {
		return ErrShort
	}
	if binary.BigEndian.Uint16(b[0:2]) != arpHTypeEthernet ||
		binary.BigEndian.Uint16(b[2:4]) != EtherTypeIPv4 ||
		b[4] != 6 || b[5] != 4 {
		return ErrHeader
	}
	*a = ARP{
		Op:        binary.BigEndian.Uint16(b[6:8]),
		SenderMAC: MAC(b[8:14]),
		SenderIP:  netip.AddrFrom4([4]byte(b[14:18])),
		TargetMAC: MAC(b[18:24]),
		TargetIP:  netip.AddrFrom4([4]byte(b[24:28])),
	}
	return nil
}

// Append appends the ARPLen-byte encoding of a (Ethernet/IPv4, RFC 826) to
// b and returns the extended slice, allocating only if cap(b) is too small.
// An address that is not IPv4 (or IPv4-mapped IPv6) is written as 0.0.0.0.
func (a *ARP) Append(b []byte) []byte {
	n := len(b)
	b = append(b, make([]byte, ARPLen)...) // no allocation when cap suffices
	p := b[n:]
	binary.BigEndian.PutUint16(p[0:2], arpHTypeEthernet)
	binary.BigEndian.PutUint16(p[2:4], EtherTypeIPv4)
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:8], a.Op)
	copy(p[8:14], a.SenderMAC[:])
	putAddr4(p[14:18], a.SenderIP)
	copy(p[18:24], a.TargetMAC[:])
	putAddr4(p[24:28], a.TargetIP)
	return b
}

// AppendARPReply appends to dst the ARPLen-byte reply to req, announcing that
// req.TargetIP is at mac, and returns the extended slice. Per RFC 826
// ("Packet Reception"): swap sender and target, put the local hardware and
// protocol addresses in the sender fields, set the opcode to reply. The
// caller adds the Ethernet header (to req.SenderMAC, from mac) and decides
// whether to answer at all (only requests, only for addresses it owns).
//
// It does not read the request's bytes, only req, so the reply can be built
// in place over the request: parse, then AppendARPReply(frame[:EthHeaderLen],
// &req, mac). It allocates only if cap(dst) is too small.
func AppendARPReply(dst []byte, req *ARP, mac MAC) []byte {
	r := ARP{
		Op:        ARPReply,
		SenderMAC: mac,
		SenderIP:  req.TargetIP,
		TargetMAC: req.SenderMAC,
		TargetIP:  req.SenderIP,
	}
	return r.Append(dst)
}
