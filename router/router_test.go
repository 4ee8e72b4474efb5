package router

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/router/gso"
	"github.com/drovernet/drover/router/packet"
	"github.com/drovernet/drover/router/udp"
	"github.com/drovernet/drover/router/vxlan"
	"github.com/drovernet/drover/tun/tuntest"
)

var (
	pfxA  = netip.MustParsePrefix("10.42.1.0/24")
	pfxB  = netip.MustParsePrefix("10.42.2.0/24")
	pfxA6 = netip.MustParsePrefix("fd42:1::/64")
	pfxB6 = netip.MustParsePrefix("fd42:2::/64")
	addrA = netip.MustParseAddr("10.42.1.1")
	addrB = netip.MustParseAddr("10.42.2.1")
	macA  = packet.MAC{0x0e, 0, 0x7f, 0, 0, 1}
	macB  = packet.MAC{0x0e, 0, 0x7f, 0, 0, 2}
)

// node is one router in the test, on loopback, with an in-memory TUN.
type node struct {
	r    *Router
	dev  *tuntest.Frames
	conn *udp.Conn
	done chan error
}

// keys for one direction
type saKeys struct {
	spi uint32
	key []byte
}

func randKey(t testing.TB, c esp.Cipher) []byte {
	k := make([]byte, c.KeyLen())
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

type pairOpts struct {
	encap    Encap
	cipher   esp.Cipher
	mtuA     int // TUN MTU of A (0: tunnel MTU)
	tunnelMT int // tunnel MTU (0: 1438)
}

// newPair starts routers A and B connected over loopback UDP. It returns
// them and the SA keys (a→b, b→a) so tests can forge traffic.
func newPair(t *testing.T, o pairOpts) (a, b *node, ab, ba saKeys) {
	t.Helper()
	if o.cipher == 0 {
		o.cipher = esp.AES128GCM
	}
	if o.tunnelMT == 0 {
		o.tunnelMT = 1438
	}
	if o.mtuA == 0 {
		o.mtuA = o.tunnelMT
	}
	ab = saKeys{spi: 0x1001, key: randKey(t, o.cipher)}
	ba = saKeys{spi: 0x2001, key: randKey(t, o.cipher)}
	ca, err := udp.Listen(udp.Config{Local: netip.MustParseAddrPort("127.0.0.1:0")})
	if err != nil {
		t.Fatal(err)
	}
	cb, err := udp.Listen(udp.Config{Local: netip.MustParseAddrPort("127.0.0.1:0")})
	if err != nil {
		t.Fatal(err)
	}
	mk := func(name string, conn *udp.Conn, mac packet.MAC, prefixes []netip.Prefix, addrs []netip.Addr, mtu int) *node {
		dev := tuntest.NewFrames()
		r, err := New(Config{Name: name, Encap: o.encap, Cipher: o.cipher.String(), VNI: vxlan.DefaultVNI, MAC: mac,
			Prefixes: prefixes, Addrs: addrs, MTU: mtu, TUN: "tuntest"}, dev, conn)
		if err != nil {
			t.Fatal(err)
		}
		return &node{r: r, dev: dev, conn: conn, done: make(chan error, 1)}
	}
	a = mk("a", ca, macA, []netip.Prefix{pfxA, pfxA6}, []netip.Addr{addrA, netip.MustParseAddr("fd42:1::1")}, o.mtuA)
	b = mk("b", cb, macB, []netip.Prefix{pfxB, pfxB6}, []netip.Addr{addrB, netip.MustParseAddr("fd42:2::1")}, o.tunnelMT)
	peer := func(name string, to *udp.Conn, mac packet.MAC, prefixes []netip.Prefix, out, in saKeys) *Peer {
		p := &Peer{Name: name, Underlay: to.LocalAddr(), MAC: mac, Prefixes: prefixes, TunnelMTU: o.tunnelMT}
		if o.encap == EncapESP {
			var err error
			if p.Out, err = esp.NewOutSA(o.cipher, out.spi, out.key, false); err != nil {
				t.Fatal(err)
			}
			sa, err := esp.NewInSA(o.cipher, in.spi, in.key, false, 1024)
			if err != nil {
				t.Fatal(err)
			}
			p.In = []*esp.InSA{sa}
		}
		return p
	}
	if err := a.r.SetPeers([]*Peer{peer("b", cb, macB, []netip.Prefix{pfxB, pfxB6}, ab, ba)}); err != nil {
		t.Fatal(err)
	}
	if err := b.r.SetPeers([]*Peer{peer("a", ca, macA, []netip.Prefix{pfxA, pfxA6}, ba, ab)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	before := runtime.NumGoroutine()
	for _, n := range []*node{a, b} {
		go func(n *node) { n.done <- n.r.Run(ctx) }(n)
	}
	t.Cleanup(func() {
		cancel()
		for _, n := range []*node{a, b} {
			if err := <-n.done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
		deadline := time.Now().Add(2 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // goroutine-leak check: poll to a deadline
		}
		if g := runtime.NumGoroutine(); g > before {
			t.Errorf("goroutines: got %d after stop, want <= %d", g, before)
		}
	})
	return a, b, ab, ba
}

// ipv4 builds an IPv4/UDP packet of total length n.
func ipv4(src, dst netip.Addr, n int, df bool) []byte {
	p := make([]byte, n)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(n))
	if df {
		p[6] = 0x40
	}
	p[8] = 64
	p[9] = 17
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], packet.Checksum(p[:20], 0))
	binary.BigEndian.PutUint16(p[20:], 1234)
	binary.BigEndian.PutUint16(p[22:], 5678)
	binary.BigEndian.PutUint16(p[24:], uint16(n-20))
	for i := 28; i < n; i++ {
		p[i] = byte(i)
	}
	return p
}

// ipv6 builds an IPv6/UDP packet of total length n.
func ipv6(src, dst netip.Addr, n int) []byte {
	p := make([]byte, n)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(n-40))
	p[6] = 17
	p[7] = 64
	s, d := src.As16(), dst.As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	for i := 48; i < n; i++ {
		p[i] = byte(i)
	}
	return p
}

// send hands pkt to the router as the kernel would a plain packet: behind
// an all-zero virtio-net header.
func send(dev *tuntest.Frames, pkt []byte) {
	dev.Inbound <- append(make([]byte, gso.HdrLen), pkt...)
}

// recv returns the packet of the next frame the router writes to ch, which
// must be a plain one (all-zero virtio-net header).
func recv(t *testing.T, ch chan []byte) []byte {
	t.Helper()
	f := recvFrame(t, ch)
	if !bytes.Equal(f[:gso.HdrLen], make([]byte, gso.HdrLen)) {
		t.Fatalf("frame header %x, want a plain packet (all zero)", f[:gso.HdrLen])
	}
	return f[gso.HdrLen:]
}

// recvFrame returns the next frame written to ch, header included.
func recvFrame(t *testing.T, ch chan []byte) []byte {
	t.Helper()
	select {
	case f := <-ch:
		if len(f) < gso.HdrLen {
			t.Fatalf("frame of %d bytes, shorter than its header", len(f))
		}
		return f
	case <-time.After(5 * time.Second):
		t.Fatal("no packet within 5 s")
		return nil
	}
}

// waitDrop polls until the drop counter reaches want.
func waitDrop(t *testing.T, r *Router, reason DropReason, want uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.Drops(reason) < want {
		if time.Now().After(deadline) {
			t.Fatalf("drops[%s]: got %d, want %d (all: %v)", reason, r.Drops(reason), want, r.Status().Drops)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRoundTrip(t *testing.T) {
	cases := []struct {
		name   string
		encap  Encap
		cipher esp.Cipher
	}{
		{"esp-aes128gcm", EncapESP, esp.AES128GCM},
		{"esp-aes256gcm", EncapESP, esp.AES256GCM},
		{"esp-chacha20poly1305", EncapESP, esp.ChaCha20Poly1305},
		{"vxlan", EncapVXLAN, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b, _, _ := newPair(t, pairOpts{encap: tc.encap, cipher: tc.cipher})
			pkts := [][]byte{
				ipv4(netip.MustParseAddr("10.42.1.2"), netip.MustParseAddr("10.42.2.2"), 84, true),
				ipv4(netip.MustParseAddr("10.42.1.3"), netip.MustParseAddr("10.42.2.3"), 1438, true),
				ipv6(netip.MustParseAddr("fd42:1::2"), netip.MustParseAddr("fd42:2::2"), 1280),
			}
			for _, p := range pkts {
				send(a.dev, p)
				got := recv(t, b.dev.Outbound)
				if !bytes.Equal(got, p) {
					t.Fatalf("B got %d bytes %x..., want %d bytes %x...", len(got), got[:min(24, len(got))], len(p), p[:24])
				}
			}
			// and back
			p := ipv4(netip.MustParseAddr("10.42.2.2"), netip.MustParseAddr("10.42.1.2"), 200, false)
			send(b.dev, p)
			if got := recv(t, a.dev.Outbound); !bytes.Equal(got, p) {
				t.Fatalf("A got %x, want %x", got, p)
			}
			// The counters are updated after the send returns: poll.
			st := a.r.Status()
			for deadline := time.Now().Add(5 * time.Second); st.TxPackets != 3 || st.RxPackets != 1; st = a.r.Status() {
				if time.Now().After(deadline) {
					t.Fatalf("A status: tx %d rx %d, want 3 and 1", st.TxPackets, st.RxPackets)
				}
				time.Sleep(5 * time.Millisecond)
			}
			for reason, n := range st.Drops {
				if n != 0 {
					t.Errorf("A drops[%s] = %d, want 0", reason, n)
				}
			}
		})
	}
}

func TestEgressNoRoute(t *testing.T) {
	a, _, _, _ := newPair(t, pairOpts{encap: EncapESP})
	send(a.dev, ipv4(netip.MustParseAddr("10.42.1.2"), netip.MustParseAddr("10.99.0.1"), 60, true))
	waitDrop(t, a.r, DropNoRoute, 1)
	send(a.dev, []byte{0x45, 0, 0}) // not even a header
	waitDrop(t, a.r, DropMalformed, 1)
}

// TestTooBig: with a TUN MTU above the tunnel MTU, a DF (or IPv6) packet
// that does not fit is answered with ICMP carrying the tunnel MTU; a packet
// without DF is sent (the underlay fragments it).
func TestTooBig(t *testing.T) {
	a, b, _, _ := newPair(t, pairOpts{encap: EncapESP, mtuA: 1500, tunnelMT: 1438})
	src := netip.MustParseAddr("10.42.1.2")
	dst := netip.MustParseAddr("10.42.2.2")

	send(a.dev, ipv4(src, dst, 1439, true))
	icmp := recv(t, a.dev.Outbound)
	var ip packet.IP
	if err := ip.Parse(icmp); err != nil {
		t.Fatalf("ICMP reply does not parse: %v", err)
	}
	if ip.Src != addrA || ip.Dst != src || ip.Proto != 1 {
		t.Fatalf("ICMP reply %v -> %v proto %d, want %v -> %v proto 1", ip.Src, ip.Dst, ip.Proto, addrA, src)
	}
	body := icmp[ip.HeaderLen:]
	if body[0] != 3 || body[1] != 4 {
		t.Fatalf("ICMP type/code %d/%d, want 3/4 (fragmentation needed)", body[0], body[1])
	}
	if mtu := binary.BigEndian.Uint16(body[6:]); mtu != 1438 {
		t.Fatalf("ICMP next-hop MTU %d, want 1438", mtu)
	}
	waitDrop(t, a.r, DropTooBig, 1)

	send(a.dev, ipv6(netip.MustParseAddr("fd42:1::2"), netip.MustParseAddr("fd42:2::2"), 1500))
	icmp6 := recv(t, a.dev.Outbound)
	if icmp6[0]>>4 != 6 || icmp6[6] != 58 || icmp6[40] != 2 {
		t.Fatalf("got %x..., want ICMPv6 packet too big", icmp6[:48])
	}
	if mtu := binary.BigEndian.Uint32(icmp6[44:]); mtu != 1438 {
		t.Fatalf("PTB MTU %d, want 1438", mtu)
	}
	waitDrop(t, a.r, DropTooBig, 2)

	big := ipv4(src, dst, 1500, false)
	send(a.dev, big)
	if got := recv(t, b.dev.Outbound); !bytes.Equal(got, big) {
		t.Fatalf("non-DF 1500-byte packet: got %d bytes, want it delivered whole", len(got))
	}
	if n := a.r.Status().ICMPSent; n != 2 {
		t.Errorf("icmp_sent %d, want 2", n)
	}
}

// forge sends raw datagrams to b's socket from a fresh socket on
// 127.0.0.2, an address that is no peer's.
func forge(t *testing.T, to netip.AddrPort, dgrams ...[]byte) {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, d := range dgrams {
		if _, err := c.WriteToUDPAddrPort(d, to); err != nil {
			t.Fatal(err)
		}
	}
}

func seal(t *testing.T, sa *esp.OutSA, inner []byte) []byte {
	t.Helper()
	buf := make([]byte, esp.Headroom+len(inner)+esp.Tailroom)
	copy(buf[esp.Headroom:], inner)
	out, err := sa.Seal(buf, esp.Headroom, len(inner))
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), out...)
}

// TestIngressDrops: every kind of bad ESP datagram is dropped and counted
// under its own reason, and none reaches the TUN.
func TestIngressDrops(t *testing.T) {
	_, b, ab, _ := newPair(t, pairOpts{encap: EncapESP})
	to := b.conn.LocalAddr()
	good, err := esp.NewOutSA(esp.AES128GCM, ab.spi, ab.key, false)
	if err != nil {
		t.Fatal(err)
	}
	inner := ipv4(netip.MustParseAddr("10.42.1.2"), netip.MustParseAddr("10.42.2.2"), 100, true)
	p1 := seal(t, good, inner)

	forge(t, to, p1)
	if got := recv(t, b.dev.Outbound); !bytes.Equal(got, inner) {
		t.Fatalf("authentic packet: got %x, want %x", got, inner)
	}
	forge(t, to, p1) // replayed
	waitDrop(t, b.r, DropReplay, 1)

	forge(t, to, p1[:20]) // truncated: shorter than header + IV + ICV
	waitDrop(t, b.r, DropTruncated, 1)

	// Wrong key: its seq 1 would be rejected as a replay before any
	// decryption (RFC 4303 §3.4.3 orders the checks so), so send seq 2.
	wrong, _ := esp.NewOutSA(esp.AES128GCM, ab.spi, randKey(t, esp.AES128GCM), false)
	seal(t, wrong, inner)
	forge(t, to, seal(t, wrong, inner))
	waitDrop(t, b.r, DropAuth, 1)

	unknown, _ := esp.NewOutSA(esp.AES128GCM, 0x9999, ab.key, false)
	forge(t, to, seal(t, unknown, inner)) // unknown SPI
	waitDrop(t, b.r, DropUnknownSPI, 1)

	spoofed := ipv4(netip.MustParseAddr("10.42.7.7"), netip.MustParseAddr("10.42.2.2"), 100, true)
	forge(t, to, seal(t, good, spoofed)) // inner source not A's
	waitDrop(t, b.r, DropSpoofed, 1)

	relay := ipv4(netip.MustParseAddr("10.42.1.2"), netip.MustParseAddr("10.99.0.1"), 100, true)
	forge(t, to, seal(t, good, relay)) // destination not ours
	waitDrop(t, b.r, DropNotForUs, 1)

	forge(t, to, []byte{0xff}, []byte{0, 0, 0, 0, 1, 2, 3, 4, 5}) // RFC 3948 keepalive, non-ESP marker
	deadline := time.Now().Add(5 * time.Second)
	for st := b.r.Status(); st.Keepalives != 1 || st.NonESP != 1; st = b.r.Status() {
		if time.Now().After(deadline) {
			t.Fatalf("keepalives %d non_esp %d, want 1 and 1", st.Keepalives, st.NonESP)
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case p := <-b.dev.Outbound:
		t.Fatalf("a bad datagram reached the TUN: %x", p)
	default:
	}
	if n := b.r.Status().RxPackets; n != 1 {
		t.Errorf("rx_packets %d, want 1", n)
	}
}

// TestIngressStaleIsReplay: a packet older than the replay window
// (esp.ErrStale) is counted as a replay, not as malformed.
func TestIngressStaleIsReplay(t *testing.T) {
	_, b, ab, _ := newPair(t, pairOpts{encap: EncapESP})
	to := b.conn.LocalAddr()
	sa, err := esp.NewOutSA(esp.AES128GCM, ab.spi, ab.key, false)
	if err != nil {
		t.Fatal(err)
	}
	inner := ipv4(netip.MustParseAddr("10.42.1.2"), netip.MustParseAddr("10.42.2.2"), 100, true)
	old := seal(t, sa, inner) // seq 1, held back
	// Far past the 1024-packet window, so seq 1 is stale, not a duplicate.
	if err := sa.Resume(5000); err != nil {
		t.Fatal(err)
	}
	forge(t, to, seal(t, sa, inner))
	if got := recv(t, b.dev.Outbound); !bytes.Equal(got, inner) {
		t.Fatalf("packet at seq 5000: got %x, want %x", got, inner)
	}
	forge(t, to, old)
	waitDrop(t, b.r, DropReplay, 1)
	if got := b.r.Drops(DropMalformed); got != 0 {
		t.Errorf("drops[malformed]: got %d, want 0", got)
	}
}

// TestVXLANIngress: Linux's header rules, unknown senders, and ARP answers.
func TestVXLANIngress(t *testing.T) {
	a, b, _, _ := newPair(t, pairOpts{encap: EncapVXLAN})
	frame := func(h []byte, dst packet.MAC, et uint16, body []byte) []byte {
		f := append([]byte(nil), h...)
		f = packet.AppendEth(f, dst, macA, et)
		return append(f, body...)
	}
	std := vxlan.Header{VNI: vxlan.DefaultVNI}.Append(nil)
	inner := ipv4(netip.MustParseAddr("10.42.1.2"), netip.MustParseAddr("10.42.2.2"), 60, true)

	// From A's own socket address, so the sender is the known peer.
	send := func(d []byte) {
		t.Helper()
		if err := a.conn.WriteTo(d, b.conn.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	send(frame(std, macB, packet.EtherTypeIPv4, inner))
	if got := recv(t, b.dev.Outbound); !bytes.Equal(got, inner) {
		t.Fatalf("got %x, want %x", got, inner)
	}
	send(frame([]byte{0x0c, 0, 0, 0, 0, 0x04, 0x12, 0}, macB, packet.EtherTypeIPv4, inner)) // reserved flag
	waitDrop(t, b.r, DropBadVXLAN, 1)
	send(frame(vxlan.Header{VNI: 7}.Append(nil), macB, packet.EtherTypeIPv4, inner)) // other VNI
	waitDrop(t, b.r, DropBadVXLAN, 2)
	send(frame(std, packet.MAC{2, 1, 1, 1, 1, 1}, packet.EtherTypeIPv4, inner)) // not our MAC
	waitDrop(t, b.r, DropNotForUs, 1)
	forge(t, b.conn.LocalAddr(), frame(std, macB, packet.EtherTypeIPv4, inner)) // unknown sender
	waitDrop(t, b.r, DropUnknownPeer, 1)

	// ARP request for an address in B's prefix, broadcast: B answers with
	// a unicast ARP reply to A's underlay socket. A's router gets a frame it
	// does not route (an ARP reply) and counts it as not_for_us, which shows
	// that B answered; and a request for an address that is not B's gets no
	// answer at all.
	req := packet.ARP{Op: packet.ARPRequest, SenderMAC: macA, SenderIP: netip.MustParseAddr("10.42.1.2"), TargetIP: netip.MustParseAddr("10.42.2.9")}
	before := a.r.Drops(DropNotForUs)
	send(frame(std, packet.BroadcastMAC, packet.EtherTypeARP, req.Append(nil)))
	waitDrop(t, a.r, DropNotForUs, before+1)
	req.TargetIP = netip.MustParseAddr("10.42.9.9")
	bBefore := b.r.Drops(DropNotForUs)
	send(frame(std, packet.BroadcastMAC, packet.EtherTypeARP, req.Append(nil)))
	waitDrop(t, b.r, DropNotForUs, bBefore+1)
	if n := a.r.Drops(DropNotForUs); n != before+1 {
		t.Errorf("A not_for_us %d, want %d: B answered an ARP request for an address that is not its own", n, before+1)
	}
}

func TestSetPeersRejectsConflicts(t *testing.T) {
	a, _, _, _ := newPair(t, pairOpts{encap: EncapESP})
	out, _ := esp.NewOutSA(esp.AES128GCM, 0x5000, randKey(t, esp.AES128GCM), false)
	in, _ := esp.NewInSA(esp.AES128GCM, 0x5001, randKey(t, esp.AES128GCM), false, 1024)
	p1 := &Peer{Name: "x", Underlay: netip.MustParseAddrPort("127.0.0.9:4500"), Prefixes: []netip.Prefix{pfxB}, TunnelMTU: 1438, Out: out, In: []*esp.InSA{in}}
	p2 := &Peer{Name: "y", Underlay: netip.MustParseAddrPort("127.0.0.8:4500"), Prefixes: []netip.Prefix{pfxB}, TunnelMTU: 1438, Out: out, In: []*esp.InSA{in}}
	if err := a.r.SetPeers([]*Peer{p1, p2}); err == nil {
		t.Fatal("two peers with the same prefix: got nil error")
	}
	p2.Prefixes = []netip.Prefix{netip.MustParsePrefix("10.42.3.0/24")}
	if err := a.r.SetPeers([]*Peer{p1, p2}); err == nil {
		t.Fatal("two peers with the same inbound SPI: got nil error")
	}
}

// TestRekey: during a key rotation the receiver accepts both the previous
// and the new inbound SA, and the peer's counters survive SetPeers when the
// control plane passes the same Stats.
func TestRekey(t *testing.T) {
	a, b, ab, _ := newPair(t, pairOpts{encap: EncapESP})
	to := b.conn.LocalAddr()
	inner := ipv4(netip.MustParseAddr("10.42.1.2"), netip.MustParseAddr("10.42.2.2"), 100, true)
	old, _ := esp.NewOutSA(esp.AES128GCM, ab.spi, ab.key, false)
	forge(t, to, seal(t, old, inner))
	recv(t, b.dev.Outbound)

	// B re-keys its view of A: a new inbound SA first, the old one kept.
	st := b.r.state.Load()
	pa := st.peers[0]
	newKey := randKey(t, esp.AES128GCM)
	newIn, _ := esp.NewInSA(esp.AES128GCM, 0x3001, newKey, false, 1024)
	rekeyed := *pa
	rekeyed.In = []*esp.InSA{newIn, pa.In[0]}
	if err := b.r.SetPeers([]*Peer{&rekeyed}); err != nil {
		t.Fatal(err)
	}
	newOut, _ := esp.NewOutSA(esp.AES128GCM, 0x3001, newKey, false)
	forge(t, to, seal(t, old, inner), seal(t, newOut, inner)) // in flight under the old key, then the new
	recv(t, b.dev.Outbound)
	recv(t, b.dev.Outbound)
	if n := b.r.Status().Peers[0].RxPackets; n != 3 {
		t.Errorf("rx packets after re-key: got %d, want 3 (counters must survive SetPeers)", n)
	}
	// Grace over: the old SA is dropped; its packets are unknown SPIs.
	rekeyed2 := rekeyed
	rekeyed2.In = []*esp.InSA{newIn}
	if err := b.r.SetPeers([]*Peer{&rekeyed2}); err != nil {
		t.Fatal(err)
	}
	forge(t, to, seal(t, old, inner))
	waitDrop(t, b.r, DropUnknownSPI, 1)
	_ = a
}

// TestStatusLocal: Status reports the prefixes and addresses set at run
// time (a claimed block), not only those of the initial Config.
func TestStatusLocal(t *testing.T) {
	a, _, _, _ := newPair(t, pairOpts{encap: EncapVXLAN})
	blk := netip.MustParsePrefix("10.42.77.0/24")
	if err := a.r.SetLocal([]netip.Prefix{blk}, []netip.Addr{netip.MustParseAddr("10.42.77.1")}); err != nil {
		t.Fatal(err)
	}
	st := a.r.Status()
	if len(st.Prefixes) != 1 || st.Prefixes[0] != "10.42.77.0/24" || len(st.Addresses) != 1 || st.Addresses[0] != "10.42.77.1" {
		t.Fatalf("Status prefixes %v addresses %v, want [10.42.77.0/24] [10.42.77.1]", st.Prefixes, st.Addresses)
	}
}

// Running is false before Run, true while both pipelines run, and false
// once one of them stops (here: the TUN device goes away) and Run returns.
func TestRunning(t *testing.T) {
	conn, err := udp.Listen(udp.Config{Local: netip.MustParseAddrPort("127.0.0.1:0")})
	if err != nil {
		t.Fatal(err)
	}
	dev := tuntest.NewFrames()
	r, err := New(Config{Name: "a", Encap: EncapVXLAN, MTU: 1400, TUN: "tuntest"}, dev, conn)
	if err != nil {
		t.Fatal(err)
	}
	if r.Running() {
		t.Fatal("before Run: got Running true, want false")
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	deadline := time.Now().Add(5 * time.Second)
	for !r.Running() {
		if time.Now().After(deadline) {
			t.Fatal("Run started 5 s ago: got Running false, want true")
		}
		time.Sleep(time.Millisecond) // poll to a deadline
	}
	dev.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its TUN device closed")
	}
	if r.Running() {
		t.Fatal("after Run returned: got Running true, want false")
	}
}
