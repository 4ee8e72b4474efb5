package packet

import "errors"

// Sentinel errors. They are plain values (never wrapped here) so the packet
// path can compare them and count drops without allocating.
var (
	// ErrShort: the buffer is shorter than its headers say it is.
	ErrShort = errors.New("packet: truncated")
	// ErrVersion: the IP version nibble is neither 4 nor 6.
	ErrVersion = errors.New("packet: unknown IP version")
	// ErrHeader: a header field is invalid (IPv4 IHL < 5, total length below
	// the header length, ARP hardware/protocol types other than
	// Ethernet/IPv4, malformed MAC string, ...).
	ErrHeader = errors.New("packet: invalid header")
	// ErrNoReply: the packet must not be answered with an ICMP error
	// (RFC 1812 §4.3.2.7, RFC 4443 §2.4(e)).
	ErrNoReply = errors.New("packet: no ICMP error allowed for this packet")
	// ErrFamily: the router's address is not of the packet's IP version.
	ErrFamily = errors.New("packet: address family does not match the packet")
	// ErrMTU: the MTU to report is out of range for the IP version.
	ErrMTU = errors.New("packet: MTU out of range")
)
