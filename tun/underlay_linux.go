package tun

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// UnderlaySubnets returns the subnets connected to the interface that holds
// addr (each of its addresses with its prefix length, masked: both families,
// link-local ones included), or none when no interface holds it. The daemon
// refuses container prefixes that overlap them (config.CheckUnderlaySubnets):
// routed into the TUN, they would replace the connected route.
func UnderlaySubnets(addr netip.Addr) ([]netip.Prefix, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		as, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue
		}
		held := false
		var out []netip.Prefix
		for _, a := range as {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok || a.IPNet == nil {
				continue
			}
			ip = ip.Unmap()
			held = held || ip == addr
			bits, _ := a.IPNet.Mask.Size()
			if p, err := ip.Prefix(bits); err == nil {
				out = append(out, p)
			}
		}
		if held {
			return out, nil
		}
	}
	return nil, nil
}
