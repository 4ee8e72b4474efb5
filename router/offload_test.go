package router

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/router/gso"
	"github.com/drovernet/drover/router/packet"
	"github.com/drovernet/drover/router/udp"
	"github.com/drovernet/drover/router/vxlan"
	"github.com/drovernet/drover/tun/tuntest"
)

// TestIngressCoalesced feeds ingressBatch messages as UDP GRO delivers
// them (several equal-size datagrams back to back, the last shorter, with
// Segment set) mixed with single datagrams, and checks that every inner
// packet reaches the TUN intact and in order, one frame each (UDP packets
// are never merged).
func TestIngressCoalesced(t *testing.T) {
	from := netip.MustParseAddrPort("127.0.0.2:4500")
	for _, encap := range []Encap{EncapESP, EncapVXLAN} {
		t.Run(encap.String(), func(t *testing.T) {
			dev := tuntest.NewFrames()
			r, toUs := benchRouterDev(t, encap, esp.AES128GCM, dev)
			s := r.newIngressState(benchBatch)
			var want [][]byte
			id := 0
			inner := func(size int) []byte {
				id++
				p := ipv4(netip.MustParseAddr("10.42.2.2"), netip.MustParseAddr("10.42.1.2"), size, true)
				p[len(p)-1], p[len(p)-2] = byte(id), byte(id>>8) // tell them apart
				want = append(want, p)
				return p
			}
			// Messages: 40 × 1400 + 700 coalesced; one single; 30 × 1000
			// coalesced (exactly); 35 × 1200 + 100 coalesced.
			runs := []struct {
				n, size, last int
			}{{40, 1400, 700}, {1, 500, 0}, {30, 1000, 0}, {35, 1200, 100}}
			for i, run := range runs {
				m := &s.msgs[i]
				m.Buf = s.bufs[i]
				m.N, m.Segment, m.Addr = 0, 0, from
				for range run.n {
					d := wrapFor(t, encap, toUs, inner(run.size))
					m.N += copy(m.Buf[m.N:], d)
					if run.n > 1 {
						m.Segment = len(d)
					}
				}
				if run.last > 0 {
					m.N += copy(m.Buf[m.N:], wrapFor(t, encap, toUs, inner(run.last)))
				}
			}
			r.ingressBatch(s, len(runs))
			for i, w := range want {
				select {
				case f := <-dev.Outbound:
					if !bytes.Equal(f[:gso.HdrLen], make([]byte, gso.HdrLen)) || !bytes.Equal(f[gso.HdrLen:], w) {
						t.Fatalf("packet %d: got frame %x + %d bytes, want plain + %d bytes %x...", i, f[:gso.HdrLen], len(f)-gso.HdrLen, len(w), w[:24])
					}
				default:
					t.Fatalf("TUN got %d packets, want %d (drops %v)", i, len(want), r.Status().Drops)
				}
			}
			if len(dev.Outbound) != 0 {
				t.Errorf("TUN got %d packets more than sent", len(dev.Outbound))
			}
			if st := r.Status(); st.RxPackets != uint64(len(want)) {
				t.Errorf("rx packets: got %d, want %d", st.RxPackets, len(want))
			}
		})
	}
}

// wrapFor turns an inner packet into the datagram the peer (macB, SA toUs)
// sends to the bench router.
func wrapFor(t *testing.T, encap Encap, toUs *esp.OutSA, inner []byte) []byte {
	if encap == EncapVXLAN {
		b := vxlan.Header{VNI: 1042}.Append(nil)
		b = append(b, make([]byte, packet.EthHeaderLen)...)
		packet.PutEth(b[vxlan.HeaderLen:], macA, macB, packet.EtherTypeIPv4)
		return append(b, inner...)
	}
	buf := make([]byte, esp.Headroom+len(inner)+esp.Tailroom)
	copy(buf[esp.Headroom:], inner)
	out, err := toUs.Seal(buf, esp.Headroom, len(inner))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTSOThrough sends TCP super-packets, as the kernel hands them to the
// TUN, from A to B over real loopback sockets (UDP GSO and GRO): B must
// hand its TUN the same super-packets — merged again from their segments —
// byte for byte except what merging rewrites by definition (the IPv4 ID is
// the first segment's, and the TCP checksum field holds the pseudo-header
// sum for the kernel to complete). Each segment on the way is a valid
// packet: B's coalescer verifies every segment's checksum before merging.
func TestTSOThrough(t *testing.T) {
	for _, encap := range []Encap{EncapESP, EncapVXLAN} {
		t.Run(encap.String(), func(t *testing.T) {
			a, b, _, _ := newPair(t, pairOpts{encap: encap})
			src, dst := netip.MustParseAddr("10.42.1.2"), netip.MustParseAddr("10.42.2.2")
			const mss = 1438 - 20 - 32
			seq := uint32(1000)
			for _, payload := range []int{10 * mss, 47 * mss, 3*mss + 17, mss + 1} {
				in := tcpSuper(src, dst, seq, payload, mss)
				seq += uint32(payload)
				a.dev.Inbound <- bytes.Clone(in)
				// The segments may arrive in more than one frame (a GRO
				// batch boundary); put them together.
				var got []byte
				var total, frames int
				for total < payload {
					f := recvFrame(t, b.dev.Outbound)
					frames++
					var h gso.Hdr
					if err := h.Decode(f); err != nil {
						t.Fatal(err)
					}
					p := f[gso.HdrLen:]
					if h.Type != gso.TypeNone && (h.Type != gso.TypeTCPv4 || h.Flags != gso.FlagNeedsCsum ||
						h.Size != mss || h.CsumStart != 20 || h.CsumOffset != 16 || h.HdrLen != 52) {
						t.Fatalf("frame header %+v, want TCPv4 NEEDS_CSUM size %d csum 20+16 hdr_len 52", h, mss)
					}
					if h.Type == gso.TypeNone && !tcpChecksumValid(p) {
						t.Fatalf("single segment with a bad TCP checksum")
					}
					if got == nil {
						got = bytes.Clone(p)
					} else {
						got = append(got, p[52:]...)
					}
					total += len(p) - 52
				}
				// A 64 KiB UDP GSO send holds at most 44 ESP datagrams of
				// this size, so a super-packet crosses in one or two sends,
				// each received whole (UDP GRO) and merged into one frame.
				if frames > 2 {
					t.Errorf("payload %d: %d frames, want at most 2 (segments not merged)", payload, frames)
				}
				want := bytes.Clone(in[gso.HdrLen:])
				if len(got) != len(want) {
					t.Fatalf("payload %d: got %d bytes, want %d", payload, len(got), len(want))
				}
				// Compare all but IPv4 length/ID/header checksum (rewritten for
				// the merged whole), the TCP checksum and PSH (the last
				// segment's, present when the whole arrived in one frame).
				for _, r := range [][2]int{{0, 2}, {6, 10}, {12, 20}, {20, 33}, {34, 36}, {38, len(want)}} {
					if !bytes.Equal(got[r[0]:r[1]], want[r[0]:r[1]]) {
						t.Fatalf("payload %d: bytes %d..%d differ: got %x, want %x", payload, r[0], r[1],
							got[r[0]:min(r[1], r[0]+32)], want[r[0]:min(r[1], r[0]+32)])
					}
				}
				if packet.Checksum(got[:20], 0) != 0 {
					t.Errorf("payload %d: IPv4 header checksum invalid", payload)
				}
			}
			// A counts after WriteBatch returns, which may be after B has
			// the packets: poll.
			const segs = 10 + 47 + 4 + 2
			for deadline := time.Now().Add(5 * time.Second); a.r.Status().TxPackets != segs; {
				if time.Now().After(deadline) {
					t.Fatalf("A tx packets: got %d, want %d (one per segment)", a.r.Status().TxPackets, segs)
				}
				time.Sleep(time.Millisecond)
			}
			for _, n := range []*node{a, b} {
				for reason, c := range n.r.Status().Drops {
					if c != 0 {
						t.Errorf("%s drops[%s] = %d, want 0", n.r.cfg.Name, reason, c)
					}
				}
			}
		})
	}
}

// tcpChecksumValid verifies the TCP checksum of an IPv4 packet.
func tcpChecksumValid(p []byte) bool {
	ihl := int(p[0]&0x0f) * 4
	src, _ := netip.AddrFromSlice(p[12:16])
	dst, _ := netip.AddrFromSlice(p[16:20])
	l := int(binary.BigEndian.Uint16(p[2:])) - ihl
	return packet.Checksum(p[ihl:ihl+l], packet.PseudoHeaderSum(packet.ProtoTCP, src, dst, l)) == 0
}

// recordConn is an underlay that records the size of each WriteBatch.
type recordConn struct {
	discardConn
	batches chan int
	closed  chan struct{}
}

func (c *recordConn) ReadBatch([]udp.Msg) (int, error) {
	<-c.closed
	return 0, net.ErrClosed
}

func (c *recordConn) WriteBatch(m []udp.Msg) (int, error) {
	c.batches <- len(m)
	return c.discardConn.WriteBatch(m)
}

func (c *recordConn) Close() error {
	select {
	case <-c.closed:
	default:
		close(c.closed)
	}
	return nil
}

// TestEgressBatchesFrames: frames already queued when egress has read one
// are read without waiting and sent in the same WriteBatch, up to
// egressFrames of them.
func TestEgressBatchesFrames(t *testing.T) {
	dev := tuntest.NewFrames()
	conn := &recordConn{batches: make(chan int, 16), closed: make(chan struct{})}
	r, err := New(Config{Name: "a", Encap: EncapESP, MAC: macA, Prefixes: []netip.Prefix{pfxA},
		Addrs: []netip.Addr{addrA}, MTU: 1438}, dev, conn)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := esp.NewOutSA(esp.AES128GCM, 0x100, randKey(t, esp.AES128GCM), false)
	in, _ := esp.NewInSA(esp.AES128GCM, 0x200, randKey(t, esp.AES128GCM), false, 64)
	if err := r.SetPeers([]*Peer{{Name: "b", Underlay: netip.MustParseAddrPort("127.0.0.2:4500"), MAC: macB,
		Prefixes: []netip.Prefix{pfxB}, TunnelMTU: 1438, Out: out, In: []*esp.InSA{in}}}); err != nil {
		t.Fatal(err)
	}
	src, dst := netip.MustParseAddr("10.42.1.2"), netip.MustParseAddr("10.42.2.2")
	const mss = 1438 - 20 - 32
	for i := range egressFrames + 1 {
		dev.Inbound <- tcpSuper(src, dst, uint32(1+i*47*mss), 47*mss, mss)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var got []int
	for total := 0; total < (egressFrames+1)*47; {
		select {
		case n := <-conn.batches:
			got = append(got, n)
			total += n
		case <-time.After(5 * time.Second):
			t.Fatalf("batches so far %v, want %d datagrams in all", got, (egressFrames+1)*47)
		}
	}
	if len(got) != 2 || got[0] != egressFrames*47 || got[1] != 47 {
		t.Errorf("WriteBatch sizes: got %v, want [%d 47]", got, egressFrames*47)
	}
}
