package cni

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/drovernet/drover/acd"
	"github.com/drovernet/drover/arpsock"
	"github.com/drovernet/drover/cni/ipam"
	"github.com/drovernet/drover/router/packet"
)

// uplinkLockFile serialises, per network, the uplink's move onto the
// bridge and each ADD's reservation against the last DEL's restore: an
// ADD attaches and reserves under it, so a DEL that finds no reservation
// left (and restores the NIC) never runs between the two.
const uplinkLockFile = "uplink.lock"

// lockUplink takes the network's uplink lock (flock(2), released with the
// returned function).
func lockUplink(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, uplinkLockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("uplink lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("uplink lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// resolveUplink is resolve for the uplink model: everything comes from the
// bridge that now holds the host's LAN configuration, none from the
// daemon. The LAN subnet is ipam.subnet or the subnet of the host's
// address that holds ipam.rangeStart; the gateway the configured one or
// the host's default route's; the MTU the NIC's unless configured.
//
// The range is shared by every host on the LAN: the daemon claims this
// host's chunk of it (package lanpool) and the pool narrows to that. A
// daemon that does not split ranges (static peers) leaves the whole range,
// which the operator must then give each host on its own; no daemon at all
// is code 11, rather than risk an address another host hands out.
func (c *config) resolveUplink(ctx context.Context, d *daemonClient, h *netlink.Handle, br netlink.Link, log *slog.Logger) (*plan, *types.Error) {
	pl := &plan{mtu: c.MTU}
	if pl.mtu == 0 {
		pl.mtu = br.Attrs().MTU
	}
	subnet := c.ipamSubnet
	if !subnet.IsValid() {
		s, ok, err := uplinkSubnet(h, br, c.rangeStart)
		if err != nil {
			return nil, cniErr(types.ErrInternal, "uplink", err)
		}
		if !ok {
			return nil, invalid("ipam.rangeStart", "%s is in no subnet of the host's addresses on %s (uplink %s): set ipam.subnet to the LAN's prefix", c.rangeStart, c.Bridge, c.Uplink)
		}
		subnet = s
	}
	if e := c.checkPool(subnet); e != nil {
		return nil, e
	}
	pl.bridgeSubnet = subnet
	pl.prefixLen = subnet.Bits()
	pl.gateway = c.gateway
	if !pl.gateway.IsValid() {
		routes, err := retryDump(func() ([]netlink.Route, error) {
			return h.RouteListFiltered(unix.AF_INET, &netlink.Route{LinkIndex: br.Attrs().Index}, netlink.RT_FILTER_OIF)
		})
		if err != nil {
			return nil, cniErr(types.ErrInternal, "uplink: list routes", err)
		}
		for _, r := range routes {
			if isDefault(r.Dst) && r.Gw != nil {
				if gw, ok := netip.AddrFromSlice(r.Gw.To4()); ok && subnet.Contains(gw) {
					pl.gateway = gw
					break
				}
			}
		}
	}
	if !pl.gateway.IsValid() && c.defaultGW {
		return nil, invalid("gateway", "the host has no default route through %s in %s: set gateway to the LAN's router (or isDefaultGateway: false)", c.Bridge, subnet)
	}
	if pl.gateway.IsValid() && !subnet.Contains(pl.gateway) {
		return nil, invalid("gateway", "%s is outside the LAN %s", pl.gateway, subnet)
	}
	pl.pool = ipam.Pool{Subnet: subnet, Start: c.rangeStart, End: c.rangeEnd}
	first, last, err := d.chunk(ctx, chunkRequest{Network: c.Name, Start: c.rangeStart.String(), End: c.rangeEnd.String(), ChunkSize: c.IPAM.ChunkSize})
	switch {
	case err == nil:
		pl.pool.Start, pl.pool.End = first, last
	case errors.Is(err, errNotImplemented):
		log.Warn("the daemon does not split LAN ranges (static peers, or an older drover): this host takes the whole range, which no other host's config may share", "range", fmt.Sprintf("%s-%s", c.rangeStart, c.rangeEnd))
	case errors.Is(err, errNoDaemon), errors.Is(err, errDaemonNotReady):
		return nil, types.NewError(types.ErrTryAgainLater, fmt.Sprintf("this host's chunk of %s-%s: %v (the daemon splits the LAN range among hosts)", c.rangeStart, c.rangeEnd, err), "")
	default:
		return nil, cniErr(types.ErrInternal, "this host's chunk of the LAN range", err)
	}
	if pl.gateway.IsValid() {
		pl.pool.Exclude = append(pl.pool.Exclude, pl.gateway)
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(br, unix.AF_INET) })
	if err != nil {
		return nil, cniErr(types.ErrInternal, "uplink: list addresses", err)
	}
	for _, a := range addrs {
		if p, ok := addrPrefix(a); ok {
			pl.pool.Exclude = append(pl.pool.Exclude, p.Addr())
		}
	}
	return pl, nil
}

// allocateProbed reserves an address of pool for owner that nothing on the
// LAN answers for (RFC 5227, package acd), skipping those that something
// does. The reservation is made under the uplink lock (see uplinkLockFile);
// the probe runs outside it, so concurrent ADDs probe in parallel.
//
// attach runs under the lock before each reservation: the uplink is back
// on the bridge should a DEL have restored it since the ADD began.
func (p *plugin) allocateProbed(ctx context.Context, store *ipam.Store, pool ipam.Pool, owner ipam.Owner, pod ipam.Pod, brName string, attach func() error) (netip.Addr, error) {
	var conn *arpsock.Conn
	if err := inNS(p.hostNS, func() (err error) { conn, err = arpsock.Open(brName); return err }); err != nil {
		return netip.Addr{}, err
	}
	defer conn.Close()
	mac, err := conn.MAC()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("bridge %s: %w", brName, err)
	}
	prober := acd.NewProber(conn, mac, acd.Config{})
	for {
		unlock, err := lockUplink(store.Dir())
		if err != nil {
			return netip.Addr{}, err
		}
		ip, err := netip.Addr{}, attach()
		if err == nil {
			ip, err = store.AllocateFor(pool, owner, pod)
		}
		unlock()
		if err != nil {
			return netip.Addr{}, err
		}
		err = prober.Probe(ctx, ip)
		var conflict *acd.Conflict
		if err == nil {
			return ip, nil
		}
		if _, rerr := store.Release(owner); rerr != nil {
			return netip.Addr{}, errors.Join(err, rerr)
		}
		if !errors.As(err, &conflict) {
			return netip.Addr{}, err
		}
		p.log.Warn("address in use on the LAN; skipping it", "ip", ip, "by", conflict.MAC)
		pool.Exclude = append(slices.Clone(pool.Exclude), ip)
	}
}

// announce sends an ARP announcement for the container's address through
// the bridge, so LAN stations that cached the address's previous holder
// learn its new MAC at once (RFC 5227 2.3).
func (p *plugin) announce(brName string, mac packet.MAC, ip netip.Addr) error {
	var conn *arpsock.Conn
	if err := inNS(p.hostNS, func() (err error) { conn, err = arpsock.Open(brName); return err }); err != nil {
		return err
	}
	defer conn.Close()
	return acd.Announce(conn, mac, ip)
}

// ensureMetadataAddr puts the metadata address on the bridge as a /32, so
// the host (the daemon's metadata service) answers for it there; the
// guard keeps it off every other port.
func ensureMetadataAddr(h *netlink.Handle, br netlink.Link, a netip.Addr) error {
	err := h.AddrAdd(br, &netlink.Addr{IPNet: prefixIPNet(netip.PrefixFrom(a, 32)), Scope: unix.RT_SCOPE_LINK, Flags: unix.IFA_F_NODAD})
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("bridge %s: add metadata address %s: %w", br.Attrs().Name, a, err)
	}
	return nil
}

// disableIPv6 turns IPv6 off on the container's interface: drover's
// networks are IPv4, and the guard would drop (and count) every router
// solicitation and MLD report the kernel sends otherwise. A kernel without
// IPv6 has nothing to turn off.
func disableIPv6(ctrNS netns.NsHandle, ifname string) error {
	return inNS(ctrNS, func() error {
		err := os.WriteFile("/proc/sys/net/ipv6/conf/"+ifname+"/disable_ipv6", []byte("1"), 0)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	})
}

// restoreIfUnused gives the NIC its configuration back (restoreUplink) when
// the network holds no reservation any more: the last container is gone.
func (p *plugin) restoreIfUnused(h *netlink.Handle, store *ipam.Store) error {
	unlock, err := lockUplink(store.Dir())
	if err != nil {
		return err
	}
	defer unlock()
	rs, err := store.List()
	if err != nil || len(rs) > 0 {
		return err
	}
	return restoreUplink(h, filepath.Join(store.Dir(), uplinkFile))
}

// metadataAddrs lists the metadata address for the guard (none if off).
func (c *config) metadataAddrs() []netip.Addr {
	if !c.metadata.IsValid() {
		return nil
	}
	return []netip.Addr{c.metadata}
}

// isDefault reports whether a route's destination is 0.0.0.0/0 (netlink
// gives it as nil or as the zero prefix, depending on the version).
func isDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0
}
