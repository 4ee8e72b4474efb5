package tun

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/drovernet/drover/internal/netnstest"
)

// TestDirectRouteAndFlush: a route with a next hop goes in as "via" with
// drover's protocol, UnderlayLinkOf finds the interface, and FlushRoutes
// removes drover's routes of the interface and nothing else.
func TestDirectRouteAndFlush(t *testing.T) {
	netnstest.NeedRoot(t)
	ns := netnstest.New(t, "rt")
	err := ns.Do(func() error {
		// A veth (this kernel may lack the dummy driver); its peer stays
		// down-side in the same namespace.
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "drv-ul", HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 7}}, PeerName: "drv-ulp"}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		if p, err := netlink.LinkByName("drv-ulp"); err != nil || netlink.LinkSetUp(p) != nil {
			return errors.Join(err, errors.New("veth peer not up"))
		}
		l, err := netlink.LinkByName("drv-ul")
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr("192.0.2.1/24")
		if err := netlink.AddrAdd(l, a); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}

		ul, err := UnderlayLinkOf(netip.MustParseAddr("192.0.2.1"))
		if err != nil {
			return err
		}
		if ul.Name != "drv-ul" || ul.MAC != [6]byte{2, 0, 0, 0, 0, 7} || len(ul.Subnets) == 0 || ul.Subnets[0] != netip.MustParsePrefix("192.0.2.0/24") {
			t.Errorf("UnderlayLinkOf: got %+v, want drv-ul 02:00:00:00:00:07 [192.0.2.0/24 ...]", ul)
		}
		if ul, err := UnderlayLinkOf(netip.MustParseAddr("192.0.2.9")); err != nil || ul.Name != "" {
			t.Errorf("UnderlayLinkOf an address nobody holds: got %+v, %v; want none", ul, err)
		}

		rt := Route{Prefix: netip.MustParsePrefix("10.42.2.0/24"), Via: netip.MustParseAddr("192.0.2.2")}
		if err := AddRoute("drv-ul", rt); err != nil {
			return err
		}
		if err := AddRoute("drv-ul", rt); !errors.Is(err, ErrRouteExists) {
			t.Errorf("second add: got %v, want ErrRouteExists", err)
		}
		// Someone else's route on the same interface stays.
		_, other, _ := net.ParseCIDR("10.99.0.0/16")
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: other, Gw: net.ParseIP("192.0.2.254")}); err != nil {
			return err
		}
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: rt.nl(0).Dst}, netlink.RT_FILTER_DST)
		if err != nil {
			return err
		}
		if len(rs) != 1 || !rs[0].Gw.Equal(net.ParseIP("192.0.2.2")) || rs[0].Protocol != routeProtocol || rs[0].LinkIndex != l.Attrs().Index {
			t.Errorf("route: got %+v, want 10.42.2.0/24 via 192.0.2.2 dev drv-ul proto %d", rs, routeProtocol)
		}

		n, err := FlushRoutes("drv-ul")
		if err != nil || n != 1 {
			t.Errorf("FlushRoutes: got %d, %v; want 1, nil", n, err)
		}
		all, err := netlink.RouteList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		var left []string
		for _, r := range all {
			if r.Dst != nil {
				left = append(left, r.Dst.String())
			}
		}
		if len(left) != 2 || left[0] != "10.99.0.0/16" && left[1] != "10.99.0.0/16" {
			t.Errorf("routes left: got %v, want the connected route and 10.99.0.0/16", left)
		}
		if err := DelRoute("drv-ul", rt); err != nil {
			t.Errorf("delete a flushed route: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRoutesReusesIndex: Routes adds and removes through one socket with
// the interface's index cached; when the interface is deleted and created
// again under the same name, the next Add finds the new index, and a Del
// after the interface is gone is no error.
func TestRoutesReusesIndex(t *testing.T) {
	netnstest.NeedRoot(t)
	ns := netnstest.New(t, "rti")
	err := ns.Do(func() error {
		up := func() (netlink.Link, error) {
			veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "drv-rt"}, PeerName: "drv-rtp"}
			if err := netlink.LinkAdd(veth); err != nil {
				return nil, err
			}
			l, err := netlink.LinkByName("drv-rt")
			if err != nil {
				return nil, err
			}
			return l, netlink.LinkSetUp(l)
		}
		l, err := up()
		if err != nil {
			return err
		}
		routes, err := NewRoutes()
		if err != nil {
			return err
		}
		defer routes.Close()
		has := func(want int) error {
			rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
			if err != nil {
				return err
			}
			if len(rs) != want {
				t.Errorf("drover's routes: got %d (%v), want %d", len(rs), rs, want)
			}
			return nil
		}
		rt := Route{Prefix: netip.MustParsePrefix("10.42.7.0/24")}
		if err := routes.Add("drv-rt", rt); err != nil {
			return err
		}
		if err := routes.Add("drv-rt", rt); !errors.Is(err, ErrRouteExists) {
			t.Errorf("second Add: got %v, want ErrRouteExists", err)
		}
		if err := has(1); err != nil {
			return err
		}
		if err := routes.Del("drv-rt", rt); err != nil {
			t.Errorf("Del: got %v, want nil", err)
		}
		if err := routes.Del("drv-rt", rt); err != nil {
			t.Errorf("Del of a route already gone: got %v, want nil", err)
		}
		if err := has(0); err != nil {
			return err
		}

		// The interface goes and comes back with another index.
		if err := netlink.LinkDel(l); err != nil {
			return err
		}
		l2, err := up()
		if err != nil {
			return err
		}
		if l2.Attrs().Index == l.Attrs().Index {
			t.Fatalf("recreated interface kept index %d", l.Attrs().Index)
		}
		if err := routes.Add("drv-rt", rt); err != nil {
			t.Errorf("Add after the interface was recreated: got %v, want nil", err)
		}
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return err
		}
		if len(rs) != 1 || rs[0].LinkIndex != l2.Attrs().Index {
			t.Errorf("route after recreation: got %+v, want one through index %d", rs, l2.Attrs().Index)
		}

		if err := netlink.LinkDel(l2); err != nil {
			return err
		}
		if err := routes.Del("drv-rt", rt); err != nil {
			t.Errorf("Del after the interface is gone: got %v, want nil", err)
		}
		if err := routes.Add("drv-rt", rt); err == nil {
			t.Error("Add through a missing interface: got nil, want an error")
		} else if !strings.Contains(err.Error(), "link drv-rt") {
			t.Errorf("Add through a missing interface: got %q, want it to name link drv-rt", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
