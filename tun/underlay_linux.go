package tun

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// UnderlayLink is the interface that holds the underlay address.
type UnderlayLink struct {
	Name string
	// MAC is its hardware address; zero for a device without one.
	MAC [6]byte
	// Subnets are its connected subnets: each of its addresses with its
	// prefix length, masked, both families, link-local ones included.
	// The daemon refuses container prefixes that overlap them
	// (config.CheckUnderlaySubnets): routed into the TUN, they would
	// replace the connected route.
	Subnets []netip.Prefix
}

// UnderlayLinkOf returns the interface that holds addr; its Name is empty
// when none does.
func UnderlayLinkOf(addr netip.Addr) (UnderlayLink, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return UnderlayLink{}, fmt.Errorf("list links: %w", err)
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
			ul := UnderlayLink{Name: l.Attrs().Name, Subnets: out}
			if hw := l.Attrs().HardwareAddr; len(hw) == len(ul.MAC) {
				ul.MAC = [6]byte(hw)
			}
			return ul, nil
		}
	}
	return UnderlayLink{}, nil
}

// NeighborMAC returns the MAC address the kernel's neighbour table (ARP,
// NDP) holds for addr on the named interface, when it holds a usable one.
func NeighborMAC(dev string, addr netip.Addr) ([6]byte, bool) {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return [6]byte{}, false
	}
	family := netlink.FAMILY_V4
	if addr.Is6() && !addr.Is4In6() {
		family = netlink.FAMILY_V6
	}
	ns, err := netlink.NeighList(l.Attrs().Index, family)
	if err != nil {
		return [6]byte{}, false
	}
	for _, n := range ns {
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok || ip.Unmap() != addr.Unmap() || len(n.HardwareAddr) != 6 {
			continue
		}
		if n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED|netlink.NUD_NOARP) != 0 {
			continue
		}
		return [6]byte(n.HardwareAddr), true
	}
	return [6]byte{}, false
}
