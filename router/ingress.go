package router

import (
	"errors"
	"net/netip"

	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/router/gso"
	"github.com/drovernet/drover/router/packet"
	"github.com/drovernet/drover/router/udp"
	"github.com/drovernet/drover/router/vxlan"
)

// ingressBufSize holds any UDP datagram, including an outer packet the
// underlay fragmented and the kernel reassembled.
const ingressBufSize = 1 << 16

// ingressBatch is the most datagrams (or, with UDP GRO, coalesced
// messages) one ReadBatch takes.
const ingressBatch = udp.DefaultBatchSize

// ingressState is owned by the ingress goroutine. msgs[i].Buf is bufs[i];
// the coalescer holds slices of bufs (the inner packets, opened or
// decapsulated in place) until the frames are written to the TUN.
type ingressState struct {
	bufs [][]byte
	msgs []udp.Msg
	gro  gso.Coalescer
	arp  []byte // scratch for one ARP reply (VXLAN)
	// bytes counts the inner bytes handed to gro in this batch; written
	// is how many of gro's frames have gone to the TUN.
	bytes   uint64
	written int
}

func (r *Router) newIngressState(n int) *ingressState {
	s := &ingressState{
		bufs: make([][]byte, n),
		msgs: make([]udp.Msg, n),
		arp:  make([]byte, vxlanEncapLen+packet.ARPLen),
	}
	for i := range s.bufs {
		s.bufs[i] = make([]byte, ingressBufSize)
	}
	// An ESP packet that opened is authenticated end to end: its inner
	// checksums are as the sender made them (see gso.Coalescer).
	s.gro.TrustChecksums = r.cfg.Encap == EncapESP
	return s
}

// groConn is a Conn that can coalesce received datagrams (udp.Conn).
type groConn interface {
	SetGRO(on bool) error
}

// enableGRO asks the socket for UDP GRO, which the receive buffers can take
// (ingressBufSize). A kernel without UDP_GRO leaves things as they were.
func (r *Router) enableGRO() {
	g, ok := r.conn.(groConn)
	if !ok || r.cfg.NoGRO {
		return
	}
	if err := g.SetGRO(true); err != nil {
		r.log.Info("UDP GRO unavailable", "err", err)
	}
}

// ingress receives batches from the underlay, opens or decapsulates each
// datagram, checks it, and writes the inner packets to the TUN device,
// consecutive TCP segments of one flow merged into one frame.
func (r *Router) ingress() error {
	s := r.newIngressState(ingressBatch)
	r.enableGRO()
	failures := 0
	for {
		for i := range s.msgs {
			s.msgs[i].Buf = s.bufs[i]
		}
		n, err := r.conn.ReadBatch(s.msgs)
		if err != nil {
			if isClosed(err) {
				return nil
			}
			if failures++; failures > maxFailures {
				return err
			}
			continue
		}
		failures = 0
		r.ingressBatch(s, n)
	}
}

func (r *Router) ingressBatch(s *ingressState, n int) {
	st := r.state.Load()
	for i := range n {
		m := &s.msgs[i]
		if m.Truncated { // larger than our buffer: cannot be a packet we sent
			r.drops.add(DropTruncated)
			continue
		}
		if m.Segment == 0 || m.Segment >= m.N {
			r.ingressOne(st, s, m.Buf[:m.N], m.Addr)
		} else {
			// Coalesced by UDP GRO: Segment-byte datagrams, the last shorter.
			for b := m.Buf[:m.N]; len(b) > 0; {
				l := min(len(b), m.Segment)
				r.ingressOne(st, s, b[:l:l], m.Addr)
				b = b[l:]
			}
		}
		// Hand over what is finished after each message rather than after
		// the whole batch: the first frames then do not wait for the
		// decryption of the rest. The open frame stays, as the next message
		// may continue it (a sender's 64 KiB burst arrives as two).
		r.writeFrames(s, s.gro.Done())
	}
	s.gro.Flush()
	r.writeFrames(s, s.gro.Len())
	s.gro.Reset()
	s.written = 0
	r.rxBytes.Add(s.bytes) // of the frames written and of those refused (counted as drops)
	s.bytes = 0
}

// ingressOne opens or decapsulates one datagram in place and hands its inner
// packet to the coalescer.
func (r *Router) ingressOne(st *snapshot, s *ingressState, payload []byte, from netip.AddrPort) {
	var inner []byte
	var p *Peer
	if r.cfg.Encap == EncapESP {
		inner, p = r.openESP(st, payload)
	} else {
		inner, p = r.decapVXLAN(st, s, payload, from)
	}
	if inner == nil {
		return
	}
	s.gro.Add(inner)
	p.Stats.rxPackets.Add(1)
	p.Stats.rxBytes.Add(uint64(len(inner)))
	s.bytes += uint64(len(inner))
}

// writeFrames writes the coalescer's frames from s.written up to end to the
// TUN, one write each.
func (r *Router) writeFrames(s *ingressState, end int) {
	var pkts, failed uint64
	for i := s.written; i < end; i++ {
		segs := uint64(s.gro.Segments(i))
		if err := r.dev.WriteFrame(s.gro.Frame(i)); err != nil && !isClosed(err) {
			// The kernel refused the frame (the interface is down, say):
			// its packets are lost.
			failed += segs
			continue
		}
		pkts += segs
	}
	s.written = max(s.written, end)
	r.rxPackets.Add(pkts)
	if failed > 0 {
		r.drops[DropTUNWrite].Add(failed)
	}
}

// openESP handles one datagram on the ESP port (RFC 3948): keepalives and
// non-ESP (IKE) traffic are counted and set aside, ESP is demultiplexed by
// SPI, checked against replay, authenticated and decrypted in place.
func (r *Router) openESP(st *snapshot, payload []byte) ([]byte, *Peer) {
	switch esp.Classify(payload) {
	case esp.KindKeepalive:
		r.keepalives.Add(1)
		return nil, nil
	case esp.KindNonESP:
		r.nonESP.Add(1)
		return nil, nil
	}
	spi, ok := esp.PeekSPI(payload)
	if !ok {
		r.drops.add(DropTruncated)
		return nil, nil
	}
	in, ok := st.bySPI[spi]
	if !ok {
		r.drops.add(DropUnknownSPI)
		return nil, nil
	}
	p := in.peer
	inner, nh, err := in.sa.Open(payload)
	if err != nil {
		switch {
		case errors.Is(err, esp.ErrShort):
			r.drops.add(DropTruncated)
		case errors.Is(err, esp.ErrAuth):
			r.drops.add(DropAuth)
		case errors.Is(err, esp.ErrReplay), errors.Is(err, esp.ErrStale):
			// Stale is older than the window: a replay we can no longer
			// tell from one, counted as drop.go says.
			r.drops.add(DropReplay)
		case errors.Is(err, esp.ErrNextHeader):
			r.drops.add(DropNextHeader)
		default:
			r.drops.add(DropMalformed)
		}
		return nil, nil
	}
	// RFC 4303 §2.6: next header 4 is IPv4, 41 IPv6; the packet must agree.
	if len(inner) == 0 || (nh == 4) != (inner[0]>>4 == 4) {
		r.drops.add(DropNextHeader)
		return nil, nil
	}
	return r.checkInner(st, p, inner), p
}

// decapVXLAN handles one VXLAN datagram: header as Linux checks it, the
// sender must be a peer, ARP requests for our addresses are answered, and
// IP frames addressed to our MAC (or broadcast) are passed on.
func (r *Router) decapVXLAN(st *snapshot, s *ingressState, payload []byte, from netip.AddrPort) ([]byte, *Peer) {
	var h vxlan.Header
	if err := h.Parse(payload); err != nil {
		if errors.Is(err, vxlan.ErrShort) {
			r.drops.add(DropTruncated)
		} else {
			r.drops.add(DropBadVXLAN)
		}
		return nil, nil
	}
	if h.VNI != r.cfg.VNI {
		r.drops.add(DropBadVXLAN)
		return nil, nil
	}
	p, ok := st.byAddr[from.Addr().Unmap()]
	if !ok {
		r.drops.add(DropUnknownPeer)
		return nil, nil
	}
	frame := payload[vxlan.HeaderLen:]
	var eth packet.Eth
	if err := eth.Parse(frame); err != nil {
		r.drops.add(DropTruncated)
		return nil, nil
	}
	if eth.Dst != r.cfg.MAC && eth.Dst != packet.BroadcastMAC {
		r.drops.add(DropNotForUs)
		return nil, nil
	}
	body := frame[packet.EthHeaderLen:]
	switch eth.Type {
	case packet.EtherTypeARP:
		r.answerARP(st, s, p, eth, body)
		return nil, nil
	case packet.EtherTypeIPv4, packet.EtherTypeIPv6:
		return r.checkInner(st, p, body), p
	}
	r.drops.add(DropNotForUs)
	return nil, nil
}

// checkInner validates the decapsulated packet, trims link-layer padding,
// and enforces that the source belongs to the sending peer (no spoofing one
// peer's containers from another) and the destination is ours (no relaying
// through this host). It returns nil after counting a drop.
func (r *Router) checkInner(st *snapshot, p *Peer, inner []byte) []byte {
	var ip packet.IP
	if err := ip.Parse(inner); err != nil {
		if errors.Is(err, packet.ErrShort) {
			r.drops.add(DropTruncated)
		} else {
			r.drops.add(DropMalformed)
		}
		return nil
	}
	if owner, ok := st.fib.Lookup(ip.Src); !ok || owner != p {
		r.drops.add(DropSpoofed)
		return nil
	}
	if _, ok := st.local.Lookup(ip.Dst); !ok {
		r.drops.add(DropNotForUs)
		return nil
	}
	return inner[:ip.TotalLen]
}

// answerARP replies to an ARP request that arrived over VXLAN (a kernel VTEP
// without a static neighbour entry asks for our containers) when the target
// is one of ours: a local prefix or the TUN's own address (RFC 826).
func (r *Router) answerARP(st *snapshot, s *ingressState, p *Peer, eth packet.Eth, body []byte) {
	var req packet.ARP
	if err := req.Parse(body); err != nil || req.Op != packet.ARPRequest {
		r.drops.add(DropNotForUs)
		return
	}
	if _, ok := st.local.Lookup(req.TargetIP); !ok {
		r.drops.add(DropNotForUs)
		return
	}
	b := s.arp[:0]
	b = vxlan.Header{VNI: r.cfg.VNI}.Append(b)
	b = b[:vxlan.HeaderLen+packet.EthHeaderLen]
	packet.PutEth(b[vxlan.HeaderLen:], eth.Src, r.cfg.MAC, packet.EtherTypeARP)
	b = packet.AppendARPReply(b, &req, r.cfg.MAC)
	// Reply to the VTEP's own port (the kernel listens on the VXLAN port,
	// not on the flow-hashed source port it sent from).
	if err := r.conn.WriteTo(b, p.Underlay); err != nil {
		r.drops.add(DropSend)
	}
}
