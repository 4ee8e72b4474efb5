package cni

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/drovernet/drover/cni/ipam"
	"github.com/drovernet/drover/lab"
	"github.com/drovernet/drover/testenv"
)

func ping(t testing.TB, ctr *testenv.NetNS, dst netip.Addr) error {
	t.Helper()
	c := &lab.Container{NS: ctr}
	_, err := c.Ping(context.Background(), dst, 3*time.Second)
	return err
}

// ADD gives an address from the daemon's block with the daemon's MTU, the
// container reaches the gateway, CHECK passes, tampering makes it fail, DEL
// removes the veth and frees the address, and DEL again succeeds, also
// once the namespace is gone.
func TestAddCheckDel(t *testing.T) {
	h := newTestHost(t)
	ctr := testenv.NewNetNS(t, "cnic")
	conf := h.conf(nil)
	res := h.mustAdd(t, "ctr1", ctr, conf)

	addr := resultAddr(t, res)
	block := netip.MustParsePrefix(testBlock)
	gw := netip.MustParseAddr("10.42.3.1")
	if !block.Contains(addr.Addr()) || addr.Bits() != 24 || addr.Addr() == gw || addr.Addr() == block.Addr() {
		t.Fatalf("address %v: want a /24 host address of %s other than the gateway", addr, block)
	}
	if got := res.IPs[0].Gateway.String(); got != gw.String() {
		t.Fatalf("gateway: got %s, want %s", got, gw)
	}
	if n := len(res.Interfaces); n != 3 || *res.IPs[0].Interface != 2 {
		t.Fatalf("interfaces: got %d and IP on %d, want 3 (bridge, host veth, container) and 2", n, *res.IPs[0].Interface)
	}
	ci := res.Interfaces[2]
	if ci.Name != "eth0" || ci.Sandbox != ctr.Path() || ci.Mtu != 1438 || ci.Mac != containerMAC(addr.Addr()).String() {
		t.Fatalf("container interface: got %+v", ci)
	}
	if res.Interfaces[0].Name != "drv-br0" || res.Interfaces[1].Name != vethName("drvtest", "ctr1", "eth0") {
		t.Fatalf("host interfaces: got %v, %v", res.Interfaces[0], res.Interfaces[1])
	}
	var routes []string
	for _, r := range res.Routes {
		routes = append(routes, r.Dst.String()+" via "+r.GW.String())
	}
	if want := "10.42.0.0/16 via 10.42.3.1,0.0.0.0/0 via 10.42.3.1"; strings.Join(routes, ",") != want {
		t.Fatalf("routes: got %v, want %s", routes, want)
	}
	if l := ctrLink(t, ctr, "eth0"); l.Attrs().MTU != 1438 {
		t.Fatalf("container MTU: got %d, want 1438 (the daemon's tun_mtu)", l.Attrs().MTU)
	}
	if l := ctrLink(t, h.ns, "drv-br0"); l.Type() != "bridge" {
		t.Fatalf("drv-br0 is a %s", l.Type())
	}
	if err := ping(t, ctr, gw); err != nil {
		t.Fatalf("container → gateway %s: %v", gw, err)
	}
	if added, _ := h.daemon.notices(); len(added) != 1 || added[0].IP != addr.Addr().String() || added[0].Bridge != "drv-br0" || added[0].ContainerID != "ctr1" {
		t.Fatalf("daemon notices: got %+v, want one for %s", added, addr.Addr())
	}
	if err := h.check(t, "ctr1", ctr, conf, res); err != nil {
		t.Fatalf("CHECK after ADD: %v", err)
	}

	// Tamper: remove the container's address.
	nl, err := ctr.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	if err := nl.AddrDel(ctrLink(t, ctr, "eth0"), &netlink.Addr{IPNet: prefixIPNet(addr)}); err != nil {
		t.Fatal(err)
	}
	wantCNIError(t, h.check(t, "ctr1", ctr, conf, res), types.ErrInternal, "lacks address "+addr.String())

	if err := h.del(t, "ctr1", ctr, conf); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if v := h.hostVeths(t); len(v) != 0 {
		t.Fatalf("host veths after DEL: %v", v)
	}
	if _, err := nl.LinkByName("eth0"); err == nil {
		t.Fatal("eth0 still in the container after DEL")
	}
	if rs, _ := h.store(t).List(); len(rs) != 0 {
		t.Fatalf("reservations after DEL: %+v", rs)
	}
	if _, deleted := h.daemon.notices(); !slices.Equal(deleted, []string{addr.Addr().String()}) {
		t.Fatalf("daemon DELETE notices: got %v, want [%s]", deleted, addr.Addr())
	}
	if err := h.del(t, "ctr1", ctr, conf); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
	ctr.Close()
	if err := h.del(t, "ctr1", ctr, conf); err != nil {
		t.Fatalf("DEL with the namespace gone: %v", err)
	}
	// And CHECK with the namespace gone is "unknown container".
	wantCNIError(t, h.check(t, "ctr1", ctr, conf, res), types.ErrUnknownContainer, "does not exist")
}

// CHECK notices each kind of tampering.
func TestCheckTampering(t *testing.T) {
	h := newTestHost(t)
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, ctr *testenv.NetNS, addr netip.Prefix)
		want   string
	}{
		{"mtu", func(t *testing.T, ctr *testenv.NetNS, _ netip.Prefix) {
			withNL(t, ctr, func(nl *netlink.Handle) error { return nl.LinkSetMTU(ctrLink(t, ctr, "eth0"), 1300) })
		}, "MTU 1300, want 1438"},
		{"down", func(t *testing.T, ctr *testenv.NetNS, _ netip.Prefix) {
			withNL(t, ctr, func(nl *netlink.Handle) error { return nl.LinkSetDown(ctrLink(t, ctr, "eth0")) })
		}, "eth0 is down"},
		{"default route", func(t *testing.T, ctr *testenv.NetNS, _ netip.Prefix) {
			withNL(t, ctr, func(nl *netlink.Handle) error {
				return nl.RouteDel(&netlink.Route{LinkIndex: ctrLink(t, ctr, "eth0").Attrs().Index, Dst: prefixIPNet(netip.MustParsePrefix("0.0.0.0/0")), Gw: net.ParseIP("10.42.3.1")})
			})
		}, "lacks route 0.0.0.0/0"},
		{"host end off the bridge", func(t *testing.T, ctr *testenv.NetNS, _ netip.Prefix) {
			withNL(t, h.ns, func(nl *netlink.Handle) error {
				return nl.LinkSetNoMaster(ctrLink(t, h.ns, vethName("drvtest", ctr.Name, "eth0")))
			})
		}, "is not on bridge"},
		{"reservation", func(t *testing.T, ctr *testenv.NetNS, _ netip.Prefix) {
			h.store(t).Release(ipamOwner(ctr.Name))
		}, "is not reserved"},
		{"interface gone", func(t *testing.T, ctr *testenv.NetNS, _ netip.Prefix) {
			withNL(t, ctr, func(nl *netlink.Handle) error { return nl.LinkDel(ctrLink(t, ctr, "eth0")) })
		}, "eth0 in"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctr := testenv.NewNetNS(t, "cnic")
			conf := h.conf(nil)
			res := h.mustAdd(t, ctr.Name, ctr, conf)
			t.Cleanup(func() { h.del(t, ctr.Name, ctr, conf) })
			if err := h.check(t, ctr.Name, ctr, conf, res); err != nil {
				t.Fatalf("CHECK before tampering: %v", err)
			}
			tc.tamper(t, ctr, resultAddr(t, res))
			wantCNIError(t, h.check(t, ctr.Name, ctr, conf, res), types.ErrInternal, tc.want)
		})
	}
}

func withNL(t testing.TB, ns *testenv.NetNS, fn func(*netlink.Handle) error) {
	t.Helper()
	nl, err := ns.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	if err := fn(nl); err != nil {
		t.Fatal(err)
	}
}

// Flat: the address carries the cluster prefix length, so the whole
// cluster is on-link (no route for it); the default route is separate.
func TestFlatModel(t *testing.T) {
	h := newTestHost(t)
	for _, tc := range []struct {
		name      string
		over      map[string]any
		bits      int
		routes    string
		onLinkDst string // a destination the container must see as on-link ("" none)
	}{
		{"flat with default gateway", map[string]any{"flat": true}, 16, "0.0.0.0/0", "10.42.9.9"},
		{"flat only", map[string]any{"flat": true, "isDefaultGateway": false}, 16, "", "10.42.9.9"},
		{"routed without default gateway", map[string]any{"isDefaultGateway": false}, 24, "10.42.0.0/16", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctr := testenv.NewNetNS(t, "cnic")
			conf := h.conf(tc.over)
			res := h.mustAdd(t, ctr.Name, ctr, conf)
			t.Cleanup(func() { h.del(t, ctr.Name, ctr, conf) })
			if got := resultAddr(t, res).Bits(); got != tc.bits {
				t.Fatalf("prefix length: got /%d, want /%d", got, tc.bits)
			}
			var dsts []string
			for _, r := range res.Routes {
				dsts = append(dsts, r.Dst.String())
			}
			if strings.Join(dsts, ",") != tc.routes {
				t.Fatalf("routes: got %v, want %q", dsts, tc.routes)
			}
			if tc.onLinkDst != "" {
				nl, _ := ctr.Netlink()
				defer nl.Close()
				rs, err := nl.RouteGet(net.ParseIP(tc.onLinkDst))
				if err != nil || len(rs) == 0 || rs[0].Gw != nil {
					t.Fatalf("route to %s: got %+v, %v; want on-link (no gateway)", tc.onLinkDst, rs, err)
				}
			}
			if err := ping(t, ctr, netip.MustParseAddr("10.42.3.1")); err != nil {
				t.Fatalf("ping gateway: %v", err)
			}
			if err := h.check(t, ctr.Name, ctr, conf, res); err != nil {
				t.Fatalf("CHECK: %v", err)
			}
		})
	}
}

// Configured mtu and bridgeSubnet make the daemon unnecessary; without
// them a missing daemon is "try again later", and STATUS says "not
// available".
func TestDaemonDown(t *testing.T) {
	h := newTestHost(t)
	ctr := testenv.NewNetNS(t, "cnic")
	down := h.conf(map[string]any{"daemonSocket": "/nonexistent/drover.sock"})
	_, err := h.add(t, "c1", ctr, down)
	wantCNIError(t, err, types.ErrTryAgainLater, "drover daemon not reachable at /nonexistent/drover.sock")
	wantCNIError(t, err, types.ErrTryAgainLater, "mtu and bridgeSubnet are not configured")
	wantCNIError(t, h.p.status(context.Background(), parse(t, mustJSON(t, down))), types.ErrPluginNotAvailable, "not reachable")
	if links := linksIn(t, h.ns, "drv"); len(links) != 0 {
		t.Fatalf("a failed ADD left links: %v", links)
	}

	onlyMTU := h.conf(map[string]any{"daemonSocket": "/nonexistent/drover.sock", "mtu": 1400})
	_, err = h.add(t, "c1", ctr, onlyMTU)
	wantCNIError(t, err, types.ErrTryAgainLater, "bridgeSubnet is not configured")

	standalone := h.conf(map[string]any{"daemonSocket": "/nonexistent/drover.sock", "mtu": 1400, "bridgeSubnet": "10.42.5.0/24"})
	res := h.mustAdd(t, "c1", ctr, standalone)
	if a := resultAddr(t, res); !netip.MustParsePrefix("10.42.5.0/24").Contains(a.Addr()) || res.Interfaces[2].Mtu != 1400 {
		t.Fatalf("got %v mtu %d, want an address of 10.42.5.0/24 and MTU 1400", a, res.Interfaces[2].Mtu)
	}
	if err := h.p.status(context.Background(), parse(t, mustJSON(t, standalone))); err != nil {
		t.Fatalf("STATUS without daemon but with a full config: %v", err)
	}
	if err := h.del(t, "c1", ctr, standalone); err != nil {
		t.Fatal(err)
	}
}

// A configured subnet outside the daemon's block would hand the same
// addresses out on two hosts: refused.
func TestSubnetOutsideBlock(t *testing.T) {
	h := newTestHost(t)
	ctr := testenv.NewNetNS(t, "cnic")
	_, err := h.add(t, "c1", ctr, h.conf(map[string]any{"bridgeSubnet": "10.42.0.0/16"}))
	wantCNIError(t, err, types.ErrInvalidNetworkConfig, "bridgeSubnet: 10.42.0.0/16 is not inside this node's block(s) [10.42.3.0/24]")
	h.daemon.mu.Lock()
	h.daemon.status["tun_mtu"] = 0
	h.daemon.mu.Unlock()
	_, err = h.add(t, "c1", ctr, h.conf(nil))
	wantCNIError(t, err, types.ErrTryAgainLater, "reports no tun_mtu yet")
}

func TestStatus(t *testing.T) {
	h := newTestHost(t)
	conf := h.conf(map[string]any{"ipam": map[string]any{"dataDir": h.dataDir, "rangeStart": "10.42.3.10", "rangeEnd": "10.42.3.10"}})
	if err := h.p.status(context.Background(), parse(t, mustJSON(t, conf))); err != nil {
		t.Fatalf("STATUS: %v", err)
	}
	ctr := testenv.NewNetNS(t, "cnic")
	h.mustAdd(t, "c1", ctr, conf)
	wantCNIError(t, h.p.status(context.Background(), parse(t, mustJSON(t, conf))), types.ErrPluginNotAvailable, "no free address")
	ctr2 := testenv.NewNetNS(t, "cnic")
	_, err := h.add(t, "c2", ctr2, conf)
	wantCNIError(t, err, types.ErrTryAgainLater, "no free address")
}

// A daemon that refuses the address fails the ADD (and it is undone): 409
// as an internal error, 503 (no block yet) as try again later; one without
// the endpoint (404) does not. The notice names the reservation directory.
func TestDaemonNotice(t *testing.T) {
	h := newTestHost(t)
	ctr := testenv.NewNetNS(t, "cnic")
	for _, tc := range []struct {
		status int
		code   uint
		msg    string
	}{
		{409, types.ErrInternal, "daemon refused the address"},
		{503, types.ErrTryAgainLater, "drover daemon not ready"},
	} {
		h.daemon.local = tc.status
		_, err := h.add(t, "c1", ctr, h.conf(nil))
		wantCNIError(t, err, tc.code, tc.msg)
		if v := h.hostVeths(t); len(v) != 0 {
			t.Fatalf("%d: veths left: %v", tc.status, v)
		}
		if rs, _ := h.store(t).List(); len(rs) != 0 {
			t.Fatalf("%d: reservations left: %v", tc.status, rs)
		}
	}
	h.daemon.local = 404
	h.mustAdd(t, "c1", ctr, h.conf(nil))
	h.daemon.local = 0
	ctr2 := testenv.NewNetNS(t, "cnic")
	h.mustAdd(t, "c2", ctr2, h.conf(nil))
	added, _ := h.daemon.notices()
	if len(added) != 1 || added[0].ContainerID != "c2" || added[0].DataDir != h.dataDir || added[0].Network != "drvtest" {
		t.Fatalf("notices: got %+v, want one for c2 naming data_dir %s", added, h.dataDir)
	}
}

// A failure after any step of ADD leaves nothing of the attachment behind:
// no reservation, no veth, no NAT rule, no daemon notice.
func TestAddUndo(t *testing.T) {
	h := newTestHost(t)
	conf := h.conf(map[string]any{"hostNat": true})
	for _, step := range []string{"bridge", "reserved", "veth", "configured", "nat", "done"} {
		t.Run(step, func(t *testing.T) {
			ctr := testenv.NewNetNS(t, "cnic")
			boom := errors.New("injected failure")
			h.p.hook = func(s string) error {
				if s == step {
					return boom
				}
				return nil
			}
			defer func() { h.p.hook = nil }()
			_, err := h.add(t, "c1", ctr, conf)
			if !errors.Is(err, boom) {
				t.Fatalf("got %v, want the injected failure", err)
			}
			if v := h.hostVeths(t); len(v) != 0 {
				t.Fatalf("veths left: %v", v)
			}
			if l := linksIn(t, ctr, "eth0"); len(l) != 0 {
				t.Fatalf("container interface left: %v", l)
			}
			if rs, _ := h.store(t).List(); len(rs) != 0 {
				t.Fatalf("reservations left: %v", rs)
			}
			if ips := h.natIPs(t); len(ips) != 0 {
				t.Fatalf("NAT rules left: %v", ips)
			}
			added, deleted := h.daemon.notices()
			if len(added) != len(deleted) {
				t.Fatalf("daemon told of %d addresses, of %d gone", len(added), len(deleted))
			}
			// The bridge is the node's and stays.
			if step != "bridge" && len(linksIn(t, h.ns, "drv-br0")) != 1 {
				t.Fatal("bridge removed")
			}
		})
	}
}

// GC releases what the runtime no longer lists, with its veth and NAT
// rule, and keeps the rest working.
func TestGC(t *testing.T) {
	h := newTestHost(t)
	conf := h.conf(map[string]any{"hostNat": true})
	ctrs := map[string]*testenv.NetNS{}
	results := map[string]netip.Addr{}
	for _, id := range []string{"keep", "gone1", "gone2"} {
		ctrs[id] = testenv.NewNetNS(t, "cnic")
		results[id] = resultAddr(t, h.mustAdd(t, id, ctrs[id], conf)).Addr()
	}
	// An orphan NAT rule (its address not reserved): GC removes it too.
	nat, err := openNAT(h.ns.Handle())
	if err != nil {
		t.Fatal(err)
	}
	orphan := netip.MustParseAddr("10.42.3.200")
	if err := nat.add(natRule{network: "drvtest", ip: orphan, containerID: "x", ifname: "eth0", keep: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}}); err != nil {
		t.Fatal(err)
	}
	// A rule of another network is not this GC's business.
	other := netip.MustParseAddr("10.42.3.201")
	if err := nat.add(natRule{network: "othernet", ip: other, containerID: "x", ifname: "eth0"}); err != nil {
		t.Fatal(err)
	}
	if err := h.gc(t, conf, "keep"); err != nil {
		t.Fatalf("GC: %v", err)
	}
	rs, _ := h.store(t).List()
	if len(rs) != 1 || rs[0].Owner.ContainerID != "keep" {
		t.Fatalf("reservations after GC: %+v, want only keep's", rs)
	}
	if v := h.hostVeths(t); !slices.Equal(v, []string{vethName("drvtest", "keep", "eth0")}) {
		t.Fatalf("veths after GC: %v, want keep's only", v)
	}
	if ips := h.natIPs(t); !sameAddrs(ips, results["keep"], other) {
		t.Fatalf("NAT rules after GC: %v, want %v and the other network's %v", ips, results["keep"], other)
	}
	_, deleted := h.daemon.notices()
	if len(deleted) != 2 {
		t.Fatalf("daemon DELETE notices: %v, want the two stale addresses", deleted)
	}
	res := h.mustAdd(t, "new", testenv.NewNetNS(t, "cnic"), conf)
	if a := resultAddr(t, res).Addr(); a == results["keep"] {
		t.Fatalf("new container got keep's address %v", a)
	}
	// Without a list (cnitool gc), nothing is valid.
	if err := h.p.gc(context.Background(), parse(t, mustJSON(t, conf))); err != nil {
		t.Fatal(err)
	}
	if rs, _ := h.store(t).List(); len(rs) != 0 {
		t.Fatalf("reservations after GC with no valid attachments: %+v", rs)
	}
}

func sameAddrs(got []netip.Addr, want ...netip.Addr) bool {
	g := slices.Clone(got)
	w := slices.Clone(want)
	slices.SortFunc(g, netip.Addr.Compare)
	slices.SortFunc(w, netip.Addr.Compare)
	return slices.Equal(g, w)
}

// A retried ADD after a crash (stale veth of the same attachment on the
// host) succeeds and keeps the address.
func TestAddAfterCrashLeftovers(t *testing.T) {
	h := newTestHost(t)
	conf := h.conf(nil)
	ctr := testenv.NewNetNS(t, "cnic")
	h.p.hook = func(s string) error {
		if s == "configured" {
			panic("simulated crash") // no undo runs: like a SIGKILL
		}
		return nil
	}
	func() {
		defer func() { recover() }()
		h.add(t, "c1", ctr, conf)
	}()
	h.p.hook = nil
	if v := h.hostVeths(t); len(v) != 1 {
		t.Fatalf("the simulated crash should leave the veth: %v", v)
	}
	rs, _ := h.store(t).List()
	if len(rs) != 1 {
		t.Fatalf("the simulated crash should leave the reservation: %v", rs)
	}
	// The runtime deletes the container's interface when it retries in a
	// fresh namespace; here the stale interface is in the same one, so
	// the spec's "already exists" error comes first.
	_, err := h.add(t, "c1", ctr, conf)
	wantCNIError(t, err, types.ErrInternal, "interface eth0 already exists")
	ctr2 := testenv.NewNetNS(t, "cnic")
	res := h.mustAdd(t, "c1", ctr2, conf)
	if a := resultAddr(t, res).Addr(); a != rs[0].Addr {
		t.Fatalf("retried ADD: got %v, want the reserved %v", a, rs[0].Addr)
	}
	if v := h.hostVeths(t); len(v) != 1 {
		t.Fatalf("veths after the retry: %v", v)
	}
	if err := h.check(t, "c1", ctr2, conf, res); err != nil {
		t.Fatal(err)
	}
}

func ipamOwner(cid string) ipam.Owner { return ipam.Owner{ContainerID: cid, IfName: "eth0"} }

// Results convert to every version the plugin claims.
func TestResultVersions(t *testing.T) {
	h := newTestHost(t)
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			ctr := testenv.NewNetNS(t, "cnic")
			conf := h.conf(map[string]any{"cniVersion": v})
			res := h.mustAdd(t, ctr.Name, ctr, conf)
			t.Cleanup(func() { h.del(t, ctr.Name, ctr, conf) })
			out, err := res.GetAsVersion(v)
			if err != nil {
				t.Fatalf("convert to %s: %v", v, err)
			}
			if out.Version() != v {
				t.Fatalf("got version %s", out.Version())
			}
			if v >= "0.4.0" {
				b := mustJSON(t, withPrevRaw(t, conf, out))
				if err := h.p.check(parse(t, b), args(ctr.Name, ctr, b)); err != nil {
					t.Fatalf("CHECK with a %s prevResult: %v", v, err)
				}
			}
		})
	}
}

func withPrevRaw(t testing.TB, conf map[string]any, res types.Result) map[string]any {
	t.Helper()
	var prev map[string]any
	b := mustJSON(t, res)
	if err := json.Unmarshal(b, &prev); err != nil {
		t.Fatal(err)
	}
	c := map[string]any{}
	for k, v := range conf {
		c[k] = v
	}
	c["prevResult"] = prev
	return c
}

// Two networks on one host must not allocate from one range; disjoint
// ranges inside the block share the bridge.
func TestTwoNetworks(t *testing.T) {
	h := newTestHost(t)
	a := h.conf(nil)
	h.mustAdd(t, "c1", testenv.NewNetNS(t, "cnic"), a)
	b := h.conf(map[string]any{"name": "othernet"})
	_, err := h.add(t, "c2", testenv.NewNetNS(t, "cnic"), b)
	wantCNIError(t, err, types.ErrInvalidNetworkConfig, `network "drvtest" already holds 10.42.3.2`)

	h2 := newTestHost(t)
	lo := h2.conf(map[string]any{"ipam": map[string]any{"dataDir": h2.dataDir, "rangeEnd": "10.42.3.127"}})
	hi := h2.conf(map[string]any{"name": "othernet", "ipam": map[string]any{"dataDir": h2.dataDir, "rangeStart": "10.42.3.128"}})
	r1 := h2.mustAdd(t, "c1", testenv.NewNetNS(t, "cnic"), lo)
	r2 := h2.mustAdd(t, "c2", testenv.NewNetNS(t, "cnic"), hi)
	if a, b := resultAddr(t, r1).Addr(), resultAddr(t, r2).Addr(); a.String() != "10.42.3.2" || b.String() != "10.42.3.128" {
		t.Fatalf("got %v and %v, want 10.42.3.2 and 10.42.3.128", a, b)
	}
}

// hairpinMode sets hairpin on the bridge port (and CHECK holds it to
// that); mtu overrides the daemon's tun_mtu on both ends.
func TestHairpinAndMTU(t *testing.T) {
	h := newTestHost(t)
	ctr := testenv.NewNetNS(t, "cnic")
	conf := h.conf(map[string]any{"hairpinMode": true, "mtu": 1300})
	res := h.mustAdd(t, "c1", ctr, conf)
	host := ctrLink(t, h.ns, vethName("drvtest", "c1", "eth0"))
	if got := ctrLink(t, ctr, "eth0").Attrs().MTU; got != 1300 || host.Attrs().MTU != 1300 {
		t.Fatalf("MTU: got container %d host %d, want 1300 (configured over the daemon's 1438)", got, host.Attrs().MTU)
	}
	nl, err := h.ns.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	pi, err := nl.LinkGetProtinfo(host)
	if err != nil || !pi.Hairpin {
		t.Fatalf("hairpin on %s: got %+v, %v; want on", host.Attrs().Name, pi, err)
	}
	if err := h.check(t, "c1", ctr, conf, res); err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetHairpin(host, false); err != nil {
		t.Fatal(err)
	}
	wantCNIError(t, h.check(t, "c1", ctr, conf, res), types.ErrInternal, "hairpin false, want true")
}

// A cluster-mode daemon that has not joined yet has no block: ADD fails
// with code 11 (try again later) and repeats the daemon's reason.
func TestAddBeforeJoined(t *testing.T) {
	h := newTestHost(t)
	ctr := testenv.NewNetNS(t, "cnic")
	h.daemon.mu.Lock()
	h.daemon.status["prefixes"] = []string{}
	h.daemon.status["block_note"] = "no block: not joined to any member yet"
	h.daemon.mu.Unlock()
	_, err := h.add(t, "c1", ctr, h.conf(nil))
	wantCNIError(t, err, types.ErrTryAgainLater, "no block: not joined to any member yet")
}

// ADD with Kubernetes' CNI_ARGS records the pod with the reservation and in
// the daemon's notice; Reserved (the daemon's rebuild after a restart)
// reads it back; bad pod arguments fail ADD before anything is set up.
func TestAddRecordsPod(t *testing.T) {
	h := newTestHost(t)
	ctr := testenv.NewNetNS(t, "cnic")
	b := mustJSON(t, h.conf(nil))
	a := args("c1", ctr, b)
	a.Args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME=a;K8S_POD_INFRA_CONTAINER_ID=c1"
	if _, err := h.p.add(context.Background(), parse(t, b), a); err != nil {
		t.Fatal(err)
	}
	added, _ := h.daemon.notices()
	if len(added) != 1 || added[0].PodNamespace != "x" || added[0].PodName != "a" {
		t.Fatalf("notices: got %+v, want one for pod x/a", added)
	}
	ls, err := Reserved(h.dataDir, "drvtest")
	if err != nil || len(ls) != 1 || ls[0].PodNamespace != "x" || ls[0].PodName != "a" || ls[0].IP != added[0].IP {
		t.Fatalf("Reserved: got %+v %v, want %s held by pod x/a", ls, err, added[0].IP)
	}

	ctr2 := testenv.NewNetNS(t, "cnic")
	a2 := args("c2", ctr2, b)
	a2.Args = "K8S_POD_NAMESPACE=x;K8S_POD_NAME=../etc"
	_, err = h.p.add(context.Background(), parse(t, b), a2)
	wantCNIError(t, err, types.ErrInvalidEnvironmentVariables, "K8S_POD_NAME")
	if rs, _ := h.store(t).List(); len(rs) != 1 {
		t.Fatalf("reservations after a refused ADD: got %v, want only c1's", rs)
	}
}
