package router

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/router/fib"
	"github.com/drovernet/drover/router/packet"
)

// Peer is another host. Its fields are set before SetPeers and not changed
// afterwards; the counters are updated by the pipelines.
type Peer struct {
	Name     string
	Underlay netip.AddrPort
	MAC      packet.MAC     // VXLAN: the peer's inner MAC (destination of our frames)
	Prefixes []netip.Prefix // routed to the peer; the only sources accepted from it
	// TunnelMTU is the largest inner packet that crosses the underlay to
	// this peer in one datagram (depends on the underlay family).
	TunnelMTU int
	Out       *esp.OutSA // ESP only
	In        *esp.InSA  // ESP only

	created   time.Time
	txPackets atomic.Uint64
	txBytes   atomic.Uint64
	rxPackets atomic.Uint64
	rxBytes   atomic.Uint64
}

// snapshot is everything the pipelines look up, replaced whole by SetPeers
// and never mutated, so each batch needs a single atomic load.
type snapshot struct {
	peers  []*Peer
	fib    *fib.Table[*Peer]    // destination (egress) and source check (ingress)
	bySPI  map[uint32]*Peer     // ESP ingress demux
	byAddr map[netip.Addr]*Peer // VXLAN ingress: outer source address → peer
	local  *fib.Table[struct{}] // our own prefixes and addresses: the only inner destinations accepted
}

// SetPeers replaces the peer set. It checks that no prefix is claimed twice
// and that inbound SPIs (ESP) and underlay addresses (VXLAN) are unique, so
// that demultiplexing is unambiguous.
func (r *Router) SetPeers(peers []*Peer) error {
	s := &snapshot{
		peers:  peers,
		bySPI:  make(map[uint32]*Peer, len(peers)),
		byAddr: make(map[netip.Addr]*Peer, len(peers)),
	}
	var fb fib.Builder[*Peer]
	for _, p := range peers {
		if p.created.IsZero() {
			p.created = time.Now()
		}
		if p.TunnelMTU <= 0 {
			return fmt.Errorf("peer %s: tunnel MTU %d", p.Name, p.TunnelMTU)
		}
		for _, pfx := range p.Prefixes {
			if err := fb.Insert(pfx, p); err != nil {
				return fmt.Errorf("peer %s: prefix %s: %w", p.Name, pfx, err)
			}
		}
		if r.cfg.Encap == EncapESP {
			if p.Out == nil || p.In == nil {
				return fmt.Errorf("peer %s: ESP needs an inbound and an outbound SA", p.Name)
			}
			spi := p.In.SPI()
			if o, dup := s.bySPI[spi]; dup {
				return fmt.Errorf("peer %s: inbound SPI %#08x already used by peer %s", p.Name, spi, o.Name)
			}
			s.bySPI[spi] = p
		}
		a := p.Underlay.Addr().Unmap()
		if o, dup := s.byAddr[a]; dup && r.cfg.Encap == EncapVXLAN {
			return fmt.Errorf("peer %s: underlay %s already used by peer %s", p.Name, a, o.Name)
		}
		s.byAddr[a] = p
	}
	s.fib = fb.Build()
	var lb fib.Builder[struct{}]
	for _, pfx := range r.cfg.Prefixes {
		if err := lb.Insert(pfx, struct{}{}); err != nil {
			return fmt.Errorf("local prefix %s: %w", pfx, err)
		}
	}
	for _, a := range r.cfg.Addrs {
		if r.inLocalPrefix(a) {
			continue // already covered
		}
		if err := lb.Insert(netip.PrefixFrom(a, a.BitLen()), struct{}{}); err != nil {
			return fmt.Errorf("local address %s: %w", a, err)
		}
	}
	s.local = lb.Build()
	old := r.state.Swap(s)
	if r.log != nil {
		r.logPeerChanges(old, s)
	}
	return nil
}

func (r *Router) inLocalPrefix(a netip.Addr) bool {
	for _, p := range r.cfg.Prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (r *Router) logPeerChanges(old, s *snapshot) {
	had := map[string]bool{}
	if old != nil {
		for _, p := range old.peers {
			had[p.Name] = true
		}
	}
	for _, p := range s.peers {
		if !had[p.Name] {
			r.log.Info("peer up", "peer", p.Name, "underlay", p.Underlay, "prefixes", len(p.Prefixes), "tunnel_mtu", p.TunnelMTU)
		}
		delete(had, p.Name)
	}
	for name := range had {
		r.log.Info("peer removed", "peer", name)
	}
}
