package cni

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"

	"github.com/drovernet/drover/testenv"
)

// link joins ns (address a, name an) and peer (address b, name bn) with a
// veth pair; gw, if valid, becomes peer's default route.
func joinNS(t *testing.T, ns *testenv.NetNS, an string, a netip.Prefix, peer *testenv.NetNS, bn string, b netip.Prefix, gw netip.Addr) {
	t.Helper()
	withNL(t, ns, func(nl *netlink.Handle) error {
		la := netlink.NewLinkAttrs()
		la.Name = an
		return nl.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: bn, PeerNamespace: netlink.NsFd(int(peer.Handle()))})
	})
	for _, s := range []struct {
		ns   *testenv.NetNS
		name string
		addr netip.Prefix
	}{{ns, an, a}, {peer, bn, b}} {
		withNL(t, s.ns, func(nl *netlink.Handle) error {
			l, err := nl.LinkByName(s.name)
			if err != nil {
				return err
			}
			if err := nl.AddrAdd(l, &netlink.Addr{IPNet: prefixIPNet(s.addr)}); err != nil {
				return err
			}
			return nl.LinkSetUp(l)
		})
	}
	if gw.IsValid() {
		withNL(t, peer, func(nl *netlink.Handle) error {
			return nl.RouteAdd(&netlink.Route{Dst: prefixIPNet(netip.MustParsePrefix("0.0.0.0/0")), Gw: gw.AsSlice()})
		})
	}
}

// listenIn opens a TCP listener inside ns.
func listenIn(t *testing.T, ns *testenv.NetNS, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// seenFrom connects from ctr to ln and returns the source address the
// server saw.
func seenFrom(t *testing.T, ctr *testenv.NetNS, ln net.Listener) (netip.Addr, error) {
	t.Helper()
	type acc struct {
		c   net.Conn
		err error
	}
	got := make(chan acc, 1)
	go func() { c, err := ln.Accept(); got <- acc{c, err} }()
	var c net.Conn
	err := ctr.Do(func() (err error) {
		c, err = net.DialTimeout("tcp4", ln.Addr().String(), 2*time.Second)
		return err
	})
	if err != nil {
		ln.Close() // ends the Accept
		<-got
		return netip.Addr{}, err
	}
	defer c.Close()
	a := <-got
	if a.err != nil {
		return netip.Addr{}, a.err
	}
	defer a.c.Close()
	return a.c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(), nil
}

// hostNat: a container reaches a server outside the cluster with the
// host's address (masquerade), and one inside the cluster with its own;
// without hostNat the outside server's reply has no way back. DEL removes
// exactly the container's rule.
func TestHostNat(t *testing.T) {
	h := newTestHost(t)
	out := testenv.NewNetNS(t, "cnio")
	peer := testenv.NewNetNS(t, "cnip")
	// The host's uplink to the outside (no route back to 10.42/16 there),
	// and a link to a "remote container" inside the cluster CIDR.
	joinNS(t, h.ns, "drv-up", netip.MustParsePrefix("192.0.2.1/24"), out, "drv-o", netip.MustParsePrefix("192.0.2.2/24"), netip.Addr{})
	joinNS(t, h.ns, "drv-pr", netip.MustParsePrefix("10.42.9.254/24"), peer, "drv-p", netip.MustParsePrefix("10.42.9.1/24"), netip.MustParseAddr("10.42.9.254"))

	natConf := h.conf(map[string]any{"hostNat": true})
	ctr := testenv.NewNetNS(t, "cnic")
	res := h.mustAdd(t, "nat1", ctr, natConf)
	addr := resultAddr(t, res).Addr()
	plain := testenv.NewNetNS(t, "cnic")
	h.mustAdd(t, "plain1", plain, h.conf(nil))

	outside := listenIn(t, out, "192.0.2.2:0")
	inside := listenIn(t, peer, "10.42.9.1:0")
	src, err := seenFrom(t, ctr, outside)
	if err != nil || src != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("outside server saw %v, %v; want the host's 192.0.2.1 (masqueraded)", src, err)
	}
	src, err = seenFrom(t, ctr, inside)
	if err != nil || src != addr {
		t.Fatalf("cluster server saw %v, %v; want the container's own %v (never NATed inside the cluster)", src, err, addr)
	}
	if _, err := seenFrom(t, plain, listenIn(t, out, "192.0.2.2:0")); err == nil {
		t.Fatal("a container without hostNat reached the outside: the test proves nothing")
	}
	if err := h.check(t, "nat1", ctr, natConf, res); err != nil {
		t.Fatalf("CHECK: %v", err)
	}

	// The rule, as nft(8) would list it: tagged, one per container.
	nat, err := openNAT(h.ns.Handle())
	if err != nil {
		t.Fatal(err)
	}
	rules, ips, err := nat.rules("drvtest")
	if err != nil || len(rules) != 1 || ips[0] != addr {
		t.Fatalf("rules: got %d (%v), %v; want one for %v", len(rules), ips, err, addr)
	}
	comment, _ := userdata.GetString(rules[0].UserData, userdata.TypeComment)
	if want := "drover net=drvtest ip=" + addr.String() + " ctr=nat1 if=eth0"; comment != want {
		t.Fatalf("comment: got %q, want %q", comment, want)
	}
	if rules[0].Table.Name != natTable || rules[0].Table.Family != nftables.TableFamilyIPv4 {
		t.Fatalf("table: got %+v", rules[0].Table)
	}
	// Removing the rule by hand is what CHECK is for.
	if err := nat.remove("drvtest", func(netip.Addr) bool { return true }); err != nil {
		t.Fatal(err)
	}
	wantCNIError(t, h.check(t, "nat1", ctr, natConf, res), 999, "no masquerade rule for "+addr.String())
	if err := h.del(t, "nat1", ctr, natConf); err != nil {
		t.Fatal(err)
	}

	ctr2 := testenv.NewNetNS(t, "cnic")
	res2 := h.mustAdd(t, "nat2", ctr2, natConf)
	if ips := h.natIPs(t); !sameAddrs(ips, resultAddr(t, res2).Addr()) {
		t.Fatalf("NAT rules: got %v, want only nat2's", ips)
	}
	if err := h.del(t, "nat2", ctr2, natConf); err != nil {
		t.Fatal(err)
	}
	if ips := h.natIPs(t); len(ips) != 0 {
		t.Fatalf("NAT rules after DEL: %v", ips)
	}
	if err := h.del(t, "nat2", ctr2, natConf); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
}

func TestNATComment(t *testing.T) {
	r := natRule{network: "net-1", ip: netip.MustParseAddr("10.42.1.5"), containerID: strings.Repeat("a", 64), ifname: "eth0"}
	c := r.comment()
	if want := "drover net=net-1 ip=10.42.1.5 ctr=aaaaaaaaaaaa if=eth0"; c != want {
		t.Fatalf("got %q, want %q", c, want)
	}
	nw, ip, ok := parseComment(c)
	if !ok || nw != "net-1" || ip != r.ip {
		t.Fatalf("parse: got %q %v %v", nw, ip, ok)
	}
	for _, bad := range []string{"", "drover", "drover net=x", "other net=x ip=10.0.0.1", "drover ip=10.0.0.1 x"} {
		if _, _, ok := parseComment(bad); ok {
			t.Fatalf("%q parsed as drover's", bad)
		}
	}
}
