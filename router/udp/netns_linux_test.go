//go:build linux

package udp

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/drovernet/drover/internal/labns"
	"github.com/drovernet/drover/internal/netnstest"
)

// This file holds the tests that need their own network namespaces (root).
// The package's other tests use the host's loopback only. testenv is not
// used: it imports the router, which imports this package.

// vethSeq numbers the veth pairs of this process.
var vethSeq atomic.Uint32

// newNS creates a namespace drv-udp… with loopback up, deleted when the
// test ends (skipping the test when not root).
func newNS(t *testing.T) netns.NsHandle {
	t.Helper()
	return netnstest.New(t, "udp").Handle()
}

func nlHandle(t *testing.T, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	t.Cleanup(h.Close)
	return h
}

// inNS runs f on a thread inside ns and waits for it. The thread is thrown
// away afterwards. Sockets opened by f stay in ns; interface names and
// indexes f looks up (IPv6 zones) are those of ns.
func inNS(t *testing.T, ns netns.NsHandle, f func()) {
	t.Helper()
	if err := labns.DoIn(ns, func() error { f(); return nil }); err != nil {
		t.Fatal(err)
	}
}

// TestOuterDFClear checks on the wire that outer IPv4 packets leave without
// DF (see the package doc, "Fragmentation"), and, as a control, that a
// socket with the kernel's default (IP_PMTUDISC_WANT) sets it, so the test
// can tell the two apart.
func TestOuterDFClear(t *testing.T) {
	ns := newNS(t)
	var a, b *Conn
	var plain *net.UDPConn
	var pkt int // AF_PACKET socket on lo, IPv4 only
	var setupErr error
	inNS(t, ns, func() {
		if a, setupErr = Listen(Config{Local: lo4}); setupErr != nil {
			return
		}
		if b, setupErr = Listen(Config{Local: lo4}); setupErr != nil {
			return
		}
		if plain, setupErr = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(lo4)); setupErr != nil {
			return
		}
		var lo *net.Interface
		if lo, setupErr = net.InterfaceByName("lo"); setupErr != nil {
			return
		}
		proto := int(htons(unix.ETH_P_IP))
		if pkt, setupErr = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto); setupErr != nil {
			return
		}
		setupErr = unix.Bind(pkt, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: lo.Index})
	})
	t.Cleanup(func() {
		if a != nil {
			a.Close()
		}
		if b != nil {
			b.Close()
		}
		if plain != nil {
			plain.Close()
		}
		if pkt > 0 {
			unix.Close(pkt)
		}
	})
	if setupErr != nil {
		t.Fatalf("setup in netns: %v", setupErr)
	}
	dst := b.LocalAddr()

	if n, err := a.WriteBatch([]Msg{{Buf: make([]byte, 1000), Addr: dst}}); n != 1 || err != nil {
		t.Fatalf("WriteBatch: got %d, %v; want 1, nil", n, err)
	}
	if df := captureDF(t, pkt, a.LocalAddr().Port(), dst.Port()); df {
		t.Errorf("outer packet from Conn: DF set, want clear")
	}
	if _, err := plain.WriteToUDPAddrPort(make([]byte, 1000), dst); err != nil {
		t.Fatal(err)
	}
	plainPort := plain.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	if df := captureDF(t, pkt, plainPort, dst.Port()); !df {
		t.Errorf("control: packet from a default socket has DF clear, want set (the test cannot tell)")
	}
}

// readOne reads one datagram; unlike readAll it may run off the test goroutine.
func readOne(c *Conn) (Msg, error) {
	msgs := recvBufs(1, 100)
	if _, err := c.ReadBatch(msgs); err != nil {
		return Msg{}, err
	}
	msgs[0].Buf = msgs[0].Buf[:msgs[0].N]
	return msgs[0], nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// captureDF reads IPv4 packets from the AF_PACKET socket fd until one
// carries UDP from sport to dport, and reports its DF bit.
func captureDF(t *testing.T, fd int, sport, dport uint16) bool {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 65536)
	for time.Now().Before(deadline) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, int(time.Until(deadline)/time.Millisecond)+1); err != nil {
			if err == unix.EINTR {
				continue
			}
			t.Fatalf("poll: %v", err)
		}
		if pfd[0].Revents&unix.POLLIN == 0 {
			continue
		}
		n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			continue
		}
		p := buf[:n]
		if len(p) < 20 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_UDP {
			continue
		}
		ihl := int(p[0]&0x0f) * 4
		if len(p) < ihl+8 {
			continue
		}
		if binary.BigEndian.Uint16(p[ihl:]) == sport && binary.BigEndian.Uint16(p[ihl+2:]) == dport {
			return binary.BigEndian.Uint16(p[6:])&0x4000 != 0
		}
	}
	t.Fatalf("no UDP packet %d -> %d captured within 10s", sport, dport)
	return false
}

// vethPair links ns1 and ns2 with a veth pair, gives each end an address
// (prefix notation), brings both up, waits until they can carry traffic,
// and returns the two interface names. The links go with the namespaces.
func vethPair(t *testing.T, ns1, ns2 netns.NsHandle, pfx1, pfx2 string) (if1, if2 string) {
	t.Helper()
	seq := vethSeq.Add(1)
	if1, if2 = fmt.Sprintf("drv-ua%d", seq), fmt.Sprintf("drv-ub%d", seq)
	h1, h2 := nlHandle(t, ns1), nlHandle(t, ns2)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: if1}, PeerName: if2, PeerNamespace: netlink.NsFd(ns2)}
	if err := h1.LinkAdd(veth); err != nil {
		t.Fatalf("veth %s/%s: %v", if1, if2, err)
	}
	ends := []struct {
		h    *netlink.Handle
		name string
		pfx  netip.Prefix
	}{{h1, if1, netip.MustParsePrefix(pfx1)}, {h2, if2, netip.MustParsePrefix(pfx2)}}
	for _, e := range ends {
		link, err := e.h.LinkByName(e.name)
		if err != nil {
			t.Fatal(err)
		}
		ipnet := &net.IPNet{IP: e.pfx.Addr().AsSlice(), Mask: net.CIDRMask(e.pfx.Bits(), e.pfx.Addr().BitLen())}
		// NODAD: an IPv6 address is usable at once, with no duplicate
		// address detection to wait for.
		if err := e.h.AddrAdd(link, &netlink.Addr{IPNet: ipnet, Flags: unix.IFA_F_NODAD}); err != nil {
			t.Fatalf("%s: add %v: %v", e.name, e.pfx, err)
		}
		if err := e.h.LinkSetUp(link); err != nil {
			t.Fatalf("%s up: %v", e.name, err)
		}
	}
	// Until the kernel's link watcher has activated both ends (it may take
	// up to a second), veth drops what it is given; send only after that.
	deadline := time.Now().Add(10 * time.Second)
	for _, e := range ends {
		for {
			link, err := e.h.LinkByName(e.name)
			if err != nil {
				t.Fatal(err)
			}
			if link.Attrs().OperState == netlink.OperUp {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: operstate %v after 10s, want up", e.name, link.Attrs().OperState)
			}
			time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
		}
	}
	return if1, if2
}

// vethConns opens a sender (with cfg, but its own address) and a receiver
// in two fresh namespaces joined by a veth pair, and returns the sender's
// namespace too. Both are closed when the test ends; a watchdog closes
// the receiver if a lost datagram leaves the test hanging in ReadBatch.
func vethConns(t *testing.T, cfg Config) (ns1 netns.NsHandle, a, b *Conn) {
	t.Helper()
	ns1, ns2 := newNS(t), newNS(t)
	vethPair(t, ns1, ns2, "10.199.2.1/24", "10.199.2.2/24")
	var err error
	cfg.Local = netip.MustParseAddrPort("10.199.2.1:0")
	inNS(t, ns1, func() { a, err = Listen(cfg) })
	if err != nil {
		t.Fatalf("Listen in ns1: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	inNS(t, ns2, func() { b, err = Listen(Config{Local: netip.MustParseAddrPort("10.199.2.2:0")}) })
	if err != nil {
		t.Fatalf("Listen in ns2: %v", err)
	}
	dog := time.AfterFunc(30*time.Second, func() { b.Close() })
	t.Cleanup(func() {
		dog.Stop()
		b.Close()
	})
	return ns1, a, b
}

// TestSendBufferFull fills the socket's send buffer behind a slow link
// (tbf at 100 Mbit/s) so sendmmsg returns EAGAIN: WriteBatch must park
// until there is room and then send everything, nothing lost or doubled.
func TestSendBufferFull(t *testing.T) {
	ns1, ns2 := newNS(t), newNS(t)
	if1, _ := vethPair(t, ns1, ns2, "10.199.0.1/24", "10.199.0.2/24")
	h1 := nlHandle(t, ns1)
	link, err := h1.LinkByName(if1)
	if err != nil {
		t.Fatal(err)
	}
	const rate = 100e6 / 8 // bytes/s
	tbf := &netlink.Tbf{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT},
		Rate:       rate,
		Buffer:     netlink.Xmittime(rate, 32<<10), // 32 KiB burst
		Limit:      1 << 20,                        // queue up to 1 MiB: the sender's buffer fills first
	}
	if err := h1.QdiscAdd(tbf); err != nil {
		t.Skipf("tbf qdisc on %s (is sch_tbf available?): %v", if1, err)
	}

	var a, b *Conn
	inNS(t, ns1, func() {
		a, err = Listen(Config{Local: netip.MustParseAddrPort("10.199.0.1:0"), SendBuffer: 16 << 10, BatchSize: 32})
	})
	if err != nil {
		t.Fatalf("Listen in ns1: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	inNS(t, ns2, func() { b, err = Listen(Config{Local: netip.MustParseAddrPort("10.199.0.2:0")}) })
	if err != nil {
		t.Fatalf("Listen in ns2: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	dog := time.AfterFunc(30*time.Second, func() { b.Close() })
	defer dog.Stop()

	const total = 300
	out := make([]Msg, total)
	for i := range out {
		out[i] = Msg{Buf: payload(uint32(i), 1400), Addr: b.LocalAddr()}
	}
	done := make(chan error, 1)
	go func() {
		if n, err := a.WriteBatch(out); n != total || err != nil {
			done <- fmt.Errorf("WriteBatch: got %d, %v; want %d, nil", n, err, total)
			return
		}
		done <- nil
	}()
	got := readAll(t, b, total, 1500)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	checkReceived(t, got, out, a.LocalAddr())
	if a.tx.parked == 0 {
		t.Errorf("sendmmsg never returned EAGAIN: the test did not fill the send buffer")
	}
}

// TestLinkLocalZones sends between two namespaces over IPv6 link-local
// addresses: the destination's zone picks the interface on send, and the
// source's zone (the interface name in the receiver's namespace) comes
// back on receive, so a reply to the source address reaches the sender.
func TestLinkLocalZones(t *testing.T) {
	ns1, ns2 := newNS(t), newNS(t)
	ifA, ifB := vethPair(t, ns1, ns2, "fe80::a/64", "fe80::b/64")
	addrA, addrB := netip.MustParseAddr("fe80::a"), netip.MustParseAddr("fe80::b")

	var a, b *Conn
	var err error
	inNS(t, ns1, func() { a, err = Listen(Config{Local: netip.AddrPortFrom(addrA.WithZone(ifA), 0)}) })
	if err != nil {
		t.Fatalf("Listen in ns1: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	inNS(t, ns2, func() { b, err = Listen(Config{Local: netip.MustParseAddrPort("[::]:0")}) })
	if err != nil {
		t.Fatalf("Listen in ns2: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	if got := a.LocalAddr().Addr(); got != addrA.WithZone(ifA) {
		t.Errorf("LocalAddr: got %v, want %v", got, addrA.WithZone(ifA))
	}

	var sent int
	inNS(t, ns1, func() {
		sent, err = a.WriteBatch([]Msg{{Buf: []byte("ping"), Addr: netip.AddrPortFrom(addrB.WithZone(ifA), b.LocalAddr().Port())}})
	})
	if sent != 1 || err != nil {
		t.Fatalf("WriteBatch ns1 -> ns2: got %d, %v; want 1, nil", sent, err)
	}
	var got Msg
	inNS(t, ns2, func() { got, err = readOne(b) })
	if err != nil {
		t.Fatalf("ReadBatch in ns2: %v", err)
	}
	wantSrc := netip.AddrPortFrom(addrA.WithZone(ifB), a.LocalAddr().Port())
	if got.Addr != wantSrc || string(got.Buf) != "ping" {
		t.Fatalf("ReadBatch in ns2: got %q from %v, want %q from %v", got.Buf, got.Addr, "ping", wantSrc)
	}
	inNS(t, ns2, func() { sent, err = b.WriteBatch([]Msg{{Buf: []byte("pong"), Addr: got.Addr}}) })
	if sent != 1 || err != nil {
		t.Fatalf("WriteBatch reply to %v: got %d, %v; want 1, nil", got.Addr, sent, err)
	}
	inNS(t, ns1, func() { got, err = readOne(a) })
	if err != nil {
		t.Fatalf("ReadBatch in ns1: %v", err)
	}
	wantSrc = netip.AddrPortFrom(addrB.WithZone(ifA), b.LocalAddr().Port())
	if got.Addr != wantSrc || string(got.Buf) != "pong" {
		t.Fatalf("ReadBatch in ns1: got %q from %v, want %q from %v", got.Buf, got.Addr, "pong", wantSrc)
	}
}
