package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/drovernet/drover/firewall"
	"github.com/drovernet/drover/testenv"
)

// forwardPort is where the containers listen for what the outsider sends.
const forwardPort = 9109

// TestForwardFilterLab is issue 9's check: a machine on the underlay that
// is not a member routes the cluster CIDR via host 1's underlay address
// and sends to every container, with its own source and with sources
// forged inside host 1's and host 2's blocks. No datagram reaches any
// container (counted inside each one), host 1's filter counts every one,
// `drover status` and /metrics show the count, and the containers still
// reach each other. Then host 1's table is deleted by hand and the same
// datagrams arrive, so the checks can fail; the router still exits cleanly.
func TestForwardFilterLab(t *testing.T) {
	testenv.NeedRoot(t)
	for _, encap := range []string{"esp", "vxlan"} {
		for _, flat := range []bool{false, true} {
			model := "routed"
			if flat {
				model = "flat"
			}
			t.Run(encap+"/"+model, func(t *testing.T) {
				testForwardFilterLab(t, Options{Hosts: 2, Containers: 2, Encapsulation: encap, Flat: flat})
			})
		}
	}
	// Cluster mode: the filter protects cluster.cidr, blocks are claimed.
	t.Run("esp/routed/cluster", func(t *testing.T) {
		testForwardFilterLab(t, Options{Hosts: 2, Containers: 2, Encapsulation: "esp", Cluster: true})
	})
}

func testForwardFilterLab(t *testing.T, opts Options) {
	lab := newTestLab(t, opts)
	h1 := lab.Hosts[0]
	if opts.Flat {
		if got := containerPrefixLen(t, lab.Hosts[1].Containers[0]); got != 16 {
			t.Fatalf("flat lab: container address has /%d, want /16", got)
		}
	}
	// Reverse-path filtering off on host 1, as on many hosts: only the
	// forward filter stands between a forged source and the containers.
	err := setSysctls(h1.NS, sysctl{key: "net/ipv4/conf/all/rp_filter", val: "0"},
		sysctl{key: "net/ipv4/conf/" + h1.Uplink + "/rp_filter", val: "0"})
	if err != nil {
		t.Fatal(err)
	}
	out, err := lab.AddUnderlayHost(200)
	if err != nil {
		t.Fatal(err)
	}
	if err := out.RouteVia(netip.MustParsePrefix("10.42.0.0/16"), h1.Underlay); err != nil {
		t.Fatal(err)
	}

	sinks := map[*Container]*UDPSink{}
	for _, c := range lab.Containers() {
		s, err := c.ListenUDP(forwardPort)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		sinks[c] = s
	}
	before := forwardDrops(t, h1.Router)
	payload := []byte("from the underlay, not through the tunnel")
	sendAll := func() int {
		sent := 0
		for _, c := range lab.Containers() {
			dst := netip.AddrPortFrom(c.Addr, forwardPort)
			if err := sendUDPFrom(out.NS, dst, payload); err != nil {
				t.Fatal(err)
			}
			sent++
			for _, h := range lab.Hosts { // a source in host 1's block, and in host 2's
				forged := netip.AddrFrom4([4]byte{0, 0, 0, 77})
				b, f := h.Prefix.Addr().As4(), forged.As4()
				forged = netip.AddrFrom4([4]byte{b[0], b[1], b[2], f[3]})
				if err := SendRawUDP(out.NS, netip.AddrPortFrom(forged, 4242), dst, payload); err != nil {
					t.Fatal(err)
				}
				sent++
			}
		}
		return sent
	}
	sent := sendAll()
	var drops uint64
	err = Poll(t.Context(), 5*time.Second, 20*time.Millisecond, func() error {
		if drops = forwardDrops(t, h1.Router) - before; drops < uint64(sent) {
			return fmt.Errorf("host 1 dropped %d of %d", drops, sent)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	time.Sleep(200 * time.Millisecond) // anything forwarded would have arrived by now
	for c, s := range sinks {
		if got := s.Datagrams(); len(got) != 0 {
			t.Errorf("%s (%s) received %d datagrams from the underlay, want none: %v", c.Ref, c.Addr, len(got), got)
		}
	}
	t.Logf("host 1's forward filter dropped %d of %d datagrams sent from the underlay (%s, %s)", drops, sent, opts.Encapsulation, map[bool]string{false: "routed", true: "flat"}[opts.Flat])

	// The count is a status line and a metric.
	st, err := exec.Command(testenv.DroverBinary(t), "status", "--socket", h1.Router.Config.ControlSocket).CombinedOutput()
	if err != nil {
		t.Fatalf("drover status: %v\n%s", err, st)
	}
	if want := fmt.Sprintf("forward filter: table inet %s, dropped %d packets", firewall.Table, before+drops); !strings.Contains(string(st), want) {
		t.Errorf("drover status has no %q:\n%s", want, st)
	}
	if m := metrics(t, h1.Router.Config.ControlSocket); !strings.Contains(m, fmt.Sprintf("drover_forward_filter_drops_total %d\n", before+drops)) {
		t.Errorf("/metrics: no drover_forward_filter_drops_total %d in\n%s", before+drops, m)
	}

	// The containers still reach each other, across hosts and on a host.
	checkMatrix(t, lab)

	// Without host 1's table the underlay reaches its containers: the
	// checks above can fail.
	c, err := nftables.New(nftables.WithNetNSFd(int(h1.NS.Handle())))
	if err != nil {
		t.Fatal(err)
	}
	c.DelTable(&nftables.Table{Name: firewall.Table, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	sendAll()
	for _, ctr := range h1.Containers {
		s := sinks[ctr]
		err := Poll(t.Context(), 3*time.Second, 20*time.Millisecond, func() error {
			if n := s.Count(payload); n < 3 {
				return fmt.Errorf("%s got %d datagrams", ctr.Ref, n)
			}
			return nil
		})
		if err != nil {
			t.Errorf("without the filter: %v, want 3 (own source and both forged ones)", err)
		}
	}
}

// containerPrefixLen is the prefix length of c's address on eth0.
func containerPrefixLen(t *testing.T, c *Container) int {
	t.Helper()
	bits := -1
	err := withNetlink(c.NS, func(h *netlink.Handle) error {
		l, err := h.LinkByName(containerIf)
		if err != nil {
			return err
		}
		as, err := h.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, a := range as {
			bits, _ = a.Mask.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return bits
}

// sendUDPFrom sends one datagram from ns with its own address.
func sendUDPFrom(ns *NetNS, dst netip.AddrPort, payload []byte) error {
	return ns.Do(func() error {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(payload)
		return err
	})
}

// forwardDrops reads the forward filter's drop count from r's status.
func forwardDrops(t *testing.T, r *Router) uint64 {
	t.Helper()
	st, err := r.Status()
	if err != nil {
		t.Fatal(err)
	}
	ff := st.ForwardFilter
	if ff == nil || ff.Error != "" || ff.Table != "inet "+firewall.Table {
		t.Fatalf("router %s: forward filter status %+v, want table inet %s with a readable counter", r.Name, ff, firewall.Table)
	}
	return ff.DropPackets
}

// metrics GETs /metrics from a control socket.
func metrics(t *testing.T, sock string) string {
	t.Helper()
	c := http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	resp, err := c.Get("http://drover/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
