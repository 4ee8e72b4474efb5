package router

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"

	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/router/packet"
	"github.com/drovernet/drover/router/vxlan"
	"github.com/drovernet/drover/tun/tuntest"
)

// TestIngressCoalesced feeds ingressBatch messages as UDP GRO delivers
// them (several equal-size datagrams back to back, the last shorter, with
// Segment set) mixed with single datagrams, more inner packets than one TUN
// write takes, and checks that every inner packet reaches the TUN intact
// and in order, with and without the copy slots.
func TestIngressCoalesced(t *testing.T) {
	from := netip.MustParseAddrPort("127.0.0.2:4500")
	for _, encap := range []Encap{EncapESP, EncapVXLAN} {
		for _, slots := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/slots=%v", encap, slots), func(t *testing.T) {
				dev := tuntest.New(1500, benchBatch)
				r, toUs := benchRouterDev(t, encap, esp.AES128GCM, dev)
				s := r.newIngressState(benchBatch)
				if slots {
					s.allocSlots()
				}
				// wrap turns an inner packet into the datagram the peer sends.
				wrap := func(inner []byte) []byte {
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
						d := wrap(inner(run.size))
						m.N += copy(m.Buf[m.N:], d)
						if run.n > 1 {
							m.Segment = len(d)
						}
					}
					if run.last > 0 {
						m.N += copy(m.Buf[m.N:], wrap(inner(run.last)))
					}
				}
				r.ingressBatch(s, len(runs))
				for i, w := range want {
					select {
					case got := <-dev.Outbound:
						if !bytes.Equal(got, w) {
							t.Fatalf("packet %d: got %d bytes, want %d bytes %x...", i, len(got), len(w), w[:24])
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
}

// TestCoalescedNoAllocs: splitting GRO messages and copying into the slots
// allocates nothing.
func TestCoalescedNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race (sync.Pool drops items)")
	}
	r, toUs := benchRouter(t, EncapESP, esp.AES128GCM)
	f := newIngressFixture(t, r, toUs, 1400)
	f.s.allocSlots()
	seg := len(f.wire[0])
	load := func() {
		m := &f.s.msgs[0]
		m.Buf, m.N, m.Segment, m.Addr = f.s.bufs[0], 0, seg, netip.MustParseAddrPort("127.0.0.2:4500")
		for _, w := range f.wire[:40] {
			m.N += copy(m.Buf[m.N:], w)
		}
	}
	if a := testing.AllocsPerRun(50, func() { load(); r.ingressBatch(f.s, 1) }); a != 0 {
		t.Errorf("coalesced ingress: %v allocs per batch, want 0", a)
	}
	if got := r.Status().RxPackets; got < 40 {
		t.Errorf("rx packets: got %d, want >= 40 (drops %v)", got, r.Status().Drops)
	}
}
