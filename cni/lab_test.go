package cni

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/drovernet/drover/lab"
	"github.com/drovernet/drover/testenv"
)

// outsideNS attaches a namespace to the lab's underlay bridge with addr: a
// server outside the cluster.
func outsideNS(t *testing.T, lb *lab.Lab, addr netip.Prefix) *testenv.NetNS {
	t.Helper()
	out := testenv.NewNetNS(t, "cnio")
	var bridge string
	withNL(t, lb.Underlay, func(nl *netlink.Handle) error {
		ls, err := nl.LinkList()
		for _, l := range ls {
			if l.Type() == "bridge" {
				bridge = l.Attrs().Name
			}
		}
		return err
	})
	if bridge == "" {
		t.Fatal("no bridge in the underlay namespace")
	}
	name := lab.UniqueName("o")
	withNL(t, lb.Underlay, func(nl *netlink.Handle) error {
		la := netlink.NewLinkAttrs()
		la.Name = name
		if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(out.Handle()))}); err != nil {
			return err
		}
		l, err := nl.LinkByName(name)
		if err != nil {
			return err
		}
		br, err := nl.LinkByName(bridge)
		if err != nil {
			return err
		}
		if err := nl.LinkSetMaster(l, br); err != nil {
			return err
		}
		return nl.LinkSetUp(l)
	})
	withNL(t, out, func(nl *netlink.Handle) error {
		l, err := nl.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := nl.AddrAdd(l, &netlink.Addr{IPNet: prefixIPNet(addr)}); err != nil {
			return err
		}
		return nl.LinkSetUp(l)
	})
	return out
}

// Two lab hosts with real drover routers (ESP and VXLAN), containers
// attached through cnitool and the example conflist: distinct addresses
// from each host's block, reachable across hosts, seen with their own
// address by the other host's container (hostNat never applies inside the
// cluster) and with the host's address by a server outside; a host port
// (portmap) answers from the underlay through the daemon's forward filter,
// which keeps the outside server from reaching the container directly.
func TestLabTwoHosts(t *testing.T) {
	testenv.NeedRoot(t)
	for _, encap := range []string{"esp", "vxlan"} {
		t.Run(encap, func(t *testing.T) {
			testLabTwoHosts(t, encap, false)
		})
	}
}

// The same in the flat model: the container holds the whole cluster CIDR
// on-link and ARPs for remote containers, which the router must answer on
// the bridge.
func TestLabTwoHostsFlat(t *testing.T) {
	testenv.NeedRoot(t)
	for _, encap := range []string{"esp", "vxlan"} {
		t.Run(encap, func(t *testing.T) {
			testLabTwoHosts(t, encap, true)
		})
	}
}

func testLabTwoHosts(t *testing.T, encap string, flat bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tag := "cn" + encap[:1]
	if flat {
		tag += "f"
	}
	lb, err := lab.NewLab(ctx, lab.Options{Hosts: 2, Containers: 1, Encapsulation: encap, Tag: tag, Bin: testenv.DroverBinary(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lb.Close() })
	out := outsideNS(t, lb, netip.MustParsePrefix("192.0.2.200/24"))

	type attached struct {
		env  *cniEnv
		ctr  *testenv.NetNS
		addr netip.Addr
		sock string // the host daemon's control socket
	}
	var cs []attached
	for _, h := range lb.Hosts {
		list := exampleConflist(t, "drover.conflist", "drvlab", map[string]any{
			"bridge":       h.Bridge,
			"daemonSocket": h.Router.Config.ControlSocket,
			"flat":         flat,
			// The lab's own containers hold the low addresses.
			"ipam": map[string]any{"type": "drover", "dataDir": filepath.Join(t.TempDir(), h.Name), "rangeStart": fmt.Sprintf("10.42.%d.100", h.Index)},
		})
		if !hasPacketFilter() {
			withoutPlugin(list, "portmap")
		}
		e := newCNIEnv(t, h.NS, list)
		e.capArgs = `{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}`
		ctr := testenv.NewNetNS(t, "cnic")
		stdout, err := e.run("add", ctr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.run("del", ctr) })
		res := parseResult(t, stdout)
		a := resultAddr(t, res)
		if !h.Prefix.Contains(a.Addr()) {
			t.Fatalf("%s: address %v outside the host's block %s", h.Name, a, h.Prefix)
		}
		if flat && a.Bits() != 16 {
			t.Fatalf("flat: got %v, want a /16", a)
		}
		// The daemon lists the container (POST /v1/local).
		wantDaemonLists(t, h.Router.Config.ControlSocket, cnitoolID(ctr), a.Addr(), true)
		cs = append(cs, attached{e, ctr, a.Addr(), h.Router.Config.ControlSocket})
	}
	if cs[0].addr == cs[1].addr {
		t.Fatalf("both containers got %v", cs[0].addr)
	}
	for i, j := range []int{1, 0} {
		if err := ping(t, cs[i].ctr, cs[j].addr); err != nil {
			for _, h := range lb.Hosts {
				st, _ := h.Router.Status()
				if st != nil {
					t.Logf("%s router: tx %d rx %d arp %d drops %v", h.Name, st.TxPackets, st.RxPackets, st.ARPReplies, st.Drops)
				}
				rt, _ := exec.Command("ip", "-n", h.NS.Name, "route").CombinedOutput()
				t.Logf("%s routes:\n%s", h.Name, rt)
			}
			for _, c := range cs {
				out, _ := exec.Command("ip", "-n", c.ctr.Name, "-d", "addr").CombinedOutput()
				nb, _ := exec.Command("ip", "-n", c.ctr.Name, "neigh").CombinedOutput()
				rt, _ := exec.Command("ip", "-n", c.ctr.Name, "route").CombinedOutput()
				t.Logf("%s:\n%s%s%s", c.ctr.Name, out, nb, rt)
			}
			t.Fatalf("h%d container → h%d container %v: %v", i+1, j+1, cs[j].addr, err)
		}
	}
	// The metadata address works in the overlay models too: each
	// container reads its own record from its host's daemon, through its
	// gateway.
	for i, c := range cs {
		out, err := exec.Command("ip", "netns", "exec", c.ctr.Name, "curl", "-s", "--max-time", "5", "http://169.254.169.250/v1/self").Output()
		var rec struct{ Address, Host string }
		if err != nil || json.Unmarshal(out, &rec) != nil {
			t.Fatalf("h%d's container reads its metadata: %v\n%s", i+1, err, out)
		}
		if a, _ := netip.ParsePrefix(rec.Address); a.Addr() != c.addr || rec.Host != lb.Hosts[i].Name {
			t.Errorf("h%d's container's record: %+v, want its address %v on %s", i+1, rec, c.addr, lb.Hosts[i].Name)
		}
	}
	src, err := seenFrom(t, cs[0].ctr, listenIn(t, cs[1].ctr, cs[1].addr.String()+":0"))
	if err != nil || src != cs[0].addr {
		t.Fatalf("h2's container saw %v, %v; want h1's container's own %v", src, err, cs[0].addr)
	}
	src, err = seenFrom(t, cs[0].ctr, listenIn(t, out, "192.0.2.200:0"))
	if err != nil || src != lb.Hosts[0].Underlay {
		t.Fatalf("the outside server saw %v, %v; want h1's %v (hostNat)", src, err, lb.Hosts[0].Underlay)
	}
	if hasPacketFilter() {
		ln := listenIn(t, cs[1].ctr, "0.0.0.0:80")
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Close()
			}
		}()
		err := out.Do(func() error {
			c, err := net.DialTimeout("tcp4", lb.Hosts[1].Underlay.String()+":8080", 3*time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err != nil {
			t.Fatalf("underlay → h2:8080 (portmap): %v", err)
		}
	}
	// All of the above passed h2's forward filter; the outside server
	// routing the cluster CIDR via h2 still reaches no container.
	checkForwardFilter(t, lb.Hosts[1], out, cs[1].ctr, cs[1].addr)
	for i, c := range cs {
		if _, err := c.env.run("check", c.ctr); err != nil {
			t.Fatalf("CHECK on h%d: %v", i+1, err)
		}
		if _, err := c.env.run("del", c.ctr); err != nil {
			t.Fatalf("DEL on h%d: %v", i+1, err)
		}
		wantDaemonLists(t, c.sock, cnitoolID(c.ctr), c.addr, false)
	}
}

// checkForwardFilter: the host's daemon has its forward filter installed,
// and an underlay machine (out) that routes the cluster CIDR via the host
// gets no datagram into ctr, with its own source or one forged inside
// another host's block; the host's filter counts them.
func checkForwardFilter(t *testing.T, h *lab.Host, out *testenv.NetNS, ctr *testenv.NetNS, addr netip.Addr) {
	t.Helper()
	drops := func() uint64 {
		st, err := h.Router.Status()
		if err != nil {
			t.Fatal(err)
		}
		if st.ForwardFilter == nil || st.ForwardFilter.Error != "" {
			t.Fatalf("%s: forward filter %+v, want it installed", h.Name, st.ForwardFilter)
		}
		return st.ForwardFilter.DropPackets
	}
	before := drops()
	withNL(t, out, func(nl *netlink.Handle) error {
		return nl.RouteAdd(&netlink.Route{Dst: prefixIPNet(netip.MustParsePrefix("10.42.0.0/16")), Gw: h.Underlay.AsSlice()})
	})
	var ln *net.UDPConn
	if err := ctr.Do(func() (err error) {
		ln, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 9109})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dst := netip.AddrPortFrom(addr, 9109)
	err := out.Do(func() error {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("underlay"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.SendRawUDP(out, netip.MustParseAddrPort("10.42.99.7:4242"), dst, []byte("forged")); err != nil {
		t.Fatal(err)
	}
	err = lab.Poll(t.Context(), 5*time.Second, 20*time.Millisecond, func() error {
		if n := drops() - before; n < 2 {
			return fmt.Errorf("%s's forward filter dropped %d of 2", h.Name, n)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	_ = ln.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, from, err := ln.ReadFromUDPAddrPort(make([]byte, 64)); err == nil {
		t.Errorf("the container got %d bytes from %v straight from the underlay, want nothing", n, from)
	}
}
