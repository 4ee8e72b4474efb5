package firewall_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/drovernet/drover/firewall"
	"github.com/drovernet/drover/lab"
	"github.com/drovernet/drover/testenv"
)

// fwLab is a router namespace R with three neighbours: an underlay host O
// (192.0.2.200, routing 10.42.0.0/16 via R), a container C behind R's
// "bridge" (10.42.1.2) and a host T behind R's "TUN" (10.42.2.2, standing
// for a remote container whose packets the router decapsulated). The
// filter matches interface names, so veths named as the TUN and bridge
// stand in for them.
type fwLab struct {
	R, O, C, T *testenv.NetNS
	spec       firewall.Spec
}

const (
	fwTUN    = "drv-tun"
	fwBridge = "drv-br"
)

func newFwLab(t *testing.T) *fwLab {
	t.Helper()
	testenv.NeedRoot(t)
	l := &fwLab{
		R: testenv.NewNetNS(t, "fwr"), O: testenv.NewNetNS(t, "fwo"),
		C: testenv.NewNetNS(t, "fwc"), T: testenv.NewNetNS(t, "fwt"),
		spec: firewall.Spec{Protected: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}, TUN: fwTUN, Bridge: fwBridge},
	}
	// Forwarding on, reverse-path filtering off (as on many hosts), so
	// only the filter stands between a forged source and the container.
	err := l.R.Do(func() error {
		for k, v := range map[string]string{"ipv4/ip_forward": "1", "ipv4/conf/all/rp_filter": "0", "ipv4/conf/default/rp_filter": "0"} {
			if err := os.WriteFile("/proc/sys/net/"+k, []byte(v), 0); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	link(t, l.R, "drv-up", "192.0.2.1/24", l.O, "eth0", "192.0.2.200/24", "")
	link(t, l.R, fwBridge, "10.42.1.1/24", l.C, "eth0", "10.42.1.2/24", "10.42.1.1")
	link(t, l.R, fwTUN, "10.42.2.1/24", l.T, "eth0", "10.42.2.2/24", "10.42.2.1")
	withNL(t, l.O, func(h *netlink.Handle) error {
		_, dst, _ := net.ParseCIDR("10.42.0.0/16")
		return h.RouteAdd(&netlink.Route{Dst: dst, Gw: net.ParseIP("192.0.2.1")})
	})
	return l
}

func withNL(t *testing.T, ns *testenv.NetNS, fn func(*netlink.Handle) error) {
	t.Helper()
	h, err := ns.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := fn(h); err != nil {
		t.Fatalf("%s: %v", ns.Name, err)
	}
}

// link joins a and b with a veth, addresses both ends and, with gw, gives
// b a default route.
func link(t *testing.T, a *testenv.NetNS, an, aAddr string, b *testenv.NetNS, bn, bAddr, gw string) {
	t.Helper()
	withNL(t, a, func(h *netlink.Handle) error {
		return h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: an}, PeerName: bn, PeerNamespace: netlink.NsFd(int(b.Handle()))})
	})
	for _, end := range []struct {
		ns         *testenv.NetNS
		name, addr string
	}{{a, an, aAddr}, {b, bn, bAddr}} {
		withNL(t, end.ns, func(h *netlink.Handle) error {
			l, err := h.LinkByName(end.name)
			if err != nil {
				return err
			}
			ad, err := netlink.ParseAddr(end.addr)
			if err != nil {
				return err
			}
			if err := h.AddrAdd(l, ad); err != nil {
				return err
			}
			return h.LinkSetUp(l)
		})
	}
	if gw != "" {
		withNL(t, b, func(h *netlink.Handle) error {
			return h.RouteAdd(&netlink.Route{Gw: net.ParseIP(gw)})
		})
	}
}

// udpIn opens a UDP socket in ns bound to addr.
func udpIn(t *testing.T, ns *testenv.NetNS, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := ns.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t *testing.T, from *net.UDPConn, to, msg string) {
	t.Helper()
	if _, err := from.WriteToUDPAddrPort([]byte(msg), netip.MustParseAddrPort(to)); err != nil {
		t.Fatal(err)
	}
}

// recv returns the payloads c receives within d, or the first n.
func recv(c *net.UDPConn, d time.Duration, n int) []string {
	var got []string
	buf := make([]byte, 2048)
	deadline := time.Now().Add(d)
	for {
		_ = c.SetReadDeadline(deadline)
		k, err := c.Read(buf)
		if err != nil {
			return got
		}
		got = append(got, string(buf[:k]))
		if len(got) == n {
			return got
		}
	}
}

func wantRecv(t *testing.T, c *net.UDPConn, what string, want ...string) {
	t.Helper()
	d := 300 * time.Millisecond
	if len(want) > 0 {
		d = 2 * time.Second
	}
	got := recv(c, d, len(want))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s: got %q, want %q", what, got, want)
	}
}

func drops(t *testing.T, f *firewall.Filter) uint64 {
	t.Helper()
	p, b, err := f.Drops()
	if err != nil {
		t.Fatal(err)
	}
	if p > 0 && b < 28*p {
		t.Errorf("drop counter: %d packets but %d bytes", p, b)
	}
	return p
}

// TestFilterForward installs the filter into a namespace and sends every
// kind of packet the filter decides on through it.
func TestFilterForward(t *testing.T) {
	l := newFwLab(t)
	ctr := udpIn(t, l.C, "10.42.1.2:7000")
	tun := udpIn(t, l.T, "10.42.2.2:7000")
	out := udpIn(t, l.O, "192.0.2.200:7000")

	// Before the filter, the underlay reaches the container: the hole.
	send(t, out, "10.42.1.2:7000", "before")
	wantRecv(t, ctr, "underlay → container without the filter", "before")

	f, err := firewall.InstallIn(l.R.Handle(), l.spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Remove() })

	send(t, out, "10.42.1.2:7000", "underlay")
	send(t, out, "10.42.2.2:7000", "underlay-to-tun")
	wantRecv(t, ctr, "underlay → container")
	wantRecv(t, tun, "underlay → remote container (into the TUN)")
	if got := drops(t, f); got != 2 {
		t.Errorf("drops after 2 underlay packets: got %d, want 2", got)
	}

	// A forged source inside another host's block.
	if err := lab.SendRawUDP(l.O, netip.MustParseAddrPort("10.42.2.2:7000"), netip.MustParseAddrPort("10.42.1.2:7000"), []byte("forged")); err != nil {
		t.Fatal(err)
	}
	wantRecv(t, ctr, "forged source → container")

	// Out of the tunnel, and from the container to the tunnel.
	send(t, tun, "10.42.1.2:7000", "from-tun")
	wantRecv(t, ctr, "TUN → container", "from-tun")
	send(t, ctr, "10.42.2.2:7000", "from-bridge")
	wantRecv(t, tun, "container → TUN", "from-bridge")

	// The flow 10.42.2.2:7000 ↔ 10.42.1.2:7000 is now established: a
	// forged packet with its tuple from the underlay is still dropped.
	if err := lab.SendRawUDP(l.O, netip.MustParseAddrPort("10.42.2.2:7000"), netip.MustParseAddrPort("10.42.1.2:7000"), []byte("forged-established")); err != nil {
		t.Fatal(err)
	}
	wantRecv(t, ctr, "forged source on a live flow → container")

	// A reply to the container's own flow to the underlay (conntrack).
	send(t, ctr, "192.0.2.200:7000", "hello")
	wantRecv(t, out, "container → underlay", "hello")
	send(t, out, "10.42.1.2:7000", "reply")
	wantRecv(t, ctr, "underlay reply → container", "reply")

	if got := drops(t, f); got != 4 {
		t.Errorf("drops: got %d, want 4", got)
	}

	// A host port: DNAT 192.0.2.1:8080 → 10.42.1.2:7000, as portmap does.
	dnat(t, l.R, "192.0.2.1", 8080, "10.42.1.2", 7000)
	out2 := udpIn(t, l.O, "192.0.2.200:7001")
	send(t, out2, "192.0.2.1:8080", "hostport")
	wantRecv(t, ctr, "underlay → host port (DNAT) → container", "hostport")

	if path, err := exec.LookPath("nft"); err == nil {
		b, err := exec.Command("ip", "netns", "exec", l.R.Name, path, "list", "table", "inet", firewall.Table).CombinedOutput()
		if err != nil {
			t.Fatalf("nft list: %v\n%s", err, b)
		}
		s := string(b)
		t.Logf("nft list table inet %s:\n%s", firewall.Table, s)
		for _, want := range []string{"hook forward priority filter; policy accept;",
			`iifname "drv-tun" accept`, `iifname "drv-br" accept`, "ct status dnat accept", "ct state established,related accept",
			`counter name "forward_drops" drop`, "packets 4 bytes"} {
			if !strings.Contains(s, want) {
				t.Errorf("nft list: no %q", want)
			}
		}
	} else {
		t.Log("nft not installed: the table is checked through netlink only")
	}

	// Installed again (a restarted daemon): replaced, not doubled.
	f2, err := firewall.InstallIn(l.R.Handle(), l.spec)
	if err != nil {
		t.Fatal(err)
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(l.R.Handle())))
	if err != nil {
		t.Fatal(err)
	}
	rules := 0
	for _, ch := range f2.Ruleset().Chains {
		rs, err := c.GetRules(f2.Ruleset().Table, ch)
		if err != nil {
			t.Fatal(err)
		}
		rules += len(rs)
	}
	if want := len(f2.Ruleset().Rules); rules != want {
		t.Errorf("after a second install: %d rules, want %d", rules, want)
	}
	out3 := udpIn(t, l.O, "192.0.2.200:7002") // out:7000 has a live flow to the container
	send(t, out3, "10.42.1.2:7000", "again")
	wantRecv(t, ctr, "underlay → container after reinstall")
	if got := drops(t, f2); got != 1 {
		t.Errorf("drops after reinstall: got %d, want 1 (a new counter)", got)
	}

	// Removed: the table is gone and the hole is back (so the checks above
	// can fail). Removing twice is fine.
	if err := f2.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := f.Remove(); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == firewall.Table {
			t.Errorf("table %s still there after Remove", tb.Name)
		}
	}
	if _, _, err := f2.Drops(); err == nil {
		t.Error("Drops after Remove: got nil error")
	}
	send(t, out, "10.42.1.2:7000", "after")
	wantRecv(t, ctr, "underlay → container after Remove", "after")
}

// dnat adds `ip daddr addr udp dport port dnat to to:toPort` in a
// prerouting nat chain of table ip drv_test, in ns.
func dnat(t *testing.T, ns *testenv.NetNS, addr string, port uint16, to string, toPort uint16) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Handle())))
	if err != nil {
		t.Fatal(err)
	}
	tb := c.AddTable(&nftables.Table{Name: "drv_test", Family: nftables.TableFamilyIPv4})
	ch := c.AddChain(&nftables.Chain{Name: "prerouting", Table: tb, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	c.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: netip.MustParseAddr(addr).AsSlice()},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.Immediate{Register: 1, Data: netip.MustParseAddr(to).AsSlice()},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(toPort)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2},
	}})
	if err := c.Flush(); err != nil {
		t.Fatalf("dnat rule: %v", err)
	}
}

// TestFilterNeedsValidSpec: nothing is installed for a bad spec.
func TestFilterNeedsValidSpec(t *testing.T) {
	ns := testenv.NewNetNS(t, "fwv")
	_, err := firewall.InstallIn(ns.Handle(), firewall.Spec{TUN: "drover0"})
	if err == nil {
		t.Fatal("got nil error")
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Handle())))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTables()
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if len(tables) != 0 {
		t.Errorf("tables after a failed install: %v", tables)
	}
}

// macOf is the MAC address of the interface name in ns.
func macOf(t *testing.T, ns *testenv.NetNS, name string) [6]byte {
	t.Helper()
	var mac [6]byte
	withNL(t, ns, func(h *netlink.Handle) error {
		ln, err := h.LinkByName(name)
		if err == nil {
			mac = [6]byte(ln.Attrs().HardwareAddr)
		}
		return err
	})
	return mac
}

// TestFilterDirect: with an underlay interface, the kernel admits a
// direct member's container sources from that member's MAC only, and
// SetDirect replaces the admitted sources in one step.
func TestFilterDirect(t *testing.T) {
	l := newFwLab(t)
	ctr := udpIn(t, l.C, "10.42.1.2:7000")
	spec := l.spec
	spec.Underlay = "drv-up"
	f, err := firewall.InstallIn(l.R.Handle(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Remove() })
	omac := macOf(t, l.O, "eth0")
	forge := func(src, msg string) {
		t.Helper()
		if err := lab.SendRawUDP(l.O, netip.MustParseAddrPort(src), netip.MustParseAddrPort("10.42.1.2:7000"), []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	forge("10.42.9.5:7000", "before")
	wantRecv(t, ctr, "member block before SetDirect")

	// O is now the member holding 10.42.9.0/24.
	if err := f.SetDirect([]firewall.Source{{Prefix: netip.MustParsePrefix("10.42.9.0/24"), MAC: omac}}); err != nil {
		t.Fatal(err)
	}
	forge("10.42.9.5:7000", "direct")
	wantRecv(t, ctr, "member block from its MAC", "direct")
	forge("10.42.8.5:7000", "other-block")
	wantRecv(t, ctr, "another block from the member's MAC")
	// A second prefix length (a set and a rule of its own), then the
	// first length alone again (the other set removed).
	if err := f.SetDirect([]firewall.Source{
		{Prefix: netip.MustParsePrefix("10.42.9.0/24"), MAC: omac},
		{Prefix: netip.MustParsePrefix("10.42.8.7/32"), MAC: omac},
	}); err != nil {
		t.Fatal(err)
	}
	forge("10.42.8.7:7000", "host-route")
	wantRecv(t, ctr, "member /32 from its MAC", "host-route")
	forge("10.42.8.5:7000", "beside-host-route")
	wantRecv(t, ctr, "an address beside the member's /32")
	forge("10.42.9.6:7000", "direct-2")
	wantRecv(t, ctr, "member block beside a /32", "direct-2")
	if err := f.SetDirect([]firewall.Source{{Prefix: netip.MustParsePrefix("10.42.9.0/24"), MAC: omac}}); err != nil {
		t.Fatal(err)
	}
	forge("10.42.8.7:7000", "host-route-gone")
	wantRecv(t, ctr, "the /32 after it is withdrawn")

	// The same block announced with another MAC: O's packets are no
	// longer the member's.
	other := omac
	other[5] ^= 0xff
	if err := f.SetDirect([]firewall.Source{{Prefix: netip.MustParsePrefix("10.42.9.0/24"), MAC: other}}); err != nil {
		t.Fatal(err)
	}
	forge("10.42.9.5:7001", "wrong-mac")
	wantRecv(t, ctr, "member block from another MAC")
	if err := f.SetDirect(nil); err != nil {
		t.Fatal(err)
	}
	forge("10.42.9.5:7002", "withdrawn")
	wantRecv(t, ctr, "member block after the member is withdrawn")
	if got := drops(t, f); got != 6 {
		t.Errorf("drops: got %d, want 6", got)
	}

	if path, err := exec.LookPath("nft"); err == nil {
		_ = f.SetDirect([]firewall.Source{{Prefix: netip.MustParsePrefix("10.42.9.0/24"), MAC: omac}})
		b, err := exec.Command("ip", "netns", "exec", l.R.Name, path, "list", "table", "inet", firewall.Table).CombinedOutput()
		if err != nil {
			t.Fatalf("nft list: %v\n%s", err, b)
		}
		t.Logf("nft list table inet %s:\n%s", firewall.Table, b)
		for _, want := range []string{`iifname "drv-up" jump ` + firewall.UnderlayChain,
			fmt.Sprintf(`ip saddr & 255.255.255.0 . ether saddr @%s_24 accept`, firewall.DirectSet4)} {
			if !strings.Contains(string(b), want) {
				t.Errorf("nft list: no %q", want)
			}
		}
		if !strings.Contains(string(b), "10.42.9.0 . "+net.HardwareAddr(omac[:]).String()) {
			t.Errorf("nft list: no element for 10.42.9.0 . %s", net.HardwareAddr(omac[:]))
		}
	}
	// Without an underlay interface there is nothing to admit into.
	g, err := firewall.InstallIn(l.R.Handle(), l.spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.SetDirect(nil); !errors.Is(err, firewall.ErrNoUnderlay) {
		t.Errorf("SetDirect without an underlay: got %v, want ErrNoUnderlay", err)
	}
}

// TestFilterDirectNoTrack: with NoTrack, a direct member's packets to a
// container, and the container's to the member's containers, pass
// untracked (a counter on `ct state untracked` in a table of the test's
// sees them); everything else is tracked and filtered as before.
func TestFilterDirectNoTrack(t *testing.T) {
	l := newFwLab(t)
	ctr := udpIn(t, l.C, "10.42.1.2:7000")
	spec := l.spec
	spec.Underlay, spec.NoTrack = "drv-up", true
	f, err := firewall.InstallIn(l.R.Handle(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Remove() })
	nftPath, err := exec.LookPath("nft")
	if err != nil {
		t.Skip("nft not installed: the untracked counter is read with it")
	}
	nft := func(args ...string) string {
		t.Helper()
		b, err := exec.Command("ip", append([]string{"netns", "exec", l.R.Name, nftPath}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("nft %v: %v\n%s", args, err, b)
		}
		return string(b)
	}
	nft("add", "table", "inet", "drv_t")
	nft("add", "chain", "inet", "drv_t", "f", "{ type filter hook forward priority 10; }")
	nft("add", "rule", "inet", "drv_t", "f", "ct", "state", "untracked", "counter")
	untracked := func() int {
		var n int
		for _, ln := range strings.Split(nft("list", "chain", "inet", "drv_t", "f"), "\n") {
			if i := strings.Index(ln, "counter packets "); i >= 0 {
				fmt.Sscanf(ln[i:], "counter packets %d", &n)
			}
		}
		return n
	}
	omac := macOf(t, l.O, "eth0")
	// Two adjacent blocks of the member: merged into one range of the
	// destination set.
	err = f.SetDirect([]firewall.Source{
		{Prefix: netip.MustParsePrefix("10.42.9.0/24"), MAC: omac},
		{Prefix: netip.MustParsePrefix("10.42.10.0/24"), MAC: omac},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, src := range []string{"10.42.9.5:7000", "10.42.10.5:7000"} {
		if err := lab.SendRawUDP(l.O, netip.MustParseAddrPort(src), netip.MustParseAddrPort("10.42.1.2:7000"), []byte(fmt.Sprint("direct", i))); err != nil {
			t.Fatal(err)
		}
		wantRecv(t, ctr, "member block "+src+" from its MAC", fmt.Sprint("direct", i))
	}
	if got := untracked(); got != 2 {
		t.Errorf("untracked packets after 2 from the member: got %d, want 2", got)
	}
	// The container to the member's container, routed to the member as
	// drover routes it: untracked too (counted on its way out).
	withNL(t, l.R, func(h *netlink.Handle) error {
		_, dst, _ := net.ParseCIDR("10.42.9.0/24")
		return h.RouteAdd(&netlink.Route{Dst: dst, Gw: net.ParseIP("192.0.2.200")})
	})
	send(t, ctr, "10.42.9.5:7000", "to-member")
	deadline := time.Now().Add(2 * time.Second)
	for untracked() != 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := untracked(); got != 3 {
		t.Errorf("untracked packets after the container's to the member: got %d, want 3", got)
	}
	// From the member's MAC with a source outside its blocks: tracked
	// and dropped, as before.
	if err := lab.SendRawUDP(l.O, netip.MustParseAddrPort("10.42.8.5:7001"), netip.MustParseAddrPort("10.42.1.2:7000"), []byte("forged")); err != nil {
		t.Fatal(err)
	}
	wantRecv(t, ctr, "another block from the member's MAC")
	if got := untracked(); got != 3 {
		t.Errorf("untracked packets after a packet that is not a direct member's: got %d, want still 3", got)
	}
	// The member's block from another MAC (a station on the segment
	// forging it): the raw chain looks at the prefix only and lets it
	// pass untracked, and the forward chain, which checks the MAC, drops
	// it; untracked, it cannot pass as a reply either.
	before, _, err := f.Drops()
	if err != nil {
		t.Fatal(err)
	}
	withNL(t, l.O, func(h *netlink.Handle) error {
		eth, err := h.LinkByName("eth0")
		if err != nil {
			return err
		}
		return h.LinkSetHardwareAddr(eth, net.HardwareAddr{0x02, 0xdd, 0, 0, 0, 0x66})
	})
	if err := lab.SendRawUDP(l.O, netip.MustParseAddrPort("10.42.9.5:7000"), netip.MustParseAddrPort("10.42.1.2:7000"), []byte("forged-mac")); err != nil {
		t.Fatal(err)
	}
	wantRecv(t, ctr, "the member's block from another MAC")
	if after, _, err := f.Drops(); err != nil || after != before+1 {
		t.Errorf("drops after the member's block from another MAC: got %d (%v), want %d", after, err, before+1)
	}
	t.Logf("nft list table inet %s:\n%s", firewall.Table, nft("list", "table", "inet", firewall.Table))
}
