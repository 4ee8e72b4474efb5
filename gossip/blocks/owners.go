package blocks

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
)

// Claim is one node's claim on a prefix, as published over gossip or, for
// this host, as kept by Store.
type Claim struct {
	// Node is the claiming node's name (unique in the cluster).
	Node string
	// Block is the claimed prefix: a block of the cluster CIDR, or a
	// configured static prefix. It is compared masked.
	Block netip.Prefix
	// Since is when the node first claimed Block, in Unix nanoseconds by the
	// owner's clock. The owner persists it, so it survives restarts; it is
	// only ever compared, never checked against the local clock.
	Since int64
	// Static marks a prefix from the node's configuration (node.prefixes).
	// Static claims always win over block claims.
	Static bool
	// Live is true when the node is alive or suspect, so its prefixes are
	// routed. Claims of dead nodes still hold their blocks (see Choose) but
	// are not routed (see Routes). Owners ignores Live.
	Live bool
}

// Owners resolves every claimed prefix to exactly one owner. Any host given
// the same claims, in any order, computes the same map:
//
//   - Static claims win. Two nodes configuring the very same prefix is a
//     configuration error; the earlier Since, then the smaller node name,
//     keeps it. Statics that merely overlap each other are all kept, as they
//     are in a static configuration: the forwarding table's longest-prefix
//     match splits the traffic.
//   - A block claim that overlaps any static prefix loses, whether the block
//     contains it (a static /25 inside a /24 block) or lies inside it (a /24
//     inside a static /16).
//   - Among the remaining block claims, the earliest Since wins, ties going to
//     the lexicographically smallest node name. Claims are taken in that
//     order and each is kept unless it overlaps one already kept, so blocks
//     of different lengths are handled too and kept blocks never overlap.
//
// Claims with an invalid Block are ignored. The map's keys are masked.
func Owners(claims []Claim) map[netip.Prefix]string {
	won := resolve(claims)
	out := make(map[netip.Prefix]string, len(won))
	for _, c := range won {
		out[c.Block] = c.Node
	}
	return out
}

// Routes is the subset of Owners that should be routed: the prefixes whose
// winning claim is Live. A dead owner's block stays owned (nobody else may
// take it) but carries no route until the owner returns.
func Routes(claims []Claim) map[netip.Prefix]string {
	won := resolve(claims)
	out := make(map[netip.Prefix]string, len(won))
	for _, c := range won {
		if c.Live {
			out[c.Block] = c.Node
		}
	}
	return out
}

// resolve returns the winning claims (see Owners), masked.
func resolve(claims []Claim) []Claim {
	var statics, dynamic []Claim
	var lens []int
	for _, c := range claims {
		if !c.Block.IsValid() {
			continue
		}
		c.Block = c.Block.Masked()
		if !slices.Contains(lens, c.Block.Bits()) {
			lens = append(lens, c.Block.Bits())
		}
		if c.Static {
			statics = append(statics, c)
		} else {
			dynamic = append(dynamic, c)
		}
	}
	slices.SortFunc(statics, compareClaims)
	slices.SortFunc(dynamic, compareClaims)
	slices.Sort(lens)

	won := make([]Claim, 0, len(statics)+len(dynamic))
	staticSet := newPrefixSet(lens, len(statics))
	for _, c := range statics {
		if !staticSet.has(c.Block) { // first of equal prefixes wins
			won = append(won, c)
		}
		staticSet.add(c.Block)
	}
	kept := newPrefixSet(lens, len(dynamic))
	for _, c := range dynamic {
		if staticSet.overlaps(c.Block) || kept.overlaps(c.Block) {
			continue
		}
		kept.add(c.Block)
		won = append(won, c)
	}
	return won
}

// compareClaims is the priority order: earlier Since, then smaller node name.
// The remaining fields only make the order total, so that duplicated claims
// resolve the same way whatever order they arrive in.
func compareClaims(a, b Claim) int {
	if c := cmp.Compare(a.Since, b.Since); c != 0 {
		return c
	}
	if c := strings.Compare(a.Node, b.Node); c != 0 {
		return c
	}
	if c := a.Block.Addr().Compare(b.Block.Addr()); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Block.Bits(), b.Block.Bits()); c != 0 {
		return c
	}
	switch {
	case a.Live == b.Live:
		return 0
	case a.Live:
		return -1
	default:
		return 1
	}
}

// prefixSet answers "does p overlap any member" with a few map lookups
// rather than a scan of every member. Two prefixes overlap exactly when one
// contains the other, so p overlaps a member if p truncated to some member's
// length is a member, or if p is a truncation of a member. Truncations are
// only needed at the lengths that occur among the claims (usually one or
// two), which lens lists.
type prefixSet struct {
	lens      []int
	members   map[netip.Prefix]struct{}
	ancestors map[netip.Prefix]struct{} // strict truncations of members, at lengths in lens
}

func newPrefixSet(lens []int, n int) prefixSet {
	return prefixSet{lens: lens, members: make(map[netip.Prefix]struct{}, n), ancestors: make(map[netip.Prefix]struct{}, n)}
}

// add inserts p, which must be masked.
func (s prefixSet) add(p netip.Prefix) {
	s.members[p] = struct{}{}
	for _, l := range s.lens {
		if l >= p.Bits() {
			break
		}
		a, _ := p.Addr().Prefix(l) // l is below p.Bits(): never fails
		s.ancestors[a] = struct{}{}
	}
}

func (s prefixSet) has(p netip.Prefix) bool {
	_, ok := s.members[p]
	return ok
}

// overlaps reports whether p (masked, with a length in lens) overlaps a
// member.
func (s prefixSet) overlaps(p netip.Prefix) bool {
	if _, ok := s.ancestors[p]; ok {
		return true
	}
	for _, l := range s.lens {
		if l > p.Bits() {
			break
		}
		a, _ := p.Addr().Prefix(l)
		if _, ok := s.members[a]; ok {
			return true
		}
	}
	return false
}
