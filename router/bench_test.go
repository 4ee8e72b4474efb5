package router

import (
	"net/netip"
	"testing"

	"github.com/drovernet/drover/crypto/esp"
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
	return len(m), nil
}
func (c *discardConn) WriteTo([]byte, netip.AddrPort) error { return nil }
func (c *discardConn) LocalAddr() netip.AddrPort            { return netip.MustParseAddrPort("127.0.0.1:4500") }
func (c *discardConn) Close() error                         { return nil }

// discardDev is a TUN that takes every write.
type discardDev struct{ *tuntest.Device }

func (d discardDev) Write(b [][]byte, _ int) (int, error) { return len(b), nil }

const benchBatch = 64

// benchRouter returns a router with one ESP (or VXLAN) peer owning 10.42.2.0/24,
// and the peer's view of the SAs (to forge ingress traffic).
func benchRouter(tb testing.TB, encap Encap, c esp.Cipher) (*Router, *esp.OutSA) {
	return benchRouterDev(tb, encap, c, discardDev{tuntest.New(1500, benchBatch)})
}

// benchRouterDev is benchRouter on the given device.
func benchRouterDev(tb testing.TB, encap Encap, c esp.Cipher, dev tun.Device) (*Router, *esp.OutSA) {
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

func fillEgress(e *egressState, pkt []byte) {
	for i := range benchBatch {
		copy(e.bufs[i][egressHeadroom:], pkt)
		e.sizes[i] = len(pkt)
	}
}

// ingressFixture seals benchBatch packets from the peer and keeps copies, so
// each round can restore the ciphertext that Open decrypted in place.
type ingressFixture struct {
	s     *ingressState
	wire  [][]byte
	inner int
}

func newIngressFixture(tb testing.TB, r *Router, toUs *esp.OutSA, size int) *ingressFixture {
	f := &ingressFixture{s: r.newIngressState(benchBatch), inner: size}
	inner := ipv4(netip.MustParseAddr("10.42.2.2"), netip.MustParseAddr("10.42.1.2"), size, true)
	for range benchBatch {
		buf := make([]byte, esp.Headroom+size+esp.Tailroom)
		copy(buf[esp.Headroom:], inner)
		out, err := toUs.Seal(buf, esp.Headroom, size)
		if err != nil {
			tb.Fatal(err)
		}
		f.wire = append(f.wire, out)
	}
	return f
}

func (f *ingressFixture) load() {
	for i := range benchBatch {
		m := &f.s.msgs[i]
		m.Buf = f.s.bufs[i]
		m.N = copy(m.Buf, f.wire[i])
		m.Addr = netip.MustParseAddrPort("127.0.0.2:4500")
	}
}

func BenchmarkEgressBatch(b *testing.B) {
	for _, c := range []esp.Cipher{esp.AES128GCM, esp.AES256GCM, esp.ChaCha20Poly1305} {
		b.Run("esp-"+c.String(), func(b *testing.B) {
			r, _ := benchRouter(b, EncapESP, c)
			e := r.newEgressState()
			pkt := ipv4(netip.MustParseAddr("10.42.1.2"), netip.MustParseAddr("10.42.2.2"), 1400, true)
			b.SetBytes(benchBatch * 1400)
			b.ReportAllocs()
			for b.Loop() {
				fillEgress(e, pkt)
				r.egressBatch(e, benchBatch)
			}
		})
	}
	b.Run("vxlan", func(b *testing.B) {
		r, _ := benchRouter(b, EncapVXLAN, 0)
		e := r.newEgressState()
		pkt := ipv4(netip.MustParseAddr("10.42.1.2"), netip.MustParseAddr("10.42.2.2"), 1400, true)
		b.SetBytes(benchBatch * 1400)
		b.ReportAllocs()
		for b.Loop() {
			fillEgress(e, pkt)
			r.egressBatch(e, benchBatch)
		}
	})
}

func BenchmarkIngressBatch(b *testing.B) {
	for _, c := range []esp.Cipher{esp.AES128GCM, esp.AES256GCM, esp.ChaCha20Poly1305} {
		b.Run("esp-"+c.String(), func(b *testing.B) {
			r, toUs := benchRouter(b, EncapESP, c)
			f := newIngressFixture(b, r, toUs, 1400)
			b.SetBytes(benchBatch * 1400)
			b.ReportAllocs()
			for b.Loop() {
				f.load()
				r.ingressBatch(f.s, benchBatch)
			}
			if n := r.Drops(DropAuth) + r.Drops(DropSpoofed) + r.Drops(DropNotForUs); n != 0 {
				b.Fatalf("ingress dropped %d packets: %v", n, r.Status().Drops)
			}
		})
	}
}

// TestBatchNoAllocs: the per-batch paths allocate nothing.
func TestBatchNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race (sync.Pool drops items); CI runs this test without -race in its qemu and alloc steps")
	}
	r, toUs := benchRouter(t, EncapESP, esp.AES128GCM)
	e := r.newEgressState()
	pkt := ipv4(netip.MustParseAddr("10.42.1.2"), netip.MustParseAddr("10.42.2.2"), 1400, true)
	if a := testing.AllocsPerRun(50, func() { fillEgress(e, pkt); r.egressBatch(e, benchBatch) }); a != 0 {
		t.Errorf("egress: %v allocs per batch, want 0", a)
	}
	f := newIngressFixture(t, r, toUs, 1400)
	if a := testing.AllocsPerRun(50, func() { f.load(); r.ingressBatch(f.s, benchBatch) }); a != 0 {
		t.Errorf("ingress: %v allocs per batch, want 0", a)
	}
	if got := r.Status().RxPackets; got == 0 {
		t.Errorf("ingress delivered nothing (drops %v)", r.Status().Drops)
	}
	rv, _ := benchRouter(t, EncapVXLAN, 0)
	ev := rv.newEgressState()
	if a := testing.AllocsPerRun(50, func() { fillEgress(ev, pkt); rv.egressBatch(ev, benchBatch) }); a != 0 {
		t.Errorf("vxlan egress: %v allocs per batch, want 0", a)
	}
}
