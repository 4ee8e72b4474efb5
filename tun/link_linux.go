package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Configure sets the interface's MTU, adds the addresses (as host routes:
// /32 or /128, so the device claims no subnet) and brings it up.
func Configure(name string, mtu int, addrs []netip.Addr) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	if err := netlink.LinkSetMTU(l, mtu); err != nil {
		return fmt.Errorf("link %s: set mtu %d: %w", name, mtu, err)
	}
	// No IPv6 link-local address (addr_gen_mode 1 = none): without one the
	// kernel sends no router solicitations or MLD reports into the tunnel,
	// which no peer could route and drover would count as no_route. Set
	// over rtnetlink (IFLA_INET6_ADDR_GEN_MODE, as `ip link set NAME
	// addrgenmode none`), not through /proc/sys, which a container runtime
	// mounts read-only in a pod even with hostNetwork and NET_ADMIN.
	// Before the link goes up, so no address is ever generated.
	if err := netlink.LinkSetIP6AddrGenMode(l, addrGenModeNone); err != nil && !ipv6Off(err) {
		return fmt.Errorf("link %s: addrgenmode none: %w", name, err)
	}
	for _, a := range addrs {
		ipn := &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
		addr := &netlink.Addr{IPNet: ipn}
		if a.Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrReplace(l, addr); err != nil {
			return fmt.Errorf("link %s: add address %s: %w", name, a, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("link %s: up: %w", name, err)
	}
	return nil
}

// addrGenModeNone is IN6_ADDR_GEN_MODE_NONE (include/uapi/linux/if_link.h).
const addrGenModeNone = 1

// ipv6Off reports whether err is the kernel's answer to an IPv6 setting on
// a host without IPv6 (ipv6.disable=1: no AF_INET6 link data, EAFNOSUPPORT;
// older kernels answer EOPNOTSUPP or EINVAL): then no link-local address is
// generated anyway.
func ipv6Off(err error) bool {
	if _, statErr := os.Stat("/proc/sys/net/ipv6"); !errors.Is(statErr, os.ErrNotExist) {
		return false
	}
	return errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)
}

// Route is one route through the TUN device or, with Via, through a
// gateway on another device (a direct route to a member on the underlay's
// subnet, cluster.direct).
type Route struct {
	Prefix netip.Prefix
	Src    netip.Addr // preferred source; invalid for none
	MTU    int        // route MTU; 0 for the device's
	// Via is the next hop: invalid for a device route (the TUN's), else
	// an address on the device's own subnet.
	Via netip.Addr
}

func (r Route) nl(ifindex int) *netlink.Route {
	bits := r.Prefix.Addr().BitLen()
	nr := &netlink.Route{
		LinkIndex: ifindex,
		Dst:       &net.IPNet{IP: r.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(r.Prefix.Bits(), bits)},
		Scope:     netlink.SCOPE_LINK,
		Protocol:  routeProtocol,
		MTU:       r.MTU,
	}
	if r.Via.IsValid() {
		nr.Scope, nr.Gw = netlink.SCOPE_UNIVERSE, r.Via.AsSlice()
	}
	if r.Src.IsValid() && r.Src.BitLen() == bits {
		nr.Src = r.Src.AsSlice()
	}
	return nr
}

// routeProtocol marks drover's routes (rtnetlink protocol numbers above 4
// are free for routing daemons; 0x44 = 'D'), so `ip route show proto 68`
// lists them.
const routeProtocol = 0x44

// AddRoute installs r through the named interface. It never replaces a
// route (NLM_F_EXCL): when the main table already has one for the prefix
// with the same metric — a connected route, an operator's, or a route of
// ours through another device — the error wraps ErrRouteExists and nothing
// changes.
func AddRoute(name string, r Route) error {
	t, err := NewRoutes()
	if err != nil {
		return err
	}
	defer t.Close()
	return t.Add(name, r)
}

// Routes adds and removes routes as AddRoute and DelRoute do, through one
// netlink socket and with each interface's index looked up once. The agent
// changes a route per member; in a start-up storm of 100 hosts, opening a
// socket and looking the device up by name for every route took about a
// twentieth of each daemon's CPU. Its methods may be called concurrently.
type Routes struct {
	mu  sync.Mutex
	h   *netlink.Handle
	idx map[string]int // interface name → index, dropped when ENODEV says stale
}

// NewRoutes opens the netlink socket, in the calling thread's network
// namespace.
func NewRoutes() (*Routes, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	return &Routes{h: h, idx: map[string]int{}}, nil
}

// Close closes the socket.
func (t *Routes) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.h.Close()
}

// index returns the named interface's index; t.mu is held.
func (t *Routes) index(name string) (int, error) {
	if i, ok := t.idx[name]; ok {
		return i, nil
	}
	l, err := t.h.LinkByName(name)
	if err != nil {
		return 0, err
	}
	t.idx[name] = l.Attrs().Index
	return l.Attrs().Index, nil
}

// do runs op with the named interface's index, and once more with it looked
// up again when the kernel says the cached one names no device (the
// interface was deleted and created again under the same name).
func (t *Routes) do(name string, op func(int) error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for try := 0; ; try++ {
		i, err := t.index(name)
		if err != nil {
			return errLink{name, err}
		}
		err = op(i)
		if errors.Is(err, unix.ENODEV) && try == 0 {
			delete(t.idx, name)
			continue
		}
		return err
	}
}

// errLink is a failed lookup of the interface, kept apart from the route
// operation's own errors.
type errLink struct {
	name string
	err  error
}

func (e errLink) Error() string { return fmt.Sprintf("link %s: %v", e.name, e.err) }
func (e errLink) Unwrap() error { return e.err }

// Add installs r through the named interface, as AddRoute.
func (t *Routes) Add(name string, r Route) error {
	err := t.do(name, func(i int) error { return t.h.RouteAdd(r.nl(i)) })
	var el errLink
	switch {
	case err == nil:
		return nil
	case errors.As(err, &el):
		return err
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("route %s dev %s: %w", r.Prefix, name, ErrRouteExists)
	}
	return fmt.Errorf("route %s dev %s: %w", r.Prefix, name, err)
}

// Del removes r, as DelRoute: a route or a device that is already gone is
// not an error.
func (t *Routes) Del(name string, r Route) error {
	err := t.do(name, func(i int) error { return t.h.RouteDel(r.nl(i)) })
	var el errLink
	var nf netlink.LinkNotFoundError
	switch {
	case err == nil, errors.Is(err, unix.ESRCH):
		return nil
	case errors.As(err, &el):
		if errors.As(err, &nf) {
			return nil // the device is gone, and its routes with it
		}
		return err
	}
	return fmt.Errorf("delete route %s dev %s: %w", r.Prefix, name, err)
}

// FlushRoutes removes the routes drover installed through the named
// interface (its protocol number), both families, and returns how many.
// Direct routes go through the underlay interface, which outlives the
// daemon: a daemon that was killed leaves them, and the next one would
// otherwise find its own stale routes in the way (ErrRouteExists).
func FlushRoutes(name string) (int, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return 0, fmt.Errorf("link %s: %w", name, err)
	}
	filter := &netlink.Route{LinkIndex: l.Attrs().Index, Protocol: routeProtocol}
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return 0, fmt.Errorf("list routes of %s: %w", name, err)
	}
	n := 0
	for i := range rs {
		if err := netlink.RouteDel(&rs[i]); err != nil && !errors.Is(err, unix.ESRCH) {
			return n, fmt.Errorf("delete route %s dev %s: %w", rs[i].Dst, name, err)
		}
		n++
	}
	return n, nil
}

// DelRoute removes r; a route that is already gone is not an error.
func DelRoute(name string, r Route) error {
	t, err := NewRoutes()
	if err != nil {
		return err
	}
	defer t.Close()
	return t.Del(name, r)
}

// UnderlayMTU returns the MTU of the interface that holds addr, or 0 when no
// interface holds it.
func UnderlayMTU(addr netip.Addr) (int, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return 0, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		as, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue
		}
		for _, a := range as {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
				return l.Attrs().MTU, nil
			}
		}
	}
	return 0, nil
}

// SetAddrs makes want the interface's addresses (host routes, as Configure
// adds them): missing ones are added, others removed. Link-local IPv6
// addresses are left alone.
func SetAddrs(name string, want []netip.Addr) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	have, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("link %s: list addresses: %w", name, err)
	}
	keep := make(map[netip.Addr]bool, len(want))
	for _, a := range want {
		keep[a] = true
	}
	for _, h := range have {
		a, ok := netip.AddrFromSlice(h.IP)
		if !ok || a.Unmap().IsLinkLocalUnicast() {
			continue
		}
		a = a.Unmap()
		if keep[a] {
			delete(keep, a)
			continue
		}
		if err := netlink.AddrDel(l, &h); err != nil {
			return fmt.Errorf("link %s: remove address %s: %w", name, a, err)
		}
	}
	for _, a := range want {
		if !keep[a] {
			continue
		}
		ipn := &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
		addr := &netlink.Addr{IPNet: ipn}
		if a.Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrReplace(l, addr); err != nil {
			return fmt.Errorf("link %s: add address %s: %w", name, a, err)
		}
	}
	return nil
}
