package agent

import (
	"bytes"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/crypto/pairkey"
	"github.com/drovernet/drover/gossip"
	"github.com/drovernet/drover/gossip/blocks"
	"github.com/drovernet/drover/router"
	"github.com/drovernet/drover/tun"
	"github.com/drovernet/drover/tun/tuntest"
)

// fakeMembership is an in-memory Membership: the test sets members; Update
// records what the agent publishes and calls onUpdate first.
type fakeMembership struct {
	members   []gossip.Member
	published []gossip.NodeInfo
	onUpdate  func(gossip.NodeInfo)
	changes   chan struct{}
}

func (f *fakeMembership) Members() []gossip.Member { return slices.Clone(f.members) }
func (f *fakeMembership) Changes() <-chan struct{} { return f.changes }
func (f *fakeMembership) Update(in gossip.NodeInfo) error {
	if f.onUpdate != nil {
		f.onUpdate(in)
	}
	f.published = append(f.published, in)
	return nil
}

func (f *fakeMembership) set(m gossip.Member) {
	for i := range f.members {
		if f.members[i].Name == m.Name {
			f.members[i] = m
			return
		}
	}
	f.members = append(f.members, m)
}

// recRouter is the real router (its SetPeers checks are the ones that
// matter), never run, recording the last peer set it accepted.
type recRouter struct {
	*router.Router
	peers []*router.Peer
	local []netip.Prefix
}

func (r *recRouter) SetPeers(p []*router.Peer) error {
	if err := r.Router.SetPeers(p); err != nil {
		return err
	}
	r.peers = p
	return nil
}

func (r *recRouter) SetLocal(p []netip.Prefix, a []netip.Addr) error {
	if err := r.Router.SetLocal(p, a); err != nil {
		return err
	}
	r.local = p
	return nil
}

func (r *recRouter) peer(name string) *router.Peer {
	for _, p := range r.peers {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// fakeKernel keeps routes in a map; foreign prefixes are routes drover did
// not install.
type fakeKernel struct {
	routes  map[netip.Prefix]tun.Route
	foreign map[netip.Prefix]bool
	addrs   []netip.Addr
}

func newFakeKernel() *fakeKernel {
	return &fakeKernel{routes: map[netip.Prefix]tun.Route{}, foreign: map[netip.Prefix]bool{}}
}

func (k *fakeKernel) AddRoute(r tun.Route) error {
	if k.foreign[r.Prefix] {
		return fmt.Errorf("route %s: %w", r.Prefix, tun.ErrRouteExists)
	}
	if _, ok := k.routes[r.Prefix]; ok {
		return fmt.Errorf("route %s: %w", r.Prefix, tun.ErrRouteExists)
	}
	k.routes[r.Prefix] = r
	return nil
}

func (k *fakeKernel) DelRoute(r tun.Route) error { delete(k.routes, r.Prefix); return nil }

func (k *fakeKernel) SetAddrs(a []netip.Addr) error { k.addrs = slices.Clone(a); return nil }

func (k *fakeKernel) prefixes() []string {
	var out []string
	for p := range k.routes {
		out = append(out, p.String())
	}
	slices.Sort(out)
	return out
}

type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }

func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }

var (
	clusterKey = bytes.Repeat([]byte{0x42}, 32)
	cidr       = netip.MustParsePrefix("10.42.0.0/16")
	underlayNt = netip.MustParsePrefix("192.0.2.0/24")
	t0         = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
)

const (
	rotateEvery = time.Hour
	switchD     = 2 * time.Second
	grace       = 30 * time.Second
)

// harness is one agent (host "h1") with fakes around it.
type harness struct {
	t     *testing.T
	a     *Agent
	m     *fakeMembership
	r     *recRouter
	k     *fakeKernel
	clock *fakeClock
	logs  *syncBuffer
	dir   string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type harnessOpt func(*Config)

func newHarness(t *testing.T, opts ...harnessOpt) *harness {
	t.Helper()
	h := &harness{t: t, m: &fakeMembership{changes: make(chan struct{})}, k: newFakeKernel(), clock: &fakeClock{t: t0}, logs: &syncBuffer{}, dir: t.TempDir()}
	rt, err := router.New(router.Config{Name: "h1", Encap: router.EncapESP, MTU: 1400, TUN: "tuntest"}, tuntest.NewFrames(), nil)
	if err != nil {
		t.Fatal(err)
	}
	h.r = &recRouter{Router: rt}
	h.newAgent(opts...)
	return h
}

// newAgent (re)creates the agent over the same state directory, as a
// restarted daemon would.
func (h *harness) newAgent(opts ...harnessOpt) {
	h.t.Helper()
	pins, err := OpenPins(filepath.Join(h.dir, "identities.json"))
	if err != nil {
		h.t.Fatal(err)
	}
	id, err := pairkey.NewKeyPair(mrand.NewChaCha8([32]byte{1}))
	if err != nil {
		h.t.Fatal(err)
	}
	cfg := Config{
		Name: "h1", Version: "test", Underlay: netip.MustParseAddrPort("192.0.2.1:4500"),
		UnderlayNets: []netip.Prefix{underlayNt},
		CIDR:         cidr, BlockBits: 24, MayClaimAlone: true, Encap: EncapESP, Cipher: esp.AES128GCM, CipherName: "aes-128-gcm",
		ClusterKey: clusterKey, Identity: id, TunnelMTU: 1400, ReplayWindow: 1024,
		RotationInterval: rotateEvery, SwitchDelay: switchD, Grace: grace,
		Blocks: blocks.Open(filepath.Join(h.dir, "block.json")), Pins: pins,
		Log:   slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Clock: h.clock, Rand: mrand.NewChaCha8([32]byte{byte(len(h.m.published)), 2}),
	}
	for _, o := range opts {
		o(&cfg)
	}
	h.a, err = New(cfg, h.r, h.k)
	if err != nil {
		h.t.Fatal(err)
	}
	h.a.Attach(h.m)
	h.a.Start()
}

func (h *harness) step() { h.t.Helper(); h.a.Step() }

func (h *harness) view() gossip.View { return h.a.Snapshot() }

func (h *harness) member(name string) *gossip.MemberView {
	v := h.view()
	if mv := v.Member(name); mv != nil {
		c := *mv
		return &c
	}
	return nil
}

// ourParty is what h1 publishes now.
func (h *harness) ourParty() pairkey.Party {
	in := h.a.Info()
	return pairkey.Party{Identity: in.Identity, Ephemeral: in.Ephemeral, Epoch: in.Epoch}
}

// remote is another host, simulated: its keys and what it publishes.
type remote struct {
	name  string
	id    pairkey.KeyPair
	eph   pairkey.KeyPair
	epoch uint32
	info  gossip.NodeInfo
	state gossip.State
}

var seedN byte = 10

func newRemote(t *testing.T, name string, idx int, block string, since time.Time) *remote {
	t.Helper()
	seedN++
	id, err := pairkey.NewKeyPair(mrand.NewChaCha8([32]byte{seedN, 1}))
	if err != nil {
		t.Fatal(err)
	}
	r := &remote{name: name, id: id, epoch: 1, state: gossip.Alive}
	r.newEph(t)
	r.info = gossip.NodeInfo{
		Version: "test", Underlay: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(idx)}), 4500),
		Identity: id.Public, Encaps: gossip.EncapESP, Ciphers: gossip.CipherAES128GCM,
	}
	if block != "" {
		r.info.Block = netip.MustParsePrefix(block)
		r.info.BlockSince = since.UnixNano()
	}
	r.info.Ephemeral, r.info.Epoch = r.eph.Public, r.epoch
	return r
}

func (r *remote) newEph(t *testing.T) {
	t.Helper()
	seedN++
	kp, err := pairkey.NewKeyPair(mrand.NewChaCha8([32]byte{seedN, 3}))
	if err != nil {
		t.Fatal(err)
	}
	r.eph = kp
	r.info.Ephemeral = kp.Public
}

func (r *remote) member() gossip.Member {
	return gossip.Member{Name: r.name, Addr: r.info.Underlay, State: r.state, Info: r.info}
}

func (r *remote) local() pairkey.Local {
	return pairkey.Local{Identity: r.id, Ephemeral: r.eph, Epoch: r.epoch}
}

// sealTo seals one inner packet as r would to us, with the combination of
// r's current key and our party p.
func (r *remote) sealTo(t *testing.T, out *esp.OutSA) []byte {
	t.Helper()
	inner := make([]byte, 40)
	inner[0] = 0x45
	buf := make([]byte, esp.Headroom+len(inner)+esp.Tailroom)
	copy(buf[esp.Headroom:], inner)
	pkt, err := out.Seal(buf, esp.Headroom, len(inner))
	if err != nil {
		t.Fatal(err)
	}
	return slices.Clone(pkt)
}

// outSA is r's outbound SA to us (party p).
func (r *remote) outSA(t *testing.T, p pairkey.Party) *esp.OutSA {
	t.Helper()
	k, err := pairkey.Outbound(esp.AES128GCM, clusterKey, r.local(), p)
	if err != nil {
		t.Fatal(err)
	}
	sa, err := esp.NewOutSA(esp.AES128GCM, k.SPI, k.Key, derivedESN)
	if err != nil {
		t.Fatal(err)
	}
	return sa
}

// inSPI is the SPI r expects our packets under (our party p).
func (r *remote) inSPI(t *testing.T, p pairkey.Party) uint32 {
	t.Helper()
	k, err := pairkey.Inbound(esp.AES128GCM, clusterKey, r.local(), p)
	if err != nil {
		t.Fatal(err)
	}
	return k.SPI
}

// openIn opens pkt with whichever of the peer's installed inbound SAs has
// its SPI; it returns an error if none has.
func openIn(p *router.Peer, pkt []byte) error {
	spi := uint32(pkt[0])<<24 | uint32(pkt[1])<<16 | uint32(pkt[2])<<8 | uint32(pkt[3])
	for _, sa := range p.In {
		if sa.SPI() == spi {
			_, _, err := sa.Open(slices.Clone(pkt))
			return err
		}
	}
	return fmt.Errorf("no inbound SA with SPI %#08x installed", spi)
}

func hasInSPI(p *router.Peer, spi uint32) bool {
	for _, sa := range p.In {
		if sa.SPI() == spi {
			return true
		}
	}
	return false
}

// manualPeer is a configured static peer with manual SAs: inbound SPI inSPI,
// routing prefix.
func manualPeer(t *testing.T, name string, prefix netip.Prefix, inSPI uint32) *router.Peer {
	t.Helper()
	in, err := esp.NewInSA(esp.AES128GCM, inSPI, make([]byte, 20), false, 64)
	if err != nil {
		t.Fatal(err)
	}
	out, err := esp.NewOutSA(esp.AES128GCM, 0x2000, make([]byte, 20), false)
	if err != nil {
		t.Fatal(err)
	}
	return &router.Peer{Name: name, Underlay: netip.MustParseAddrPort("198.51.100.7:4500"),
		Prefixes: []netip.Prefix{prefix}, TunnelMTU: 1400, Out: out, In: []*esp.InSA{in}}
}
