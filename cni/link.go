package cni

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// vethName is the host end's name for an attachment: "drv" and 12 hex
// digits of a hash of (network, container ID, ifname). Deterministic, so
// DEL and GC find it without keeping state, and a retried ADD finds the one
// a crashed ADD left behind.
func vethName(network, containerID, ifname string) string {
	sum := sha256.Sum256([]byte(network + "\x00" + containerID + "\x00" + ifname))
	return "drv" + hex.EncodeToString(sum[:6])
}

// containerMAC derives the container's MAC from its address: 0a:58 (locally
// administered, unicast) then the four address bytes. An address handed out
// again comes with the same MAC, so neighbours' ARP entries stay right.
func containerMAC(a netip.Addr) net.HardwareAddr {
	b := a.As4()
	return net.HardwareAddr{0x0a, 0x58, b[0], b[1], b[2], b[3]}
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// dumpRetries bounds the retries of a netlink dump the kernel interrupted
// (NLM_F_DUMP_INTR: the table changed while it was read).
const dumpRetries = 5

func retryDump[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	for range dumpRetries {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

// ensureBridge returns the bridge named name, creating it (with MTU mtu)
// if missing, with gw on it and up. Concurrent ADDs race here; each
// tolerates the others' EEXIST. The bridge and its address belong to the
// node, not to one attachment: nothing ever removes them.
func ensureBridge(h *netlink.Handle, name string, gw netip.Prefix, mtu int) (netlink.Link, error) {
	link, err := h.LinkByName(name)
	if isNotFound(err) {
		la := netlink.NewLinkAttrs()
		la.Name, la.MTU = name, mtu
		// A fixed MAC (derived from the gateway address, like containers'):
		// a bridge without one takes its lowest port's, so every new port
		// could change the gateway's MAC under the containers' ARP caches.
		la.HardwareAddr = containerMAC(gw.Addr())
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		link, err = h.LinkByName(name)
	}
	if err != nil {
		return nil, fmt.Errorf("bridge %s: %w", name, err)
	}
	if link.Type() != "bridge" {
		return nil, fmt.Errorf("bridge %s: the name is taken by a %s device", name, link.Type())
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(link, unix.AF_INET) })
	if err != nil {
		return nil, fmt.Errorf("bridge %s: list addresses: %w", name, err)
	}
	have := false
	for _, a := range addrs {
		if p, ok := addrPrefix(a); ok && p.Addr() == gw.Addr() {
			if p.Bits() != gw.Bits() {
				return nil, fmt.Errorf("bridge %s has %s, want %s (is bridgeSubnet the node's block?)", name, p, gw)
			}
			have = true
		}
	}
	if !have {
		if err := h.AddrAdd(link, &netlink.Addr{IPNet: prefixIPNet(gw)}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("bridge %s: add %s: %w", name, gw, err)
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("bridge %s up: %w", name, err)
		}
	}
	return link, nil
}

func addrPrefix(a netlink.Addr) (netip.Prefix, bool) {
	if a.IPNet == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := a.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), bits), true
}

// createVeth creates the pair: hostName in h's namespace, ctrName created
// directly inside ctrNS (never in the host namespace, so a crash cannot
// leave the container end behind on the host), both with mtu, the container
// end with mac.
func createVeth(h *netlink.Handle, hostName, ctrName string, ctrNS netns.NsHandle, mtu int, mac net.HardwareAddr) error {
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU = hostName, mtu
	v := &netlink.Veth{
		LinkAttrs:        la,
		PeerName:         ctrName,
		PeerNamespace:    netlink.NsFd(int(ctrNS)),
		PeerMTU:          uint32(mtu),
		PeerHardwareAddr: mac,
		PeerTxQLen:       -1,
	}
	if err := h.LinkAdd(v); err != nil {
		return fmt.Errorf("create veth %s (peer %s in the container): %w", hostName, ctrName, err)
	}
	return nil
}

// deleteLink removes the named link if it exists.
func deleteLink(h *netlink.Handle, name string) error {
	link, err := h.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := h.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// wantRoutes are the routes ADD puts in the container (and CHECK expects):
//   - flat: the cluster prefix is on-link through the address itself; no
//     route for it;
//   - routed (not flat): the cluster prefix via the gateway, so the cluster
//     stays reachable without a default route;
//   - isDefaultGateway: 0.0.0.0/0 via the gateway.
func wantRoutes(c *config, gw netip.Addr, addr netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	if c.Uplink == "" && !c.Flat && !within(c.cluster, addr.Masked()) {
		out = append(out, c.cluster)
	}
	if c.defaultGW {
		out = append(out, netip.MustParsePrefix("0.0.0.0/0"))
	}
	return out
}
