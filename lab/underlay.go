package lab

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/drovernet/drover/cmd/drover/config"
)

// Lab addressing. The underlay is TEST-NET-1 (RFC 5737), so nothing in a lab
// can be mistaken for a real network; containers live in drover's default
// cluster CIDR 10.42.0.0/16, one /24 per host.
var underlayNet = netip.MustParsePrefix("192.0.2.0/24")

// Limits that keep every address inside its /24 and every interface name
// within IFNAMSIZ-1 (15 bytes): "drv-" + tag(4) + "-h250" is 13.
const (
	maxHosts      = 250
	maxContainers = 253 // .2 .. .254; .1 is the host's bridge
	maxTagLen     = 4
)

// underlayNet6 is the underlay with Options.UnderlayIPv6 (RFC 3849
// documentation prefix).
var underlayNet6 = netip.MustParsePrefix("2001:db8:42::/64")

// underlayAddr is host h's underlay address: 192.0.2.<h>, or
// 2001:db8:42::<h> with an IPv6 underlay.
func underlayAddr(v6 bool, h int) netip.Addr {
	if v6 {
		a := underlayNet6.Addr().As16()
		a[15] = byte(h)
		return netip.AddrFrom16(a)
	}
	return netip.AddrFrom4([4]byte{192, 0, 2, byte(h)})
}

// remoteNet is the second underlay subnet (HostOptions.Remote), behind
// the lab's router namespace: .254 on either subnet is the router.
var remoteNet = netip.MustParsePrefix("198.51.100.0/24")

// routerIndex is the router namespace's host part on both subnets.
const routerIndex = 254

// hostUnderlay is host h's underlay address, on its subnet.
func (l *Lab) hostUnderlay(h int) netip.Addr {
	if l.opts.hostOptions(h).Remote {
		return netip.AddrFrom4([4]byte{198, 51, 100, byte(h)})
	}
	return underlayAddr(l.opts.UnderlayIPv6, h)
}

// hostSubnet is the underlay subnet host h sits on.
func (l *Lab) hostSubnet(h int) netip.Prefix {
	if l.opts.hostOptions(h).Remote {
		return remoteNet
	}
	return underlayPrefix(l.opts.UnderlayIPv6)
}

// buildRemoteSegment adds the second underlay subnet: a bridge beside the
// underlay's (in its namespace) and a router namespace with a leg on each,
// 192.0.2.254 and 198.51.100.254, forwarding between them.
func (l *Lab) buildRemoteSegment() error {
	err := withNetlink(l.Underlay, func(h *netlink.Handle) error {
		_, err := addBridge(h, l.ifName("ul2"))
		return err
	})
	if err != nil {
		return err
	}
	ns, err := l.newNS("rt", sysctl{key: "net/ipv4/ip_forward", val: "1"})
	if err != nil {
		return err
	}
	l.Remote = ns
	legs := []struct {
		name, port, bridge string
		addr               netip.Prefix
	}{
		{l.ifName("rt0"), l.ifName("rt0"), l.ifName("ul"), netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, routerIndex}), 24)},
		{l.ifName("rt1"), l.ifName("rt1"), l.ifName("ul2"), netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, routerIndex}), 24)},
	}
	for _, g := range legs {
		if err := addVeth(ns, g.name, l.Underlay, g.port+"p", g.bridge, l.opts.UnderlayMTU); err != nil {
			return err
		}
		err := withNetlink(ns, func(h *netlink.Handle) error {
			_, err := addrUp(h, g.name, g.addr)
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// routeSegments routes each host's way to the other subnet through the
// router namespace.
func (l *Lab) routeSegments() error {
	for _, host := range l.Hosts {
		dst, gw := remoteNet, netip.AddrFrom4([4]byte{192, 0, 2, routerIndex})
		if host.opts.Remote {
			dst, gw = underlayNet, netip.AddrFrom4([4]byte{198, 51, 100, routerIndex})
		}
		err := withNetlink(host.NS, func(nl *netlink.Handle) error {
			d := &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), 32)}
			return nl.RouteAdd(&netlink.Route{Dst: d, Gw: gw.AsSlice()})
		})
		if err != nil {
			return fmt.Errorf("%s: route %s via %s: %w", host.Name, dst, gw, err)
		}
	}
	return nil
}

// underlayPrefix is the underlay subnet in use.
func underlayPrefix(v6 bool) netip.Prefix {
	if v6 {
		return underlayNet6
	}
	return underlayNet
}

// hostPrefix is host h's container block, 10.42.<h>.0/24.
func hostPrefix(h int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 42, byte(h), 0}), 24)
}

// hostGateway is host h's bridge address, 10.42.<h>.1: the containers'
// default gateway.
func hostGateway(h int) netip.Addr { return netip.AddrFrom4([4]byte{10, 42, byte(h), 1}) }

// containerAddr is container c (from 1) of host h: 10.42.<h>.<c+1>.
func containerAddr(h, c int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 42, byte(h), byte(c + 1)})
}

// Names. Namespaces are Prefix+tag+"-"+role, so Sweep(tag+"-") removes
// exactly one lab's leftovers even when another lab's tag starts with this
// one. Interfaces also carry Prefix+tag even inside the lab's own namespaces,
// so any that ever leaked would be recognisable.
func (l *Lab) nsName(role string) string { return Prefix + l.tag + "-" + role }
func (l *Lab) ifName(role string) string { return Prefix + l.tag + "-" + role }

// containerIf is the container's side of its veth, named as a container
// runtime would name it.
const containerIf = "eth0"

// sysctl is one /proc/sys setting; optional ones may be missing (IPv6
// disabled at boot) without failing the lab.
type sysctl struct {
	key, val string
	optional bool
}

// IPv6 is switched off in every lab namespace: the lab is IPv4-only, and
// router solicitations, DAD and MLD reports would otherwise reach the TUN
// device and show up as drops that have nothing to do with the test.
var noIPv6 = []sysctl{
	{"net/ipv6/conf/all/disable_ipv6", "1", true},
	{"net/ipv6/conf/default/disable_ipv6", "1", true},
}

// setSysctls writes the settings inside ns: /proc/sys/net resolves against
// the network namespace of the writing thread, which NetNS.Do provides.
func setSysctls(ns *NetNS, settings ...sysctl) error {
	return ns.Do(func() error {
		for _, s := range settings {
			err := os.WriteFile("/proc/sys/"+s.key, []byte(s.val), 0)
			if err != nil && !(s.optional && errors.Is(err, fs.ErrNotExist)) {
				return fmt.Errorf("netns %s: sysctl %s=%s: %w", ns.Name, s.key, s.val, err)
			}
		}
		return nil
	})
}

// withNetlink runs fn with a netlink handle bound to ns.
func withNetlink(ns *NetNS, fn func(h *netlink.Handle) error) error {
	h, err := ns.Netlink()
	if err != nil {
		return err
	}
	defer h.Close()
	if err := fn(h); err != nil {
		return fmt.Errorf("netns %s: %w", ns.Name, err)
	}
	return nil
}

// newNS creates a lab namespace, registers its removal and applies the
// sysctls every lab namespace gets.
func (l *Lab) newNS(role string, extra ...sysctl) (*NetNS, error) {
	ns, err := CreateNetNS(l.nsName(role))
	if err != nil {
		return nil, err
	}
	l.undo.push("remove netns "+ns.Name, ns.Close)
	if err := setSysctls(ns, append(noIPv6, extra...)...); err != nil {
		return nil, err
	}
	return ns, nil
}

// addBridge creates an up bridge named name in the handle's namespace.
// Multicast snooping is off: the lab has no multicast, and the querier's
// timers only add noise. Its MAC is set (a random locally administered
// one), as the CNI plugin sets the bridges it creates: a bridge without one
// takes its lowest port's, which changes as containers come and go, while
// containers on isolated ports reach each other through the bridge's MAC
// (docs/cni.md) and keep it in their ARP caches.
func addBridge(h *netlink.Handle, name string) (netlink.Link, error) {
	off := false
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, err
	}
	mac[0] = mac[0]&^1 | 2 // unicast, locally administered
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: mac}, MulticastSnooping: &off}
	if err := h.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("add bridge %s: %w", name, err)
	}
	link, err := h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("bridge %s: %w", name, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("bridge %s up: %w", name, err)
	}
	return link, nil
}

// addVeth creates a veth pair whose side name is in ns and whose side peer is
// created directly in peerNS (never in the caller's namespace, so a crash
// mid-way cannot leave links behind in the root namespace), with the given
// MTU on both sides. It attaches peer to the bridge named bridge in peerNS
// and sets both sides up.
func addVeth(ns *NetNS, name string, peerNS *NetNS, peer, bridge string, mtu int) error {
	err := withNetlink(ns, func(h *netlink.Handle) error {
		v := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: name, MTU: mtu},
			PeerName:      peer,
			PeerNamespace: netlink.NsFd(int(peerNS.Handle())),
		}
		if err := h.LinkAdd(v); err != nil {
			return fmt.Errorf("add veth %s (peer %s in %s): %w", name, peer, peerNS.Name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return withNetlink(peerNS, func(h *netlink.Handle) error {
		link, err := h.LinkByName(peer)
		if err != nil {
			return fmt.Errorf("veth %s: %w", peer, err)
		}
		br, err := h.LinkByName(bridge)
		if err != nil {
			return fmt.Errorf("bridge %s: %w", bridge, err)
		}
		if err := h.LinkSetMaster(link, br); err != nil {
			return fmt.Errorf("attach %s to %s: %w", peer, bridge, err)
		}
		if err := h.LinkSetUp(link); err != nil {
			return fmt.Errorf("veth %s up: %w", peer, err)
		}
		return nil
	})
}

// addrUp assigns addr/bits to the named link and sets it up.
func addrUp(h *netlink.Handle, name string, addr netip.Prefix) (netlink.Link, error) {
	link, err := h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("link %s: %w", name, err)
	}
	a, err := netlink.ParseAddr(addr.String())
	if err != nil {
		return nil, err
	}
	if addr.Addr().Is6() {
		a.Flags |= unix.IFA_F_NODAD
	}
	if err := h.AddrAdd(link, a); err != nil {
		return nil, fmt.Errorf("%s: add address %s: %w", name, addr, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("%s up: %w", name, err)
	}
	return link, nil
}

// buildUnderlay creates the underlay namespace and its bridge, which every
// host's uplink joins: one flat L2 segment, 192.0.2.0/24.
func (l *Lab) buildUnderlay() error {
	ns, err := l.newNS("ul")
	if err != nil {
		return err
	}
	l.Underlay = ns
	return withNetlink(ns, func(h *netlink.Handle) error {
		_, err := addBridge(h, l.ifName("ul"))
		return err
	})
}

// buildHost creates host h: its namespace (IPv4 forwarding on), an uplink
// veth into the underlay bridge with 192.0.2.<h>/24, and a bridge with
// 10.42.<h>.1/24 for its containers. In cluster mode the bridge stays
// without an address until the router has claimed the host's block
// (addressHost).
func (l *Lab) buildHost(h int) (*Host, error) {
	ns, err := l.newNS(fmt.Sprintf("h%d", h), sysctl{key: "net/ipv4/ip_forward", val: "1"})
	if err != nil {
		return nil, err
	}
	host := &Host{
		Index:    h,
		Name:     fmt.Sprintf("h%d", h),
		NS:       ns,
		Underlay: l.hostUnderlay(h),
		Uplink:   l.ifName("up"),
		Bridge:   l.ifName("br"),
	}
	if !l.opts.Cluster {
		host.Prefix, host.Gateway = hostPrefix(h), hostGateway(h)
	}
	seg := l.ifName("ul")
	if l.opts.hostOptions(h).Remote {
		seg = l.ifName("ul2")
	}
	if err := addVeth(ns, host.Uplink, l.Underlay, l.underlayPort(h), seg, l.opts.UnderlayMTU); err != nil {
		return nil, err
	}
	if l.opts.UnderlayIPv6 {
		// IPv6 back on for the uplink only, without DAD (the address must
		// be usable at once; the lab has no duplicates).
		err := setSysctls(ns,
			sysctl{key: "net/ipv6/conf/" + host.Uplink + "/disable_ipv6", val: "0"},
			sysctl{key: "net/ipv6/conf/" + host.Uplink + "/accept_dad", val: "0"})
		if err != nil {
			return nil, err
		}
	}
	err = withNetlink(ns, func(nl *netlink.Handle) error {
		if _, err := addrUp(nl, host.Uplink, netip.PrefixFrom(host.Underlay, l.hostSubnet(h).Bits())); err != nil {
			return err
		}
		_, err := addBridge(nl, host.Bridge)
		return err
	})
	if err != nil {
		return nil, err
	}
	if !l.opts.Cluster {
		if err := addressBridge(host); err != nil {
			return nil, err
		}
		host.addressed = true
	}
	return host, nil
}

// underlayPort is host h's port on the underlay bridge (in the underlay
// namespace).
func (l *Lab) underlayPort(h int) string { return l.ifName(fmt.Sprintf("h%d", h)) }

// addressBridge gives the host's bridge its gateway address.
func addressBridge(host *Host) error {
	return withNetlink(host.NS, func(nl *netlink.Handle) error {
		_, err := addrUp(nl, host.Bridge, netip.PrefixFrom(host.Gateway, host.Prefix.Bits()))
		return err
	})
}

// buildContainer creates container c of host: a namespace whose eth0 is a
// veth into the host's bridge, 10.42.<h>.<c+1>/24, default route via the
// bridge. The bridge takes the MTU of its ports, so the containers' MTU is
// also the bridge's. In cluster mode eth0 stays without an address until
// the host's block is known (addressHost).
func (l *Lab) buildContainer(host *Host, c int) (*Container, error) {
	ref := ContainerRef{Host: host.Index, Container: c}
	ns, err := l.newNS(ref.String())
	if err != nil {
		return nil, err
	}
	ctr := &Container{Ref: ref, Host: host, NS: ns}
	if err := addVeth(ns, containerIf, host.NS, l.ifName(fmt.Sprintf("c%d", c)), host.Bridge, l.ContainerMTU); err != nil {
		return nil, err
	}
	if l.opts.Cluster {
		return ctr, nil
	}
	ctr.Addr = containerAddr(host.Index, c)
	if err := addressContainer(ctr, l.containerBits(host)); err != nil {
		return nil, err
	}
	return ctr, nil
}

// containerBits is the prefix length of host's containers' addresses: the
// host's block, or the cluster CIDR's in the flat model.
func (l *Lab) containerBits(host *Host) int {
	if !l.opts.Flat {
		return host.Prefix.Bits()
	}
	cidr := config.DefaultClusterCIDR
	if l.opts.Cluster && l.opts.ClusterOptions.CIDR != "" {
		cidr = l.opts.ClusterOptions.CIDR
	}
	return netip.MustParsePrefix(cidr).Bits()
}

// addressContainer gives eth0 the container's address with prefix length
// bits and a default route via the host's bridge.
func addressContainer(ctr *Container, bits int) error {
	host := ctr.Host
	return withNetlink(ctr.NS, func(nl *netlink.Handle) error {
		link, err := addrUp(nl, containerIf, netip.PrefixFrom(ctr.Addr, bits))
		if err != nil {
			return err
		}
		gw := host.Gateway.AsSlice()
		if err := nl.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw}); err != nil {
			return fmt.Errorf("default route via %s: %w", host.Gateway, err)
		}
		return nil
	})
}

// UnderlayHost is a machine on the underlay that runs no drover: a
// namespace whose one interface joins the underlay bridge. Tests use it as
// a neighbour that is not a member of the cluster.
type UnderlayHost struct {
	NS   *NetNS
	Addr netip.Addr // underlay address
	If   string     // its interface (in NS)
}

// AddUnderlayHost attaches an underlay host with address index idx
// (192.0.2.<idx>, or 2001:db8:42::<idx> with an IPv6 underlay), which must
// not be a lab host's. It is removed with the lab (Close), also when this
// fails half-way.
func (l *Lab) AddUnderlayHost(idx int) (*UnderlayHost, error) {
	if idx <= len(l.Hosts) || idx > 254 {
		return nil, fmt.Errorf("underlay host %d: want %d..254 (1..%d are the lab's hosts)", idx, len(l.Hosts)+1, len(l.Hosts))
	}
	role := fmt.Sprintf("x%d", idx)
	ns, err := l.newNS(role)
	if err != nil {
		return nil, err
	}
	u := &UnderlayHost{NS: ns, Addr: underlayAddr(l.opts.UnderlayIPv6, idx), If: l.ifName("up")}
	if err := addVeth(ns, u.If, l.Underlay, l.ifName(role), l.ifName("ul"), l.opts.UnderlayMTU); err != nil {
		return nil, err
	}
	if l.opts.UnderlayIPv6 {
		err := setSysctls(ns,
			sysctl{key: "net/ipv6/conf/" + u.If + "/disable_ipv6", val: "0"},
			sysctl{key: "net/ipv6/conf/" + u.If + "/accept_dad", val: "0"})
		if err != nil {
			return nil, err
		}
	}
	err = withNetlink(ns, func(nl *netlink.Handle) error {
		_, err := addrUp(nl, u.If, netip.PrefixFrom(u.Addr, underlayPrefix(l.opts.UnderlayIPv6).Bits()))
		return err
	})
	if err != nil {
		return nil, err
	}
	return u, nil
}

// RouteVia routes dst via gw (an underlay address) from u.
func (u *UnderlayHost) RouteVia(dst netip.Prefix, gw netip.Addr) error {
	return withNetlink(u.NS, func(nl *netlink.Handle) error {
		d := &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())}
		if err := nl.RouteAdd(&netlink.Route{Dst: d, Gw: gw.AsSlice()}); err != nil {
			return fmt.Errorf("route %s via %s: %w", dst, gw, err)
		}
		return nil
	})
}

// staticNeighborHosts is the lab size from which hosts get permanent
// neighbour entries for each other (staticNeighbors).
const staticNeighborHosts = 16

// staticNeighbors gives every host a permanent neighbour (ARP or NDP) entry
// for every other host's uplink. All namespaces share one kernel, and its
// neighbour table is one table for all of them: gc_thresh3 (1024 by
// default) bounds the dynamic entries of every namespace together. A
// 100-host cluster needs 100 × 99 underlay entries; past the limit the
// kernel logs "neighbor table overflow" and drops the packets that needed
// a resolution, which memberlist sees as lost probes ("member dead" by the
// thousand). Real hosts each have their own table, so the lab gives them
// entries that the limit does not count (permanent ones are exempt from
// its garbage collection and accounting).
func (l *Lab) staticNeighbors() error {
	macs := make([]net.HardwareAddr, len(l.Hosts))
	for i, h := range l.Hosts {
		err := withNetlink(h.NS, func(nl *netlink.Handle) error {
			link, err := nl.LinkByName(h.Uplink)
			if err != nil {
				return err
			}
			macs[i] = link.Attrs().HardwareAddr
			return nil
		})
		if err != nil {
			return err
		}
	}
	family := netlink.FAMILY_V4
	if l.opts.UnderlayIPv6 {
		family = netlink.FAMILY_V6
	}
	for _, h := range l.Hosts {
		err := withNetlink(h.NS, func(nl *netlink.Handle) error {
			link, err := nl.LinkByName(h.Uplink)
			if err != nil {
				return err
			}
			for j, g := range l.Hosts {
				if g == h || g.opts.Remote != h.opts.Remote {
					continue // not on this host's subnet
				}
				n := &netlink.Neigh{
					LinkIndex: link.Attrs().Index, Family: family, State: netlink.NUD_PERMANENT,
					IP: g.Underlay.AsSlice(), HardwareAddr: macs[j],
				}
				if err := nl.NeighSet(n); err != nil {
					return fmt.Errorf("neighbour %s (%s): %w", g.Underlay, g.Name, err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}
