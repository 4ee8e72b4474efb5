package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/testenv"
)

// BGP lab addressing: the two routers' client subnets (RFC 5737) and
// the ASes.
var (
	birdClients = netip.MustParsePrefix("198.51.100.0/24")
	frrClients  = netip.MustParsePrefix("203.0.113.0/24")
)

const (
	birdAS, frrAS, wrongAS = 64600, 64700, 64999
	birdIdx, frrIdx        = 254, 253
	wrongIdx, garbageIdx   = 252, 251
	// bgpRestart is h1's graceful restart time in the lab: long enough
	// to see the routes kept, short enough to see them expire.
	bgpRestart = 8 * time.Second
)

func hostAS(h int) uint32 { return 64600 + uint32(h) }

// needBGPRouters skips (or, in CI, fails) without BIRD and FRR.
func needBGPRouters(t *testing.T) {
	t.Helper()
	for _, bin := range []string{"bird", "birdc", "/usr/lib/frr/bgpd", "/usr/lib/frr/zebra", "vtysh"} {
		if _, err := exec.LookPath(bin); err != nil {
			needTool(t, err, "the BGP lab runs BIRD 2 and FRR (Debian bird2, frr)")
		}
	}
}

// bgpStatus is the host's BGP section of its status.
func bgpStatus(t *testing.T, h *Host) map[string]string {
	t.Helper()
	st, err := h.Router.Status()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	if st.BGP == nil {
		t.Fatalf("%s: no bgp in the status", h.Name)
	}
	for _, n := range st.BGP.Neighbors {
		out[n.Address] = n.State + "|" + n.LastError
	}
	return out
}

// waitRoutes polls until each router's kernel table holds exactly want
// ("prefix via next-hop") within the cluster CIDR.
func waitRoutes(t *testing.T, routers []*BGPRouter, want []string, timeout time.Duration) time.Time {
	t.Helper()
	want = sorted(want...)
	err := Poll(t.Context(), timeout, 20*time.Millisecond, func() error {
		for _, r := range routers {
			got, err := r.Routes(netip.MustParsePrefix("10.42.0.0/16"))
			if err != nil {
				return err
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				return fmt.Errorf("%s routes %v, want %v", r.Kind, got, want)
			}
		}
		return nil
	})
	if err != nil {
		for _, r := range routers {
			t.Logf("%s log:\n%s", r.Kind, r.Log(30))
		}
		t.Fatal(err)
	}
	return time.Now()
}

// TestClusterBGP: two drover hosts announce their blocks by BGP to BIRD 2
// and FRR in router namespaces. The routers' tables hold each block via
// the right host; clients behind each router reach containers by their own
// addresses (no NAT). A neighbour with an unexpected AS and one that sends
// garbage are refused and logged while the rest keeps working. Stopping a
// host with graceful restart keeps its routes on the routers for the
// restart time; stopping one without withdraws them at once.
func TestClusterBGP(t *testing.T) {
	testenv.NeedRoot(t)
	needBGPRouters(t)
	wrongAddr, garbageAddr := underlayAddr(false, wrongIdx), underlayAddr(false, garbageIdx)
	configure := func(h int, graceful bool) func(*config.Config) {
		return func(c *config.Config) {
			c.BGP = &config.BGP{
				AS: hostAS(h), GracefulRestart: &graceful, RestartTime: bgpRestart,
				Neighbors: []config.BGPNeighbor{
					{Address: underlayAddr(false, birdIdx).String(), AS: birdAS},
					{Address: underlayAddr(false, frrIdx).String(), AS: frrAS},
				},
			}
			if h == 1 {
				c.BGP.Neighbors = append(c.BGP.Neighbors,
					config.BGPNeighbor{Address: wrongAddr.String(), AS: 64800}, // it says 64999
					config.BGPNeighbor{Address: garbageAddr.String(), AS: 64900})
			}
			c.Firewall.AllowFrom = []string{birdClients.String(), frrClients.String()}
		}
	}
	// The routers come up before the hosts (Manual), so the first
	// sessions are the hosts' own connections.
	lab := newClusterLab(t, Options{Hosts: 2, Containers: 1, HostOptions: []HostOptions{
		{Configure: configure(1, true), Manual: true}, {Configure: configure(2, false), Manual: true},
	}})
	h1, h2 := lab.Hosts[0], lab.Hosts[1]
	neigh := []BGPNeighbor{{Name: "h1", Addr: h1.Underlay, AS: hostAS(1)}, {Name: "h2", Addr: h2.Underlay, AS: hostAS(2)}}
	bird, err := lab.AddBGPRouter("bird", birdIdx, birdAS, birdClients, neigh)
	if err != nil {
		t.Fatal(err)
	}
	frr, err := lab.AddBGPRouter("frr", frrIdx, frrAS, frrClients, neigh)
	if err != nil {
		t.Fatal(err)
	}
	// A neighbour that says another AS than h1 expects (its client
	// subnet is never used).
	if _, err := lab.AddBGPRouter("bird", wrongIdx, wrongAS, netip.MustParsePrefix("192.0.0.0/24"), neigh[:1]); err != nil {
		t.Fatal(err)
	}
	garbageHost, err := lab.AddUnderlayHost(garbageIdx)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := GarbageListener(garbageHost.NS, garbageAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })

	if err := lab.StartRouters(t.Context(), lab.Hosts); err != nil {
		t.Fatal(err)
	}
	// The hosts' way back to the clients: the fabric's routers (a host's
	// default route would do the same).
	for _, h := range lab.Hosts {
		for _, rt := range []struct {
			dst netip.Prefix
			gw  netip.Addr
		}{{birdClients, bird.Addr}, {frrClients, frr.Addr}} {
			err := withNetlink(h.NS, func(nl *netlink.Handle) error {
				d := &net.IPNet{IP: rt.dst.Addr().AsSlice(), Mask: net.CIDRMask(rt.dst.Bits(), 32)}
				return nl.RouteAdd(&netlink.Route{Dst: d, Gw: rt.gw.AsSlice()})
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}

	r1, r2 := fmt.Sprintf("%s via %s", h1.Prefix, h1.Underlay), fmt.Sprintf("%s via %s", h2.Prefix, h2.Underlay)
	want := []string{r1, r2}
	up := lab.firstStart()
	at := waitRoutes(t, []*BGPRouter{bird, frr}, want, 30*time.Second)
	t.Logf("RESULT BIRD and FRR route %v %v after the hosts started", want, at.Sub(up).Round(time.Millisecond))
	for _, r := range []*BGPRouter{bird, frr} {
		cmd := map[string]string{"bird": "show route", "frr": "show ip bgp"}[r.Kind]
		out, err := r.CLI(cmd)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s `%s`:\n%s", r.Kind, cmd, out)
	}

	// Clients reach the containers by their own addresses, and the
	// containers see the clients' (no NAT anywhere).
	for _, r := range []*BGPRouter{bird, frr} {
		for _, h := range lab.Hosts {
			ctr := h.Containers[0]
			sink, err := ctr.ListenUDP(40800)
			if err != nil {
				t.Fatal(err)
			}
			msg := []byte("drv-bgp " + r.Kind + " " + h.Name)
			err = Poll(t.Context(), 10*time.Second, 100*time.Millisecond, func() error {
				if err := sendUDPFrom(r.Client, netip.AddrPortFrom(ctr.Addr, 40800), msg); err != nil {
					return err
				}
				for _, d := range sink.Datagrams() {
					if string(d.Payload) == string(msg) {
						if d.From.Addr() != r.ClientAddr {
							return fmt.Errorf("arrived from %s, want the client's %s (NAT?)", d.From.Addr(), r.ClientAddr)
						}
						return nil
					}
				}
				return errors.New("not received")
			})
			sink.Close()
			if err != nil {
				t.Fatalf("client behind %s → %s (%s): %v", r.Kind, ctr.Ref, ctr.Addr, err)
			}
			if _, err := nsPing(t, r.Client, ctr.Addr); err != nil {
				t.Errorf("client behind %s pings %s: %v", r.Kind, ctr.Addr, err)
			}
		}
		t.Logf("RESULT client %s behind %s reaches both hosts' containers by their own addresses (UDP, source preserved; ping)", r.ClientAddr, r.Kind)
	}
	// The containers still reach each other over ESP.
	waitPing(t, h1.Containers[0], h2.Containers[0], 5*time.Second)

	// The hostile neighbours: refused, logged, nothing else disturbed.
	err = Poll(t.Context(), 20*time.Second, 100*time.Millisecond, func() error {
		st := bgpStatus(t, h1)
		if w := st[wrongAddr.String()]; !strings.Contains(w, "bad peer as") {
			return fmt.Errorf("neighbour %s with AS %d: %q", wrongAddr, wrongAS, w)
		}
		if g := st[garbageAddr.String()]; !strings.Contains(g, "bad message type") || strings.HasPrefix(g, "established") {
			return fmt.Errorf("garbage neighbour %s: %q", garbageAddr, g)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\nh1 log:\n%s", err, h1.Router.LogTail(40))
	}
	st := bgpStatus(t, h1)
	for _, a := range []netip.Addr{bird.Addr, frr.Addr} {
		if !strings.HasPrefix(st[a.String()], "established") {
			t.Errorf("h1's session with %s: %q, want established beside the hostile ones", a, st[a.String()])
		}
	}
	log := h1.Router.LogTail(400)
	for _, want := range []string{"bad peer as", "bad message type", "peer=" + wrongAddr.String(), "peer=" + garbageAddr.String()} {
		if !strings.Contains(log, want) {
			t.Errorf("h1's log has no %q", want)
		}
	}
	t.Logf("RESULT h1 refuses the neighbour with AS %d (%s) and the one sending garbage (%s), logs both and keeps its other sessions established",
		wrongAS, st[wrongAddr.String()], st[garbageAddr.String()])

	// Each host announces its own block only: FRR's route to h1's block,
	// which FRR passes on to h2, never comes back to BIRD through h2.
	out, err := bird.CLI("show route all")
	if err != nil {
		t.Fatal(err)
	}
	var paths int
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		asPath, ok := strings.CutPrefix(l, "BGP.as_path:")
		if !ok {
			continue
		}
		paths++
		if ases := strings.Fields(asPath); len(ases) != 1 {
			t.Errorf("BIRD holds a path through another host (AS path %v): a host passed on a route it learned\n%s", ases, out)
		}
	}
	if paths != 2 {
		t.Errorf("BIRD holds %d paths, want 2 (each host's block from the host)\n%s", paths, out)
	}
	t.Logf("RESULT BIRD holds %d paths, each from the block's owner: no host passes on what it learned", paths)

	// Graceful restart: h1 stops (SIGTERM) without notifying; the
	// routers keep its block for the restart time, then drop it.
	stopped := time.Now()
	if err := lab.StopRouter(h1); err != nil {
		t.Fatal(err)
	}
	kept := sorted(r1, r2)
	for _, d := range []time.Duration{time.Second, bgpRestart / 2} {
		time.Sleep(time.Until(stopped.Add(d)))
		for _, r := range []*BGPRouter{bird, frr} {
			got, err := r.Routes(netip.MustParsePrefix("10.42.0.0/16"))
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			if !slices.Equal(got, kept) {
				t.Errorf("%v after h1 stopped with graceful restart: %s routes %v, want %v kept", d, r.Kind, got, kept)
			}
		}
	}
	gone := waitRoutes(t, []*BGPRouter{bird, frr}, []string{r2}, bgpRestart+10*time.Second)
	t.Logf("RESULT h1 stopped with graceful restart (restart time %v): BIRD and FRR kept its route %v for %v, checked at 1s and %v",
		bgpRestart, h1.Prefix, gone.Sub(stopped).Round(100*time.Millisecond), bgpRestart/2)
	if d := gone.Sub(stopped); d < bgpRestart-time.Second {
		t.Errorf("h1's route dropped %v after the stop, before the restart time %v", d, bgpRestart)
	}
	restarted := time.Now()
	if err := lab.StartRouter(t.Context(), h1); err != nil {
		t.Fatal(err)
	}
	back := waitRoutes(t, []*BGPRouter{bird, frr}, want, 30*time.Second)
	t.Logf("RESULT h1 restarted: its route is back on BIRD and FRR %v after the start", back.Sub(restarted).Round(time.Millisecond))

	// A restart within the restart time keeps the routes throughout.
	if err := lab.StopRouter(h1); err != nil {
		t.Fatal(err)
	}
	if err := lab.StartRouter(t.Context(), h1); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, []*BGPRouter{bird, frr}, want, 30*time.Second)

	// h2 leaves without graceful restart: Cease, routes withdrawn at once.
	// The routers are watched while the daemon stops: its Cease comes
	// before the rest of its shutdown (leaving the cluster), which the
	// withdrawal must not wait for.
	left := time.Now()
	done2 := make(chan error, 1)
	go func() { done2 <- lab.StopRouter(h2) }()
	wd := waitRoutes(t, []*BGPRouter{bird, frr}, []string{r1}, 5*time.Second)
	if err := <-done2; err != nil {
		t.Fatal(err)
	}
	exited := time.Since(left)
	t.Logf("RESULT h2 stopped without graceful restart: its route withdrawn on BIRD and FRR %v after the stop (the daemon exited after %v)",
		wd.Sub(left).Round(time.Millisecond), exited.Round(time.Millisecond))
	if d := wd.Sub(left); d > time.Second {
		t.Errorf("withdrawal took %v, want a second at most", d)
	}
}

// nsPing pings dst once from ns.
func nsPing(t *testing.T, ns *NetNS, dst netip.Addr) (string, error) {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "ip", "netns", "exec", ns.Name, "ping", "-c", "1", "-W", "2", dst.String()).CombinedOutput()
	return string(out), err
}

// TestClusterBGPFabric: two hosts on different subnets learn each other's
// block from the fabric (BIRD in the router between the subnets, bgp.import)
// and reach each other's containers through it without encapsulation
// (path bgp): no ESP between them on the underlay, nothing through
// drover's router. When the fabric goes away they fall back to ESP.
func TestClusterBGPFabric(t *testing.T) {
	testenv.NeedRoot(t)
	needBGPRouters(t)
	rtMain, rtRemote := netip.AddrFrom4([4]byte{192, 0, 2, routerIndex}), netip.AddrFrom4([4]byte{198, 51, 100, routerIndex})
	configure := func(h int, neighbor netip.Addr) func(*config.Config) {
		return func(c *config.Config) {
			c.Cluster.DirectTrusted = true // the lab's fabric is trusted: cleartext through it
			c.BGP = &config.BGP{AS: hostAS(h), Import: true, Neighbors: []config.BGPNeighbor{{Address: neighbor.String(), AS: birdAS}}}
		}
	}
	lab := newClusterLab(t, Options{Hosts: 2, Containers: 1, HostOptions: []HostOptions{
		{Configure: configure(1, rtMain), Manual: true},
		{Configure: configure(2, rtRemote), Manual: true, Remote: true},
	}})
	h1, h2 := lab.Hosts[0], lab.Hosts[1]
	bird, err := lab.StartBIRD(lab.Remote, rtMain, birdAS, []BGPNeighbor{
		{Name: "h1", Addr: h1.Underlay, AS: hostAS(1), Local: rtMain},
		{Name: "h2", Addr: h2.Underlay, AS: hostAS(2), Local: rtRemote},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.StartRouters(t.Context(), lab.Hosts); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"h1→h2": "bgp via " + rtMain.String(), "h2→h1": "bgp via " + rtRemote.String()}
	paths := func() map[string]string {
		got := map[string]string{}
		for _, h := range lab.Hosts {
			v, err := h.Router.Cluster()
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range v.Routes {
				p := r.Path
				if r.Via != "" {
					p += " via " + r.Via
				}
				got[h.Name+"→"+r.Peer] = p
			}
		}
		return got
	}
	start := lab.firstStart()
	err = Poll(t.Context(), 30*time.Second, 50*time.Millisecond, func() error {
		if got := paths(); !mapsEqual(got, want) {
			return fmt.Errorf("paths %v, want %v", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\nviews:\n%s\nbird:\n%s", err, lab.ClusterViews(), bird.Log(30))
	}
	t.Logf("RESULT paths through the fabric %v, %v after the hosts started", want, time.Since(start).Round(time.Millisecond))

	capture := startCapture(t, lab)
	waitMatrix(t, lab, 20*time.Second)
	before := peerTx(t, h1.Router, h2.Name)
	res, err := lab.Transfer(t.Context(), h1.Containers[0].Ref, h2.Containers[0].Ref, transferSize)
	if err != nil {
		t.Fatal(err)
	}
	sent := peerTx(t, h1.Router, h2.Name) - before
	cr := checkCapture(t, capture)
	plain := 0
	for _, n := range cr.Plain {
		plain += n
	}
	t.Logf("RESULT transfer h1c1 → h2c1 through the fabric: %s; h1's router sent %d bytes to h2; underlay: %d ESP packets, %d unencapsulated container frames",
		res, sent, cr.Packets, plain)
	if cr.Packets != 0 || plain == 0 || sent != 0 {
		t.Errorf("through the fabric: %d ESP packets and %d plain frames on the underlay, %d bytes through drover's router; want 0, some, 0", cr.Packets, plain, sent)
	}

	// The fabric goes away: both fall back to ESP and still reach each
	// other.
	down := time.Now()
	if err := bird.stop(); err != nil {
		t.Logf("bird stop: %v", err)
	}
	err = Poll(t.Context(), 30*time.Second, 50*time.Millisecond, func() error {
		if got := paths(); got["h1→h2"] != "esp" || got["h2→h1"] != "esp" {
			return fmt.Errorf("paths %v, want esp both ways", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	back := waitPing(t, h1.Containers[0], h2.Containers[0], 10*time.Second)
	t.Logf("RESULT fabric gone: both hosts back on ESP and reaching each other %v after BIRD stopped", back.Sub(down).Round(time.Millisecond))
}
