package router

import "sync/atomic"

// DropReason says why a packet was not delivered. Every drop is counted under
// exactly one reason; none is silent.
type DropReason uint8

// Append only: the names are part of the status and metrics output.
const (
	DropNoRoute      DropReason = iota // egress: no peer owns the destination
	DropTooBig                         // egress: bigger than the tunnel MTU with DF (or IPv6); ICMP sent
	DropMalformed                      // not a valid IPv4/IPv6 packet (inner, either direction)
	DropTruncated                      // ingress: datagram shorter than its headers say
	DropUnknownSPI                     // ingress ESP: no inbound SA for the SPI
	DropAuth                           // ingress ESP: ICV check failed (wrong key, tampered)
	DropReplay                         // ingress ESP: duplicate or older than the replay window
	DropNextHeader                     // ingress ESP: next header not 4/41 or not matching the packet
	DropSpoofed                        // ingress: inner source not in the sending peer's prefixes
	DropSeqExhausted                   // egress ESP: 32-bit sequence space used up (no ESN)
	DropUnknownPeer                    // ingress VXLAN: outer source is not a peer
	DropBadVXLAN                       // ingress VXLAN: flags/reserved bits (as Linux) or VNI
	DropNotForUs                       // ingress VXLAN: inner frame to another MAC, or an ethertype we don't route
	DropSend                           // egress: the underlay socket refused the datagram
	DropTUNWrite                       // ingress: the TUN device refused the packet
	DropSeqReserve                     // egress ESP: sequence number not yet durably reserved (state_dir lagging)
	numDropReasons
)

var dropNames = [numDropReasons]string{
	DropNoRoute:      "no_route",
	DropTooBig:       "too_big",
	DropMalformed:    "malformed",
	DropTruncated:    "truncated",
	DropUnknownSPI:   "unknown_spi",
	DropAuth:         "auth",
	DropReplay:       "replay",
	DropNextHeader:   "next_header",
	DropSpoofed:      "spoofed_source",
	DropSeqExhausted: "seq_exhausted",
	DropUnknownPeer:  "unknown_peer",
	DropBadVXLAN:     "bad_vxlan",
	DropNotForUs:     "not_for_us",
	DropSend:         "send_error",
	DropTUNWrite:     "tun_write_error",
	DropSeqReserve:   "seq_not_reserved",
}

func (d DropReason) String() string {
	if d < numDropReasons {
		return dropNames[d]
	}
	return "unknown"
}

// DropReasons lists every reason, in order.
func DropReasons() []DropReason {
	out := make([]DropReason, numDropReasons)
	for i := range out {
		out[i] = DropReason(i)
	}
	return out
}

type dropCounters [numDropReasons]atomic.Uint64

func (c *dropCounters) add(r DropReason) { c[r].Add(1) }
