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
	// Out is the SA this host seals with (ESP only).
	Out *esp.OutSA
	// In are the SAs the peer may seal with (ESP only): the current one
	// first, then previous ones kept through a key rotation's grace period
	// so that packets in flight are not lost.
	In []*esp.InSA
	// Stats are the peer's counters. The control plane passes the same
	// Stats to every generation of a peer so counters survive re-keying;
	// nil gets fresh ones.
	Stats *PeerStats
}

// PeerStats counts one peer's traffic; updated by the pipelines.
type PeerStats struct {
	created   time.Time
	txPackets atomic.Uint64
	txBytes   atomic.Uint64
	rxPackets atomic.Uint64
	rxBytes   atomic.Uint64
}

// NewPeerStats returns counters that start now.
func NewPeerStats() *PeerStats { return &PeerStats{created: time.Now()} }

// inbound is one entry of the SPI demultiplexer.
type inbound struct {
	peer *Peer
	sa   *esp.InSA
}

// snapshot is everything the pipelines look up, replaced whole by SetPeers
// and never mutated, so each batch needs a single atomic load.
type snapshot struct {
	peers  []*Peer
	fib    *fib.Table[*Peer]    // destination (egress) and source check (ingress)
	bySPI  map[uint32]inbound   // ESP ingress demux: SPI → peer and SA
	byAddr map[netip.Addr]*Peer // VXLAN ingress: outer source address → peer
	local  *fib.Table[struct{}] // our own prefixes and addresses: the only inner destinations accepted

	prefixes []netip.Prefix // this host's own prefixes
	addrs    []netip.Addr   // the TUN's addresses: ICMP source, ARP answers
}

// SetPeers replaces the peer set. It checks that no prefix is claimed twice
// and that inbound SPIs (ESP) and underlay addresses (VXLAN) are unique, so
// that demultiplexing is unambiguous. On error nothing changes.
func (r *Router) SetPeers(peers []*Peer) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.state.Load()
	var prefixes []netip.Prefix
	var addrs []netip.Addr
	if cur != nil {
		prefixes, addrs = cur.prefixes, cur.addrs
	} else {
		prefixes, addrs = r.cfg.Prefixes, r.cfg.Addrs
	}
	return r.publish(peers, prefixes, addrs)
}

// SetLocal replaces this host's own prefixes and TUN addresses (a claimed
// block can arrive after start, or move after a lost conflict).
func (r *Router) SetLocal(prefixes []netip.Prefix, addrs []netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var peers []*Peer
	if cur := r.state.Load(); cur != nil {
		peers = cur.peers
	}
	return r.publish(peers, prefixes, addrs)
}

// publish builds and swaps in a new snapshot; r.mu is held.
func (r *Router) publish(peers []*Peer, prefixes []netip.Prefix, addrs []netip.Addr) error {
	s := &snapshot{
		peers:    peers,
		bySPI:    make(map[uint32]inbound, len(peers)),
		byAddr:   make(map[netip.Addr]*Peer, len(peers)),
		prefixes: prefixes,
		addrs:    addrs,
	}
	var fb fib.Builder[*Peer]
	for _, p := range peers {
		if p.Stats == nil {
			p.Stats = NewPeerStats()
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
			if p.Out == nil || len(p.In) == 0 {
				return fmt.Errorf("peer %s: ESP needs an inbound and an outbound SA", p.Name)
			}
			for _, sa := range p.In {
				spi := sa.SPI()
				if o, dup := s.bySPI[spi]; dup {
					return fmt.Errorf("peer %s: inbound SPI %#08x already used by peer %s", p.Name, spi, o.peer.Name)
				}
				s.bySPI[spi] = inbound{peer: p, sa: sa}
			}
		}
		a := p.Underlay.Addr().Unmap()
		if o, dup := s.byAddr[a]; dup && r.cfg.Encap == EncapVXLAN {
			return fmt.Errorf("peer %s: underlay %s already used by peer %s", p.Name, a, o.Name)
		}
		s.byAddr[a] = p
	}
	s.fib = fb.Build()
	var lb fib.Builder[struct{}]
	for _, pfx := range prefixes {
		if err := lb.Insert(pfx, struct{}{}); err != nil {
			return fmt.Errorf("local prefix %s: %w", pfx, err)
		}
	}
	for _, a := range addrs {
		if containsAddr(prefixes, a) {
			continue // already covered
		}
		if err := lb.Insert(netip.PrefixFrom(a, a.BitLen()), struct{}{}); err != nil {
			return fmt.Errorf("local address %s: %w", a, err)
		}
	}
	s.local = lb.Build()
	old := r.state.Swap(s)
	r.logPeerChanges(old, s)
	return nil
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
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
