package cni

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/drovernet/drover/cni/ipam"
	"github.com/drovernet/drover/l2guard"
	"github.com/drovernet/drover/router/packet"
)

func (p *plugin) cmdAdd(args *skel.CmdArgs) error {
	c, e := parseConfig(args.StdinData)
	if e != nil {
		return e
	}
	res, err := p.add(context.Background(), c, args)
	if err != nil {
		return err
	}
	return types.PrintResult(res, c.CNIVersion)
}

// store opens the network's reservation directory.
func (c *config) store() (*ipam.Store, error) {
	s, err := ipam.Open(filepath.Join(c.dataDir, c.Name))
	if err != nil {
		return nil, types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	return s, nil
}

// natKeep lists the destinations a container's traffic is never NATed to.
func natKeep(c *config, bridgeSubnet netip.Prefix) []netip.Prefix {
	keep := []netip.Prefix{c.cluster}
	if bridgeSubnet.IsValid() && !within(bridgeSubnet, c.cluster) {
		keep = append(keep, bridgeSubnet)
	}
	return keep
}

// add attaches the container: bridge (if missing), address reservation
// (durable before anything uses it), veth pair, address, routes, NAT rule,
// daemon notice. Whatever fails, everything done for this attachment is
// undone in reverse; the bridge stays, it is the node's.
func (p *plugin) add(ctx context.Context, c *config, args *skel.CmdArgs) (_ *types100.Result, err error) {
	pod, e := podFromArgs(args.Args)
	if e != nil {
		return nil, e
	}
	// Labels: the network's args.cni.labels, then CNI_ARGS DROVER_LABELS
	// over them key by key.
	netLabels, err := argsLabels(c.Args)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	if len(netLabels) > 0 || len(pod.Labels) > 0 {
		l := map[string]string{}
		maps.Copy(l, netLabels)
		maps.Copy(l, pod.Labels)
		pod.Labels = l
	}
	ctrNS, e := openNetNS(args.Netns)
	if e != nil {
		return nil, e
	}
	defer ctrNS.Close()
	d := newDaemonClient(c.DaemonSocket)
	var pl *plan
	if c.Uplink == "" {
		if pl, e = c.resolve(ctx, d); e != nil {
			return nil, e
		}
	}
	hostNL, err := netlink.NewHandleAt(p.hostNS)
	if err != nil {
		return nil, cniErr(types.ErrInternal, "netlink in the host namespace", err)
	}
	defer hostNL.Close()
	ctrNL, err := netlink.NewHandleAt(ctrNS)
	if err != nil {
		return nil, cniErr(types.ErrInternal, "netlink in "+args.Netns, err)
	}
	defer ctrNL.Close()
	// The spec: an existing interface of that name is an error.
	if _, err := ctrNL.LinkByName(args.IfName); err == nil {
		return nil, types.NewError(types.ErrInternal, fmt.Sprintf("interface %s already exists in %s", args.IfName, args.Netns), "")
	}

	undo := &undoList{log: p.log}
	defer func() {
		if err != nil {
			undo.run()
		}
	}()

	store, err := c.store()
	if err != nil {
		return nil, err
	}
	var br netlink.Link
	uplinkState := filepath.Join(store.Dir(), uplinkFile)
	attach := func() (err error) {
		br, err = attachUplink(p.hostNS, hostNL, c.Bridge, c.Uplink, uplinkState)
		return err
	}
	if c.Uplink != "" {
		unlock, err := lockUplink(store.Dir())
		if err != nil {
			return nil, cniErr(types.ErrIOFailure, "uplink", err)
		}
		err = attach()
		unlock()
		if err != nil {
			return nil, cniErr(types.ErrInternal, "uplink", err)
		}
		if pl, e = c.resolveUplink(ctx, d, hostNL, br, p.log); e != nil {
			return nil, e
		}
	} else {
		gwPrefix := netip.PrefixFrom(pl.gateway, pl.bridgeSubnet.Bits())
		br, err = ensureBridge(hostNL, c.Bridge, gwPrefix, pl.mtu)
		if err != nil {
			return nil, cniErr(types.ErrInternal, "bridge", err)
		}
		// The host routes between the bridge, the TUN and (hostNat) the
		// uplink, and between the bridge's isolated ports: proxy_arp_pvlan
		// makes it answer a container's ARP for another container on the same
		// bridge (RFC 3069's private VLAN) - for remote addresses it stays off
		// (the route is via the TUN: the daemon answers in the flat model).
		if err := inNS(p.hostNS, func() error {
			if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0); err != nil {
				return fmt.Errorf("enable net.ipv4.ip_forward: %w", err)
			}
			if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+c.Bridge+"/proxy_arp_pvlan", []byte("1"), 0); err != nil {
				return fmt.Errorf("enable proxy_arp_pvlan on %s: %w", c.Bridge, err)
			}
			return nil
		}); err != nil {
			return nil, cniErr(types.ErrInternal, "host sysctl", err)
		}
	}
	if c.metadata.IsValid() {
		if err := ensureMetadataAddr(hostNL, br, c.metadata); err != nil {
			return nil, cniErr(types.ErrInternal, "bridge", err)
		}
	}
	if err := p.step("bridge"); err != nil {
		return nil, err
	}

	if other, a, ok := ipam.Overlap(c.dataDir, c.Name, pl.pool); ok {
		return nil, invalid("ipam", "network %q already holds %s of %s on this host: give each network its own ipam.subnet or rangeStart/rangeEnd", other, a, pl.pool)
	}
	owner := ipam.Owner{ContainerID: args.ContainerID, IfName: args.IfName}
	pod.PrefixLen, pod.MTU, pod.Uplink = pl.prefixLen, pl.mtu, c.Uplink
	if pl.gateway.IsValid() {
		pod.Gateway = pl.gateway.String()
	}
	var ip netip.Addr
	if c.Uplink != "" {
		ip, err = p.allocateProbed(ctx, store, pl.pool, owner, pod, c.Bridge, attach)
	} else {
		ip, err = store.AllocateFor(pl.pool, owner, pod)
	}
	if errors.Is(err, ipam.ErrFull) {
		return nil, types.NewError(types.ErrTryAgainLater, strings.TrimPrefix(err.Error(), "ipam: "), "delete containers, or let the runtime GC stale ones")
	}
	if err != nil {
		return nil, cniErr(types.ErrIOFailure, "reserve an address", err)
	}
	undo.push("release "+ip.String(), func() error {
		_, err := store.Release(owner)
		if c.Uplink != "" {
			err = errors.Join(err, p.restoreIfUnused(hostNL, store))
		}
		return err
	})
	if err := p.step("reserved"); err != nil {
		return nil, err
	}

	hostName := vethName(c.Name, args.ContainerID, args.IfName)
	// A veth of this attachment can only be left by a crashed ADD.
	if err := deleteLink(hostNL, hostName); err != nil {
		return nil, cniErr(types.ErrInternal, "remove stale "+hostName, err)
	}
	mac := containerMAC(ip)
	if err := createVeth(hostNL, hostName, args.IfName, ctrNS, pl.mtu, mac); err != nil {
		return nil, cniErr(types.ErrInternal, "veth", err)
	}
	undo.push("delete "+hostName, func() error { return deleteLink(hostNL, hostName) })
	if err := p.step("veth"); err != nil {
		return nil, err
	}

	hostLink, err := hostNL.LinkByName(hostName)
	if err != nil {
		return nil, cniErr(types.ErrInternal, "veth "+hostName, err)
	}
	if err := hostNL.LinkSetMaster(hostLink, br); err != nil {
		return nil, cniErr(types.ErrInternal, fmt.Sprintf("attach %s to %s", hostName, c.Bridge), err)
	}
	// Isolated ports (IFLA_BRPORT_ISOLATED) reach only the bridge itself,
	// never each other: the host routes container to container (proxy ARP
	// for private VLANs on the bridge answers for local containers), so
	// every flow passes the forward hook, where network policy and the
	// forward filter apply, and no container can ARP-spoof another. In the
	// uplink model containers are stations of the LAN, as its other
	// devices are: their ports are not isolated.
	if c.Uplink == "" {
		if err := hostNL.LinkSetIsolated(hostLink, true); err != nil {
			return nil, cniErr(types.ErrInternal, "isolate bridge port "+hostName, err)
		}
	}
	// The layer-2 guard binds the port to the container's MAC and address
	// before the port forwards anything (package l2guard).
	guard, err := l2guard.Open(p.hostNS)
	if err != nil {
		return nil, cniErr(types.ErrInternal, "layer-2 guard", err)
	}
	if err := guard.Add(l2guard.Port{IfName: hostName, MAC: mac, IP: ip}, c.metadataAddrs()); err != nil {
		return nil, cniErr(types.ErrInternal, "layer-2 guard", err)
	}
	undo.push("unguard "+hostName, func() error { return guard.Remove(hostName) })
	if c.HairpinMode {
		if err := hostNL.LinkSetHairpin(hostLink, true); err != nil {
			return nil, cniErr(types.ErrInternal, "hairpin on "+hostName, err)
		}
	}
	if err := hostNL.LinkSetUp(hostLink); err != nil {
		return nil, cniErr(types.ErrInternal, hostName+" up", err)
	}

	addr := netip.PrefixFrom(ip, pl.prefixLen)
	ctrLink, err := ctrNL.LinkByName(args.IfName)
	if err != nil {
		return nil, cniErr(types.ErrInternal, args.IfName+" in the container", err)
	}
	// No DAD wait: the address is ours by reservation.
	if err := ctrNL.AddrAdd(ctrLink, &netlink.Addr{IPNet: prefixIPNet(addr), Flags: unix.IFA_F_NODAD}); err != nil {
		return nil, cniErr(types.ErrInternal, fmt.Sprintf("add %s to %s", addr, args.IfName), err)
	}
	if err := disableIPv6(ctrNS, args.IfName); err != nil {
		return nil, cniErr(types.ErrInternal, "disable IPv6 on "+args.IfName, err)
	}
	if err := ctrNL.LinkSetUp(ctrLink); err != nil {
		return nil, cniErr(types.ErrInternal, args.IfName+" up", err)
	}
	// The metadata address is on-link in the uplink model (the bridge
	// answers ARP for it); the overlay models reach it via the gateway,
	// which the default route already does.
	if c.metadata.IsValid() && c.Uplink != "" {
		nr := &netlink.Route{LinkIndex: ctrLink.Attrs().Index, Dst: prefixIPNet(netip.PrefixFrom(c.metadata, 32)), Scope: netlink.SCOPE_LINK}
		if err := ctrNL.RouteAdd(nr); err != nil {
			return nil, cniErr(types.ErrInternal, fmt.Sprintf("route %s on-link", c.metadata), err)
		}
	}
	routes := wantRoutes(c, pl.gateway, addr)
	for _, r := range routes {
		nr := &netlink.Route{LinkIndex: ctrLink.Attrs().Index, Dst: prefixIPNet(r), Gw: pl.gateway.AsSlice()}
		if err := ctrNL.RouteAdd(nr); err != nil {
			return nil, cniErr(types.ErrInternal, fmt.Sprintf("route %s via %s", r, pl.gateway), err)
		}
	}
	if c.Uplink != "" {
		if err := p.announce(c.Bridge, packet.MAC(mac), ip); err != nil {
			p.log.Warn("ARP announcement", "ip", ip, "err", err)
		}
	}
	if err := p.step("configured"); err != nil {
		return nil, err
	}

	if c.hostNat {
		nat, err := openNAT(p.hostNS)
		if err != nil {
			return nil, cniErr(types.ErrInternal, "host NAT", err)
		}
		rule := natRule{network: c.Name, ip: ip, containerID: args.ContainerID, ifname: args.IfName, keep: natKeep(c, pl.bridgeSubnet)}
		if err := nat.add(rule); err != nil {
			return nil, cniErr(types.ErrInternal, "host NAT", err)
		}
		undo.push("remove NAT for "+ip.String(), func() error {
			return nat.remove(c.Name, func(a netip.Addr) bool { return a == ip })
		})
		if err := p.step("nat"); err != nil {
			return nil, err
		}
	}

	if pl.daemon != nil || c.Uplink != "" {
		l := Local{Network: c.Name, ContainerID: args.ContainerID, IfName: args.IfName, IP: ip.String(), MAC: mac.String(), Bridge: c.Bridge, DataDir: c.dataDir,
			PodNamespace: pod.Namespace, PodName: pod.Name, Labels: pod.Labels, Ports: pod.Ports,
			PrefixLen: pod.PrefixLen, Gateway: pod.Gateway, MTU: pod.MTU, Uplink: pod.Uplink}
		err := d.addLocal(ctx, l)
		switch {
		case err == nil:
			undo.push("tell the daemon "+ip.String()+" is gone", func() error { return d.delLocal(context.Background(), ip) })
		case errors.Is(err, errNotImplemented), errors.Is(err, errNoDaemon):
			// An older daemon, or one that just stopped: it learns
			// local addresses from the IPAM directory when it starts.
		case errors.Is(err, errDaemonNotReady):
			return nil, cniErr(types.ErrTryAgainLater, "daemon", err)
		default:
			return nil, cniErr(types.ErrInternal, "daemon refused the address", err)
		}
	}
	if err := p.step("done"); err != nil {
		return nil, err
	}

	hostAttrs, brAttrs := hostLink.Attrs(), br.Attrs()
	res := &types100.Result{CNIVersion: types100.ImplementedSpecVersion, DNS: c.DNS}
	if c.prevResult != nil {
		res = c.prevResult
		if res.DNS.IsEmpty() {
			res.DNS = c.DNS
		}
	}
	base := len(res.Interfaces)
	res.Interfaces = append(res.Interfaces,
		&types100.Interface{Name: c.Bridge, Mac: brAttrs.HardwareAddr.String()},
		&types100.Interface{Name: hostName, Mac: hostAttrs.HardwareAddr.String(), Mtu: pl.mtu},
		&types100.Interface{Name: args.IfName, Mac: mac.String(), Mtu: pl.mtu, Sandbox: args.Netns},
	)
	idx := base + 2
	res.IPs = append(res.IPs, &types100.IPConfig{
		Interface: &idx,
		Address:   *prefixIPNet(addr),
		Gateway:   net.IP(pl.gateway.AsSlice()),
	})
	for _, r := range routes {
		res.Routes = append(res.Routes, &types.Route{Dst: *prefixIPNet(r), GW: net.IP(pl.gateway.AsSlice())})
	}
	return res, nil
}
