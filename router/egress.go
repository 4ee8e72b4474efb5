package router

import (
	"errors"
	"net/netip"
	"time"

	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/router/packet"
	"github.com/drovernet/drover/router/udp"
	"github.com/drovernet/drover/router/vxlan"
	"github.com/drovernet/drover/tun"
)

// egressHeadroom is the room in front of each packet read from the TUN: the
// ESP header and IV (16) or the VXLAN and Ethernet headers (22) are written
// there in place. Also >= tun.MinOffset for the ICMP writes back.
const egressHeadroom = 32

// vxlanEncapLen is what VXLAN puts in front of the inner IP packet.
const vxlanEncapLen = vxlan.HeaderLen + packet.EthHeaderLen

// maxFailures is how many consecutive non-shutdown read errors a pipeline
// tolerates before it gives up (a device that keeps failing is gone).
const maxFailures = 100

// egressState is owned by the egress goroutine: its buffers are allocated
// once; msgs borrow slices of bufs until WriteBatch returns.
type egressState struct {
	bufs  [][]byte
	sizes []int
	msgs  []udp.Msg
	peers []*Peer // peer of msgs[i]
	inner []int   // inner packet size of msgs[i]

	icmp    []byte   // scratch for one ICMP error
	icmpOut [][]byte // len 1, points into icmp
	limiter rateLimiter
}

func (r *Router) newEgressState() *egressState {
	n := r.dev.BatchSize()
	size := egressHeadroom + r.cfg.MTU + esp.Tailroom
	e := &egressState{
		bufs:    make([][]byte, n),
		sizes:   make([]int, n),
		msgs:    make([]udp.Msg, 0, n),
		peers:   make([]*Peer, 0, n),
		inner:   make([]int, 0, n),
		icmp:    make([]byte, tun.MinOffset+1280),
		icmpOut: make([][]byte, 1),
		limiter: rateLimiter{rate: r.cfg.ICMPRate},
	}
	backing := make([]byte, n*size)
	for i := range e.bufs {
		e.bufs[i] = backing[i*size : (i+1)*size : (i+1)*size]
	}
	return e
}

// egress reads batches from the TUN device, seals or frames each packet for
// its peer and sends the batch with one WriteBatch.
func (r *Router) egress() error {
	e := r.newEgressState()
	failures := 0
	for {
		n, err := r.dev.Read(e.bufs, e.sizes, egressHeadroom)
		if err != nil {
			if isClosed(err) {
				return nil
			}
			// A packet the TUN could not split (bad GSO metadata) costs that
			// packet, not the router.
			r.drops.add(DropMalformed)
			if failures++; failures > maxFailures {
				return err
			}
			continue
		}
		failures = 0
		r.egressBatch(e, n)
	}
}

// egressBatch processes e.bufs[:n]; split out of egress so tests and
// benchmarks can drive it without a device.
func (r *Router) egressBatch(e *egressState, n int) {
	st := r.state.Load()
	e.msgs = e.msgs[:0]
	e.peers = e.peers[:0]
	e.inner = e.inner[:0]
	for i := range n {
		buf, size := e.bufs[i], e.sizes[i]
		pkt := buf[egressHeadroom : egressHeadroom+size]
		dst, ok := packet.DstAddr(pkt)
		if !ok {
			r.drops.add(DropMalformed)
			continue
		}
		p, ok := st.fib.Lookup(dst)
		if !ok {
			r.drops.add(DropNoRoute)
			continue
		}
		if size > p.TunnelMTU && r.tooBig(e, pkt, p.TunnelMTU) {
			continue
		}
		var out []byte
		if r.cfg.Encap == EncapESP {
			var err error
			out, err = p.Out.Seal(buf, egressHeadroom, size)
			if err != nil {
				switch {
				case errors.Is(err, esp.ErrSeqExhausted):
					r.drops.add(DropSeqExhausted)
				case errors.Is(err, esp.ErrSeqReserve):
					r.drops.add(DropSeqReserve)
				default:
					r.drops.add(DropMalformed)
				}
				continue
			}
		} else {
			et := uint16(packet.EtherTypeIPv4)
			if pkt[0]>>4 == 6 {
				et = packet.EtherTypeIPv6
			}
			off := egressHeadroom - vxlanEncapLen
			vxlan.Header{VNI: r.cfg.VNI}.Put(buf[off:])
			packet.PutEth(buf[off+vxlan.HeaderLen:], p.MAC, r.cfg.MAC, et)
			out = buf[off : egressHeadroom+size]
		}
		e.msgs = append(e.msgs, udp.Msg{Buf: out, Addr: p.Underlay})
		e.peers = append(e.peers, p)
		e.inner = append(e.inner, size)
	}
	if len(e.msgs) == 0 {
		return
	}
	_, _ = r.conn.WriteBatch(e.msgs) // failures are marked per message (N < 0)
	var pkts, bytes, failed uint64
	for i := range e.msgs {
		if e.msgs[i].N < 0 {
			failed++
			continue
		}
		p, n := e.peers[i], uint64(e.inner[i])
		p.Stats.txPackets.Add(1)
		p.Stats.txBytes.Add(n)
		pkts++
		bytes += n
	}
	r.txPackets.Add(pkts)
	r.txBytes.Add(bytes)
	if failed > 0 {
		r.drops[DropSend].Add(failed)
	}
}

// tooBig handles a packet larger than the tunnel MTU. IPv4 without DF is
// sent anyway and fragmented by the underlay (as the kernel's ESP gateway
// does, see shared/interop "MTU and fragmentation"); IPv4 with DF and all
// IPv6 (routers never fragment IPv6, RFC 8200 §5) are dropped and answered
// with ICMP carrying the tunnel MTU (RFC 1191 §4, RFC 4443 §3.2), so the
// sender's path MTU discovery converges instead of black-holing. It reports
// whether the packet was dropped.
func (r *Router) tooBig(e *egressState, pkt []byte, mtu int) bool {
	var ip packet.IP
	if err := ip.Parse(pkt); err != nil {
		r.drops.add(DropMalformed)
		return true
	}
	if ip.Version == 4 && !ip.DF {
		return false
	}
	r.drops.add(DropTooBig)
	src, ok := r.icmpSource(ip.Version)
	if !ok || !e.limiter.allow(time.Now()) {
		return true
	}
	var msg []byte
	var err error
	if ip.Version == 4 {
		msg, err = packet.AppendFragNeeded(e.icmp[tun.MinOffset:tun.MinOffset], src, pkt, mtu)
	} else {
		msg, err = packet.AppendPacketTooBig(e.icmp[tun.MinOffset:tun.MinOffset], src, pkt, mtu)
	}
	if err != nil {
		return true // an ICMP error or an odd source: no reply, by the RFCs
	}
	e.icmpOut[0] = e.icmp[:tun.MinOffset+len(msg)]
	if _, err := r.dev.Write(e.icmpOut, tun.MinOffset); err == nil {
		r.icmpSent.Add(1)
	}
	return true
}

// icmpSource is the address our ICMP errors come from: the TUN's own
// address of the packet's family.
func (r *Router) icmpSource(version uint8) (netip.Addr, bool) {
	for _, a := range r.state.Load().addrs {
		if a.Is4() == (version == 4) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// rateLimiter is a token bucket refilled once per second, owned by one
// goroutine. It is consulted only on the rare too-big path.
type rateLimiter struct {
	rate   int
	tokens int
	last   time.Time
}

func (l *rateLimiter) allow(now time.Time) bool {
	if now.Sub(l.last) >= time.Second {
		l.tokens, l.last = l.rate, now
	}
	if l.tokens <= 0 {
		return false
	}
	l.tokens--
	return true
}
