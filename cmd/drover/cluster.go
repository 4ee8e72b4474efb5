package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/crypto/pairkey"
	"github.com/drovernet/drover/gossip"
	"github.com/drovernet/drover/gossip/blocks"
	"github.com/drovernet/drover/router"
	"github.com/drovernet/drover/tun"
)

// agent is the daemon's control plane in cluster mode. It turns what gossip
// says (members, their blocks and public keys) into the router's peers, the
// kernel's routes through the TUN, and this host's own block and address;
// it rotates the ephemeral key and re-derives every pair's SAs (docs/keys.md).
//
// All state is owned by the loop goroutine (run); the control socket reads
// the snapshot in view, guarded by viewMu.
type agent struct {
	cfg       *config.Config
	log       *slog.Logger
	r         *router.Router
	tunName   string
	tunnelMTU int
	static    []*router.Peer // from the configuration's peers: always present, win over gossip
	cipher    esp.Cipher
	key       []byte // cluster key

	cl     *gossip.Cluster
	store  *blocks.Store
	claim  blocks.Claim // our block claim (zero: none, or static prefixes)
	id     pairkey.KeyPair
	eph    pairkey.KeyPair // current ephemeral: published, used for inbound SAs
	epoch  uint32
	prev   *pairkey.KeyPair // previous ephemeral: outbound until switchAt, erased after eraseAt
	prevEp uint32
	// switchAt: until then outbound SAs that already exist keep using prev
	// (peers must first learn our new public key).
	switchAt time.Time
	eraseAt  time.Time
	rekeyed  bool // a rotation is being installed: no early rotation from inside it

	peers  map[string]*peerKeys
	routes map[netip.Prefix]tun.Route // installed through the TUN
	local  []netip.Prefix
	addrs  []netip.Addr

	viewMu sync.Mutex
	view   gossip.View
}

// peerKeys is one member's SA state across rotations.
type peerKeys struct {
	stats  *router.PeerStats
	outFor saFor
	out    *esp.OutSA
	// The member's current public ephemeral, and the one before it while
	// its grace lasts: the member may still seal with either.
	theirs     pairkey.Party
	theirsPrev *pairkey.Party
	prevUntil  time.Time
	// in holds an inbound SA for every combination of their held keys ×
	// ours (current, and previous until erased): whichever pair a sender
	// picks during overlapping rotations, the receiver has it.
	in map[saFor]*esp.InSA
}

// saFor names the ephemeral keys an SA was derived from.
type saFor struct{ ours, theirs [32]byte }

// newAgent loads the cluster key, the identity key and the persisted block,
// and joins the cluster.
func newAgent(cfg *config.Config, log *slog.Logger, r *router.Router, tunName string, tunnelMTU int, static []*router.Peer) (*agent, error) {
	cc := cfg.Cluster
	key, err := gossip.LoadKey(cc.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("cluster.key_file: %w", err)
	}
	a := &agent{
		cfg: cfg, log: log.With("component", "cluster"), r: r, tunName: tunName, tunnelMTU: tunnelMTU,
		static: static, cipher: cfg.CipherID, key: key,
		store:  blocks.Open(filepath.Join(cfg.StateDir, "block.json")),
		peers:  map[string]*peerKeys{},
		routes: map[netip.Prefix]tun.Route{},
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state_dir %s: %w", cfg.StateDir, err)
	}
	if a.id, err = loadIdentity(filepath.Join(cfg.StateDir, "identity.key")); err != nil {
		return nil, err
	}
	if a.eph, err = pairkey.NewKeyPair(rand.Reader); err != nil {
		return nil, err
	}
	a.epoch = 1
	if len(cfg.Node.PrefixList) == 0 {
		c, ok, err := a.store.Load()
		if err != nil {
			return nil, err
		}
		if ok && cc.CIDRPrefix.Contains(c.Block.Addr()) && c.Block.Bits() == cc.BlockBits {
			a.claim = c
			a.claim.Node = cfg.Node.Name
			a.log.Info("block restored", "prefix", c.Block)
		}
	}
	a.setLocal()

	gc := gossip.Config{
		Name:     cfg.Node.Name,
		BindAddr: cfg.Node.UnderlayAddr,
		BindPort: int(cc.Port),
		Key:      key,
		Log:      log.With("component", "gossip"),
	}
	if cc.Timing == "fast" {
		gc = gossip.FastTiming(gc)
	}
	a.cl, err = gossip.Start(gc, a.info())
	if err != nil {
		return nil, err
	}
	if len(cc.Join) > 0 {
		n, err := a.cl.Join(cc.Join)
		if err != nil && n == 0 {
			// Not fatal: the seeds may come up later; gossip keeps trying
			// through whoever joins us.
			a.log.Warn("join failed; waiting to be joined", "seeds", strings.Join(cc.Join, ","), "err", err)
		} else {
			a.log.Info("joined", "contacted", n)
		}
	}
	return a, nil
}

// loadIdentity reads the X25519 identity private key, creating it (0600) on
// first start.
func loadIdentity(path string) (pairkey.KeyPair, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		kp, err := pairkey.NewKeyPair(rand.Reader)
		if err != nil {
			return kp, err
		}
		if err := writeDurable(path, hex.EncodeToString(kp.Private[:])+"\n"); err != nil {
			return kp, fmt.Errorf("identity key %s: %w", path, err)
		}
		return kp, nil
	}
	if err != nil {
		return pairkey.KeyPair{}, fmt.Errorf("identity key %s: %w", path, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return pairkey.KeyPair{}, fmt.Errorf("identity key %s: mode %o lets others read it; chmod 600", path, fi.Mode().Perm())
	}
	raw, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) != 32 {
		return pairkey.KeyPair{}, fmt.Errorf("identity key %s: not 32 hex-encoded bytes", path)
	}
	var priv [32]byte
	copy(priv[:], raw)
	return pairkey.KeyPairFromPrivate(priv)
}

// info is what we publish.
func (a *agent) info() gossip.NodeInfo {
	n := &a.cfg.Node
	in := gossip.NodeInfo{
		Version:   version,
		Underlay:  netip.AddrPortFrom(n.UnderlayAddr, n.Port),
		Prefixes:  n.PrefixList,
		Identity:  a.id.Public,
		Ephemeral: a.eph.Public,
		Epoch:     a.epoch,
		MAC:       n.MACAddr,
	}
	if a.claim.Block.IsValid() {
		in.Block, in.BlockSince = a.claim.Block, a.claim.Since
	}
	if a.cfg.Encapsulation == config.EncapESP {
		in.Encaps = gossip.EncapESP
	} else {
		in.Encaps = gossip.EncapVXLAN
	}
	in.Ciphers = gossip.CipherBit(a.cipher)
	return in
}

// setLocal applies our prefixes (static or block) and TUN addresses.
func (a *agent) setLocal() {
	n := &a.cfg.Node
	prefixes := n.PrefixList
	addrs := n.AddressList
	if len(prefixes) == 0 && a.claim.Block.IsValid() {
		prefixes = []netip.Prefix{a.claim.Block}
		if len(n.Address) == 0 {
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
	if err := tun.SetAddrs(a.tunName, addrs); err != nil {
		a.log.Error("set TUN addresses", "err", err)
	}
	a.local, a.addrs = prefixes, addrs
	a.log.Info("local prefixes", "prefixes", fmt.Sprint(prefixes), "addresses", fmt.Sprint(addrs))
}

// run is the control loop: it reacts to membership changes, rotates the
// ephemeral key and retires superseded SAs, until ctx is done; then it
// announces our leave.
func (a *agent) run(ctx context.Context) {
	rotate := time.NewTicker(a.cfg.Cluster.RotationInterval)
	defer rotate.Stop()
	// Housekeeping: switch delays and grace periods end between events.
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	a.update(time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.cl.Changes():
		case <-rotate.C:
			a.rotateKey(time.Now())
		case <-tick.C:
		}
		a.update(time.Now())
	}
}

// stop leaves the cluster (announced, so peers withdraw our routes at once)
// and removes our routes.
func (a *agent) stop() {
	if err := a.cl.Leave(2 * time.Second); err != nil {
		a.log.Warn("leave", "err", err)
	}
	_ = a.cl.Shutdown()
	for _, rt := range a.routes {
		if err := tun.DelRoute(a.tunName, rt); err != nil {
			a.log.Warn("remove route", "prefix", rt.Prefix, "err", err)
		}
	}
	a.routes = nil
}

// rotateKey starts using a fresh ephemeral key: published at once, inbound
// SAs for it installed at once (update), outbound switched after the switch
// delay. The previous private key is erased after the grace period.
func (a *agent) rotateKey(now time.Time) {
	kp, err := pairkey.NewKeyPair(rand.Reader)
	if err != nil {
		a.log.Error("rotate ephemeral key", "err", err)
		return
	}
	if a.prev != nil {
		a.prev.Erase() // a rotation inside the grace period: drop the oldest now
	}
	old := a.eph
	a.prev, a.prevEp = &old, a.epoch
	// Key state of absent members: every combination it holds includes an
	// ephemeral of ours that is now superseded, and erased after the
	// grace; none can be derived again, so none can be reused.
	live := map[string]bool{}
	for _, m := range a.cl.Members() {
		if m.State == gossip.Alive || m.State == gossip.Suspect {
			live[m.Name] = true
		}
	}
	for name := range a.peers {
		if !live[name] {
			delete(a.peers, name)
		}
	}
	a.eph, a.epoch = kp, a.epoch+1
	a.switchAt = now.Add(a.cfg.Cluster.SwitchDelay)
	a.eraseAt = now.Add(a.cfg.Cluster.Grace)
	a.log.Info("ephemeral key rotated", "epoch", a.epoch)
	// Install the inbound SAs for the new key before anyone can learn it:
	// a peer switches its outbound as soon as it sees our new public key.
	a.rekeyed = true
	a.update(now)
	if err := a.cl.Update(a.info()); err != nil {
		a.log.Error("publish rotated key", "err", err)
	}
}

// update recomputes blocks, peers and routes from the current membership.
func (a *agent) update(now time.Time) {
	if a.prev != nil && now.After(a.eraseAt) {
		a.prev.Erase() // forward secrecy: the old key cannot be recomputed
		a.prev = nil
	}
	self := a.cfg.Node.Name
	members := a.cl.Members()
	var claims []blocks.Claim
	for _, p := range a.cfg.Node.PrefixList {
		claims = append(claims, blocks.Claim{Node: self, Block: p, Static: true, Live: true})
	}
	var live []gossip.Member
	for _, m := range members {
		if m.Name == self || m.InfoErr != nil || m.State == gossip.Left {
			continue
		}
		isLive := m.State == gossip.Alive || m.State == gossip.Suspect
		if m.Info.Block.IsValid() {
			claims = append(claims, blocks.Claim{Node: m.Name, Block: m.Info.Block, Since: m.Info.BlockSince, Live: isLive})
		}
		for _, p := range m.Info.Prefixes {
			claims = append(claims, blocks.Claim{Node: m.Name, Block: p, Static: true, Live: isLive})
		}
		if isLive {
			live = append(live, m)
		}
	}
	for _, p := range a.static {
		for _, pfx := range p.Prefixes {
			claims = append(claims, blocks.Claim{Node: "static:" + p.Name, Block: pfx, Static: true, Live: true})
		}
	}

	if len(a.cfg.Node.PrefixList) == 0 {
		cc := a.cfg.Cluster
		cur := a.claim
		cur.Node = self
		next, changed, err := blocks.Decide(self, cur, claims, cc.CIDRPrefix, cc.BlockBits, now)
		if err != nil {
			// ErrFull: no block is free; a lost block is still given up
			// (changed, with an empty claim) so two hosts never route it.
			a.log.Error("claim a block", "err", err)
		}
		if changed {
			switch {
			case a.claim.Block.IsValid() && next.Block.IsValid():
				a.log.Warn("block lost to an earlier claim; moving", "prefix", a.claim.Block, "new", next.Block)
			case a.claim.Block.IsValid():
				a.log.Error("block lost and no free block left", "prefix", a.claim.Block)
			default:
				a.log.Info("block claimed", "prefix", next.Block)
			}
			a.claim = next
			if next.Block.IsValid() {
				if err := a.store.Save(next); err != nil {
					a.log.Error("persist block claim", "err", err)
				}
			}
			if err := a.cl.Update(a.info()); err != nil {
				a.log.Error("publish block claim", "err", err)
			}
			a.setLocal()
		}
		if a.claim.Block.IsValid() {
			claims = append(claims, blocks.Claim{Node: self, Block: a.claim.Block, Since: a.claim.Since, Live: true})
		}
	}
	owners := blocks.Owners(claims)

	peers := slices.Clone(a.static)
	view := gossip.View{Epoch: a.epoch}
	if a.claim.Block.IsValid() {
		view.Block = a.claim.Block.String()
	}
	seen := map[string]bool{}
	for _, m := range members {
		mv := gossip.MemberView{Name: m.Name, State: m.State.String(), Underlay: m.Info.Underlay.String(), Epoch: m.Info.Epoch, Version: m.Info.Version}
		if m.Info.Block.IsValid() {
			mv.Block = m.Info.Block.String()
		}
		if m.InfoErr != nil {
			mv.Note = "unreadable node info: " + m.InfoErr.Error()
		}
		view.Members = append(view.Members, mv)
	}
	for _, m := range live {
		var routed []netip.Prefix
		for pfx, owner := range owners {
			if owner == m.Name {
				routed = append(routed, pfx)
			}
		}
		slices.SortFunc(routed, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
		for i := range view.Members {
			if view.Members[i].Name == m.Name {
				for _, p := range routed {
					view.Members[i].Routed = append(view.Members[i].Routed, p.String())
				}
				if len(routed) > 0 {
					if note := a.compatible(m.Info); note != "" {
						view.Members[i].Note = note
					}
				}
			}
		}
		if len(routed) == 0 || a.compatible(m.Info) != "" {
			continue
		}
		p, err := a.peer(m, routed, now)
		if err != nil {
			a.log.Error("peer keys", "peer", m.Name, "err", err)
			continue
		}
		seen[m.Name] = true
		peers = append(peers, p)
	}
	// A member that is gone keeps its key state: if it returns before
	// either side rotates, the same key pair would be derived again, and
	// fresh SAs would restart at sequence number 1 under the same key —
	// an AES-GCM nonce reused. Its SAs continue instead. rotateKey drops
	// the entries of absent members, whose combinations cannot recur.
	_ = seen
	if err := a.r.SetPeers(peers); err != nil {
		// An SPI collision between two senders (≈ N²/2^33 per rotation):
		// a fresh ephemeral key of ours gives every inbound SA a new SPI.
		if a.rekeyed {
			a.log.Error("set peers", "err", err)
			return
		}
		a.log.Error("set peers; rotating our key early", "err", err)
		a.rotateKey(now)
		return
	}
	a.rekeyed = false
	a.syncRoutes(peers, &view)
	a.viewMu.Lock()
	a.view = view
	a.viewMu.Unlock()
}

// compatible says why we cannot talk to a member ("" if we can).
func (a *agent) compatible(in gossip.NodeInfo) string {
	if a.cfg.Encapsulation == config.EncapESP {
		if in.Encaps&gossip.EncapESP == 0 {
			return "does not speak esp"
		}
		if in.Ciphers&gossip.CipherBit(a.cipher) == 0 {
			return "does not support " + a.cfg.Cipher
		}
		return ""
	}
	if in.Encaps&gossip.EncapVXLAN == 0 {
		return "does not speak vxlan"
	}
	return ""
}

// peer builds the router peer for a member, deriving SAs when keys changed.
func (a *agent) peer(m gossip.Member, routed []netip.Prefix, now time.Time) (*router.Peer, error) {
	pk := a.peers[m.Name]
	if pk == nil {
		pk = &peerKeys{stats: router.NewPeerStats()}
		a.peers[m.Name] = pk
	}
	p := &router.Peer{
		Name:      m.Name,
		Underlay:  m.Info.Underlay,
		MAC:       m.Info.MAC,
		Prefixes:  routed,
		TunnelMTU: a.tunnelMTU,
		Stats:     pk.stats,
	}
	if a.cfg.Encapsulation != config.EncapESP {
		return p, nil
	}
	them := pairkey.Party{Identity: m.Info.Identity, Ephemeral: m.Info.Ephemeral, Epoch: m.Info.Epoch}

	// Track the member's keys: a new ephemeral demotes the current one to
	// "previous" for the grace period.
	if them.Ephemeral != pk.theirs.Ephemeral {
		if pk.theirs.Ephemeral != ([32]byte{}) {
			prev := pk.theirs
			pk.theirsPrev, pk.prevUntil = &prev, now.Add(a.cfg.Cluster.Grace)
		}
		pk.theirs = them
	}
	if pk.theirsPrev != nil && now.After(pk.prevUntil) {
		pk.theirsPrev = nil
	}
	theirs := []pairkey.Party{pk.theirs}
	if pk.theirsPrev != nil {
		theirs = append(theirs, *pk.theirsPrev)
	}
	ours := []pairkey.Local{{Identity: a.id, Ephemeral: a.eph, Epoch: a.epoch}}
	if a.prev != nil {
		ours = append(ours, pairkey.Local{Identity: a.id, Ephemeral: *a.prev, Epoch: a.prevEp})
	}
	if pk.in == nil {
		pk.in = map[saFor]*esp.InSA{}
	}
	want := map[saFor]bool{}
	for i, o := range ours {
		for j, t := range theirs {
			f := saFor{ours: o.Ephemeral.Public, theirs: t.Ephemeral}
			want[f] = true
			sa, ok := pk.in[f]
			if !ok {
				k, err := pairkey.Inbound(a.cipher, a.key, o, t)
				if err != nil {
					return nil, err
				}
				// ESN: a derived SA may carry more than 2^32 packets in one
				// rotation interval (1.2 Mpps for an hour).
				if sa, err = esp.NewInSA(a.cipher, k.SPI, k.Key, true, config.DefaultReplayWindow); err != nil {
					return nil, err
				}
				pk.in[f] = sa
				a.log.Debug("inbound SA", "peer", m.Name, "spi", fmt.Sprintf("%#08x", k.SPI), "ours", hex.EncodeToString(o.Ephemeral.Public[:3]), "theirs", hex.EncodeToString(t.Ephemeral[:3]))
			}
			if i == 0 && j == 0 {
				p.In = append([]*esp.InSA{sa}, p.In...) // the current pair first
			} else {
				p.In = append(p.In, sa)
			}
		}
	}
	for f, sa := range pk.in {
		if !want[f] {
			delete(pk.in, f) // both keys of the pair are past their grace
			a.log.Debug("inbound SA retired", "peer", m.Name, "spi", fmt.Sprintf("%#08x", sa.SPI()))
		}
	}

	// Outbound: after our own rotation, an SA that exists keeps the
	// previous key until the switch delay ends; a new peer, or a peer that
	// rotated, gets the current combination at once (it has the inbound).
	local := ours[0]
	if len(ours) > 1 && now.Before(a.switchAt) && pk.out != nil && pk.outFor.ours == a.prev.Public {
		local = ours[1]
	}
	wantOut := saFor{ours: local.Ephemeral.Public, theirs: them.Ephemeral}
	if pk.out == nil || pk.outFor != wantOut {
		k, err := pairkey.Outbound(a.cipher, a.key, local, them)
		if err != nil {
			return nil, err
		}
		out, err := esp.NewOutSA(a.cipher, k.SPI, k.Key, true)
		if err != nil {
			return nil, err
		}
		pk.out, pk.outFor = out, wantOut
		a.log.Debug("outbound SA", "peer", m.Name, "spi", fmt.Sprintf("%#08x", k.SPI), "ours", hex.EncodeToString(local.Ephemeral.Public[:3]), "theirs", hex.EncodeToString(them.Ephemeral[:3]))
	}
	p.Out = pk.out
	return p, nil
}

// syncRoutes makes the kernel's routes through the TUN match the peers'
// prefixes: new ones added, withdrawn ones removed.
func (a *agent) syncRoutes(peers []*router.Peer, view *gossip.View) {
	want := map[netip.Prefix]tun.Route{}
	owner := map[netip.Prefix]string{}
	for _, p := range peers {
		for _, pfx := range p.Prefixes {
			want[pfx] = tun.Route{Prefix: pfx, Src: sourceFor(a.addrs, pfx.Addr().Is4())}
			owner[pfx] = p.Name
		}
	}
	for pfx, rt := range a.routes {
		if w, ok := want[pfx]; ok && w == rt {
			continue
		}
		if err := tun.DelRoute(a.tunName, rt); err != nil {
			a.log.Warn("remove route", "prefix", pfx, "err", err)
		}
		delete(a.routes, pfx)
		if _, ok := want[pfx]; !ok {
			a.log.Info("route withdrawn", "prefix", pfx)
		}
	}
	for pfx, rt := range want {
		if _, ok := a.routes[pfx]; ok {
			continue
		}
		if err := tun.AddRoute(a.tunName, rt); err != nil {
			a.log.Error("add route", "prefix", pfx, "err", err)
			continue
		}
		a.routes[pfx] = rt
		a.log.Info("route added", "prefix", pfx, "peer", owner[pfx])
	}
	for pfx, rt := range a.routes {
		rv := gossip.RouteView{Prefix: pfx.String(), Peer: owner[pfx]}
		if rt.Src.IsValid() {
			rv.Src = rt.Src.String()
		}
		view.Routes = append(view.Routes, rv)
	}
	slices.SortFunc(view.Routes, func(x, y gossip.RouteView) int { return strings.Compare(x.Prefix, y.Prefix) })
}

// snapshot returns the view for the control socket.
func (a *agent) snapshot() gossip.View {
	a.viewMu.Lock()
	defer a.viewMu.Unlock()
	return a.view
}
