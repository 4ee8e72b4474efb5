package router

import (
	"errors"
	"net/netip"
	"time"

	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/router/gso"
	"github.com/drovernet/drover/router/packet"
	"github.com/drovernet/drover/router/udp"
	"github.com/drovernet/drover/router/vxlan"
	"github.com/drovernet/drover/tun"
)

// vxlanEncapLen is what VXLAN puts in front of the inner IP packet.
const vxlanEncapLen = vxlan.HeaderLen + packet.EthHeaderLen

// gso decodes the frames tun reads: their header lengths must agree (a
// negative constant converted to uint does not compile).
const _ = uint(gso.HdrLen-tun.VirtioHdrLen) + uint(tun.VirtioHdrLen-gso.HdrLen)

// maxFailures is how many consecutive non-shutdown read errors a pipeline
// tolerates before it gives up (a device that keeps failing is gone).
const maxFailures = 100

// egressFrames is the most TUN frames egress reads before it sends: after
// one frame it takes those already queued (ReadFrameNoWait), so that their
// datagrams go out together. A 64 KiB TCP frame is 47 ESP datagrams of
// 1472 bytes, of which one UDP GSO send takes 44 (64 KiB): sent alone, each
// frame costs two sends, the second of three datagrams; sent together, the
// remainders fill the next send. Returning ACKs likewise leave together.
const egressFrames = 4

// egressBatch is the most datagrams queued for one WriteBatch.
const egressBatch = 64 * egressFrames

// egressOutSize is the ESP output area: the sealed segments of a batch lie
// in it back to back until WriteBatch returns. egressFrames 64 KiB frames
// cut into full-size segments, with ESP overhead, fit with room to spare.
const egressOutSize = egressFrames * (tun.MaxFrame + 64*(esp.Headroom+esp.Tailroom+gso.MaxHeaders))

// egressState is owned by the egress goroutine: its buffers are allocated
// once; msgs borrow slices of frame, out and heads until WriteBatch returns.
type egressState struct {
	// frames receive the TUN frames of one batch: the virtio-net header and
	// the packet, with esp.MaxTrailer bytes of room after the largest
	// packet for SealTo's trailer. VXLAN datagrams point into them until
	// the batch is sent.
	frames [egressFrames][]byte
	split  gso.Splitter
	// out holds sealed ESP packets (outUsed bytes so far); heads the
	// VXLAN, Ethernet and inner headers of each segment, sent in front of
	// its body (a gather write); hbuf the inner headers of an ESP segment,
	// copied in front of its body before sealing.
	out     []byte
	outUsed int
	heads   [][]byte
	hbuf    []byte
	msgs    []udp.Msg
	peers   []*Peer // peer of msgs[i]
	inner   []int   // inner packet size of msgs[i]

	icmp    []byte   // scratch for one ICMP error
	icmpOut [][]byte // [virtio-net header, ICMP message]
	limiter rateLimiter
}

func (r *Router) newEgressState() *egressState {
	e := &egressState{
		out:     make([]byte, egressOutSize),
		heads:   make([][]byte, egressBatch),
		hbuf:    make([]byte, gso.MaxHeaders),
		msgs:    make([]udp.Msg, 0, egressBatch),
		peers:   make([]*Peer, 0, egressBatch),
		inner:   make([]int, 0, egressBatch),
		icmp:    make([]byte, 1280),
		icmpOut: [][]byte{make([]byte, gso.HdrLen), nil},
		limiter: rateLimiter{rate: r.cfg.ICMPRate},
	}
	for i := range e.frames {
		e.frames[i] = make([]byte, tun.MaxFrame+esp.MaxTrailer)
	}
	backing := make([]byte, egressBatch*(vxlanEncapLen+gso.MaxHeaders))
	for i := range e.heads {
		e.heads[i] = backing[i*(vxlanEncapLen+gso.MaxHeaders) : (i+1)*(vxlanEncapLen+gso.MaxHeaders)]
	}
	return e
}

// egress reads frames from the TUN device, cuts each GSO frame into its
// segments, seals or frames each for its peer and sends a batch of frames
// with one WriteBatch (which hands equal-size runs to one peer to the
// kernel as one UDP GSO send each).
func (r *Router) egress() error {
	e := r.newEgressState()
	failures := 0
	for {
		n, err := r.dev.ReadFrame(e.frames[0][:tun.MaxFrame])
		if err != nil {
			if isClosed(err) {
				return nil
			}
			r.drops.add(DropMalformed)
			if failures++; failures > maxFailures {
				return err
			}
			continue
		}
		failures = 0
		r.egressFrame(e, e.frames[0][:n])
		for k := 1; k < egressFrames; k++ {
			n, err := r.dev.ReadFrameNoWait(e.frames[k][:tun.MaxFrame])
			if err != nil {
				if !errors.Is(err, tun.ErrWouldBlock) && !isClosed(err) {
					r.drops.add(DropMalformed)
				}
				break
			}
			r.egressFrame(e, e.frames[k][:n])
		}
		r.flushEgress(e)
	}
}

// egressFrame handles one frame read from the TUN device (virtio-net header
// and packet) and queues its datagrams (sending the queue first when it is
// full; the caller sends the rest with flushEgress). Split out of egress so
// tests and benchmarks can drive it without a device. All segments of a
// frame share the packet's destination, and so its peer.
func (r *Router) egressFrame(e *egressState, frame []byte) {
	var h gso.Hdr
	if err := h.Decode(frame); err != nil {
		r.drops.add(DropMalformed)
		return
	}
	pkt := frame[gso.HdrLen:]
	st := r.state.Load()
	dst, ok := packet.DstAddr(pkt)
	if !ok {
		r.drops.add(DropMalformed)
		return
	}
	p, ok := st.fib.Lookup(dst)
	if !ok {
		r.drops.add(DropNoRoute)
		return
	}
	if err := e.split.Init(h, pkt); err != nil {
		r.drops.add(DropMalformed)
		return
	}
	segLen := len(pkt)
	if hl := e.split.HeaderLen(); hl > 0 {
		segLen = min(segLen, hl+int(h.Size))
	}
	// The kernel cuts GSO frames to the route's MTU, so only a frame that
	// went around it (or a route MTU above the tunnel's) gets here. Like
	// the kernel's forwarding path, the ICMP error quotes the frame's own
	// header.
	if segLen > p.TunnelMTU && r.tooBig(e, pkt, p.TunnelMTU) {
		return
	}
	isESP := r.cfg.Encap == EncapESP
	for {
		if len(e.msgs) == cap(e.msgs) {
			r.flushEgress(e)
		}
		hb := e.hbuf
		if !isESP {
			hb = e.heads[len(e.msgs)][vxlanEncapLen:]
		}
		head, body, ok := e.split.Next(hb)
		if !ok {
			break
		}
		n := len(head) + len(body)
		if isESP {
			// Make the segment contiguous: its headers go over the bytes in
			// front of its body, the end of the previous segment, which is
			// sealed already (gso.Splitter.Next).
			off := cap(pkt) - cap(body) // body's index in pkt
			seg := pkt[off-len(head) : off+len(body)]
			copy(seg, head)
			if len(e.out)-e.outUsed < esp.SealedLen(n) {
				r.flushEgress(e)
			}
			sealed, err := p.Out.SealTo(e.out[e.outUsed:], seg)
			if err != nil {
				r.sealFailed(err)
				continue
			}
			e.outUsed += len(sealed)
			e.msgs = append(e.msgs, udp.Msg{Buf: sealed, Addr: p.Underlay})
		} else {
			hd := e.heads[len(e.msgs)][:vxlanEncapLen+len(head)]
			et := uint16(packet.EtherTypeIPv4)
			if pkt[0]>>4 == 6 {
				et = packet.EtherTypeIPv6
			}
			vxlan.Header{VNI: r.cfg.VNI}.Put(hd)
			packet.PutEth(hd[vxlan.HeaderLen:], p.MAC, r.cfg.MAC, et)
			e.msgs = append(e.msgs, udp.Msg{Head: hd, Buf: body, Addr: p.Underlay})
		}
		e.peers = append(e.peers, p)
		e.inner = append(e.inner, n)
	}
}

func (r *Router) sealFailed(err error) {
	switch {
	case errors.Is(err, esp.ErrSeqExhausted):
		r.drops.add(DropSeqExhausted)
	case errors.Is(err, esp.ErrSeqReserve):
		r.drops.add(DropSeqReserve)
	default:
		r.drops.add(DropMalformed)
	}
}

// flushEgress sends the queued datagrams with one WriteBatch and counts them.
func (r *Router) flushEgress(e *egressState) {
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
	clear(e.msgs) // drop references to the buffers
	e.msgs = e.msgs[:0]
	e.peers = e.peers[:0]
	e.inner = e.inner[:0]
	e.outUsed = 0
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
		msg, err = packet.AppendFragNeeded(e.icmp[:0], src, pkt, mtu)
	} else {
		msg, err = packet.AppendPacketTooBig(e.icmp[:0], src, pkt, mtu)
	}
	if err != nil {
		return true // an ICMP error or an odd source: no reply, by the RFCs
	}
	e.icmpOut[1] = msg // after an all-zero virtio-net header: a plain packet
	if err := r.dev.WriteFrame(e.icmpOut); err == nil {
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
