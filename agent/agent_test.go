package agent

import (
	"errors"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/gossip"
	"github.com/drovernet/drover/router"
)

// up makes h1 see remotes and step once; h1 claims a block on the first
// step.
func (h *harness) up(rs ...*remote) {
	h.t.Helper()
	for _, r := range rs {
		h.m.set(r.member())
	}
	h.step()
}

func TestPeersAndRoutes(t *testing.T) {
	h := newHarness(t)
	h2 := newRemote(t, "h2", 2, "10.42.2.0/24", t0.Add(-time.Hour))
	h.up(h2)
	if h.a.claim.Block.Bits() != 24 || !cidr.Contains(h.a.claim.Block.Addr()) {
		t.Fatalf("own block: got %v, want a /24 of %v", h.a.claim.Block, cidr)
	}
	if got, want := h.k.prefixes(), []string{"10.42.2.0/24"}; !slices.Equal(got, want) {
		t.Fatalf("kernel routes: got %v, want %v", got, want)
	}
	p := h.r.peer("h2")
	if p == nil {
		t.Fatal("h2 is not a router peer")
	}
	// What h2 seals to us opens; what we seal goes under the SPI h2 expects.
	if err := openIn(p, h2.sealTo(t, h2.outSA(t, h.ourParty()))); err != nil {
		t.Fatalf("open a packet from h2: %v", err)
	}
	if got, want := p.Out.SPI(), h2.inSPI(t, h.ourParty()); got != want {
		t.Fatalf("outbound SPI: got %#08x, want %#08x (h2's inbound)", got, want)
	}
}

// A configured static peer and a gossip member that publishes the same
// prefix: the member sorts first ("a" < "static:…"), which used to win the
// tie, make the router refuse the duplicate and wedge the agent. Now the
// member's claim is refused, everything else keeps working, and a rotation
// publishes its key only with the SAs installed.
func TestStaticPeerWinsTie(t *testing.T) {
	static := netip.MustParsePrefix("100.64.9.0/24")
	sp := manualPeer(t, "edge", static, 0x1000)
	h := newHarness(t, func(c *Config) { c.Static = []*router.Peer{sp} })
	a := newRemote(t, "a", 3, "10.42.3.0/24", t0.Add(-time.Hour))
	a.info.Prefixes = []netip.Prefix{static}
	h.up(a)

	if p := h.r.peer("edge"); p == nil || !slices.Equal(p.Prefixes, []netip.Prefix{static}) {
		t.Fatalf("static peer edge: got %v, want it routing %v", p, static)
	}
	pa := h.r.peer("a")
	if pa == nil || !slices.Equal(pa.Prefixes, []netip.Prefix{netip.MustParsePrefix("10.42.3.0/24")}) {
		t.Fatalf("member a: got %v, want it routing only its block", pa)
	}
	mv := h.member("a")
	if mv == nil || len(mv.Refused) != 1 || !strings.Contains(mv.Refused[0], "overlaps configured peer edge") {
		t.Fatalf("a's refused claims: got %+v, want 100.64.9.0/24 refused as overlapping edge", mv)
	}

	// The rotation publishes only once h1 can open what a sends under the
	// new key.
	checked := false
	h.m.onUpdate = func(in gossip.NodeInfo) {
		checked = true
		p := h.r.peer("a")
		party := h.ourParty()
		party.Ephemeral, party.Epoch = in.Ephemeral, in.Epoch
		if p == nil || !hasInSPI(p, a.outSA(t, party).SPI()) {
			t.Errorf("key epoch %d published before its inbound SA for a was installed", in.Epoch)
		}
	}
	h.a.Rotate()
	if !checked || h.a.epoch != 2 {
		t.Fatalf("rotation: published %v, epoch %d; want published, epoch 2", checked, h.a.epoch)
	}
	if h.a.rotating {
		t.Fatal("rotating still set after the rotation")
	}
	// Membership changes are still applied.
	b := newRemote(t, "b", 4, "10.42.4.0/24", t0.Add(-time.Hour))
	h.up(b)
	if h.r.peer("b") == nil {
		t.Fatal("a member that joined after the tie is not a peer")
	}
}

// A member's ephemeral key goes A → X → A (a forged update before the
// owner refutes it, or two hosts sharing a name): the outbound SA of the
// combination with A continues its sequence numbers rather than restart at
// 1 under the same key, and the inbound SA keeps its replay window.
func TestEphemeralABA(t *testing.T) {
	h := newHarness(t)
	h2 := newRemote(t, "h2", 2, "10.42.2.0/24", t0.Add(-time.Hour))
	h.up(h2)
	p := h.r.peer("h2")
	outA := p.Out
	for range 5 {
		h2.sealTo(t, outA) // five packets sent to h2 under (ours, A)
	}
	seqA := outA.Seq()
	remoteOutA := h2.outSA(t, h.ourParty())
	captured := h2.sealTo(t, remoteOutA)
	if err := openIn(p, captured); err != nil {
		t.Fatalf("open h2's packet under A: %v", err)
	}

	keyA := h2.eph
	h2.newEph(t) // X
	h.clock.add(time.Second)
	h.up(h2)
	if h.r.peer("h2").Out == outA {
		t.Fatal("after A→X the outbound SA is still the one for A")
	}
	h.clock.add(grace + time.Second) // A's grace ends: its inbound SA is retired
	h.up(h2)
	if hasInSPI(h.r.peer("h2"), remoteOutA.SPI()) {
		t.Fatal("inbound SA for A still installed after its grace")
	}

	h2.eph, h2.info.Ephemeral = keyA, keyA.Public // back to A
	h.clock.add(time.Second)
	h.up(h2)
	p = h.r.peer("h2")
	if p.Out != outA {
		t.Fatal("A came back: got a new outbound SA, want the one for (ours, A) continued")
	}
	if got := p.Out.Seq(); got < seqA {
		t.Fatalf("outbound sequence after A→X→A: got %d, want >= %d (no reuse)", got, seqA)
	}
	h2.sealTo(t, p.Out)
	if got := p.Out.Seq(); got != seqA+1 {
		t.Fatalf("next sequence number: got %d, want %d", got, seqA+1)
	}
	// The captured packet replayed into the reinstalled inbound SA.
	if err := openIn(p, captured); !errors.Is(err, esp.ErrReplay) {
		t.Fatalf("replaying a captured packet into the reinstated inbound SA: got %v, want ErrReplay", err)
	}
	if err := openIn(p, h2.sealTo(t, remoteOutA)); err != nil {
		t.Fatalf("a fresh packet under A: %v", err)
	}
}

// A retired inbound SA is kept (not installed) until our key in its
// combination is erased; after that the combination cannot be derived
// again, so no SA ever comes back with an empty window.
func TestInboundStateErasedWithOurKey(t *testing.T) {
	h := newHarness(t)
	h2 := newRemote(t, "h2", 2, "10.42.2.0/24", t0.Add(-time.Hour))
	h.up(h2)
	if n := h.a.peers["h2"].combos(); n != 2 {
		t.Fatalf("SAs held for h2: got %d, want 2 (one in, one out)", n)
	}
	h.a.Rotate()
	h.clock.add(grace + time.Second)
	h.step()
	pk := h.a.peers["h2"]
	for f := range pk.in {
		if f.ours != h.a.eph.Public {
			t.Fatal("an inbound SA derived from our erased key is still held")
		}
	}
	for f := range pk.out {
		if f.ours != h.a.eph.Public {
			t.Fatal("an outbound SA derived from our erased key is still held")
		}
	}
	if h.a.prev != nil {
		t.Fatal("previous key not erased after the grace period")
	}
}

// Rotation timing: inbound for the new key at once; outbound to a peer that
// has the old combination switches only after the switch delay; the old
// inbound SA stays through the grace period.
func TestRotationTiming(t *testing.T) {
	h := newHarness(t)
	h2 := newRemote(t, "h2", 2, "10.42.2.0/24", t0.Add(-time.Hour))
	h.up(h2)
	oldParty := h.ourParty()
	oldOut := h.r.peer("h2").Out
	oldIn := h2.outSA(t, oldParty).SPI()

	h.a.Rotate()
	newParty := h.ourParty()
	if newParty.Epoch != oldParty.Epoch+1 || newParty.Ephemeral == oldParty.Ephemeral {
		t.Fatalf("after Rotate: epoch %d → %d; want a new key and epoch+1", oldParty.Epoch, newParty.Epoch)
	}
	if pub := h.m.published[len(h.m.published)-1]; pub.Ephemeral != newParty.Ephemeral {
		t.Fatal("the rotated key was not published")
	}
	p := h.r.peer("h2")
	if !hasInSPI(p, h2.outSA(t, newParty).SPI()) || !hasInSPI(p, oldIn) {
		t.Fatal("right after the rotation: want inbound SAs for both the new and the old key")
	}
	if p.In[0].SPI() != h2.outSA(t, newParty).SPI() {
		t.Fatal("the current pair's inbound SA is not first")
	}
	h.clock.add(switchD - time.Millisecond)
	h.step()
	if h.r.peer("h2").Out != oldOut {
		t.Fatal("outbound switched before the switch delay ended")
	}
	h.clock.add(2 * time.Millisecond)
	h.step()
	if got, want := h.r.peer("h2").Out.SPI(), h2.inSPI(t, newParty); got != want {
		t.Fatalf("outbound after the switch delay: SPI %#08x, want %#08x (new key)", got, want)
	}
	h.clock.t = t0.Add(grace - time.Second)
	h.step()
	if !hasInSPI(h.r.peer("h2"), oldIn) {
		t.Fatal("old inbound SA removed before the grace period ended")
	}
	h.clock.t = t0.Add(grace + time.Second)
	h.step()
	if hasInSPI(h.r.peer("h2"), oldIn) {
		t.Fatal("old inbound SA still installed after the grace period")
	}
}

// A manual static peer whose inbound SPI equals the SPI derived for a
// member's current pair: the member's SA is left out, the agent rotates its
// key early (its SAs get new SPIs), and does not wedge.
func TestCollisionRekeys(t *testing.T) {
	h := newHarness(t)
	h2 := newRemote(t, "h2", 2, "10.42.2.0/24", t0.Add(-time.Hour))
	spi := h2.outSA(t, h.ourParty()).SPI()
	h.a.cfg.Static = []*router.Peer{manualPeer(t, "edge", netip.MustParsePrefix("100.64.9.0/24"), spi)}
	epoch := h.a.epoch
	h.up(h2)
	if h.a.epoch != epoch+1 {
		t.Fatalf("epoch after an SPI collision: got %d, want %d (early rotation)", h.a.epoch, epoch+1)
	}
	p := h.r.peer("h2")
	if p == nil || p.In[0].SPI() == spi {
		t.Fatalf("h2 after the early rotation: got %v, want a peer whose current inbound SPI is not %#08x", p, spi)
	}
	if h.r.peer("edge") == nil {
		t.Fatal("the static peer is gone")
	}
	if h.a.rotating {
		t.Fatal("rotating still set")
	}
	b := newRemote(t, "b", 4, "10.42.4.0/24", t0.Add(-time.Hour))
	h.up(b)
	if h.r.peer("b") == nil {
		t.Fatal("membership changes no longer applied after the collision")
	}
}

// Claims that are refused leave the router and the kernel's routes as they
// were, and are shown with their reason.
func TestBadClaimsRefused(t *testing.T) {
	h := newHarness(t)
	h2 := newRemote(t, "h2", 2, "10.42.2.0/24", t0.Add(-time.Hour))
	h.up(h2)
	own := h.a.claim.Block
	ownAddr := own.Addr().Next().Next()
	wantRoutes := h.k.prefixes()
	wantH2 := h.r.peer("h2").Prefixes

	pfx := netip.MustParsePrefix
	tests := []struct {
		name     string
		block    netip.Prefix
		since    int64
		prefixes []netip.Prefix
		want     string
	}{
		{"block outside the CIDR", pfx("10.43.1.0/24"), t0.UnixNano(), nil, "outside cluster.cidr"},
		{"block of the wrong size", pfx("10.42.64.0/20"), t0.UnixNano(), nil, "not a /24 block"},
		{"block since 0", pfx("10.42.77.0/24"), 0, nil, "implausible block_since"},
		{"block since min int64", own, math.MinInt64, nil, "implausible block_since"},
		{"block since in the future", pfx("10.42.78.0/24"), t0.Add(24 * time.Hour).UnixNano(), nil, "in the future"},
		{"default route", netip.Prefix{}, 0, []netip.Prefix{pfx("0.0.0.0/0")}, "takes in a default route"},
		{"default-route half", netip.Prefix{}, 0, []netip.Prefix{pfx("0.0.0.0/1")}, "takes in a default route"},
		{"underlay subnet", netip.Prefix{}, 0, []netip.Prefix{pfx("192.0.2.128/25")}, "overlaps the underlay subnet"},
		{"our block", netip.Prefix{}, 0, []netip.Prefix{own}, "overlaps this host's"},
		{"our container", netip.Prefix{}, 0, []netip.Prefix{netip.PrefixFrom(ownAddr, 32)}, "overlaps this host's"},
		{"another member's container", netip.Prefix{}, 0, []netip.Prefix{pfx("10.42.2.7/32")}, "overlaps h2's block"},
		{"a free part of the CIDR", netip.Prefix{}, 0, []netip.Prefix{pfx("10.42.200.0/24")}, "overlaps the cluster CIDR"},
		{"a member's underlay address", netip.Prefix{}, 0, []netip.Prefix{pfx("192.0.0.0/16")}, "overlaps the underlay subnet"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			evil := newRemote(t, "evil"+string(rune('a'+i)), 50+i, "", t0)
			evil.info.Block, evil.info.BlockSince, evil.info.Prefixes = tc.block, tc.since, tc.prefixes
			h.up(evil)
			if got := h.k.prefixes(); !slices.Equal(got, wantRoutes) {
				t.Errorf("kernel routes: got %v, want %v (unchanged)", got, wantRoutes)
			}
			if h.a.claim.Block != own {
				t.Errorf("own block: got %v, want %v (kept)", h.a.claim.Block, own)
			}
			if p := h.r.peer("h2"); p == nil || !slices.Equal(p.Prefixes, wantH2) {
				t.Errorf("h2: got %v, want it routing %v", p, wantH2)
			}
			if p := h.r.peer(evil.name); p != nil && len(p.Prefixes) > 0 {
				t.Errorf("%s routes %v, want nothing", evil.name, p.Prefixes)
			}
			mv := h.member(evil.name)
			if mv == nil || len(mv.Refused) != 1 || !strings.Contains(mv.Refused[0], tc.want) {
				t.Errorf("refused: got %+v, want one claim refused with %q", mv, tc.want)
			}
			h.m.members = slices.DeleteFunc(h.m.members, func(m gossip.Member) bool { return m.Name == evil.name })
		})
	}
	// A legitimate static prefix outside everything is believed.
	ok := newRemote(t, "edge2", 99, "", t0)
	ok.info.Prefixes = []netip.Prefix{pfx("100.64.0.0/24")}
	h.up(ok)
	if p := h.r.peer("edge2"); p == nil || !slices.Equal(p.Prefixes, ok.info.Prefixes) {
		t.Fatalf("edge2 with 100.64.0.0/24: got %v, want it routed", p)
	}
}

// Two honest claims on one block still resolve: the older one wins, and
// this host moves if it is the younger.
func TestBlockConflictStillResolves(t *testing.T) {
	h := newHarness(t)
	h.step()
	own := h.a.claim.Block
	older := newRemote(t, "h9", 9, own.String(), t0.Add(-time.Hour))
	h.up(older)
	if h.a.claim.Block == own {
		t.Fatalf("an older claim on our block %v: we kept it, want to move", own)
	}
	if got := h.r.peer("h9"); got == nil || got.Prefixes[0] != own {
		t.Fatalf("h9 after the conflict: got %v, want it routing %v", got, own)
	}
}

func TestIdentityPinned(t *testing.T) {
	h := newHarness(t)
	h2 := newRemote(t, "h2", 2, "10.42.2.0/24", t0.Add(-time.Hour))
	h.up(h2)
	if h.r.peer("h2") == nil {
		t.Fatal("h2 not a peer")
	}
	// h2 dies; an impostor with the cluster key returns under its name,
	// with its block.
	imp := newRemote(t, "h2", 2, "10.42.2.0/24", t0.Add(-time.Hour))
	h.m.set(imp.member())
	h.step()
	if h.r.peer("h2") != nil || slices.Contains(h.k.prefixes(), "10.42.2.0/24") {
		t.Fatalf("impostor h2: got peer %v and routes %v, want neither", h.r.peer("h2"), h.k.prefixes())
	}
	// A restarted daemon remembers the pin.
	h.a.Stop()
	h.newAgent()
	h.step()
	if h.r.peer("h2") != nil || slices.Contains(h.k.prefixes(), "10.42.2.0/24") {
		t.Fatalf("impostor h2 after a restart: got peer %v and routes %v, want neither", h.r.peer("h2"), h.k.prefixes())
	}
	mv := h.member("h2")
	if mv == nil || !strings.Contains(mv.Note, "differs from the one pinned") {
		t.Fatalf("h2 in the view: got %+v, want a note about the identity key", mv)
	}
	// The operator says the host was reinstalled.
	if ok, err := h.a.cfg.Pins.Forget("h2"); !ok || err != nil {
		t.Fatalf("Forget: got %v, %v; want true, nil", ok, err)
	}
	h.step()
	if h.r.peer("h2") == nil {
		t.Fatal("after forget: the new h2 is not a peer")
	}
}

func TestForeignRouteNotReplaced(t *testing.T) {
	h := newHarness(t)
	h2 := newRemote(t, "h2", 2, "10.42.2.0/24", t0.Add(-time.Hour))
	blk := netip.MustParsePrefix("10.42.2.0/24")
	h.k.foreign[blk] = true // e.g. an operator's route, or a connected one
	h.up(h2)
	if _, ok := h.k.routes[blk]; ok {
		t.Fatal("drover's route replaced a foreign one")
	}
	v := h.view()
	if rv := v.RouteTo(blk); rv == nil || !strings.Contains(rv.Note, "already routed") {
		t.Fatalf("route view: got %+v, want a note that it is not installed", rv)
	}
	delete(h.k.foreign, blk)
	h.step()
	if _, ok := h.k.routes[blk]; !ok {
		t.Fatal("foreign route gone: drover's route still not installed")
	}
	h.a.Stop()
	if len(h.k.routes) != 0 {
		t.Fatalf("after Stop: routes %v left", h.k.prefixes())
	}
}

// A member that keeps failing (here: unknown cipher and a refused block)
// is logged a few times, not on every tick.
func TestLogsRateLimited(t *testing.T) {
	h := newHarness(t)
	bad := newRemote(t, "bad", 7, "10.43.0.0/24", t0)
	h.up(bad)
	for range 1000 {
		h.step()
	}
	n := strings.Count(h.logs.String(), "block claim refused")
	if n < 1 || n > 3 {
		t.Fatalf("1000 steps with a bad claim: got %d log lines, want 1..3", n)
	}
}

// A restarted agent comes back with its block (same since, so it keeps
// winning the conflicts it won) and a fresh ephemeral key, so every SA it is
// part of is new: nothing restarts at sequence 1 under an old key.
func TestRestart(t *testing.T) {
	h := newHarness(t)
	h2 := newRemote(t, "h2", 2, "10.42.2.0/24", t0.Add(-time.Hour))
	h.up(h2)
	before := h.a.Info()
	oldOut := h.r.peer("h2").Out.SPI()
	h.a.Stop()
	if len(h.k.routes) != 0 {
		t.Fatalf("routes after Stop: %v", h.k.prefixes())
	}
	h.clock.add(time.Minute)
	h.newAgent()
	after := h.a.Info()
	if after.Block != before.Block || after.BlockSince != before.BlockSince {
		t.Fatalf("block after a restart: got %v since %d, want %v since %d", after.Block, after.BlockSince, before.Block, before.BlockSince)
	}
	if after.Ephemeral == before.Ephemeral {
		t.Fatal("the restarted agent publishes the ephemeral key of its previous run")
	}
	h.step()
	p := h.r.peer("h2")
	if p == nil || p.Out.SPI() == oldOut {
		t.Fatalf("h2 after our restart: got %v, want a peer with a new outbound SA", p)
	}
	if got := h.k.prefixes(); !slices.Equal(got, []string{"10.42.2.0/24"}) {
		t.Fatalf("routes after the restart: got %v, want [10.42.2.0/24]", got)
	}
}

// A block move that falls into a rotation is published with the rotated
// key, once, after the key's SAs are installed; not before.
func TestBlockMoveDuringRotation(t *testing.T) {
	h := newHarness(t)
	h2 := newRemote(t, "h2", 2, "10.42.2.0/24", t0.Add(-time.Hour))
	h.up(h2)
	own := h.a.claim.Block
	h.m.set(newRemote(t, "h9", 9, own.String(), t0.Add(-2*time.Hour)).member())
	n := len(h.m.published)
	h.m.onUpdate = func(in gossip.NodeInfo) {
		party := h.ourParty()
		party.Ephemeral, party.Epoch = in.Ephemeral, in.Epoch
		if p := h.r.peer("h2"); p == nil || !hasInSPI(p, h2.outSA(t, party).SPI()) {
			t.Errorf("info (epoch %d, block %v) published before the key's inbound SA for h2 was installed", in.Epoch, in.Block)
		}
	}
	h.a.Rotate()
	pub := h.m.published[n:]
	if len(pub) != 1 {
		t.Fatalf("publications during the rotation: got %d, want 1", len(pub))
	}
	if pub[0].Block == own || !pub[0].Block.IsValid() || pub[0].Epoch != 2 {
		t.Fatalf("published: block %v epoch %d; want a new block and epoch 2", pub[0].Block, pub[0].Epoch)
	}
	h.step()
	if len(h.m.published) != n+1 {
		t.Fatalf("a step after the rotation published again: %d publications, want %d", len(h.m.published), n+1)
	}
}

// A host that may not start a cluster alone claims no block until it has
// met a member; then it claims one the others do not hold. A block it held
// before (state_dir) it keeps while alone.
func TestNoBlockBeforeJoining(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MayClaimAlone = false })
	for range 5 {
		h.step()
	}
	if h.a.claim.Block.IsValid() {
		t.Fatalf("alone, not a bootstrap host: claimed %v, want no block", h.a.claim.Block)
	}
	if v := h.view(); v.BlockNote != NotJoined {
		t.Fatalf("view's block note: got %q, want %q", v.BlockNote, NotJoined)
	}
	for _, in := range h.m.published {
		if in.Block.IsValid() {
			t.Fatalf("published a block while alone: %v", in.Block)
		}
	}
	h2 := newRemote(t, "h2", 2, "10.42.2.0/24", t0.Add(-time.Hour))
	h.up(h2)
	if !h.a.claim.Block.IsValid() || h.a.claim.Block == h2.info.Block {
		t.Fatalf("after meeting h2: claimed %v, want a block other than h2's %v", h.a.claim.Block, h2.info.Block)
	}
	if v := h.view(); v.BlockNote != "" {
		t.Fatalf("view's block note once joined: got %q, want none", v.BlockNote)
	}
	// Restarted alone (h2 gone), it keeps its block.
	own := h.a.claim.Block
	h.a.Stop()
	h.m.members = nil
	h.newAgent(func(c *Config) { c.MayClaimAlone = false })
	h.step()
	if h.a.claim.Block != own {
		t.Fatalf("restarted alone: block %v, want %v (kept from state_dir)", h.a.claim.Block, own)
	}
}

// Health: no step before the first; each step stamps the clock's time;
// joined turns true when another member is first seen alive and stays.
func TestHealth(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MayClaimAlone = false })
	if last, joined := h.a.Health(); !last.IsZero() || joined {
		t.Fatalf("before any step: got (%v, %v), want (zero, false)", last, joined)
	}
	h.step()
	if last, joined := h.a.Health(); !last.Equal(t0) || joined {
		t.Fatalf("after a step alone: got (%v, %v), want (%v, false)", last, joined, t0)
	}
	h.clock.add(time.Second)
	h.up(newRemote(t, "h2", 2, "10.42.2.0/24", t0.Add(-time.Hour)))
	if last, joined := h.a.Health(); !last.Equal(t0.Add(time.Second)) || !joined {
		t.Fatalf("after meeting h2: got (%v, %v), want (%v, true)", last, joined, t0.Add(time.Second))
	}
}
