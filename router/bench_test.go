package router

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/router/gso"
	"github.com/drovernet/drover/router/packet"
	"github.com/drovernet/drover/router/udp"
	"github.com/drovernet/drover/tun"
	"github.com/drovernet/drover/tun/tuntest"
)

// discardConn is an underlay that accepts every datagram and receives none:
// it isolates the router's per-packet work from system calls.
type discardConn struct{ sent int }

func (c *discardConn) ReadBatch([]udp.Msg) (int, error) { select {} }
func (c *discardConn) WriteBatch(m []udp.Msg) (int, error) {
	c.sent += len(m)
	for i := range m {
		m[i].N = len(m[i].Head) + len(m[i].Buf)
	}
	return len(m), nil
}
func (c *discardConn) WriteTo([]byte, netip.AddrPort) error { return nil }
func (c *discardConn) LocalAddr() netip.AddrPort            { return netip.MustParseAddrPort("127.0.0.1:4500") }
func (c *discardConn) Close() error                         { return nil }

// discardDev is a TUN that takes every write.
type discardDev struct{ *tuntest.Frames }

func (d discardDev) WriteFrame([][]byte) error { return nil }

const benchBatch = 64

// benchRouter returns a router with one ESP (or VXLAN) peer owning 10.42.2.0/24,
// and the peer's view of the SAs (to forge ingress traffic).
func benchRouter(tb testing.TB, encap Encap, c esp.Cipher) (*Router, *esp.OutSA) {
	return benchRouterDev(tb, encap, c, discardDev{tuntest.NewFrames()})
}

// benchRouterDev is benchRouter on the given device.
func benchRouterDev(tb testing.TB, encap Encap, c esp.Cipher, dev tun.FrameDevice) (*Router, *esp.OutSA) {
	tb.Helper()
	r, err := New(Config{Name: "bench", Encap: encap, VNI: 1042, MAC: macA, Prefixes: []netip.Prefix{pfxA},
		Addrs: []netip.Addr{addrA}, MTU: 1500}, dev, &discardConn{})
	if err != nil {
		tb.Fatal(err)
	}
	p := &Peer{Name: "b", Underlay: netip.MustParseAddrPort("127.0.0.2:4500"), MAC: macB,
		Prefixes: []netip.Prefix{pfxB}, TunnelMTU: 1438}
	var toUs *esp.OutSA
	if encap == EncapESP {
		k1, k2 := randKey(tb, c), randKey(tb, c)
		p.Out, _ = esp.NewOutSA(c, 0x100, k1, false)
		// Window 0 disables anti-replay, so a benchmark can open the same
		// sealed packets again and again.
		in, _ := esp.NewInSA(c, 0x200, k2, false, 0)
		p.In = []*esp.InSA{in}
		toUs, _ = esp.NewOutSA(c, 0x200, k2, false)
	}
	if err := r.SetPeers([]*Peer{p}); err != nil {
		tb.Fatal(err)
	}
	return r, toUs
}

// tcpSuper returns a TUN frame as the kernel hands over a TSO super-packet:
// a virtio-net header (TCPv4, NEEDS_CSUM, gso_size mss) and one IPv4/TCP
// packet with timestamps (32-byte TCP header), payload bytes of data, and
// the TCP checksum field holding the pseudo-header sum.
func tcpSuper(src, dst netip.Addr, seq uint32, payload, mss int) []byte {
	const ipLen, tcpLen = 20, 32
	n := ipLen + tcpLen + payload
	f := make([]byte, gso.HdrLen+n)
	h := gso.Hdr{Flags: gso.FlagNeedsCsum, Type: gso.TypeTCPv4, HdrLen: ipLen + tcpLen, Size: uint16(mss),
		CsumStart: ipLen, CsumOffset: 16}
	if payload <= mss {
		h.Type, h.Size = gso.TypeNone, 0
	}
	h.Encode(f)
	p := f[gso.HdrLen:]
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(n))
	binary.BigEndian.PutUint16(p[4:], 0x1000)
	p[6] = 0x40 // DF
	p[8] = 64
	p[9] = packet.ProtoTCP
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], packet.Checksum(p[:ipLen], 0))
	t := p[ipLen:]
	binary.BigEndian.PutUint16(t[0:], 40000)
	binary.BigEndian.PutUint16(t[2:], 5201)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], 777)
	t[12] = tcpLen / 4 << 4
	t[13] = 0x10 | 0x08 // ACK|PSH (PSH only on the last segment)
	binary.BigEndian.PutUint16(t[14:], 500)
	t[20], t[21], t[22], t[23] = 1, 1, 8, 10 // NOP NOP timestamps
	binary.BigEndian.PutUint32(t[24:], 123456)
	binary.BigEndian.PutUint32(t[28:], 654321)
	for i := range payload {
		t[tcpLen+i] = byte(i*7 + int(seq))
	}
	sum := packet.PseudoHeaderSum(packet.ProtoTCP, src, dst, tcpLen+payload)
	binary.BigEndian.PutUint16(t[16:], uint16(sum))
	return f
}

// testEgressFrames returns what one benchmark round reads from the TUN: 64
// plain 1400-byte packets, or one 64 KiB TCP super-packet (47 segments).
func testEgressFrames(gsoFrame bool) [][]byte {
	src, dst := netip.MustParseAddr("10.42.1.2"), netip.MustParseAddr("10.42.2.2")
	if gsoFrame {
		return [][]byte{tcpSuper(src, dst, 1, 47*1386, 1386)}
	}
	fs := make([][]byte, benchBatch)
	for i := range fs {
		fs[i] = append(make([]byte, gso.HdrLen), ipv4(src, dst, 1400, true)...)
	}
	return fs
}

// egressRound copies each frame into an egress buffer (the router
// rewrites a GSO frame's headers in place), processes it, and sends the
// batch, egressFrames frames at a time as egress does.
func egressRound(r *Router, e *egressState, frames [][]byte) {
	for i, f := range frames {
		k := i % egressFrames
		n := copy(e.frames[k], f)
		r.egressFrame(e, e.frames[k][:n])
		if k == egressFrames-1 {
			r.flushEgress(e)
		}
	}
	r.flushEgress(e)
}

func frameBytes(frames [][]byte) int64 {
	var n int
	for _, f := range frames {
		n += len(f) - gso.HdrLen
	}
	return int64(n)
}

func BenchmarkEgress(b *testing.B) {
	type variant struct {
		name  string
		encap Encap
		c     esp.Cipher
	}
	vs := []variant{{"vxlan", EncapVXLAN, 0}}
	for _, c := range []esp.Cipher{esp.AES128GCM, esp.AES256GCM, esp.ChaCha20Poly1305} {
		vs = append(vs, variant{"esp-" + c.String(), EncapESP, c})
	}
	for _, v := range vs {
		for _, g := range []bool{false, true} {
			name := v.name + "/64x1400"
			if g {
				name = v.name + "/tso-64KiB"
			}
			b.Run(name, func(b *testing.B) {
				r, _ := benchRouter(b, v.encap, v.c)
				e := r.newEgressState()
				frames := testEgressFrames(g)
				b.SetBytes(frameBytes(frames))
				b.ReportAllocs()
				for b.Loop() {
					egressRound(r, e, frames)
				}
				if n := r.Drops(DropMalformed) + r.Drops(DropNoRoute); n != 0 {
					b.Fatalf("egress dropped %d packets: %v", n, r.Status().Drops)
				}
			})
		}
	}
}

// ingressFixture seals packets from the peer and keeps copies, so each round
// can restore the ciphertext that Open decrypted in place: benchBatch UDP
// packets, one datagram per message, or the segments of a TCP
// super-packet (44 of them fill a 64 KiB message) in one message, as UDP GRO
// delivers them.
type ingressFixture struct {
	s     *ingressState
	wire  [][]byte
	tcp   bool
	inner int
}

func newIngressFixture(tb testing.TB, r *Router, toUs *esp.OutSA, tcp bool) *ingressFixture {
	f := &ingressFixture{s: r.newIngressState(benchBatch), tcp: tcp}
	src, dst := netip.MustParseAddr("10.42.2.2"), netip.MustParseAddr("10.42.1.2")
	var inners [][]byte
	if tcp {
		inners = segmentsOf(tb, tcpSuper(src, dst, 1, 44*1386, 1386)) // 44 × 1472 B of ESP: one 64 KiB GRO message
	} else {
		for range benchBatch {
			inners = append(inners, ipv4(src, dst, 1400, true))
		}
	}
	for _, inner := range inners {
		buf := make([]byte, esp.Headroom+len(inner)+esp.Tailroom)
		copy(buf[esp.Headroom:], inner)
		out, err := toUs.Seal(buf, esp.Headroom, len(inner))
		if err != nil {
			tb.Fatal(err)
		}
		f.wire = append(f.wire, out)
		f.inner += len(inner)
	}
	return f
}

// segmentsOf splits a TUN frame into its wire packets with gso.Splitter.
func segmentsOf(tb testing.TB, frame []byte) [][]byte {
	var h gso.Hdr
	if err := h.Decode(frame); err != nil {
		tb.Fatal(err)
	}
	var s gso.Splitter
	if err := s.Init(h, frame[gso.HdrLen:]); err != nil {
		tb.Fatal(err)
	}
	var out [][]byte
	hb := make([]byte, gso.MaxHeaders)
	for {
		head, body, ok := s.Next(hb)
		if !ok {
			return out
		}
		out = append(out, append(append([]byte(nil), head...), body...))
	}
}

// load puts the fixture's datagrams into the receive buffers and returns
// the number of messages.
func (f *ingressFixture) load() int {
	from := netip.MustParseAddrPort("127.0.0.2:4500")
	if f.tcp {
		m := &f.s.msgs[0]
		m.Buf, m.N, m.Segment, m.Addr = f.s.bufs[0], 0, len(f.wire[0]), from
		for _, w := range f.wire {
			m.N += copy(m.Buf[m.N:], w)
		}
		return 1
	}
	for i, w := range f.wire {
		m := &f.s.msgs[i]
		m.Buf, m.Segment, m.Addr = f.s.bufs[i], 0, from
		m.N = copy(m.Buf, w)
	}
	return len(f.wire)
}

func BenchmarkIngress(b *testing.B) {
	for _, c := range []esp.Cipher{esp.AES128GCM, esp.AES256GCM, esp.ChaCha20Poly1305} {
		for _, tcp := range []bool{false, true} {
			name := "esp-" + c.String() + "/64x1400"
			if tcp {
				name = "esp-" + c.String() + "/gro-tcp-44x1386"
			}
			b.Run(name, func(b *testing.B) {
				r, toUs := benchRouter(b, EncapESP, c)
				f := newIngressFixture(b, r, toUs, tcp)
				b.SetBytes(int64(f.inner))
				b.ReportAllocs()
				for b.Loop() {
					r.ingressBatch(f.s, f.load())
				}
				if n := r.Drops(DropAuth) + r.Drops(DropSpoofed) + r.Drops(DropNotForUs); n != 0 {
					b.Fatalf("ingress dropped %d packets: %v", n, r.Status().Drops)
				}
			})
		}
	}
}

// TestBatchNoAllocs: the per-batch paths allocate nothing.
func TestBatchNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race (sync.Pool drops items); CI runs this test without -race in its qemu and alloc steps")
	}
	for _, encap := range []Encap{EncapESP, EncapVXLAN} {
		r, toUs := benchRouter(t, encap, esp.AES128GCM)
		e := r.newEgressState()
		for _, g := range []bool{false, true} {
			frames := testEgressFrames(g)
			if a := testing.AllocsPerRun(50, func() { egressRound(r, e, frames) }); a != 0 {
				t.Errorf("%v egress (tso %v): %v allocs per batch, want 0", encap, g, a)
			}
		}
		if tx := r.Status().TxPackets; tx == 0 {
			t.Errorf("%v egress sent nothing (drops %v)", encap, r.Status().Drops)
		}
		if encap != EncapESP {
			continue
		}
		for _, tcp := range []bool{false, true} {
			f := newIngressFixture(t, r, toUs, tcp)
			if a := testing.AllocsPerRun(50, func() { r.ingressBatch(f.s, f.load()) }); a != 0 {
				t.Errorf("ingress (tcp %v): %v allocs per batch, want 0", tcp, a)
			}
		}
		if got := r.Status().RxPackets; got == 0 {
			t.Errorf("ingress delivered nothing (drops %v)", r.Status().Drops)
		}
	}
}
