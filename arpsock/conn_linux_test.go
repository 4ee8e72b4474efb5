package arpsock_test

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/drovernet/drover/arpsock"
	"github.com/drovernet/drover/internal/netnstest"
	"github.com/drovernet/drover/router/packet"
)

// TestConnKernel: two sockets on the two ends of a veth pair exchange an
// ARP request; the sender does not read its own frame back, its read
// times out at the deadline; Close wakes a read in progress; a missing or
// deleted interface is ErrNoLink.
func TestConnKernel(t *testing.T) {
	netnstest.NeedRoot(t)
	ns := netnstest.New(t, "arps")
	nl, err := ns.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	macA, macB := net.HardwareAddr{0x02, 0, 0, 0, 0, 0xa}, net.HardwareAddr{0x02, 0, 0, 0, 0, 0xb}
	if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "drv-arpa", HardwareAddr: macA}, PeerName: "drv-arpb", PeerHardwareAddr: macB}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"drv-arpa", "drv-arpb"} {
		l, err := nl.LinkByName(name)
		if err != nil || nl.LinkSetUp(l) != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	var a, b *arpsock.Conn
	if err := ns.Do(func() (err error) {
		if _, err := arpsock.Open("drv-nosuch"); !errors.Is(err, arpsock.ErrNoLink) {
			t.Errorf("Open of a missing interface: got %v, want ErrNoLink", err)
		}
		if a, err = arpsock.Open("drv-arpa"); err != nil {
			return err
		}
		b, err = arpsock.Open("drv-arpb")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	if got, err := a.MAC(); err != nil || got != packet.MAC(macA) {
		t.Errorf("MAC: got %v, %v; want %v", got, err, macA)
	}

	// An ARP request (RFC 826): Ethernet/IPv4, who has 192.0.2.2, tell
	// 192.0.2.1.
	ipB := netip.MustParseAddr("192.0.2.2")
	frame := packet.AppendEth(nil, packet.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, packet.MAC(macA), packet.EtherTypeARP)
	frame = append(frame, 0, 1, 0x08, 0x00, 6, 4, 0, byte(packet.ARPRequest))
	frame = append(append(frame, macA...), 192, 0, 2, 1)
	frame = append(append(frame, make([]byte, 6)...), ipB.AsSlice()...)
	if err := a.Send(frame); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 128)
	n, outgoing, err := b.Recv(buf, time.Now().Add(2*time.Second))
	var got packet.ARP
	if err != nil || outgoing || got.Parse(buf[packet.EthHeaderLen:n]) != nil || got.TargetIP != ipB || got.SenderMAC != packet.MAC(macA) {
		t.Errorf("receiver: got %d bytes, outgoing %v, %v (%+v); want the request, incoming", n, outgoing, err, got)
	}
	// A socket bound to one EtherType is not a tap (ptype_all): the
	// sender does not read its own frame back.
	start := time.Now()
	if _, _, err := a.Recv(buf, start.Add(100*time.Millisecond)); !errors.Is(err, arpsock.ErrTimeout) {
		t.Errorf("sender after its send: got %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d < 90*time.Millisecond || d > time.Second {
		t.Errorf("Recv timed out after %v, want about 100ms", d)
	}
	if err := a.Send(frame[:10]); err == nil {
		t.Error("Send of a runt: got nil error")
	}

	done := make(chan error, 1)
	go func() {
		_, _, err := b.Recv(buf, time.Now().Add(10*time.Second))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond) // let the read block
	start = time.Now()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Error("Recv on a closed socket: got nil error")
		}
		if d := time.Since(start); d > 200*time.Millisecond {
			t.Errorf("Close woke the read after %v, want under 200ms", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake the read")
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	l, err := nl.LinkByName("drv-arpa")
	if err != nil || nl.LinkDel(l) != nil {
		t.Fatal(err)
	}
	if _, err := a.MAC(); !errors.Is(err, arpsock.ErrNoLink) {
		t.Errorf("MAC after the link is gone: got %v, want ErrNoLink", err)
	}
}
