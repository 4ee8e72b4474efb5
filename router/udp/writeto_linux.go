//go:build linux

package udp

import (
	"fmt"
	"net/netip"
)

// WriteTo sends one datagram outside the batch path. Unlike WriteBatch it
// uses no per-Conn scratch, so it is safe to call from any goroutine, also
// while another goroutine is inside WriteBatch (the router's ingress uses it
// for the rare ARP reply). It allocates; keep it off the per-packet path.
func (c *Conn) WriteTo(b []byte, to netip.AddrPort) error {
	if c.family == 2 /* AF_INET */ && to.Addr().Is6() && !to.Addr().Is4In6() {
		return fmt.Errorf("udp: send to %s from an IPv4 socket", to)
	}
	if _, err := c.pc.WriteToUDPAddrPort(b, to); err != nil {
		return fmt.Errorf("udp: send to %s: %w", to, err)
	}
	return nil
}
