package cni

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/drovernet/drover/cni/ipam"
	"github.com/drovernet/drover/l2guard"
)

func (p *plugin) cmdCheck(args *skel.CmdArgs) error {
	c, e := parseConfig(args.StdinData)
	if e != nil {
		return e
	}
	return p.check(c, args)
}

func checkFailed(format string, a ...any) *types.Error {
	return types.NewError(types.ErrInternal, "CHECK: "+fmt.Sprintf(format, a...), "")
}

// check verifies that what ADD made (as prevResult records it) is still in
// place: the container's interface (veth, up, MTU, MAC, address, routes),
// its host end (on the bridge, up, hairpin as configured), the bridge with
// the gateway, the address reservation and the NAT rule. It needs no
// daemon: a daemon restarting does not make a container misconfigured.
func (p *plugin) check(c *config, args *skel.CmdArgs) error {
	if c.prevResult == nil {
		return invalid("prevResult", "missing: CHECK compares against the result of ADD")
	}
	res := c.prevResult
	ctrIdx := -1
	for i, in := range res.Interfaces {
		if in.Name == args.IfName && in.Sandbox == args.Netns {
			ctrIdx = i
		}
	}
	if ctrIdx < 0 {
		return checkFailed("prevResult has no interface %s in %s", args.IfName, args.Netns)
	}
	ctrIf := res.Interfaces[ctrIdx]
	var ips []*types100.IPConfig
	for _, ipc := range res.IPs {
		if ipc.Interface != nil && *ipc.Interface == ctrIdx {
			ips = append(ips, ipc)
		}
	}
	if len(ips) == 0 {
		return checkFailed("prevResult has no address for %s", args.IfName)
	}

	ctrNS, e := openNetNS(args.Netns)
	if e != nil {
		return e
	}
	defer ctrNS.Close()
	ctrNL, err := netlink.NewHandleAt(ctrNS)
	if err != nil {
		return cniErr(types.ErrInternal, "netlink in "+args.Netns, err)
	}
	defer ctrNL.Close()
	link, err := ctrNL.LinkByName(args.IfName)
	if err != nil {
		return checkFailed("%s in %s: %v", args.IfName, args.Netns, err)
	}
	la := link.Attrs()
	switch {
	case link.Type() != "veth":
		return checkFailed("%s is a %s, want a veth", args.IfName, link.Type())
	case la.Flags&net.FlagUp == 0:
		return checkFailed("%s is down", args.IfName)
	case ctrIf.Mtu != 0 && la.MTU != ctrIf.Mtu:
		return checkFailed("%s has MTU %d, want %d", args.IfName, la.MTU, ctrIf.Mtu)
	case ctrIf.Mac != "" && la.HardwareAddr.String() != ctrIf.Mac:
		return checkFailed("%s has MAC %s, want %s", args.IfName, la.HardwareAddr, ctrIf.Mac)
	}
	have, err := retryDump(func() ([]netlink.Addr, error) { return ctrNL.AddrList(link, unix.AF_INET) })
	if err != nil {
		return cniErr(types.ErrInternal, "list addresses", err)
	}
	var addrs []netip.Prefix
	var gw netip.Addr
	for _, ipc := range ips {
		want, ok := ipNetPrefix(ipc.Address)
		if !ok {
			return checkFailed("prevResult address %v is not valid", ipc.Address)
		}
		found := false
		for _, a := range have {
			if p, ok := addrPrefix(a); ok && p == want {
				found = true
			}
		}
		if !found {
			return checkFailed("%s in %s lacks address %s", args.IfName, args.Netns, want)
		}
		addrs = append(addrs, want)
		if g, ok := netip.AddrFromSlice(ipc.Gateway); ok {
			gw = g.Unmap()
		}
	}
	if !gw.IsValid() {
		return checkFailed("prevResult has no gateway for %s", args.IfName)
	}
	routes, err := retryDump(func() ([]netlink.Route, error) { return ctrNL.RouteList(link, unix.AF_INET) })
	if err != nil {
		return cniErr(types.ErrInternal, "list routes", err)
	}
	for _, want := range wantRoutes(c, gw, addrs[0]) {
		found := false
		for _, r := range routes {
			dst := netip.MustParsePrefix("0.0.0.0/0")
			if r.Dst != nil {
				dst, _ = ipNetPrefix(*r.Dst)
			}
			g, _ := netip.AddrFromSlice(r.Gw)
			if dst == want && g.Unmap() == gw {
				found = true
			}
		}
		if !found {
			return checkFailed("%s in %s lacks route %s via %s", args.IfName, args.Netns, want, gw)
		}
	}

	hostNL, err := netlink.NewHandleAt(p.hostNS)
	if err != nil {
		return cniErr(types.ErrInternal, "netlink in the host namespace", err)
	}
	defer hostNL.Close()
	br, err := hostNL.LinkByName(c.Bridge)
	if err != nil {
		return checkFailed("bridge %s: %v", c.Bridge, err)
	}
	if br.Type() != "bridge" || br.Attrs().Flags&net.FlagUp == 0 {
		return checkFailed("%s is not an up bridge", c.Bridge)
	}
	brAddrs, err := retryDump(func() ([]netlink.Addr, error) { return hostNL.AddrList(br, unix.AF_INET) })
	if err != nil {
		return cniErr(types.ErrInternal, "list bridge addresses", err)
	}
	// The overlay models' gateway is the bridge; the uplink model's is
	// the LAN's router, and the bridge must hold the uplink.
	found := c.Uplink != ""
	for _, a := range brAddrs {
		if p, ok := addrPrefix(a); ok && p.Addr() == gw {
			found = true
		}
	}
	if !found {
		return checkFailed("bridge %s lacks the gateway %s", c.Bridge, gw)
	}
	if c.Uplink != "" {
		up, err := hostNL.LinkByName(c.Uplink)
		if err != nil {
			return checkFailed("uplink %s: %v", c.Uplink, err)
		}
		if up.Attrs().MasterIndex != br.Attrs().Index {
			return checkFailed("uplink %s is not a port of bridge %s", c.Uplink, c.Bridge)
		}
	}
	hostName := vethName(c.Name, args.ContainerID, args.IfName)
	host, err := hostNL.LinkByName(hostName)
	if err != nil {
		return checkFailed("host end %s: %v", hostName, err)
	}
	if host.Attrs().MasterIndex != br.Attrs().Index {
		return checkFailed("host end %s is not on bridge %s", hostName, c.Bridge)
	}
	if host.Attrs().Flags&net.FlagUp == 0 {
		return checkFailed("host end %s is down", hostName)
	}
	if ctrIf.Mtu != 0 && host.Attrs().MTU != ctrIf.Mtu {
		return checkFailed("host end %s has MTU %d, want %d", hostName, host.Attrs().MTU, ctrIf.Mtu)
	}
	pi, err := hostNL.LinkGetProtinfo(host)
	if err != nil {
		return cniErr(types.ErrInternal, "bridge port "+hostName, err)
	}
	if !pi.Isolated && c.Uplink == "" {
		return checkFailed("host end %s is not an isolated bridge port (attached by an older drover? DEL and ADD again)", hostName)
	}
	if pi.Hairpin != c.HairpinMode {
		return checkFailed("host end %s has hairpin %v, want %v", hostName, pi.Hairpin, c.HairpinMode)
	}

	store, err := c.store()
	if err != nil {
		return err
	}
	held, err := store.Lookup(ipam.Owner{ContainerID: args.ContainerID, IfName: args.IfName})
	if err != nil {
		return cniErr(types.ErrIOFailure, "read reservations", err)
	}
	for _, a := range addrs {
		ok := false
		for _, h := range held {
			ok = ok || h == a.Addr()
		}
		if !ok {
			return checkFailed("%s is not reserved for %s/%s", a.Addr(), args.ContainerID, args.IfName)
		}
	}
	guard, err := l2guard.Open(p.hostNS)
	if err != nil {
		return cniErr(types.ErrInternal, "layer-2 guard", err)
	}
	mac, err := net.ParseMAC(ctrIf.Mac)
	if err != nil {
		mac = la.HardwareAddr
	}
	if err := guard.Check(l2guard.Port{IfName: hostName, MAC: mac, IP: addrs[0].Addr()}, c.metadataAddrs()); err != nil {
		return checkFailed("%v", err)
	}
	if c.hostNat {
		nat, err := openNAT(p.hostNS)
		if err != nil {
			return cniErr(types.ErrInternal, "host NAT", err)
		}
		for _, a := range addrs {
			ok, err := nat.has(c.Name, a.Addr())
			if err != nil {
				return cniErr(types.ErrInternal, "host NAT", err)
			}
			if !ok {
				return checkFailed("no masquerade rule for %s in nftables table %s", a.Addr(), natTable)
			}
		}
	}
	return nil
}

func ipNetPrefix(n net.IPNet) (netip.Prefix, bool) {
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), bits), true
}
