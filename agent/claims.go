package agent

import (
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/drovernet/drover/gossip"
	"github.com/drovernet/drover/gossip/blocks"
)

// TooBroad reports whether p is too broad for anyone to have routed into the
// TUN: shorter than /8 (IPv4) or /16 (IPv6), which takes in a default route
// and its halves (0.0.0.0/1, 128.0.0.0/1). No container network needs such a
// prefix, and a route for one captures the host's own traffic. It is the
// rule config.MinPrefixBits4/6 applies to a host's own configuration
// (cmd/drover's TestTooBroadAgrees keeps the two equal).
func TooBroad(p netip.Prefix) bool {
	if p.Addr().Is4() {
		return p.Bits() < 8
	}
	return p.Bits() < 16
}

// checked is what the agent believes of one member.
type checked struct {
	// refusedAll says why nothing of the member is believed ("" if fine).
	refusedAll string
	// refused lists the claims not believed, each "prefix: reason".
	refused []string
	block   blocks.Claim // valid, or zero
	statics []blocks.Claim
}

// checkClaims validates every member's claims (see the package doc) and
// returns the claims to resolve — ours and our static peers' first — and
// what was believed of each member.
func (a *Agent) checkClaims(members []gossip.Member, now time.Time) ([]blocks.Claim, map[string]*checked) {
	self := a.cfg.Name
	var claims []blocks.Claim
	for _, p := range a.cfg.Prefixes {
		claims = append(claims, blocks.Claim{Node: self, Block: p, Static: true, Live: true})
	}
	// Configured static peers are the operator's word: no member claim that
	// overlaps them is believed (below), so they never meet a tie.
	for _, p := range a.cfg.Static {
		for _, pfx := range p.Prefixes {
			claims = append(claims, blocks.Claim{Node: "static:" + p.Name, Block: pfx, Since: math.MinInt64, Static: true, Live: true})
		}
	}
	out := make(map[string]*checked, len(members))
	var underlays []netip.Addr
	if a.cfg.Underlay.IsValid() {
		underlays = append(underlays, a.cfg.Underlay.Addr().Unmap())
	}
	for _, m := range members {
		if m.Name == self || m.InfoErr != nil || m.State == gossip.Left {
			continue
		}
		if m.Info.Underlay.IsValid() {
			underlays = append(underlays, m.Info.Underlay.Addr().Unmap())
		}
		c := &checked{}
		out[m.Name] = c
		if why := a.cfg.Pins.Check(m.Name, m.Info.Identity); why != "" {
			c.refusedAll = why
			a.log.Warn("member refused", "peer", m.Name, "err", why)
			continue
		}
		if b := m.Info.Block; b.IsValid() {
			if why := a.blockReason(b, m.Info.BlockSince, now); why != "" {
				c.refuse(b, why)
				a.log.Warn("block claim refused", "peer", m.Name, "prefix", b, "err", why)
			} else {
				live := m.State == gossip.Alive || m.State == gossip.Suspect
				c.block = blocks.Claim{Node: m.Name, Block: b, Since: m.Info.BlockSince, Live: live}
			}
		}
	}
	// One write for every name pinned in this pass (Pins).
	if err := a.cfg.Pins.Flush(); err != nil {
		a.log.Error("save identity pins; kept in memory, retried next step", "err", err)
	}
	// Static prefixes second: they are checked against every believed block.
	var blockClaims []blocks.Claim
	for _, m := range members {
		if c := out[m.Name]; c != nil && c.block.Block.IsValid() {
			blockClaims = append(blockClaims, c.block)
		}
	}
	for _, m := range members {
		c := out[m.Name]
		if c == nil || c.refusedAll != "" {
			continue
		}
		live := m.State == gossip.Alive || m.State == gossip.Suspect
		for _, p := range m.Info.Prefixes {
			if why := a.staticReason(p, m.Name, blockClaims, underlays); why != "" {
				c.refuse(p, why)
				a.log.Warn("prefix claim refused", "peer", m.Name, "prefix", p, "err", why)
				continue
			}
			c.statics = append(c.statics, blocks.Claim{Node: m.Name, Block: p, Static: true, Live: live})
		}
		if c.block.Block.IsValid() {
			claims = append(claims, c.block)
		}
		claims = append(claims, c.statics...)
	}
	return claims, out
}

func (c *checked) refuse(p netip.Prefix, why string) {
	c.refused = append(c.refused, p.String()+": "+why)
}

// blockReason says why a member's block claim is not believed ("" if it is).
func (a *Agent) blockReason(b netip.Prefix, since int64, now time.Time) string {
	cidr := a.cfg.CIDR
	switch {
	case b != b.Masked():
		return "host bits set"
	case b.Addr().BitLen() != cidr.Addr().BitLen() || b.Bits() < cidr.Bits() || !cidr.Contains(b.Addr()):
		return fmt.Sprintf("outside cluster.cidr %s", cidr)
	case b.Bits() != a.cfg.BlockBits:
		return fmt.Sprintf("not a /%d block of the cluster", a.cfg.BlockBits)
	case since < minSince:
		return fmt.Sprintf("implausible block_since %d (before %s): it would evict every owner", since, time.Unix(0, minSince).UTC().Format("2006-01-02"))
	case since > now.Add(maxFutureSince).UnixNano():
		return fmt.Sprintf("implausible block_since %s: in the future", time.Unix(0, since).UTC().Format(time.RFC3339))
	}
	// Our own block is not checked: two claims on one block are a conflict
	// that blocks.Owners settles the same way on every host (the older
	// claim wins, the other claimant moves), and refusing it here would
	// leave both claimants keeping it. Only an implausible since (above)
	// is refused.
	if why := a.overlapsOurs(b, false); why != "" {
		return why
	}
	for _, u := range a.cfg.UnderlayNets {
		if u.Overlaps(b) {
			return fmt.Sprintf("overlaps the underlay subnet %s", u)
		}
	}
	return ""
}

// staticReason says why a member's static prefix is not believed.
func (a *Agent) staticReason(p netip.Prefix, owner string, blockClaims []blocks.Claim, underlays []netip.Addr) string {
	switch {
	case !p.IsValid() || p != p.Masked():
		return "host bits set"
	case TooBroad(p):
		return "broader than /8 (/16 for IPv6): takes in a default route"
	}
	for _, u := range a.cfg.UnderlayNets {
		if u.Overlaps(p) {
			return fmt.Sprintf("overlaps the underlay subnet %s", u)
		}
	}
	for _, u := range underlays {
		if p.Contains(u) {
			return fmt.Sprintf("contains the underlay address %s", u)
		}
	}
	if why := a.overlapsOurs(p, true); why != "" {
		return why
	}
	if a.cfg.CIDR.Overlaps(p) {
		for _, b := range blockClaims {
			if b.Node != owner && b.Block.Overlaps(p) {
				return fmt.Sprintf("overlaps %s's block %s", b.Node, b.Block)
			}
		}
		return fmt.Sprintf("overlaps the cluster CIDR %s, whose addresses are given only in blocks", a.cfg.CIDR)
	}
	return ""
}

// overlapsOurs says whether p overlaps this host's static prefixes (and
// with block, its block), or a configured static peer's prefix.
func (a *Agent) overlapsOurs(p netip.Prefix, block bool) string {
	ours := a.cfg.Prefixes
	if block && len(ours) == 0 && a.claim.Block.IsValid() {
		ours = []netip.Prefix{a.claim.Block}
	}
	for _, q := range ours {
		if q.Overlaps(p) {
			return fmt.Sprintf("overlaps this host's %s", q)
		}
	}
	for _, sp := range a.cfg.Static {
		for _, q := range sp.Prefixes {
			if q.Overlaps(p) {
				return fmt.Sprintf("overlaps configured peer %s's %s", sp.Name, q)
			}
		}
	}
	return ""
}
