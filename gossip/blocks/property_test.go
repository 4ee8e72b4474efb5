package blocks

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// randomClaims draws claims designed to collide: few node names, few Since
// values, prefixes of mixed lengths inside 10.42.0.0/20 plus some IPv6.
func randomClaims(r *rand.Rand) []Claim {
	n := r.IntN(40)
	out := make([]Claim, n)
	for i := range out {
		var p netip.Prefix
		if r.IntN(8) == 0 {
			p = netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x42, 6: byte(r.IntN(4))}), 56+r.IntN(16)).Masked()
		} else {
			a := netip.AddrFrom4([4]byte{10, 42, byte(r.IntN(16)), byte(r.IntN(256))})
			p = netip.PrefixFrom(a, 19+r.IntN(9)).Masked() // /19 (beyond the /20) … /27
		}
		out[i] = Claim{
			Node:   fmt.Sprintf("n%d", r.IntN(12)),
			Block:  p,
			Since:  int64(r.IntN(6)),
			Static: r.IntN(10) == 0,
			Live:   r.IntN(3) != 0,
		}
	}
	return out
}

// slowOwners is a straightforward reference for Owners: quadratic overlap
// checks with netip.Prefix.Overlaps instead of prefixSet.
func slowOwners(claims []Claim) map[netip.Prefix]string {
	sorted := slices.Clone(claims)
	slices.SortFunc(sorted, compareClaims)
	out := map[netip.Prefix]string{}
	for _, c := range sorted {
		if c.Static {
			if _, ok := out[c.Block]; !ok {
				out[c.Block] = c.Node
			}
		}
	}
	var kept []netip.Prefix
next:
	for _, c := range sorted {
		if c.Static {
			continue
		}
		for _, s := range claims {
			if s.Static && s.Block.Overlaps(c.Block) {
				continue next
			}
		}
		for _, k := range kept {
			if k.Overlaps(c.Block) {
				continue next
			}
		}
		kept = append(kept, c.Block)
		out[c.Block] = c.Node
	}
	return out
}

func TestOwnersProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(42, 3))
	for iter := range 3000 {
		claims := randomClaims(r)
		got := Owners(claims)

		if want := slowOwners(claims); !maps.Equal(got, want) {
			t.Fatalf("iter %d: claims %v: got %v, want (reference) %v", iter, claims, got, want)
		}
		// Order independence.
		shuffled := slices.Clone(claims)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if g2 := Owners(shuffled); !maps.Equal(got, g2) {
			t.Fatalf("iter %d: order changed the result: got %v, then %v", iter, got, g2)
		}

		byBlock := map[netip.Prefix][]Claim{}
		for _, c := range claims {
			byBlock[c.Block] = append(byBlock[c.Block], c)
		}
		isStatic := func(p netip.Prefix, node string) bool {
			for _, c := range byBlock[p] {
				if c.Static && c.Node == node {
					return true
				}
			}
			return false
		}
		for p, owner := range got {
			// Every owner really claimed what it owns.
			found := false
			for _, c := range byBlock[p] {
				found = found || c.Node == owner
			}
			if !found {
				t.Fatalf("iter %d: %v owned by %s, who did not claim it", iter, p, owner)
			}
			// Owned block claims overlap no static prefix and no other owned prefix.
			if isStatic(p, owner) {
				continue
			}
			for _, c := range claims {
				if c.Static && c.Block.Overlaps(p) {
					t.Fatalf("iter %d: block %v of %s overlaps static %v of %s", iter, p, owner, c.Block, c.Node)
				}
			}
			for q, o2 := range got {
				if q != p && q.Overlaps(p) {
					t.Fatalf("iter %d: owned %v (%s) overlaps owned %v (%s)", iter, p, owner, q, o2)
				}
			}
		}
		for _, c := range claims {
			owner, ok := got[c.Block]
			if c.Static {
				// Static always wins: its prefix is owned by a static claimant
				// with priority at least as high.
				if !ok || !isStatic(c.Block, owner) {
					t.Fatalf("iter %d: static %v of %s: owner %q, want a static claimant", iter, c.Block, c.Node, owner)
				}
				continue
			}
			if ok && owner == c.Node {
				continue
			}
			// A losing block claim overlaps a static prefix or a kept claim of
			// higher priority.
			beaten := false
			for _, s := range claims {
				if s.Static && s.Block.Overlaps(c.Block) {
					beaten = true
				}
			}
			for q, o := range got {
				if !q.Overlaps(c.Block) {
					continue
				}
				for _, w := range byBlock[q] {
					if w.Node == o && (w.Static || compareClaims(w, c) < 0) {
						beaten = true
					}
				}
			}
			if !beaten {
				t.Fatalf("iter %d: claim %+v lost to nothing (owners %v)", iter, c, got)
			}
		}
	}
}
