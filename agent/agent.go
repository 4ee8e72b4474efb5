package agent

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/crypto/pairkey"
	"github.com/drovernet/drover/firewall"
	"github.com/drovernet/drover/gossip"
	"github.com/drovernet/drover/gossip/blocks"
	"github.com/drovernet/drover/internal/ratelog"
	"github.com/drovernet/drover/router"
	"github.com/drovernet/drover/tun"
)

// Membership is where members come from: gossip today.
type Membership interface {
	// Members lists every member known, this host included.
	Members() []gossip.Member
	// Changes receives a value whenever Members may have changed.
	Changes() <-chan struct{}
	// Update publishes this host's info.
	Update(gossip.NodeInfo) error
}

// Confirmer is a Membership whose Update reaches the others later, or not
// while a server is away (kube: a request to the API server). Published
// reports whether the last Update has landed. After a rotation the agent
// keeps sending with its previous key, and keeps it, until the new one is
// published: peers derive their inbound SAs from the key they know, and a
// switch to one they have never seen would cut every flow.
type Confirmer interface{ Published() bool }

// Router is the data plane the agent programs (*router.Router).
type Router interface {
	SetPeers([]*router.Peer) error
	SetLocal(prefixes []netip.Prefix, addrs []netip.Addr) error
}

// Kernel is the host's routing state for the TUN device.
type Kernel interface {
	// AddRoute adds r through the TUN, never replacing a route that is
	// there: it fails with an error wrapping tun.ErrRouteExists instead.
	AddRoute(r tun.Route) error
	// DelRoute removes a route AddRoute added; gone already is not an error.
	DelRoute(r tun.Route) error
	// SetAddrs makes addrs the TUN's addresses.
	SetAddrs(addrs []netip.Addr) error
}

// DirectFilter admits direct members' container traffic arriving on the
// underlay interface (*firewall.Filter): each source's prefix from its
// MAC address only.
type DirectFilter interface {
	SetDirect([]firewall.Source) error
}

// Fabric is what the fabric's routers announce by BGP (bgp.import): the
// next hop the fabric routes a prefix through, and that router's MAC on
// the underlay (from which the member's traffic then arrives).
type Fabric interface {
	Route(p netip.Prefix) (via netip.Addr, mac [6]byte, ok bool)
}

// Clock tells the time.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// BlockStore persists this host's block claim (*blocks.Store).
type BlockStore interface {
	Load() (blocks.Claim, bool, error)
	Save(blocks.Claim) error
}

// NotJoined is the view's BlockNote while the agent waits to join before
// it claims a block.
const NotJoined = "no block: not joined to any member yet; containers cannot be attached until this host joins (cluster.bootstrap: true lets the first host start a cluster alone)"

// noQuorum is the view's BlockNote (with fmt verbs: reachable holders,
// known holders) while too few block holders are reachable to claim a new
// block: this host may be on the minority side of a partition.
const noQuorum = "no block: %d of the %d other hosts holding blocks are reachable; a new block needs more than half of them (a partition?), so that two sides of a cut never claim the same block"

// noFreeBlock is the view's BlockNote (CIDR, block bits) when every block
// is held by another host.
const noFreeBlock = "no block: every /%[2]d block of %[1]s is held by another host (a larger cluster.cidr or a longer cluster.block_bits makes room)"

// settling is the view's BlockNote (block, until) while a fresh claim waits
// for conflicting claims before its addresses are handed out.
const settling = "claiming %s: not handed out before %s, in case another host claimed it at the same moment"

// Encapsulations the agent knows.
const (
	EncapESP   = "esp"
	EncapVXLAN = "vxlan"
)

// Config is what the agent is given; every field but those marked optional
// is required.
type Config struct {
	Name     string
	Version  string
	Underlay netip.AddrPort
	// UnderlayNets are the subnets connected through the underlay
	// interface: no member may have them routed into the TUN. Optional.
	UnderlayNets []netip.Prefix
	// Prefixes are node.prefixes: static, validated by the caller. Empty:
	// claim a block of CIDR (or use Assigned).
	Prefixes []netip.Prefix
	// Assigned is this host's block when an authority allocates blocks
	// (Kubernetes' spec.podCIDR, package kube): a /BlockBits block of
	// CIDR, used as is — never claimed, moved or persisted, handed out at
	// once. Others' blocks then come from the same authority, through
	// their members' info. Optional; with Prefixes, not allowed.
	Assigned blocks.Claim
	// Addrs are node.address; empty with a block: the block's first address.
	Addrs     []netip.Addr
	MAC       [6]byte
	CIDR      netip.Prefix
	BlockBits int
	// MayClaimAlone lets the agent claim a new block before any other
	// member has been seen alive (the cluster's first host). Otherwise it
	// waits until it has joined: two hosts that have never met cannot see
	// each other's claims, and would hand out the same addresses.
	MayClaimAlone bool
	// ClaimSettle is how long a fresh block claim is published before its
	// addresses are handed out: two hosts that claim one block at the same
	// moment see each other's claim within gossip's propagation time, and
	// the loser moves before any container got an address from it. A
	// restored claim is used at once. Zero: at once (tests).
	ClaimSettle time.Duration
	Encap       string // EncapESP or EncapVXLAN
	// Direct routes to members on UnderlayNets that route directly too
	// without encapsulation: kernel routes via their underlay address,
	// with drover off the data path (cluster.direct). The caller has
	// checked that the operator allows it with ESP (the segment is
	// trusted). Optional.
	Direct bool
	// DirectMAC is the underlay interface's MAC (with Direct): members'
	// forward filters accept our container sources from it.
	DirectMAC [6]byte
	// DirectFilter admits direct members' traffic (with Direct); nil
	// when the host's forward filter is off.
	DirectFilter DirectFilter
	// Fabric, when set, reaches members that are not direct through the
	// fabric's routes to their blocks, without encapsulation (path bgp),
	// when the fabric routes them via a router on UnderlayNets. Like
	// Direct, the caller has checked the operator allows cleartext.
	Fabric Fabric
	Cipher esp.Cipher
	// CipherName is the cipher's configuration name, for notes.
	CipherName string
	ClusterKey []byte
	Identity   pairkey.KeyPair
	TunnelMTU  int
	// ReplayWindow is the anti-replay window of derived inbound SAs, in
	// packets (config.DefaultReplayWindow).
	ReplayWindow int
	// Static are the configured peers: trusted, always present; no member
	// may claim a prefix that overlaps theirs.
	Static []*router.Peer

	RotationInterval time.Duration
	SwitchDelay      time.Duration
	Grace            time.Duration

	Blocks BlockStore
	// Chunks persists the chunks of LAN ranges this host claims (WantChunk).
	// Optional: without it claims last as long as the process.
	Chunks ChunkStore
	Pins   *Pins
	Log    *slog.Logger
	// Clock and Rand are optional: the system's by default.
	Clock Clock
	Rand  io.Reader
}

// Limits. Variables so tests can lower them.
var (
	// maxCombos bounds the SAs kept for one member (in and out): a member
	// that keeps changing its ephemeral key cannot make us hold unbounded
	// key state until our next rotation; past it we derive nothing new for
	// it until our rotation's erasure frees combinations.
	maxCombos = 64
	// earlyRotationEvery spaces early rotations (SPI collisions) so that a
	// persistent fault cannot make us rotate on every tick.
	earlyRotationEvery = 10 * time.Second
	// maxFutureSince is how far in the future (by our clock) a BlockSince
	// may lie: clocks differ, but a claim from the future would lose every
	// conflict and is implausible.
	maxFutureSince = 10 * time.Minute
	// minSince: no drover claim predates this (2024-01-01 UTC). A claim
	// with BlockSince 0 or negative would evict every honest owner.
	minSince = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	// rotateAttempts is how many fresh keys a rotation tries when each
	// collides with an SPI in use.
	rotateAttempts = 4
)

// Agent is the cluster control plane. Create with New, then Attach a
// Membership and Run (or Step and Rotate in tests).
type Agent struct {
	cfg   Config
	log   *slog.Logger // rate-limited: every path here runs per tick or per member
	r     Router
	k     Kernel
	m     Membership
	clock Clock
	rand  io.Reader

	claim blocks.Claim // our block claim (zero: none, or static prefixes)
	eph   pairkey.KeyPair
	epoch uint32
	prev  *pairkey.KeyPair // previous ephemeral: outbound until switchAt, erased after eraseAt
	// prevEp is prev's epoch.
	prevEp uint32
	// switchAt: until then outbound SAs that already exist keep using
	// prev (peers must first learn our new public key).
	switchAt time.Time
	eraseAt  time.Time
	// awaiting: our rotated key is not published yet (Confirmer); until it
	// is, the switch delay and grace period do not start.
	awaiting bool
	// rotating is set while a rotation installs its SAs: a collision
	// inside it is the rotation's to retry, not a reason to rotate again.
	rotating       bool
	nextEarlyAfter time.Time
	// unpublished: our info changed (a block claim) and is not published
	// yet; the next step outside a rotation publishes it.
	unpublished bool
	// joined: another member has been seen alive (in this run), so the
	// block claims of the cluster are known. Atomic, as stepped: the
	// daemon's readiness probe reads both from other goroutines (Health).
	joined atomic.Bool
	// stepped is the clock's time (Unix ns) at the end of the last step;
	// 0 before the first.
	stepped atomic.Int64
	// settleAt: our claim (made in this run) is handed out from then on;
	// zero for a restored claim.
	settleAt time.Time
	// timed: the last step left work that only time completes (a switch
	// delay or grace period running, a publication or route to retry), so
	// Run steps again at the next tick rather than waiting for idleStep.
	timed bool

	peers  map[string]*peerKeys
	routes map[netip.Prefix]tun.Route // installed through the TUN or, direct, via the underlay
	// admitted are the direct sources the filter was last given (nil:
	// never set).
	admitted []firewall.Source
	// fabricPending: a member could go through the fabric once its
	// router's MAC is known; the next tick looks again.
	fabricPending bool
	local         []netip.Prefix
	addrs         []netip.Addr

	viewMu sync.Mutex // guards view
	view   gossip.View

	// chunkMu guards pools: WantChunk comes from the control socket's
	// goroutines, the steps from Run's.
	chunkMu sync.Mutex
	pools   map[uint64]*poolState
	// kick wakes Run for a step (a new pool to claim in).
	kick chan struct{}
}

// New checks cfg, restores the persisted block claim and makes the first
// ephemeral key. It touches neither the router nor the kernel.
func New(cfg Config, r Router, k Kernel) (*Agent, error) {
	if cfg.Name == "" {
		return nil, errors.New("agent: empty node name")
	}
	if cfg.Encap != EncapESP && cfg.Encap != EncapVXLAN {
		return nil, fmt.Errorf("agent: unknown encapsulation %q", cfg.Encap)
	}
	if cfg.Encap == EncapESP && cfg.ReplayWindow <= 0 {
		return nil, fmt.Errorf("agent: replay window %d", cfg.ReplayWindow)
	}
	if (cfg.Direct || cfg.Fabric != nil) && len(cfg.UnderlayNets) == 0 {
		return nil, errors.New("agent: direct routing needs the underlay's subnets")
	}
	if cfg.Blocks == nil || cfg.Pins == nil {
		return nil, errors.New("agent: block store and identity pins are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	a := &Agent{
		cfg: cfg, r: r, k: k, clock: cfg.Clock, rand: cfg.Rand,
		log:    ratelog.New(cfg.Log.With("component", "cluster"), 0, 0),
		peers:  map[string]*peerKeys{},
		routes: map[netip.Prefix]tun.Route{},
		pools:  map[uint64]*poolState{},
		kick:   make(chan struct{}, 1),
	}
	if a.clock == nil {
		a.clock = realClock{}
	}
	if a.rand == nil {
		a.rand = rand.Reader
	}
	var err error
	if a.eph, err = pairkey.NewKeyPair(a.rand); err != nil {
		return nil, err
	}
	a.epoch = 1
	if err := a.restoreChunks(); err != nil {
		return nil, err
	}
	if b := cfg.Assigned.Block; b.IsValid() {
		if len(cfg.Prefixes) > 0 {
			return nil, errors.New("agent: an assigned block and static prefixes")
		}
		if !cfg.CIDR.Contains(b.Addr()) || b.Bits() != cfg.BlockBits || b != b.Masked() {
			return nil, fmt.Errorf("agent: assigned block %s is not a /%d block of %s", b, cfg.BlockBits, cfg.CIDR)
		}
		a.claim = cfg.Assigned
		a.claim.Node = cfg.Name
	} else if len(cfg.Prefixes) == 0 {
		c, ok, err := cfg.Blocks.Load()
		if err != nil {
			return nil, err
		}
		if ok && cfg.CIDR.Contains(c.Block.Addr()) && c.Block.Bits() == cfg.BlockBits {
			a.claim = c
			a.claim.Node = cfg.Name
			a.log.Info("block restored", "prefix", c.Block)
		}
	}
	return a, nil
}

// Attach gives the agent its membership; Run and Step need one.
func (a *Agent) Attach(m Membership) { a.m = m }

// Info is what this host publishes.
func (a *Agent) Info() gossip.NodeInfo {
	in := gossip.NodeInfo{
		Version:   a.cfg.Version,
		Underlay:  a.cfg.Underlay,
		Prefixes:  a.cfg.Prefixes,
		Identity:  a.cfg.Identity.Public,
		Ephemeral: a.eph.Public,
		Epoch:     a.epoch,
		MAC:       a.cfg.MAC,
	}
	if a.claim.Block.IsValid() {
		in.Block, in.BlockSince = a.claim.Block, a.claim.Since
	}
	if a.cfg.Encap == EncapESP {
		in.Encaps = gossip.EncapESP
	} else {
		in.Encaps = gossip.EncapVXLAN
	}
	in.Ciphers = gossip.CipherBit(a.cfg.Cipher)
	in.Chunks = a.chunkClaims()
	in.Direct, in.DirectMAC = a.cfg.Direct, a.cfg.DirectMAC
	return in
}

// Wake makes Run step soon (the fabric's routes changed, say).
func (a *Agent) Wake() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Start applies the local prefixes and addresses (a restored block's, or
// the static ones): call once before Run.
func (a *Agent) Start() { a.setLocal(a.clock.Now()) }

// Run is the control loop: it reacts to membership changes, rotates the
// ephemeral key and retires superseded SAs, until ctx is done. Steps are
// paced (pacer): a step reads every member and rebuilds the peer set, about
// a millisecond at 100 members, and in a start-up storm changes arrive
// dozens of times a second on every host at once.
func (a *Agent) Run(ctx context.Context) {
	rotate := time.NewTicker(a.cfg.RotationInterval)
	defer rotate.Stop()
	// Housekeeping: switch delays and grace periods end between events.
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	gap := time.NewTimer(time.Hour)
	gap.Stop()
	defer gap.Stop()
	var p pacer
	step := func() {
		a.Step()
		p.stepped(time.Now())
	}
	step()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.m.Changes():
			if wait := p.change(time.Now()); wait > 0 {
				gap.Reset(wait) // several changes in the gap make one step
				continue
			}
		case <-gap.C:
		case <-a.kick:
		case <-rotate.C:
			a.Rotate()
			p.stepped(time.Now())
			continue
		case <-tick.C:
			if !p.tick(time.Now(), a.timed) {
				continue
			}
		}
		gap.Stop()
		step()
	}
}

// Step pacing (Run).
const (
	// minStepGap separates a step caused by a membership change from the
	// step before it; changes in between are taken together.
	minStepGap = 100 * time.Millisecond
	// tickEvery is how often Run looks for time-driven work: a switch
	// delay or grace period that ends, a retry (Agent.timed).
	tickEvery = 200 * time.Millisecond
	// idleStep is how often Run steps when nothing changed and no timed
	// work is known: a safety net for what only the clock changes
	// elsewhere (a claim dated in the future becoming believable).
	idleStep = 2 * time.Second
)

// pacer decides when Run steps. It reads no clock: callers pass the time.
type pacer struct {
	last    time.Time // the last step
	changed bool      // a change arrived that no step has seen yet
}

// change records a membership change at now and returns how long to wait
// before the step that takes it in (0: step now).
func (p *pacer) change(now time.Time) time.Duration {
	p.changed = true
	return max(0, minStepGap-now.Sub(p.last))
}

// tick reports whether a housekeeping tick at now steps: timed work is
// pending, a change waits past minStepGap (Run's gap timer should have
// taken it), or idleStep has passed since the last step.
func (p *pacer) tick(now time.Time, timed bool) bool {
	since := now.Sub(p.last)
	return timed || (p.changed && since >= minStepGap) || since >= idleStep
}

// stepped records a step at now.
func (p *pacer) stepped(now time.Time) {
	p.last, p.changed = now, false
}

// Stop removes the routes the agent installed. Call after Run returned
// (the caller leaves the membership first, so peers withdraw our routes).
func (a *Agent) Stop() {
	for _, rt := range a.routes {
		if err := a.k.DelRoute(rt); err != nil {
			a.log.Warn("remove route", "prefix", rt.Prefix, "err", err)
		}
	}
	a.routes = map[netip.Prefix]tun.Route{}
}

// Snapshot returns the view for the control socket.
func (a *Agent) Snapshot() gossip.View {
	a.viewMu.Lock()
	defer a.viewMu.Unlock()
	return a.view
}

// Health tells the daemon's probes how the control loop fares: when the
// last step ended (zero before the first; Run steps at least every 200 ms,
// so an old one means the loop is stuck) and whether another member has
// been seen alive in this run. Safe from any goroutine.
func (a *Agent) Health() (lastStep time.Time, joined bool) {
	if ns := a.stepped.Load(); ns != 0 {
		lastStep = time.Unix(0, ns)
	}
	return lastStep, a.joined.Load()
}

// settled reports whether our block claim may be handed out at now.
func (a *Agent) settled(now time.Time) bool { return !now.Before(a.settleAt) }

// setLocal applies our prefixes (static or block, once settled) and TUN
// addresses. The CNI plugin hands out addresses from the router's
// prefixes only, so a block that is not local yet has none taken.
func (a *Agent) setLocal(now time.Time) {
	prefixes := a.cfg.Prefixes
	addrs := a.cfg.Addrs
	if len(prefixes) == 0 && a.claim.Block.IsValid() && a.settled(now) {
		prefixes = []netip.Prefix{a.claim.Block}
		if len(a.cfg.Addrs) == 0 {
			addrs = []netip.Addr{a.claim.Block.Addr().Next()}
		}
	}
	if slices.Equal(prefixes, a.local) && slices.Equal(addrs, a.addrs) {
		return
	}
	if err := a.r.SetLocal(prefixes, addrs); err != nil {
		a.log.Error("set local prefixes", "err", err)
		return
	}
	if err := a.k.SetAddrs(addrs); err != nil {
		a.log.Error("set TUN addresses", "err", err)
	}
	a.local, a.addrs = prefixes, addrs
	a.log.Info("local prefixes", "prefixes", fmt.Sprint(prefixes), "addresses", fmt.Sprint(addrs))
}
