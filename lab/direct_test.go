package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// directRoutes lists the routes drover installed through h's underlay
// interface (protocol 68), as "prefix via gateway".
func directRoutes(t *testing.T, h *Host) []string {
	t.Helper()
	var out []string
	err := withNetlink(h.NS, func(nl *netlink.Handle) error {
		link, err := nl.LinkByName(h.Uplink)
		if err != nil {
			return err
		}
		rs, err := nl.RouteListFiltered(unix.AF_INET, &netlink.Route{LinkIndex: link.Attrs().Index, Protocol: 0x44},
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return err
		}
		for _, r := range rs {
			out = append(out, fmt.Sprintf("%s via %s", r.Dst, r.Gw))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func sorted(s ...string) []string { slices.Sort(s); return s }

// wantPaths is every host's view of the data path to every other host:
// direct via the owner's underlay address between hosts of direct, esp
// otherwise.
func wantPaths(hosts, direct []*Host) map[string]string {
	want := map[string]string{}
	for _, h := range hosts {
		for _, g := range hosts {
			if g == h {
				continue
			}
			p := "esp"
			if slices.Contains(direct, h) && slices.Contains(direct, g) {
				p = "direct via " + g.Underlay.String()
			}
			want[h.Name+"→"+g.Name] = p
		}
	}
	return want
}

// waitPaths polls the hosts' route views until each lists the path
// wantPaths gives.
func waitPaths(t *testing.T, lab *Lab, hosts, direct []*Host, timeout time.Duration) {
	t.Helper()
	want := wantPaths(hosts, direct)
	var got map[string]string
	err := Poll(t.Context(), timeout, 50*time.Millisecond, func() error {
		got = map[string]string{}
		for _, h := range hosts {
			v, err := h.Router.Cluster()
			if err != nil {
				return err
			}
			for _, r := range v.Routes {
				p := r.Path
				if r.Via != "" {
					p += " via " + r.Via
				}
				if r.Note != "" {
					p += " (" + r.Note + ")"
				}
				got[h.Name+"→"+r.Peer] = p
			}
		}
		if !mapsEqual(got, want) {
			return fmt.Errorf("paths %v, want %v", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\nviews:\n%s", err, lab.ClusterViews())
	}
}

// TestClusterDirect: three hosts on one underlay subnet with
// cluster.direct reach each other's containers with no encapsulated packet
// on the underlay; a fourth host on another subnet, behind a router, is
// reached over ESP at the same time. The forward filter accepts a direct
// member's containers only from that member; a host that fails has its
// direct routes withdrawn and restored on return.
func TestClusterDirect(t *testing.T) {
	lab := newClusterLab(t, Options{Hosts: 4, Containers: 1, ClusterOptions: ClusterOptions{Direct: true},
		HostOptions: []HostOptions{{}, {}, {}, {Remote: true}}})
	h1, h2, h3, h4 := lab.Hosts[0], lab.Hosts[1], lab.Hosts[2], lab.Hosts[3]
	direct := []*Host{h1, h2, h3}
	waitPaths(t, lab, lab.Hosts, direct, 10*time.Second)
	if got, want := directRoutes(t, h1), sorted(
		fmt.Sprintf("%s via %s", h2.Prefix, h2.Underlay), fmt.Sprintf("%s via %s", h3.Prefix, h3.Underlay),
	); !slices.Equal(got, want) {
		t.Fatalf("h1's direct kernel routes: got %v, want %v", got, want)
	}
	if got := directRoutes(t, h4); len(got) != 0 {
		t.Errorf("h4 (remote) has direct routes: %v", got)
	}

	capture := startCapture(t, lab)
	waitMatrix(t, lab, 20*time.Second)
	before := peerTx(t, h1.Router, h2.Name)
	res, err := lab.Transfer(t.Context(), h1.Containers[0].Ref, h2.Containers[0].Ref, transferSize)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("RESULT direct transfer h1c1 → h2c1: %s", res)
	if sent := peerTx(t, h1.Router, h2.Name) - before; sent != 0 {
		t.Errorf("h1's router sent %d bytes to h2 during a direct transfer, want 0 (drover off the data path)", sent)
	}
	// The matrix's pings already put ESP to and from h4 on the wire; a
	// bulk ESP transfer during the capture only made its reader lose
	// packets under -race (13 once), which voids the capture.
	cr := checkCapture(t, capture)
	remote, err := lab.Transfer(t.Context(), h1.Containers[0].Ref, h4.Containers[0].Ref, transferSize)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("RESULT ESP transfer h1c1 → h4c1 (another subnet): %s", remote)

	isDirect := map[netip.Addr]bool{}
	for _, h := range direct {
		isDirect[h.Underlay] = true
	}
	espDirect, espRemote := 0, 0
	for _, s := range cr.SAs {
		if isDirect[s.Src] && isDirect[s.Dst] {
			espDirect += s.Packets
		} else {
			espRemote += s.Packets
		}
	}
	ctr := map[netip.Addr]*Host{}
	for _, h := range lab.Hosts {
		ctr[h.Containers[0].Addr] = h
	}
	plainDirect, plainRemote := 0, 0
	for pair, n := range cr.Plain {
		if ctr[pair[0]] == h4 || ctr[pair[1]] == h4 {
			plainRemote += n
		} else {
			plainDirect += n
		}
	}
	t.Logf("RESULT underlay capture: %d ESP packets between the direct hosts, %d to or from the remote host; %d unencapsulated container frames between direct hosts, %d with the remote host",
		espDirect, espRemote, plainDirect, plainRemote)
	if espDirect != 0 {
		t.Errorf("%d ESP packets between hosts that route directly, want 0", espDirect)
	}
	if espRemote == 0 {
		t.Error("no ESP packet to or from the remote host: it was not reached over ESP")
	}
	if plainDirect == 0 {
		t.Error("no unencapsulated container frame between the direct hosts: the capture saw nothing")
	}
	if plainRemote != 0 {
		t.Errorf("%d unencapsulated container frames to or from the remote host, want 0 (it is not on the subnet)", plainRemote)
	}

	t.Run("filter", func(t *testing.T) { checkDirectFilter(t, lab, h1, h2, h3) })

	// Failure and return of h2: its direct routes go and come back.
	killed := time.Now()
	if err := lab.KillRouter(h2); err != nil {
		t.Fatal(err)
	}
	others := []*Host{h1, h3, h4}
	took := waitWithdrawn(t, others, h2.Prefix, killed, 20*time.Second)
	t.Logf("RESULT SIGKILL of h2: its block %s withdrawn on every other host within %v", h2.Prefix, maxDuration(took).Round(time.Millisecond))
	for _, h := range []*Host{h1, h3} {
		for _, r := range directRoutes(t, h) {
			if strings.HasPrefix(r, h2.Prefix.String()) {
				t.Errorf("%s: direct route %q still present after h2 failed", h.Name, r)
			}
		}
	}
	stale := directRoutes(t, h2)
	started := time.Now()
	if err := lab.StartRouter(t.Context(), h2); err != nil {
		t.Fatal(err)
	}
	back := waitPing(t, h1.Containers[0], h2.Containers[0], 20*time.Second)
	waitPaths(t, lab, lab.Hosts, direct, 10*time.Second)
	waitMatrix(t, lab, 20*time.Second)
	t.Logf("RESULT h2 restarted after SIGKILL (it left %d stale direct routes, removed at start): h1c1 reached h2c1 %v after the start; paths direct again",
		len(stale), back.Sub(started).Round(time.Millisecond))
	if got, want := directRoutes(t, h2), sorted(
		fmt.Sprintf("%s via %s", h1.Prefix, h1.Underlay), fmt.Sprintf("%s via %s", h3.Prefix, h3.Underlay),
	); !slices.Equal(got, want) {
		t.Errorf("h2's direct routes after its restart: got %v, want %v", got, want)
	}
}

// checkDirectFilter sends raw datagrams to h1's container with h2's
// container's source address: from h2 (its direct member) they arrive,
// from h3 (a member with the key, but not h2) and from an underlay host
// that is no member they are dropped by h1's forward filter.
func checkDirectFilter(t *testing.T, lab *Lab, h1, h2, h3 *Host) {
	target := h1.Containers[0]
	const port = 40700
	sink, err := target.ListenUDP(port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sink.Close)
	dst := netip.AddrPortFrom(target.Addr, port)
	src := netip.AddrPortFrom(h2.Containers[0].Addr, 5555)
	outsider, err := lab.AddUnderlayHost(200)
	if err != nil {
		t.Fatal(err)
	}
	if err := outsider.RouteVia(netip.MustParsePrefix("10.42.0.0/16"), h1.Underlay); err != nil {
		t.Fatal(err)
	}
	// h3 sends to h1's block directly already (its direct route).
	for _, tc := range []struct {
		name string
		ns   *NetNS
		want int
	}{
		{"from h2, the block's member", h2.NS, 1},
		{"from h3, a member with the key but another block", h3.NS, 0},
		{"from an underlay host that is no member", outsider.NS, 0},
	} {
		payload := []byte("drv-direct " + tc.name)
		for range 3 {
			if err := SendRawUDP(tc.ns, src, dst, payload); err != nil {
				t.Fatal(err)
			}
		}
		// A legitimate datagram after the forged ones: when it arrived,
		// they had their chance.
		marker := []byte("drv-marker " + tc.name)
		if err := SendRawUDP(h2.NS, src, dst, marker); err != nil {
			t.Fatal(err)
		}
		err := Poll(t.Context(), 5*time.Second, 10*time.Millisecond, func() error {
			if sink.Count(marker) == 0 {
				return errors.New("marker from h2 not received")
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got := min(sink.Count(payload), 1)
		if got != tc.want {
			t.Errorf("%s with h2's container source: %d of 3 arrived, want %s", tc.name, sink.Count(payload), map[int]string{0: "none", 1: "all"}[tc.want])
		}
		t.Logf("RESULT %s, source %s (h2's container) → %s: %d of 3 arrived", tc.name, src.Addr(), target.Ref, sink.Count(payload))
	}
}
