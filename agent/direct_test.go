package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drovernet/drover/firewall"
	"github.com/drovernet/drover/gossip"
)

// fakeFilter records what the agent admits.
type fakeFilter struct {
	calls int
	srcs  []firewall.Source
	err   error
}

func (f *fakeFilter) SetDirect(s []firewall.Source) error {
	f.calls++
	if f.err != nil {
		return f.err
	}
	f.srcs = slices.Clone(s)
	return nil
}

func (f *fakeFilter) String() string {
	var out []string
	for _, s := range f.srcs {
		out = append(out, fmt.Sprintf("%s@%x", s.Prefix, s.MAC[5]))
	}
	return strings.Join(out, " ")
}

func withDirect(f *fakeFilter) harnessOpt {
	return func(c *Config) {
		c.Direct, c.DirectMAC, c.DirectFilter = true, [6]byte{2, 0, 0, 0, 0, 1}, f
	}
}

func direct(r *remote, mac byte) *remote {
	r.info.Direct, r.info.DirectMAC = true, [6]byte{2, 0, 0, 0, 0, mac}
	return r
}

// routeNotes is the route view by peer, as "path|via|path note".
func (h *harness) routeNotes() map[string]string {
	notes := map[string]string{}
	for _, rv := range h.view().Routes {
		notes[rv.Peer] = rv.Path + "|" + rv.Via + "|" + rv.PathNote
	}
	return notes
}

// routesOf lists the kernel's routes as "prefix via|tun".
func (k *fakeKernel) paths() []string {
	var out []string
	for p, r := range k.routes {
		via := "tun"
		if r.Via.IsValid() {
			via = "via " + r.Via.String()
		}
		out = append(out, p.String()+" "+via)
	}
	slices.Sort(out)
	return out
}

// TestDirectRoutes: members on our underlay subnet that route directly get
// kernel routes via their underlay address and are admitted in the filter
// from their MAC; the others keep the TUN, with the reason in the view.
func TestDirectRoutes(t *testing.T) {
	f := &fakeFilter{}
	h := newHarness(t, withDirect(f))
	if in := h.a.Info(); !in.Direct || in.DirectMAC != [6]byte{2, 0, 0, 0, 0, 1} {
		t.Fatalf("published info: direct %v mac %x, want true and our MAC", in.Direct, in.DirectMAC)
	}
	h2 := direct(newRemote(t, "h2", 2, "10.42.2.0/24", t0.Add(-time.Hour)), 2)
	h3 := newRemote(t, "h3", 3, "10.42.3.0/24", t0.Add(-time.Hour)) // direct off there
	h4 := direct(newRemote(t, "h4", 4, "10.42.4.0/24", t0.Add(-time.Hour)), 4)
	h4.info.Underlay = netip.MustParseAddrPort("198.51.100.4:4500") // another subnet
	h.up(h2, h3, h4)

	want := []string{"10.42.2.0/24 via 192.0.2.2", "10.42.3.0/24 tun", "10.42.4.0/24 tun"}
	if got := h.k.paths(); !slices.Equal(got, want) {
		t.Fatalf("routes: got %v, want %v", got, want)
	}
	if got, want := f.String(), "10.42.2.0/24@2"; got != want {
		t.Fatalf("admitted: got %q, want %q", got, want)
	}
	// Every member stays a router peer: the flat model's ARP answers
	// come from the peer set, whatever the path.
	for _, n := range []string{"h2", "h3", "h4"} {
		if h.r.peer(n) == nil {
			t.Errorf("%s is not a router peer", n)
		}
	}
	notes := h.routeNotes()
	for peer, want := range map[string]string{
		"h2": "direct|192.0.2.2|",
		"h3": "esp||the member does not route directly (cluster.direct)",
		"h4": "esp||the member's underlay 198.51.100.4 is not on this host's underlay subnets",
	} {
		if notes[peer] != want {
			t.Errorf("route view of %s: got %q, want %q", peer, notes[peer], want)
		}
	}

	// h3 turns direct on: its route moves off the TUN.
	direct(h3, 3)
	calls := f.calls
	h.up(h3)
	want = []string{"10.42.2.0/24 via 192.0.2.2", "10.42.3.0/24 via 192.0.2.3", "10.42.4.0/24 tun"}
	if got := h.k.paths(); !slices.Equal(got, want) {
		t.Fatalf("routes after h3 goes direct: got %v, want %v", got, want)
	}
	if got, want := f.String(), "10.42.2.0/24@2 10.42.3.0/24@3"; got != want || f.calls != calls+1 {
		t.Fatalf("admitted: got %q after %d calls, want %q after one more", got, f.calls-calls, want)
	}
	// A step with nothing changed does not touch the filter.
	h.step()
	if f.calls != calls+1 {
		t.Errorf("filter set again without a change (%d calls)", f.calls-calls)
	}

	// h2 dies: its route and its admission go.
	h2.state = gossip.Dead
	h.up(h2)
	want = []string{"10.42.3.0/24 via 192.0.2.3", "10.42.4.0/24 tun"}
	if got := h.k.paths(); !slices.Equal(got, want) {
		t.Fatalf("routes after h2 died: got %v, want %v", got, want)
	}
	if got, want := f.String(), "10.42.3.0/24@3"; got != want {
		t.Fatalf("admitted after h2 died: got %q, want %q", got, want)
	}
	// It returns.
	h2.state = gossip.Alive
	h.up(h2)
	if got := h.k.paths(); !slices.Contains(got, "10.42.2.0/24 via 192.0.2.2") {
		t.Fatalf("routes after h2 returned: got %v", got)
	}

	// A filter that fails is retried at the next step.
	f.err = errors.New("netlink: busy")
	h2.state = gossip.Dead
	h.up(h2)
	if !h.a.timed {
		t.Error("filter failure: step not marked for a retry")
	}
	f.err = nil
	h.step()
	if got, want := f.String(), "10.42.3.0/24@3"; got != want {
		t.Fatalf("admitted after the retry: got %q, want %q", got, want)
	}
}

// A member's refused claims are never admitted: a hostile member that
// publishes another's block with direct on gets neither the route nor the
// filter's trust for it.
func TestDirectOnlyBelievedPrefixes(t *testing.T) {
	f := &fakeFilter{}
	h := newHarness(t, withDirect(f))
	h2 := direct(newRemote(t, "h2", 2, "10.42.2.0/24", t0.Add(-time.Hour)), 2)
	evil := direct(newRemote(t, "evil", 9, "10.42.2.0/24", t0), 9) // a later claim: loses
	evil.info.Prefixes = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/25")}
	h.up(h2, evil)
	if got, want := f.String(), "10.42.2.0/24@2"; got != want {
		t.Fatalf("admitted: got %q, want %q", got, want)
	}
	if got, want := h.k.paths(), []string{"10.42.2.0/24 via 192.0.2.2"}; !slices.Equal(got, want) {
		t.Fatalf("routes: got %v, want %v", got, want)
	}
}

// Direct off: nothing is published or admitted, whatever members say.
func TestDirectOff(t *testing.T) {
	h := newHarness(t)
	if in := h.a.Info(); in.Direct {
		t.Fatal("published direct with it off")
	}
	h2 := direct(newRemote(t, "h2", 2, "10.42.2.0/24", t0.Add(-time.Hour)), 2)
	h.up(h2)
	if got, want := h.k.paths(), []string{"10.42.2.0/24 tun"}; !slices.Equal(got, want) {
		t.Fatalf("routes: got %v, want %v", got, want)
	}
	for _, rv := range h.view().Routes {
		if rv.Path != "esp" || rv.PathNote != "" {
			t.Errorf("route view %+v: want path esp and no note", rv)
		}
	}
}

// fabricRoute is a next hop and its MAC.
type fabricRoute struct {
	via netip.Addr
	mac [6]byte
}

// fakeFabric is the fabric's routes, by prefix.
type fakeFabric map[netip.Prefix]fabricRoute

func (f fakeFabric) Route(p netip.Prefix) (netip.Addr, [6]byte, bool) {
	r, ok := f[p]
	return r.via, r.mac, ok
}

// TestFabricRoutes: a member on another subnet whose block the fabric
// routes through a router on our subnet is reached through it (path bgp),
// admitted from the router's MAC; without a route, or through a router
// off our subnet, or before the router's MAC is known, it keeps ESP.
func TestFabricRoutes(t *testing.T) {
	f := &fakeFilter{}
	tor := netip.MustParseAddr("192.0.2.254")
	fab := fakeFabric{}
	h := newHarness(t, func(c *Config) { c.DirectFilter, c.Fabric = f, fab })
	h4 := newRemote(t, "h4", 4, "10.42.4.0/24", t0.Add(-time.Hour))
	h4.info.Underlay = netip.MustParseAddrPort("198.51.100.4:4500")
	h5 := newRemote(t, "h5", 5, "10.42.5.0/24", t0.Add(-time.Hour))
	h5.info.Underlay = netip.MustParseAddrPort("198.51.100.5:4500")
	h6 := newRemote(t, "h6", 6, "10.42.6.0/24", t0.Add(-time.Hour))
	h6.info.Underlay = netip.MustParseAddrPort("198.51.100.6:4500")
	fab[netip.MustParsePrefix("10.42.4.0/24")] = fabricRoute{tor, [6]byte{2, 0, 0, 0, 0, 0xfe}}
	fab[netip.MustParsePrefix("10.42.5.0/24")] = fabricRoute{netip.MustParseAddr("203.0.113.1"), [6]byte{2, 0, 0, 0, 0, 0xfd}}
	h.up(h4, h5, h6)
	want := []string{"10.42.4.0/24 via 192.0.2.254", "10.42.5.0/24 tun", "10.42.6.0/24 tun"}
	if got := h.k.paths(); !slices.Equal(got, want) {
		t.Fatalf("routes: got %v, want %v", got, want)
	}
	if got, want := f.String(), "10.42.4.0/24@fe"; got != want {
		t.Fatalf("admitted: got %q, want %q", got, want)
	}
	notes := h.routeNotes()
	for peer, want := range map[string]string{
		"h4": "bgp|192.0.2.254|",
		"h5": "esp||the fabric's next hop 203.0.113.1 is not on this host's underlay subnets",
		"h6": "esp||the fabric announces no route to 10.42.6.0/24",
	} {
		if notes[peer] != want {
			t.Errorf("route view of %s: got %q, want %q", peer, notes[peer], want)
		}
	}
	// The fabric learns h6's block, but the router's MAC is not known
	// yet: ESP, and a retry at the next tick.
	fab[netip.MustParsePrefix("10.42.6.0/24")] = fabricRoute{tor, [6]byte{}}
	h.step()
	if !h.a.timed || slices.Contains(h.k.paths(), "10.42.6.0/24 via 192.0.2.254") {
		t.Errorf("router MAC unknown: timed %v, routes %v; want a retry and no fabric route yet", h.a.timed, h.k.paths())
	}
	fab[netip.MustParsePrefix("10.42.6.0/24")] = fab[netip.MustParsePrefix("10.42.4.0/24")]
	h.step()
	if got := h.k.paths(); !slices.Contains(got, "10.42.6.0/24 via 192.0.2.254") {
		t.Errorf("routes after the MAC is known: %v", got)
	}
	// The fabric withdraws h4's block: back to ESP, no longer admitted.
	delete(fab, netip.MustParsePrefix("10.42.4.0/24"))
	h.step()
	if got := h.k.paths(); !slices.Contains(got, "10.42.4.0/24 tun") {
		t.Errorf("routes after the fabric withdrew h4's block: %v", got)
	}
	if got, want := f.String(), "10.42.6.0/24@fe"; got != want {
		t.Errorf("admitted: got %q, want %q", got, want)
	}
}
