package agent

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"time"

	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/crypto/pairkey"
	"github.com/drovernet/drover/gossip"
	"github.com/drovernet/drover/router"
)

// derivedESN: a derived SA may carry more than 2^32 packets in one rotation
// interval (1.2 Mpps for an hour).
const derivedESN = true

// peerKeys is one member's SA state across rotations.
type peerKeys struct {
	stats *router.PeerStats
	// The member's current public ephemeral, and the one before it while
	// its grace lasts: the member may still seal with either.
	theirs     pairkey.Party
	theirsPrev *pairkey.Party
	prevUntil  time.Time
	// in and out hold every SA derived for this member, installed or not,
	// until our ephemeral key in its combination is erased (erase): a
	// combination that comes back (their key A→X→A) finds its SA with its
	// sequence number or replay window where they were.
	in  map[saFor]*esp.InSA
	out map[saFor]*esp.OutSA
	// outFor is the combination the router seals with.
	outFor saFor
}

// saFor names the keys an SA was derived from: both ephemerals, and their
// identity (ours is fixed).
type saFor struct{ ours, theirs, theirsID [32]byte }

func (pk *peerKeys) combos() int { return len(pk.in) + len(pk.out) }

// empty reports whether no SA is held.
func (pk *peerKeys) empty() bool { return pk.combos() == 0 }

// pruneOurs forgets every SA derived from our ephemeral pub, which has just
// been erased: its combinations can never be derived again.
func (a *Agent) pruneOurs(pub [32]byte) {
	for _, pk := range a.peers {
		for f := range pk.in {
			if f.ours == pub {
				delete(pk.in, f)
			}
		}
		for f := range pk.out {
			if f.ours == pub {
				delete(pk.out, f)
			}
		}
		if pk.outFor.ours == pub {
			pk.outFor = saFor{}
		}
	}
}

// erase ends the grace of our previous ephemeral key once it is due.
func (a *Agent) erase(now time.Time) {
	if a.prev != nil && now.After(a.eraseAt) {
		a.erasePrev()
	}
}

// erasePrev erases our previous ephemeral key now, with its SAs: forward
// secrecy, the old key cannot be recomputed.
func (a *Agent) erasePrev() {
	if a.prev == nil {
		return
	}
	pub := a.prev.Public
	a.prev.Erase()
	a.prev = nil
	a.pruneOurs(pub)
}

// peer builds the router peer for a member, deriving the SAs it lacks.
func (a *Agent) peer(m gossip.Member, routed []netip.Prefix, now time.Time) (*router.Peer, error) {
	pk := a.peers[m.Name]
	if pk == nil {
		pk = &peerKeys{stats: router.NewPeerStats(), in: map[saFor]*esp.InSA{}, out: map[saFor]*esp.OutSA{}}
		a.peers[m.Name] = pk
	}
	p := &router.Peer{
		Name:      m.Name,
		Underlay:  m.Info.Underlay,
		MAC:       m.Info.MAC,
		Prefixes:  routed,
		TunnelMTU: a.cfg.TunnelMTU,
		Stats:     pk.stats,
	}
	if a.cfg.Encap != EncapESP {
		return p, nil
	}
	them := pairkey.Party{Identity: m.Info.Identity, Ephemeral: m.Info.Ephemeral, Epoch: m.Info.Epoch}

	// Track the member's keys: a new ephemeral demotes the current one to
	// "previous" for the grace period.
	if them.Ephemeral != pk.theirs.Ephemeral || them.Identity != pk.theirs.Identity {
		if pk.theirs.Ephemeral != ([32]byte{}) {
			prev := pk.theirs
			pk.theirsPrev, pk.prevUntil = &prev, now.Add(a.cfg.Grace)
		}
		pk.theirs = them
	}
	if pk.theirsPrev != nil && now.After(pk.prevUntil) {
		pk.theirsPrev = nil
	}
	theirs := []pairkey.Party{pk.theirs}
	if pk.theirsPrev != nil && pk.theirsPrev.Ephemeral != pk.theirs.Ephemeral {
		theirs = append(theirs, *pk.theirsPrev)
	}
	ours := []pairkey.Local{{Identity: a.cfg.Identity, Ephemeral: a.eph, Epoch: a.epoch}}
	if a.prev != nil {
		ours = append(ours, pairkey.Local{Identity: a.cfg.Identity, Ephemeral: *a.prev, Epoch: a.prevEp})
	}
	// Outbound: after our own rotation, an SA that is in use keeps the
	// previous key until the switch delay ends; a new peer, or a peer that
	// rotated, gets the current combination at once (it has the inbound).
	local := ours[0]
	if len(ours) > 1 && now.Before(a.switchAt) && pk.outFor.ours == a.prev.Public {
		local = ours[1]
	}
	outFor := saFor{ours: local.Ephemeral.Public, theirs: them.Ephemeral, theirsID: them.Identity}
	// A member seen for the first time needs both directions of the same
	// combination: one Pair shares the four X25519 and the two key
	// checks between them, half the cost of Inbound and Outbound apart
	// (BenchmarkPair), which in a start-up storm of 100 hosts is each
	// host's largest share of CPU.
	var spare *pairkey.SA
	defer func() {
		if spare != nil {
			clear(spare.Key)
		}
	}()
	for i, o := range ours {
		for j, t := range theirs {
			f := saFor{ours: o.Ephemeral.Public, theirs: t.Ephemeral, theirsID: t.Identity}
			sa, ok := pk.in[f]
			if !ok {
				if pk.combos() >= maxCombos {
					if i == 0 && j == 0 {
						return nil, fmt.Errorf("more than %d key combinations held: the member changes its ephemeral key too often", maxCombos)
					}
					continue
				}
				var k pairkey.SA
				var err error
				if _, have := pk.out[f]; f == outFor && !have && spare == nil {
					var out pairkey.SA
					out, k, err = pairkey.Pair(a.cfg.Cipher, a.cfg.ClusterKey, o, t)
					spare = &out
				} else {
					k, err = pairkey.Inbound(a.cfg.Cipher, a.cfg.ClusterKey, o, t)
				}
				if err != nil {
					return nil, err
				}
				if sa, err = esp.NewInSA(a.cfg.Cipher, k.SPI, k.Key, derivedESN, a.cfg.ReplayWindow); err != nil {
					return nil, err
				}
				pk.in[f] = sa
				a.debugSA("inbound SA", m.Name, k.SPI, o.Ephemeral.Public, t.Ephemeral)
			}
			if i == 0 && j == 0 {
				p.In = append([]*esp.InSA{sa}, p.In...) // the current pair first
			} else {
				p.In = append(p.In, sa)
			}
		}
	}

	f := outFor
	out, ok := pk.out[f]
	if !ok {
		if pk.combos() >= maxCombos {
			return nil, fmt.Errorf("more than %d key combinations held: the member changes its ephemeral key too often", maxCombos)
		}
		var k pairkey.SA
		var err error
		if spare != nil {
			k, spare = *spare, nil // derived with the inbound above
		} else if k, err = pairkey.Outbound(a.cfg.Cipher, a.cfg.ClusterKey, local, them); err != nil {
			return nil, err
		}
		if out, err = esp.NewOutSA(a.cfg.Cipher, k.SPI, k.Key, derivedESN); err != nil {
			return nil, err
		}
		pk.out[f] = out
		a.debugSA("outbound SA", m.Name, k.SPI, local.Ephemeral.Public, them.Ephemeral)
	}
	pk.outFor = f
	p.Out = out
	return p, nil
}

func (a *Agent) debugSA(what, peer string, spi uint32, ours, theirs [32]byte) {
	a.log.Debug(what, "peer", peer, "spi", fmt.Sprintf("%#08x", spi), "ours", hex.EncodeToString(ours[:3]), "theirs", hex.EncodeToString(theirs[:3]))
}
