// Package packet holds the wire views the router's hot path uses for inner
// traffic: IPv4 (RFC 791) and IPv6 (RFC 8200) headers, Ethernet II frames,
// ARP for IPv4 over Ethernet (RFC 826), the ICMP errors a tunnel router must
// send when a packet is too big for the tunnel (RFC 792, RFC 1191, RFC 1812
// §4.3.2, RFC 4443), and the Internet checksum (RFC 1071).
//
// Decoders are views over a caller's bytes in the style of gVisor's
// tcpip/header and tailscale's net/packet: they never panic on any input, do
// not allocate, keep no reference to the buffer, and report malformed input
// with sentinel errors (ErrShort, ErrVersion, ErrHeader, ...) that map one to
// one onto drop counters. Builders write into buffers the caller owns.
//
// The package owns no state and does no I/O. Forwarding decisions, routing,
// rate limiting of ICMP errors (RFC 1812 §4.3.2.8) and the choice of which
// packets get an answer belong to the router; this package only refuses to
// build replies the RFCs forbid (ErrNoReply). It imports nothing of drover's.
package packet
