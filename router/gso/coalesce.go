package gso

import (
	"bytes"
	"encoding/binary"

	"github.com/drovernet/drover/router/packet"
)

// Coalescing limits. A coalesced packet must fit the IPv4 total length
// (and TUN's 64 KiB frame); MaxSegments bounds the gather list of a frame.
const (
	maxCoalesced = 65535
	MaxSegments  = 64
)

// Coalescer turns a sequence of received IP packets into frames for the
// TUN device, merging runs of consecutive in-order TCP segments of one flow
// into one GSO super-packet, as the kernel's GRO does for a NIC
// (tcp_gro_receive): the kernel then takes each run in one write, and the
// receiving TCP stack handles it as one segment.
//
// Packets are merged only where the result is exactly what the segments
// said together: same addresses, ports, IP header fields (IPv4: no options,
// no fragments, and DF set or identifications incrementing), same
// acknowledgment, window and TCP options, contiguous sequence numbers,
// flags ACK only (PSH allowed on the last segment of a run), every segment
// but the last of the first one's size, and a valid checksum on each
// segment (the merged packet is handed over with a partial checksum, which
// the kernel does not verify, so a corrupt segment must not hide in it).
// Everything else is passed on unchanged, one frame per packet, and the
// kernel checks it as it would any packet.
//
// Only consecutive packets are merged: they come in runs, because a sender
// that used GSO sealed one super-packet's segments back to back and UDP GRO
// hands them over together.
//
// With TrustChecksums set, the TCP checksums of the segments are not
// verified (their IP headers still are). That is for packets whose
// integrity the tunnel has already established: an ESP packet that
// authenticated cannot have been changed on the way, so its checksum is as
// its sender made it, and the kernel's own WireGuard tells the stack the
// same (CHECKSUM_UNNECESSARY after the Poly1305 check, drivers/net/
// wireguard/receive.c). It saves a pass over every byte.
//
// Add keeps references to the packets (and later rewrites the headers of a
// run's first packet in place) until Reset; the caller writes each frame
// (Frame) to the TUN device before reusing the buffers. Steady-state use
// does not allocate: the slices grow to the largest batch and are kept.
type Coalescer struct {
	// TrustChecksums skips verifying TCP checksums before merging (see
	// above). Set it before the first Add.
	TrustChecksums bool

	hdrs   []byte   // HdrLen bytes per frame
	parts  [][]byte // the gather lists of all frames, back to back
	frames []span
	run    run
}

type span struct{ start, end int } // frame's parts: parts[start:end]

// run is the open frame: a first packet and the bodies merged after it.
type run struct {
	open      bool
	mergeable bool // the first packet may take followers
	verified  bool // the first packet's checksum was checked
	v6        bool
	ipLen     int
	hdrLen    int
	mss       int // payload length of the first packet
	count     int // segments in the run
	total     int // length of the merged packet
	nextSeq   uint32
	df        bool
	id        uint16
	closed    bool // the last segment was short or had PSH: nothing may follow
	psh       bool
}

// Reset forgets all frames (after they have been written).
func (c *Coalescer) Reset() {
	c.hdrs = c.hdrs[:0]
	c.parts = c.parts[:0]
	c.frames = c.frames[:0]
	c.run = run{}
}

// Len returns the number of frames, the open one included: call Flush
// first, which finishes its header.
func (c *Coalescer) Len() int { return len(c.frames) }

// Done returns the number of finished frames: all of them but the open
// one, which the next Add may still extend. Frames below Done can be
// written while more packets are added.
func (c *Coalescer) Done() int {
	if c.run.open {
		return len(c.frames) - 1
	}
	return len(c.frames)
}

// Frame returns the gather list of frame i: the virtio-net header, then the
// first packet, then the bodies of the segments merged into it.
func (c *Coalescer) Frame(i int) [][]byte {
	f := c.frames[i]
	return c.parts[f.start:f.end]
}

// Segments returns the number of packets frame i carries.
func (c *Coalescer) Segments(i int) int {
	f := c.frames[i]
	return f.end - f.start - 1
}

// Add appends pkt, a complete IP packet (its length the IP header's),
// merging it into the open frame if it continues it.
func (c *Coalescer) Add(pkt []byte) {
	r := &c.run
	if r.open && r.mergeable && !r.closed {
		if body, ok := c.follows(pkt); ok {
			c.parts = append(c.parts, body)
			c.frames[len(c.frames)-1].end++
			r.count++
			r.total += len(body)
			r.nextSeq += uint32(len(body))
			if len(body) < r.mss || pkt[r.ipLen+tcpFlags]&tcpPSH != 0 {
				r.closed = true
				r.psh = pkt[r.ipLen+tcpFlags]&tcpPSH != 0
			}
			if r.count == MaxSegments {
				r.closed = true
			}
			return
		}
	}
	c.Flush()
	c.start(pkt)
}

// start opens a frame with pkt as its first packet.
func (c *Coalescer) start(pkt []byte) {
	i := len(c.hdrs)
	c.hdrs = append(c.hdrs, make([]byte, HdrLen)...) // grows only until the largest batch
	c.frames = append(c.frames, span{len(c.parts), len(c.parts) + 2})
	c.parts = append(c.parts, c.hdrs[i:i+HdrLen:i+HdrLen], pkt)
	c.run = run{open: true, count: 1, total: len(pkt)}
	r := &c.run
	ipLen, ok := tcpHeaderOK(pkt)
	if !ok {
		return
	}
	thl := int(pkt[ipLen+12]>>4) * 4
	r.v6 = pkt[0]>>4 == 6
	r.ipLen, r.hdrLen = ipLen, ipLen+thl
	r.mss = len(pkt) - r.hdrLen
	flags := pkt[ipLen+tcpFlags]
	if r.mss <= 0 || r.hdrLen > MaxHeaders || flags != tcpACK {
		return // a pure ACK, a control segment, or PSH: nothing can follow it
	}
	if !r.v6 {
		frag := binary.BigEndian.Uint16(pkt[v4Frag:])
		r.df = frag&v4DF != 0
		r.id = binary.BigEndian.Uint16(pkt[v4ID:])
	}
	r.nextSeq = binary.BigEndian.Uint32(pkt[ipLen+tcpSeq:]) + uint32(r.mss)
	r.mergeable = true
}

// tcpHeaderOK reports whether pkt is an unfragmented TCP packet with its
// whole TCP header present and returns the IP header length: IPv4 without
// options, IPv6 without extension headers (the only forms merged).
func tcpHeaderOK(pkt []byte) (int, bool) {
	if len(pkt) < packet.IPv4HeaderLen {
		return 0, false
	}
	var ipLen int
	switch pkt[0] >> 4 {
	case 4:
		if pkt[0]&0x0f != 5 || pkt[9] != packet.ProtoTCP ||
			binary.BigEndian.Uint16(pkt[v4Frag:])&(v4MF|v4FragOff) != 0 {
			return 0, false
		}
		ipLen = packet.IPv4HeaderLen
	case 6:
		if len(pkt) < packet.IPv6HeaderLen || pkt[6] != packet.ProtoTCP {
			return 0, false
		}
		ipLen = packet.IPv6HeaderLen
	default:
		return 0, false
	}
	if len(pkt) < ipLen+20 {
		return 0, false
	}
	thl := int(pkt[ipLen+12]>>4) * 4
	if thl < 20 || len(pkt) < ipLen+thl {
		return 0, false
	}
	return ipLen, true
}

// follows reports whether pkt continues the open run, and returns its body.
// It verifies the checksums of pkt and, the first time, of the run's first
// packet.
func (c *Coalescer) follows(pkt []byte) ([]byte, bool) {
	r := &c.run
	first := c.parts[c.frames[len(c.frames)-1].start+1]
	if len(pkt) <= r.hdrLen || len(pkt)-r.hdrLen > r.mss || r.total+len(pkt)-r.hdrLen > maxCoalesced {
		return nil, false
	}
	ip := r.ipLen
	if pkt[0] != first[0] {
		return nil, false // version and IPv4 header length
	}
	if r.v6 {
		// Traffic class, flow label, next header, hop limit, addresses.
		if !bytes.Equal(pkt[0:4], first[0:4]) || !bytes.Equal(pkt[6:40], first[6:40]) ||
			int(binary.BigEndian.Uint16(pkt[v6Payload:])) != len(pkt)-ip {
			return nil, false
		}
	} else {
		// TOS, TTL, protocol, addresses; DF as the first's; identification
		// incrementing unless DF (RFC 6864 §4.1: IDs of atomic datagrams
		// carry no meaning, and the kernel's GRO accepts them fixed).
		frag := binary.BigEndian.Uint16(pkt[v4Frag:])
		if pkt[1] != first[1] || pkt[8] != first[8] || pkt[9] != first[9] ||
			!bytes.Equal(pkt[12:20], first[12:20]) || frag&(v4MF|v4FragOff) != 0 || (frag&v4DF != 0) != r.df {
			return nil, false
		}
		if !r.df && binary.BigEndian.Uint16(pkt[v4ID:]) != r.id+uint16(r.count) {
			return nil, false
		}
		if binary.BigEndian.Uint16(pkt[v4TotalLen:]) != uint16(len(pkt)) || packet.Checksum(pkt[:ip], 0) != 0 {
			return nil, false
		}
	}
	// Ports, then acknowledgment number, data offset, window, urgent
	// pointer and options equal; sequence number contiguous; flags ACK or
	// ACK|PSH.
	t, ft := pkt[ip:r.hdrLen], first[ip:r.hdrLen]
	flags := t[tcpFlags]
	if !bytes.Equal(t[0:4], ft[0:4]) || binary.BigEndian.Uint32(t[tcpSeq:]) != r.nextSeq ||
		!bytes.Equal(t[8:13], ft[8:13]) || flags&^tcpPSH != tcpACK ||
		!bytes.Equal(t[14:16], ft[14:16]) || !bytes.Equal(t[18:], ft[18:]) {
		return nil, false
	}
	if !r.verified {
		// The first packet's length field is checked as the followers'
		// are: Flush rewrites it, and so would make consistent a packet
		// the kernel drops or trims (ip_rcv_core, ip6_rcv_core).
		lenField, l := binary.BigEndian.Uint16(first[v4TotalLen:]), len(first)
		if r.v6 {
			lenField, l = binary.BigEndian.Uint16(first[v6Payload:]), len(first)-ip
		}
		if int(lenField) != l || (!c.TrustChecksums && !tcpChecksumOK(first, ip)) ||
			(!r.v6 && packet.Checksum(first[:ip], 0) != 0) {
			r.mergeable = false
			return nil, false
		}
		r.verified = true
	}
	if !c.TrustChecksums && !tcpChecksumOK(pkt, ip) {
		return nil, false
	}
	return pkt[r.hdrLen:], true
}

// tcpChecksumOK verifies the TCP checksum of pkt (RFC 9293 §3.1).
func tcpChecksumOK(pkt []byte, ipLen int) bool {
	sum := pseudoSum(pkt, ipLen == packet.IPv6HeaderLen, packet.ProtoTCP, len(pkt)-ipLen)
	return packet.Checksum(pkt[ipLen:], sum) == 0
}

// pseudoSum is packet.PseudoHeaderSum taken straight from the addresses in
// the IP header of pkt (IPv4, or IPv6 without extension headers), unfolded.
func pseudoSum(pkt []byte, v6 bool, proto uint8, l4Len int) uint32 {
	addrs := pkt[12:20]
	if v6 {
		addrs = pkt[8:40]
	}
	return packet.Sum(addrs, uint32(proto)) + uint32(l4Len>>16) + uint32(l4Len&0xffff)
}

// Flush closes the open frame: a run of two or more segments becomes one
// GSO packet (headers of the first rewritten for the whole, and a virtio-net
// header asking the kernel for TCP segmentation offload semantics); a lone
// packet goes as it came, with an empty virtio-net header.
func (c *Coalescer) Flush() {
	r := &c.run
	if !r.open {
		return
	}
	f := c.frames[len(c.frames)-1]
	hb := c.parts[f.start]
	if r.count == 1 {
		clear(hb)
		c.run = run{}
		return
	}
	first := c.parts[f.start+1]
	ip := r.ipLen
	if r.v6 {
		binary.BigEndian.PutUint16(first[v6Payload:], uint16(r.total-ip))
	} else {
		binary.BigEndian.PutUint16(first[v4TotalLen:], uint16(r.total))
		first[v4Checksum], first[v4Checksum+1] = 0, 0
		binary.BigEndian.PutUint16(first[v4Checksum:], packet.Checksum(first[:ip], 0))
	}
	if r.psh {
		first[ip+tcpFlags] |= tcpPSH
	}
	// Partial checksum: the field holds the folded pseudo-header sum
	// (what the kernel's own __tcp_v4_send_check leaves for offload).
	sum := packet.Sum(nil, pseudoSum(first, r.v6, packet.ProtoTCP, r.total-ip)) // folds
	binary.BigEndian.PutUint16(first[ip+tcpCsum:], uint16(sum))
	h := Hdr{
		Flags:      FlagNeedsCsum,
		Type:       TypeTCPv4,
		HdrLen:     uint16(r.hdrLen),
		Size:       uint16(r.mss),
		CsumStart:  uint16(ip),
		CsumOffset: tcpCsum,
	}
	if r.v6 {
		h.Type = TypeTCPv6
	}
	h.Encode(hb)
	c.run = run{}
}
