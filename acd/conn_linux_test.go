package acd

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/drovernet/drover/arpsock"
	"github.com/drovernet/drover/internal/netnstest"
	"github.com/drovernet/drover/router/packet"
)

// TestKernelStation probes through a real bridge towards a Linux station
// that holds one address: the kernel answers the probe for its address
// (a conflict naming its MAC) and nothing answers for a free one.
func TestKernelStation(t *testing.T) {
	netnstest.NeedRoot(t)
	h, d := netnstest.New(t, "acdh"), netnstest.New(t, "acdd")
	nl, err := h.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "drv-abr"}}
	stationMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x42}
	for _, err := range []error{
		nl.LinkAdd(br),
		nl.LinkSetUp(br),
		nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "drv-ad", MasterIndex: br.Index}, PeerName: "eth0",
			PeerHardwareAddr: stationMAC, PeerNamespace: netlink.NsFd(d.Handle())}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if l, err := nl.LinkByName("drv-ad"); err != nil || nl.LinkSetUp(l) != nil {
		t.Fatal(err)
	}
	dl, err := d.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Close()
	eth, err := dl.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := dl.AddrAdd(eth, &netlink.Addr{IPNet: &net.IPNet{IP: cand.AsSlice(), Mask: net.CIDRMask(24, 32)}, Flags: unix.IFA_F_NODAD}); err != nil {
		t.Fatal(err)
	}
	if err := dl.LinkSetUp(eth); err != nil {
		t.Fatal(err)
	}
	var c *arpsock.Conn
	if err := h.Do(func() error { c, err = arpsock.Open("drv-abr"); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mac, err := c.MAC()
	if err != nil {
		t.Fatal(err)
	}
	p := NewProber(c, mac, Config{})
	// The station's link may take a moment to forward (bridge port
	// state): poll to a deadline for the first conflict.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err = p.Probe(context.Background(), cand)
		var conflict *Conflict
		if errors.As(err, &conflict) {
			if conflict.MAC != packet.MAC(stationMAC) || conflict.Why != "reply" {
				t.Errorf("conflict %+v, want a reply from %v", conflict, stationMAC)
			}
			t.Logf("%v", err)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("probe for the station's address: %v, want a conflict", err)
		}
	}
	start := time.Now()
	if err := p.Probe(context.Background(), other); err != nil {
		t.Errorf("probe for a free address: %v, want nil", err)
	}
	t.Logf("a free address took %v", time.Since(start).Round(time.Millisecond))
	if err := Announce(c, mac, other); err != nil {
		t.Error(err)
	}
}
