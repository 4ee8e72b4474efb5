package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/drovernet/drover/internal/durable"
)

// The uplink model's bridge has the host's physical NIC as a port, so
// containers are stations of the physical LAN. Putting a NIC under a bridge
// takes its IPv4 configuration away from it: the host's addresses and the
// routes through the NIC must move to the bridge, or the host loses the
// LAN. attachUplink does that move and records, before changing anything,
// what it is about to change (uplinkFile in the network's reservation
// directory), so that the last container's DEL (restoreUplink) can put
// everything back, and a crash in the middle leaves a record the next ADD
// or DEL completes from. A NIC that is already a port of the bridge
// (configured by the operator, or by an earlier ADD) is left as it is, and
// then nothing is restored either: drover only undoes what it did.

// uplinkFile is the record of the move, in the network's reservation
// directory (the IPAM store ignores names that are not addresses).
const uplinkFile = "uplink.json"

// uplinkState is what attachUplink changed.
type uplinkState struct {
	NIC           string       `json:"nic"`
	Bridge        string       `json:"bridge"`
	CreatedBridge bool         `json:"created_bridge"`
	Addrs         []movedAddr  `json:"addrs"`
	Routes        []movedRoute `json:"routes"`
}

type movedAddr struct {
	Prefix    string `json:"prefix"` // 192.168.50.10/24
	Broadcast string `json:"broadcast,omitempty"`
	Flags     int    `json:"flags,omitempty"`
}

type movedRoute struct {
	Dst      string `json:"dst"` // "0.0.0.0/0" for the default route
	Gw       string `json:"gw,omitempty"`
	Src      string `json:"src,omitempty"`
	Table    int    `json:"table"`
	Priority int    `json:"priority,omitempty"`
	Scope    int    `json:"scope"`
	Protocol int    `json:"protocol"`
}

func readUplinkState(path string) (*uplinkState, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s uplinkState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &s, nil
}

// attachUplink makes bridge (in ns, which h serves) a bridge with nic as a port, moving nic's IPv4
// addresses and routes to it (recorded in statePath first), and returns
// the bridge. The bridge takes the NIC's MAC and MTU, so the host's
// address keeps its MAC on the LAN and no neighbour's ARP cache goes
// stale. Callers serialise it (the network's store lock).
func attachUplink(ns netns.NsHandle, h *netlink.Handle, bridge, nic, statePath string) (netlink.Link, error) {
	nl, err := h.LinkByName(nic)
	if err != nil {
		return nil, fmt.Errorf("uplink %s: %w", nic, err)
	}
	if nl.Type() == "bridge" {
		return nil, fmt.Errorf("uplink %s is a bridge: name the physical interface (its port), not a bridge", nic)
	}
	br, err := h.LinkByName(bridge)
	switch {
	case err == nil && br.Type() != "bridge":
		return nil, fmt.Errorf("bridge %s: the name is taken by a %s device", bridge, br.Type())
	case err == nil && nl.Attrs().MasterIndex == br.Attrs().Index:
		// Already a port. Finish a move a crash interrupted, if any.
		st, err := readUplinkState(statePath)
		if err != nil {
			return nil, err
		}
		if st != nil {
			if err := moveConfig(h, st, nl, br); err != nil {
				return nil, err
			}
		}
		return br, ensureUp(h, br)
	case err != nil && !isNotFound(err):
		return nil, fmt.Errorf("bridge %s: %w", bridge, err)
	case nl.Attrs().MasterIndex != 0:
		return nil, fmt.Errorf("uplink %s is already a port of another device (index %d), not of %s", nic, nl.Attrs().MasterIndex, bridge)
	}
	if err != nil {
		br = nil
	}

	// Record first: what will move, and whether the bridge is ours.
	st := &uplinkState{NIC: nic, Bridge: bridge, CreatedBridge: br == nil}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(nl, unix.AF_INET) })
	if err != nil {
		return nil, fmt.Errorf("uplink %s: list addresses: %w", nic, err)
	}
	for _, a := range addrs {
		p, ok := addrPrefix(a)
		if !ok {
			continue
		}
		m := movedAddr{Prefix: p.String(), Flags: a.Flags}
		if a.Broadcast != nil {
			m.Broadcast = a.Broadcast.String()
		}
		st.Addrs = append(st.Addrs, m)
	}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(unix.AF_INET, &netlink.Route{LinkIndex: nl.Attrs().Index, Table: unix.RT_TABLE_UNSPEC},
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("uplink %s: list routes: %w", nic, err)
	}
	for _, r := range routes {
		// The kernel's own routes (the prefix route of an address, the
		// local table) come back by themselves with the addresses.
		if r.Protocol == unix.RTPROT_KERNEL || r.Table == unix.RT_TABLE_LOCAL {
			continue
		}
		m := movedRoute{Dst: "0.0.0.0/0", Table: r.Table, Priority: r.Priority, Scope: int(r.Scope), Protocol: int(r.Protocol)}
		if r.Dst != nil {
			m.Dst = r.Dst.String()
		}
		if r.Gw != nil {
			m.Gw = r.Gw.String()
		}
		if r.Src != nil {
			m.Src = r.Src.String()
		}
		st.Routes = append(st.Routes, m)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := durable.Replace(statePath, b, 0o600); err != nil {
		return nil, fmt.Errorf("record the uplink move: %w", err)
	}

	if br == nil {
		la := netlink.NewLinkAttrs()
		la.Name, la.MTU, la.HardwareAddr = bridge, nl.Attrs().MTU, nl.Attrs().HardwareAddr
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create bridge %s: %w", bridge, err)
		}
		if br, err = h.LinkByName(bridge); err != nil {
			return nil, fmt.Errorf("bridge %s: %w", bridge, err)
		}
		if err := bridgeNetfilterOff(ns, br); err != nil {
			return nil, err
		}
	}
	if err := ensureUp(h, br); err != nil {
		return nil, err
	}
	if err := h.LinkSetMaster(nl, br); err != nil {
		return nil, fmt.Errorf("put uplink %s under %s: %w", nic, bridge, err)
	}
	if err := h.LinkSetUp(nl); err != nil {
		return nil, fmt.Errorf("uplink %s up: %w", nic, err)
	}
	if err := moveConfig(h, st, nl, br); err != nil {
		return nil, err
	}
	return br, nil
}

func ensureUp(h *netlink.Handle, l netlink.Link) error {
	if l.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("%s up: %w", l.Attrs().Name, err)
	}
	return nil
}

// moveConfig moves st's addresses and then its routes from one link to
// the other: each address is added to `to` before it leaves `from`, so
// the host never lacks it. Steps already done are skipped, so it
// completes an interrupted move in either direction.
func moveConfig(h *netlink.Handle, st *uplinkState, from, to netlink.Link) error {
	for _, m := range st.Addrs {
		p, err := netip.ParsePrefix(m.Prefix)
		if err != nil {
			return fmt.Errorf("uplink record: %w", err)
		}
		a := &netlink.Addr{IPNet: prefixIPNet(p), Flags: m.Flags | unix.IFA_F_NODAD}
		if m.Broadcast != "" {
			a.Broadcast = net.ParseIP(m.Broadcast)
		}
		if err := h.AddrAdd(to, a); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("move %s to %s: %w", p, to.Attrs().Name, err)
		}
		if err := h.AddrDel(from, &netlink.Addr{IPNet: prefixIPNet(p)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !isNotFound(err) {
			return fmt.Errorf("remove %s from %s: %w", p, from.Attrs().Name, err)
		}
	}
	for _, m := range st.Routes {
		r, err := m.route(to.Attrs().Index)
		if err != nil {
			return err
		}
		if err := h.RouteReplace(r); err != nil {
			return fmt.Errorf("move route %s via %s to %s: %w", m.Dst, m.Gw, to.Attrs().Name, err)
		}
		old := *r
		old.LinkIndex = from.Attrs().Index
		if err := h.RouteDel(&old); err != nil && !errors.Is(err, unix.ESRCH) && !isNotFound(err) {
			return fmt.Errorf("remove route %s from %s: %w", m.Dst, from.Attrs().Name, err)
		}
	}
	return nil
}

func (m movedRoute) route(link int) (*netlink.Route, error) {
	dst, err := netip.ParsePrefix(m.Dst)
	if err != nil {
		return nil, fmt.Errorf("uplink record: route %q: %w", m.Dst, err)
	}
	r := &netlink.Route{LinkIndex: link, Table: m.Table, Priority: m.Priority, Scope: netlink.Scope(m.Scope), Protocol: netlink.RouteProtocol(m.Protocol)}
	if dst.Bits() > 0 {
		r.Dst = prefixIPNet(dst)
	}
	if m.Gw != "" {
		r.Gw = net.ParseIP(m.Gw)
	}
	if m.Src != "" {
		r.Src = net.ParseIP(m.Src)
	}
	return r, nil
}

// restoreUplink undoes what attachUplink recorded in statePath: the
// addresses and routes go back to the NIC, the NIC leaves the bridge, and
// a bridge drover created is deleted. Without a record it does nothing
// (the operator's bridge stays as it is). The record goes last, so an
// interrupted restore is completed by the next.
func restoreUplink(h *netlink.Handle, statePath string) error {
	st, err := readUplinkState(statePath)
	if err != nil || st == nil {
		return err
	}
	nl, err := h.LinkByName(st.NIC)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("uplink %s: %w", st.NIC, err)
	}
	br, berr := h.LinkByName(st.Bridge)
	if berr != nil && !isNotFound(berr) {
		return fmt.Errorf("bridge %s: %w", st.Bridge, berr)
	}
	if nl != nil && br != nil {
		if err := moveConfig(h, st, br, nl); err != nil {
			return err
		}
	}
	if nl != nil && nl.Attrs().MasterIndex != 0 {
		if err := h.LinkSetNoMaster(nl); err != nil {
			return fmt.Errorf("release uplink %s from %s: %w", st.NIC, st.Bridge, err)
		}
	}
	if st.CreatedBridge && br != nil {
		if err := deleteLink(h, st.Bridge); err != nil {
			return err
		}
	}
	if err := os.Remove(statePath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// uplinkSubnet is the LAN prefix the bridge holds that contains a: the
// subnet of the containers' addresses.
func uplinkSubnet(h *netlink.Handle, br netlink.Link, a netip.Addr) (netip.Prefix, bool, error) {
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(br, unix.AF_INET) })
	if err != nil {
		return netip.Prefix{}, false, fmt.Errorf("bridge %s: list addresses: %w", br.Attrs().Name, err)
	}
	i := slices.IndexFunc(addrs, func(x netlink.Addr) bool {
		p, ok := addrPrefix(x)
		return ok && p.Bits() < 32 && p.Masked().Contains(a)
	})
	if i < 0 {
		return netip.Prefix{}, false, nil
	}
	p, _ := addrPrefix(addrs[i])
	return p.Masked(), true, nil
}

// bridgeNetfilterOff keeps frames the bridge forwards out of the host's
// IP, IPv6 and ARP netfilter hooks (IFLA_BR_NF_CALL_*): with br_netfilter
// loaded, the kernel otherwise passes every bridged LAN frame through the
// host's forward chains, and conntrack tracks every LAN flow that crosses
// the host - a cost per frame (about a tenth of a stream's throughput in
// the lab) for traffic that is not the host's to route or filter. The
// layer-2 guard, a bridge-family table, still sees every frame; traffic to
// the host itself still passes its input hooks.
func bridgeNetfilterOff(ns netns.NsHandle, br netlink.Link) error {
	return inNS(ns, func() error { return bridgeNetfilterOffHere(br) })
}

// bridgeNetfilterOffHere is bridgeNetfilterOff in the calling thread's
// network namespace (the netlink socket is opened there).
func bridgeNetfilterOffHere(br netlink.Link) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(br.Attrs().Index)
	req.AddData(msg)
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("bridge"))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	for _, a := range []int{unix.IFLA_BR_NF_CALL_IPTABLES, unix.IFLA_BR_NF_CALL_IP6TABLES, unix.IFLA_BR_NF_CALL_ARPTABLES} {
		data.AddRtAttr(a, []byte{0})
	}
	req.AddData(info)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("bridge %s: keep bridged frames out of netfilter: %w", br.Attrs().Name, err)
	}
	return nil
}
