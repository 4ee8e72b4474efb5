package agent

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drovernet/drover/gossip"
)

// holders makes n remote hosts h2.. holding blocks 10.42.2.0/24.., alive.
func holders(t *testing.T, n int) []*remote {
	t.Helper()
	var rs []*remote
	for i := range n {
		rs = append(rs, newRemote(t, fmt.Sprintf("h%d", i+2), i+2, fmt.Sprintf("10.42.%d.0/24", i+2), t0.Add(-time.Hour)))
	}
	return rs
}

// A new host on one side of a cut claims a block only if it reaches more
// than half of the block holders it knows: of two halves neither does, of
// 4 against 2 only the larger side. The note names the counts.
func TestNoBlockWithoutQuorum(t *testing.T) {
	for _, tc := range []struct {
		holders, dead int
		claims        bool
	}{
		{holders: 6, dead: 3, claims: false}, // two halves
		{holders: 6, dead: 2, claims: true},  // 4 of 6
		{holders: 6, dead: 4, claims: false}, // 2 of 6
		{holders: 1, dead: 0, claims: true},
		{holders: 1, dead: 1, claims: false}, // the only holder is down
		{holders: 2, dead: 1, claims: false}, // half is not more than half
		{holders: 3, dead: 1, claims: true},
	} {
		t.Run(fmt.Sprintf("%d-of-%d", tc.holders-tc.dead, tc.holders), func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.MayClaimAlone = false })
			rs := holders(t, tc.holders)
			for i, r := range rs {
				if i < tc.dead {
					r.state = gossip.Dead
				}
				h.m.set(r.member())
			}
			// One live member other than the holders: joined, so only
			// the quorum stands in the way.
			newcomer := newRemote(t, "n1", 99, "", t0)
			newcomer.info.Block = netip.Prefix{}
			h.up(newcomer)
			got := h.a.claim.Block.IsValid()
			if got != tc.claims {
				t.Fatalf("%d of %d holders reachable: claimed %v, want a claim: %v", tc.holders-tc.dead, tc.holders, h.a.claim.Block, tc.claims)
			}
			note := h.view().BlockNote
			if want := fmt.Sprintf("%d of the %d other hosts holding blocks are reachable", tc.holders-tc.dead, tc.holders); !tc.claims && !strings.Contains(note, want) {
				t.Fatalf("block note: got %q, want it to say %q", note, want)
			}
			for _, in := range h.m.published {
				if !tc.claims && in.Block.IsValid() {
					t.Fatalf("published block %v without a quorum", in.Block)
				}
			}
			// The cut heals: every holder is back, so the block comes.
			for _, r := range rs {
				r.state = gossip.Alive
				h.m.set(r.member())
			}
			h.step()
			if !h.a.claim.Block.IsValid() || h.view().BlockNote != "" {
				t.Fatalf("healed: block %v note %q, want a block and no note", h.a.claim.Block, h.view().BlockNote)
			}
		})
	}
}

// A holder that loses its block to an earlier claim while it reaches too
// few holders gives the block up (so two hosts never route it) and claims
// none until the quorum is back.
func TestLostBlockWithoutQuorum(t *testing.T) {
	h := newHarness(t)
	rs := holders(t, 4)
	h.up(rs...)
	own := h.a.claim.Block
	if !own.IsValid() {
		t.Fatal("no block with every holder reachable")
	}
	for _, r := range rs[:3] {
		r.state = gossip.Dead
		h.m.set(r.member())
	}
	// h5 (alive) now presents an older claim on our block: it wins.
	rs[3].info.Block, rs[3].info.BlockSince = own, t0.Add(-48*time.Hour).UnixNano()
	h.up(rs[3])
	if h.a.claim.Block.IsValid() {
		t.Fatalf("lost %v with 1 of 4 holders reachable: claimed %v, want none", own, h.a.claim.Block)
	}
	if got := h.r.local; len(got) != 0 {
		t.Fatalf("router's local prefixes after the loss: got %v, want none", got)
	}
	if last := h.m.published[len(h.m.published)-1]; last.Block.IsValid() {
		t.Fatalf("still publishing block %v after losing it", last.Block)
	}
	if note := h.view().BlockNote; !strings.Contains(note, "1 of the 4") {
		t.Fatalf("block note: got %q, want the quorum counts", note)
	}
	v := h.view()
	if r := v.RouteTo(own); r == nil || r.Peer != "h5" {
		t.Fatalf("route for the lost block %v: got %+v, want one to h5", own, r)
	}
}

// A fresh claim is published at once but handed out (made local, so the
// CNI plugin sees it) only after ClaimSettle; a claim lost in that time was
// never handed out. A restored claim is used at once.
func TestClaimSettles(t *testing.T) {
	const settle = 2 * time.Second
	h := newHarness(t, func(c *Config) { c.ClaimSettle = settle })
	h.step()
	b := h.a.claim.Block
	if !b.IsValid() {
		t.Fatal("no claim")
	}
	if last := h.m.published[len(h.m.published)-1]; last.Block != b {
		t.Fatalf("published block %v, want the claim %v at once", last.Block, b)
	}
	if len(h.r.local) != 0 || !strings.Contains(h.view().BlockNote, "claiming "+b.String()) {
		t.Fatalf("right after the claim: local %v note %q; want none and a note saying it is claiming %v", h.r.local, h.view().BlockNote, b)
	}
	if !h.a.timed {
		t.Fatalf("settling: timed %v, want true (Run must step when the settle time ends)", h.a.timed)
	}
	h.clock.add(settle - time.Millisecond)
	h.step()
	if len(h.r.local) != 0 {
		t.Fatalf("1 ms before settling: local %v, want none", h.r.local)
	}
	h.clock.add(time.Millisecond)
	h.step()
	if !slices.Equal(h.r.local, []netip.Prefix{b}) || h.view().BlockNote != "" {
		t.Fatalf("settled: local %v note %q, want [%v] and no note", h.r.local, h.view().BlockNote, b)
	}
	if h.a.timed {
		t.Fatalf("settled: timed %v, want false", h.a.timed)
	}

	// Restarted: the restored claim is local at once.
	h.a.Stop()
	h.newAgent(func(c *Config) { c.ClaimSettle = settle })
	h.step()
	if !slices.Equal(h.r.local, []netip.Prefix{b}) {
		t.Fatalf("restored: local %v, want [%v] at once", h.r.local, b)
	}

	// A conflict inside the settle time: the claim moves and the lost
	// block never became local.
	h2 := newHarness(t, func(c *Config) { c.ClaimSettle = settle })
	h2.step()
	first := h2.a.claim.Block
	rival := newRemote(t, "h0", 3, first.String(), t0.Add(-time.Minute))
	h2.clock.add(settle / 2)
	h2.up(rival)
	if h2.a.claim.Block == first || !h2.a.claim.Block.IsValid() {
		t.Fatalf("after an earlier rival claim on %v: claim %v, want another block", first, h2.a.claim.Block)
	}
	h2.clock.add(settle)
	h2.step()
	if slices.Contains(h2.r.local, first) {
		t.Fatalf("lost block %v became local", first)
	}
}
