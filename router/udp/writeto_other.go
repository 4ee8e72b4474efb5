//go:build !linux

package udp

import "net/netip"

// WriteTo is not supported outside Linux.
func (c *Conn) WriteTo(b []byte, to netip.AddrPort) error { return ErrUnsupported }
