package gso

import (
	"encoding/binary"
	"errors"

	"github.com/drovernet/drover/router/packet"
)

// Offsets in the headers a Splitter rewrites.
const (
	v4TotalLen = 2  // IPv4 total length (RFC 791 §3.1)
	v4ID       = 4  // IPv4 identification
	v4Frag     = 6  // IPv4 flags and fragment offset
	v4Checksum = 10 // IPv4 header checksum
	v6Payload  = 4  // IPv6 payload length (RFC 8200 §3)
	tcpSeq     = 4  // TCP sequence number (RFC 9293 §3.1)
	tcpFlags   = 13 // TCP flags byte (CWR ECE URG ACK PSH RST SYN FIN)
	tcpCsum    = 16 // TCP checksum
	udpLen     = 4  // UDP length (RFC 768)
	udpCsum    = 6  // UDP checksum

	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
	tcpURG = 0x20
	tcpCWR = 0x80

	v4MF      = 0x2000
	v4FragOff = 0x1fff
	v4DF      = 0x4000
)

// MaxHeaders is the longest header run a Splitter copies in front of each
// segment: an IPv4 header with options (60) and a TCP header with options
// (60). IPv6 segments are limited to the fixed header (40) and TCP (60).
const MaxHeaders = 120

// Errors of Splitter.Init: the frame cannot be segmented and is dropped.
var (
	ErrGSOType   = errors.New("gso: unsupported GSO type")
	ErrGSOHeader = errors.New("gso: GSO packet headers inconsistent with the virtio-net header")
	ErrCsum      = errors.New("gso: checksum offsets outside the packet")
)

// Splitter cuts one frame read from the TUN device into the packets that go
// on the wire, the way the kernel's software GSO does: every segment gets
// the original headers with its own lengths, IPv4 identification (the
// first one's plus the segment index), TCP sequence number, flags (CWR only
// on the first segment, FIN and PSH only on the last) and checksums.
//
// A frame without GSO is one segment; its checksum is completed if the
// kernel left it partial (FlagNeedsCsum).
//
// Segments are returned as a header, written into a buffer the caller
// provides, and a body, which stays where it is in the frame: the caller
// either sends the two together (a gather write) or copies the header in
// front of the body (see Next), and so the payload is never copied here.
// The zero Splitter is ready for Init.
type Splitter struct {
	pkt     []byte
	typ     uint8 // TypeNone, TypeTCPv4, TypeTCPv6, TypeUDPL4 (ECN bit cleared)
	v6      bool
	ipLen   int // IP header length; CsumStart
	hdrLen  int // IP + transport header length
	mss     int
	off     int // start of the next segment's body
	index   int // segment number of the next Next
	done    bool
	seq     uint32
	id      uint16
	addrSum uint32 // pseudo-header sum of the addresses and protocol
	tmpl    [MaxHeaders]byte
}

// Init prepares s to segment pkt, the packet that followed the virtio-net
// header h. For a packet without GSO it completes a partial checksum in
// place right away. pkt must stay unchanged, except as Next describes,
// until the last Next.
func (s *Splitter) Init(h Hdr, pkt []byte) error {
	s.pkt, s.done, s.index = pkt, false, 0
	s.typ = h.Type &^ TypeECN
	if s.typ == TypeNone {
		s.off, s.hdrLen = 0, 0
		if h.Flags&FlagNeedsCsum != 0 {
			return completeCsum(pkt, int(h.CsumStart), int(h.CsumOffset))
		}
		return nil
	}
	if len(pkt) < 1 || h.Size == 0 || h.Flags&FlagNeedsCsum == 0 {
		return ErrGSOHeader
	}
	version := pkt[0] >> 4
	var proto uint8
	switch {
	case version == 4 && len(pkt) >= packet.IPv4HeaderLen:
		s.v6 = false
		s.ipLen = int(pkt[0]&0x0f) * 4
		proto = pkt[9]
		if s.ipLen < packet.IPv4HeaderLen || binary.BigEndian.Uint16(pkt[v4Frag:])&(v4MF|v4FragOff) != 0 {
			return ErrGSOHeader
		}
	case version == 6 && len(pkt) >= packet.IPv6HeaderLen:
		// Extension headers are not supported: the kernel does not put
		// them on TCP or UDP GSO packets of our MTU (BIG TCP's hop-by-hop
		// header needs a gso_max_size above 64 KiB, which the TUN lacks).
		s.v6 = true
		s.ipLen = packet.IPv6HeaderLen
		proto = pkt[6]
	default:
		return ErrGSOHeader
	}
	if int(h.CsumStart) != s.ipLen {
		return ErrGSOHeader
	}
	switch s.typ {
	case TypeTCPv4, TypeTCPv6:
		if proto != packet.ProtoTCP || s.v6 != (s.typ == TypeTCPv6) || h.CsumOffset != tcpCsum ||
			len(pkt) < s.ipLen+20 {
			return ErrGSOHeader
		}
		s.hdrLen = s.ipLen + int(pkt[s.ipLen+12]>>4)*4
		if s.hdrLen < s.ipLen+20 {
			return ErrGSOHeader
		}
		s.seq = binary.BigEndian.Uint32(pkt[s.ipLen+tcpSeq:])
	case TypeUDPL4:
		if proto != packet.ProtoUDP || h.CsumOffset != udpCsum {
			return ErrGSOHeader
		}
		s.hdrLen = s.ipLen + 8
	default:
		return ErrGSOType
	}
	if s.hdrLen > MaxHeaders || s.hdrLen >= len(pkt) {
		return ErrGSOHeader
	}
	s.mss = int(h.Size)
	s.off = s.hdrLen
	copy(s.tmpl[:], pkt[:s.hdrLen])
	if !s.v6 {
		s.id = binary.BigEndian.Uint16(pkt[v4ID:])
	}
	s.addrSum = pseudoSum(pkt, s.v6, proto, 0)
	return nil
}

// completeCsum finishes a partial checksum (FlagNeedsCsum) in place: the
// field already holds the pseudo-header sum, so the checksum is the
// complement of the sum of everything from start on.
func completeCsum(pkt []byte, start, off int) error {
	if start+off+2 > len(pkt) || off < 0 {
		return ErrCsum
	}
	c := packet.Checksum(pkt[start:], 0)
	if c == 0 {
		// RFC 768: a computed UDP checksum of zero is sent as all ones
		// (zero means "no checksum"). The kernel's skb_checksum_help does
		// this whatever the protocol (CSUM_MANGLED_0); for TCP, 0 and
		// 0xffff are the same sum (RFC 1624 §3).
		c = 0xffff
	}
	binary.BigEndian.PutUint16(pkt[start+off:], c)
	return nil
}

// Segments returns how many segments the frame gives.
func (s *Splitter) Segments() int {
	if s.typ == TypeNone {
		return 1
	}
	body := len(s.pkt) - s.hdrLen
	return (body + s.mss - 1) / s.mss
}

// HeaderLen returns the length of each segment's headers (0 for a frame
// without GSO, whose one segment is returned whole as the body).
func (s *Splitter) HeaderLen() int { return s.hdrLen }

// Next returns the next segment as head, written into hbuf (which must have
// room for HeaderLen bytes), and body, a sub-slice of the packet; ok is
// false after the last one. The segment on the wire is head followed by
// body. For a frame without GSO, head is empty and body the whole packet.
//
// The body of every segment is preceded in the packet by at least
// HeaderLen bytes that Next never reads again (the original headers and
// the bodies already returned; the previous body alone where it is at
// least HeaderLen long), so a caller that needs the segment contiguous may
// copy head over them (the bytes just in front of body): the previous
// segment is then overwritten.
func (s *Splitter) Next(hbuf []byte) (head, body []byte, ok bool) {
	if s.done {
		return nil, nil, false
	}
	if s.typ == TypeNone {
		s.done = true
		return hbuf[:0], s.pkt, true
	}
	end := min(s.off+s.mss, len(s.pkt))
	body = s.pkt[s.off:end]
	last := end == len(s.pkt)
	head = hbuf[:s.hdrLen]
	copy(head, s.tmpl[:s.hdrLen])
	l4 := head[s.ipLen:]
	l4Len := s.hdrLen - s.ipLen + len(body)
	if s.v6 {
		binary.BigEndian.PutUint16(head[v6Payload:], uint16(l4Len))
	} else {
		binary.BigEndian.PutUint16(head[v4TotalLen:], uint16(s.hdrLen+len(body)))
		binary.BigEndian.PutUint16(head[v4ID:], s.id+uint16(s.index))
		head[v4Checksum], head[v4Checksum+1] = 0, 0
		binary.BigEndian.PutUint16(head[v4Checksum:], packet.Checksum(head[:s.ipLen], 0))
	}
	var csumAt int
	if s.typ == TypeUDPL4 {
		binary.BigEndian.PutUint16(l4[udpLen:], uint16(l4Len))
		csumAt = udpCsum
	} else {
		binary.BigEndian.PutUint32(l4[tcpSeq:], s.seq+uint32(s.off-s.hdrLen))
		if s.index > 0 {
			l4[tcpFlags] &^= tcpCWR // RFC 3168 §6.1.2: CWR on the first segment only
		}
		if !last {
			l4[tcpFlags] &^= tcpFIN | tcpPSH
		}
		csumAt = tcpCsum
	}
	l4[csumAt], l4[csumAt+1] = 0, 0
	// Every piece but the last is of even length (TCP and UDP headers are
	// multiples of 4), so the sums chain (RFC 1071 §4.1).
	sum := s.addrSum + uint32(l4Len>>16) + uint32(l4Len&0xffff)
	sum = packet.Sum(l4, sum)
	c := packet.Checksum(body, sum)
	if c == 0 && s.typ == TypeUDPL4 {
		c = 0xffff // RFC 768
	}
	binary.BigEndian.PutUint16(l4[csumAt:], c)
	s.off = end
	s.index++
	s.done = last
	return head, body, true
}
