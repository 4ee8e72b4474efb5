package agent

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/drovernet/drover/crypto/pairkey"
	"github.com/drovernet/drover/firewall"
	"github.com/drovernet/drover/gossip"
	"github.com/drovernet/drover/gossip/blocks"
	"github.com/drovernet/drover/router"
	"github.com/drovernet/drover/tun"
)

// Step recomputes blocks, peers and routes from the current membership and
// ends grace periods that are due. It is what Run does on every event and
// tick.
func (a *Agent) Step() { a.step(a.clock.Now()) }

// Rotate starts using a fresh ephemeral key (Run does it every rotation
// interval): inbound SAs for it are installed first, then it is published;
// outbound SAs switch after the switch delay, and the previous private key
// is erased after the grace period.
func (a *Agent) Rotate() { a.rotate(a.clock.Now()) }

// rotation is the key state a rotation replaces, to put back if no fresh
// key can be installed.
type rotation struct {
	eph               pairkey.KeyPair
	epoch             uint32
	prev              *pairkey.KeyPair
	prevEp            uint32
	switchAt, eraseAt time.Time
}

func (a *Agent) rotate(now time.Time) {
	if a.awaiting {
		// Erasing prev now would drop the only key peers know.
		a.log.Warn("key rotation deferred: the previous rotated key is not published yet", "epoch", a.epoch)
		return
	}
	// A rotation inside the grace period drops the oldest key now.
	a.erasePrev()
	a.rotating = true
	defer func() { a.rotating = false }()
	saved := rotation{a.eph, a.epoch, a.prev, a.prevEp, a.switchAt, a.eraseAt}
	for attempt := 1; attempt <= rotateAttempts; attempt++ {
		kp, err := pairkey.NewKeyPair(a.rand)
		if err != nil {
			a.log.Error("rotate ephemeral key", "err", err)
			return
		}
		old := saved.eph
		a.prev, a.prevEp = &old, saved.epoch
		a.eph, a.epoch = kp, saved.epoch+1
		a.switchAt = now.Add(a.cfg.SwitchDelay)
		a.eraseAt = now.Add(a.cfg.Grace)
		// Install the inbound SAs for the new key before anyone can learn
		// it: a peer switches its outbound as soon as it sees our new
		// public key.
		collided, err := a.step(now)
		if err == nil && !collided {
			if err := a.m.Update(a.Info()); err != nil {
				a.log.Error("publish rotated key", "err", err)
			} else {
				a.unpublished = false
			}
			if c, ok := a.m.(Confirmer); ok && !c.Published() {
				a.awaiting = true
			}
			a.log.Info("ephemeral key rotated", "epoch", a.epoch)
			return
		}
		// Undo: the new key is erased unpublished, and nothing it derived
		// was ever used, so it is as if it never existed.
		a.log.Warn("rotated key not installed; trying another", "attempt", attempt, "collision", collided, "err", err)
		pub := kp.Public
		kp.Erase()
		a.eph, a.epoch, a.prev, a.prevEp, a.switchAt, a.eraseAt = saved.eph, saved.epoch, saved.prev, saved.prevEp, saved.switchAt, saved.eraseAt
		a.pruneOurs(pub)
	}
	a.log.Error("ephemeral key not rotated: no fresh key could be installed", "attempts", rotateAttempts)
	_, _ = a.step(now) // back to the state before the rotation
}

// step is Step at a given time. collided reports an inbound SPI collision
// involving the current key pair of some member (a fresh key of ours gives
// every such SA a new SPI); err, that the router refused the peer set.
func (a *Agent) step(now time.Time) (collided bool, err error) {
	// Ended, failed or not: the loop is alive (Health).
	defer func() { a.stepped.Store(a.clock.Now().UnixNano()) }()
	a.confirm(now)
	a.erase(now)
	self := a.cfg.Name
	members := a.m.Members()
	claims, believed := a.checkClaims(members, now)
	for _, m := range members {
		if m.Name != self && (m.State == gossip.Alive || m.State == gossip.Suspect) && m.InfoErr == nil {
			if !a.joined.Load() {
				a.log.Info("joined: the cluster's block claims are known", "peer", m.Name)
			}
			a.joined.Store(true)
		}
	}

	note := ""
	chunkSettling := false
	if len(a.cfg.Prefixes) == 0 && !a.cfg.Assigned.Block.IsValid() {
		cur := a.claim
		cur.Node = self
		next, changed, err := blocks.Decide(self, cur, claims, a.cfg.CIDR, a.cfg.BlockBits, now)
		if err != nil {
			// ErrFull: no block is free; a lost block is still given up
			// (changed, with an empty claim) so two hosts never route it.
			a.log.Error("claim a block", "err", err)
			note = fmt.Sprintf(noFreeBlock, a.cfg.CIDR, a.cfg.BlockBits)
		}
		if changed && next.Block.IsValid() {
			// A new claim (first, or after losing ours) needs evidence
			// that no other side of a partition can make the same one.
			if why := a.mayClaim(believed); why != "" {
				note = why
				a.log.Info("no block claimed", "reason", why)
				next, changed = blocks.Claim{}, a.claim.Block.IsValid()
			}
		}
		if changed {
			switch {
			case a.claim.Block.IsValid() && next.Block.IsValid():
				a.log.Warn("block lost to an earlier claim; moving: containers holding its addresses are stranded (drover status)", "prefix", a.claim.Block, "new", next.Block)
			case a.claim.Block.IsValid():
				a.log.Error("block lost and no other claimed: containers holding its addresses are stranded (drover status)", "prefix", a.claim.Block, "reason", cmp.Or(note, "no free block"))
			default:
				a.log.Info("block claimed", "prefix", next.Block, "handed_out_from", now.Add(a.cfg.ClaimSettle).Format(time.RFC3339Nano))
			}
			a.claim = next
			if next.Block.IsValid() {
				a.settleAt = now.Add(a.cfg.ClaimSettle)
				if err := a.cfg.Blocks.Save(next); err != nil {
					a.log.Error("persist block claim", "err", err)
				}
			}
			// Published at the end of the step, once the peers are set:
			// inside a rotation the info carries a key whose SAs are not
			// installed yet, and the rotation publishes it itself.
			a.unpublished = true
		}
	}
	if len(a.cfg.Prefixes) == 0 {
		a.setLocal(now)
		if a.claim.Block.IsValid() {
			claims = append(claims, blocks.Claim{Node: self, Block: a.claim.Block, Since: a.claim.Since, Live: true})
			if !a.settled(now) {
				note = fmt.Sprintf(settling, a.claim.Block, a.settleAt.Format(time.RFC3339Nano))
			}
		}
	}
	if changed, settling := a.stepChunks(members, believed, now); changed || settling {
		a.unpublished = a.unpublished || changed
		chunkSettling = settling
	}
	owners := blocks.Owners(claims)
	// Each member's routed prefixes, from one pass over owners: looking
	// them up per member would cost members × prefixes a step.
	byOwner := map[string][]netip.Prefix{}
	for pfx, owner := range owners {
		byOwner[owner] = append(byOwner[owner], pfx)
	}
	theirsPrev := false // some member's previous key is in its grace period

	view := gossip.View{Epoch: a.epoch}
	if a.claim.Block.IsValid() {
		view.Block = a.claim.Block.String()
	}
	view.BlockNote = note
	peers := slices.Clone(a.cfg.Static)
	paths := map[string]path{}  // members' data paths, by name
	var admit []firewall.Source // direct members' sources for the filter
	spis := map[uint32]string{}
	for _, p := range peers {
		for _, sa := range p.In {
			spis[sa.SPI()] = p.Name
		}
	}
	sorted := slices.Clone(members)
	slices.SortFunc(sorted, func(x, y gossip.Member) int { return strings.Compare(x.Name, y.Name) })
	live := map[string]bool{}
	for _, m := range sorted {
		mv := gossip.MemberView{Name: m.Name, State: m.State.String(), Underlay: m.Info.Underlay.String(), Epoch: m.Info.Epoch, Version: m.Info.Version}
		if m.Info.Block.IsValid() {
			mv.Block = m.Info.Block.String()
		}
		if m.Name == self { // listed as gossip knows it, as every host lists every member
			view.Members = append(view.Members, mv)
			continue
		}
		if m.InfoErr != nil {
			mv.Note = "unreadable node info: " + m.InfoErr.Error()
		}
		c := believed[m.Name]
		if c != nil {
			mv.Refused = c.refused
			if c.refusedAll != "" {
				mv.Note = c.refusedAll
			}
		}
		isLive := m.State == gossip.Alive || m.State == gossip.Suspect
		if c == nil || c.refusedAll != "" || !isLive {
			view.Members = append(view.Members, mv)
			continue
		}
		live[m.Name] = true
		routed := byOwner[m.Name]
		slices.SortFunc(routed, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
		for _, p := range routed {
			mv.Routed = append(mv.Routed, p.String())
		}
		if len(routed) == 0 {
			view.Members = append(view.Members, mv)
			continue
		}
		if note := a.compatible(m.Info); note != "" {
			mv.Note = note
			view.Members = append(view.Members, mv)
			continue
		}
		p, err := a.peer(m, routed, now)
		if pk := a.peers[m.Name]; pk != nil && pk.theirsPrev != nil {
			theirsPrev = true
		}
		if err != nil {
			mv.Note = "no keys: " + err.Error()
			a.log.Error("peer keys", "peer", m.Name, "err", err)
			view.Members = append(view.Members, mv)
			continue
		}
		// Inbound SPIs must be unique across peers (the ESP demultiplexer
		// keys on them, RFC 4303 §2.1). A collision (≈ N²/2^33 per
		// rotation) drops the later SA; when it is a current pair's, a
		// fresh key of ours gives it a new SPI.
		in := p.In[:0:0]
		for i, sa := range p.In {
			if o, dup := spis[sa.SPI()]; dup {
				if i == 0 {
					collided = true
				}
				a.log.Warn("inbound SPI collision", "peer", m.Name, "spi", fmt.Sprintf("%#08x", sa.SPI()), "other", o)
				continue
			}
			in = append(in, sa)
		}
		if a.cfg.Encap == EncapESP && (len(in) == 0 || (len(p.In) > 0 && in[0] != p.In[0])) {
			mv.Note = "inbound SPI collision: re-keying"
			if len(in) == 0 {
				view.Members = append(view.Members, mv)
				continue
			}
		}
		for _, sa := range in {
			spis[sa.SPI()] = m.Name
		}
		p.In = in
		peers = append(peers, p)
		if via, why := a.directVia(m.Info); via.IsValid() {
			paths[m.Name] = path{via: via, kind: PathDirect}
			for _, pfx := range p.Prefixes {
				admit = append(admit, firewall.Source{Prefix: pfx, MAC: m.Info.DirectMAC})
			}
		} else if via, mac, fwhy := a.fabricVia(p.Prefixes); via.IsValid() {
			paths[m.Name] = path{via: via, kind: PathBGP}
			for _, pfx := range p.Prefixes {
				admit = append(admit, firewall.Source{Prefix: pfx, MAC: mac})
			}
		} else {
			note := why
			if why != "" && fwhy != "" {
				note += "; "
			}
			paths[m.Name] = path{note: note + fwhy}
		}
		view.Members = append(view.Members, mv)
	}
	// Key state of members that are gone stays until our key in it is
	// erased (pruneOurs): if one returns first, its SAs continue rather
	// than restart under a key they used.
	for name, pk := range a.peers {
		if !live[name] && pk.empty() {
			delete(a.peers, name)
		}
	}
	if err := a.r.SetPeers(peers); err != nil {
		a.log.Error("set peers", "err", err)
		a.timed = true // retried at the next tick
		return collided, err
	}
	if a.unpublished && !a.rotating {
		if err := a.m.Update(a.Info()); err != nil {
			a.log.Error("publish block claim", "err", err)
		} else {
			a.unpublished = false
		}
	}
	// Admitted before the routes: a member routes to us directly as soon
	// as it sees our info, and its first packets should not be dropped.
	filterFailed := a.admit(admit)
	routesFailed := a.syncRoutes(peers, paths, &view) || filterFailed
	// Work that only time completes: our previous key's switch delay and
	// grace, a member's previous key's grace, retries, and our new claim's
	// settle time (it is handed out once that passes).
	a.timed = a.prev != nil || theirsPrev || a.unpublished || routesFailed || collided || !a.settled(now) || a.awaiting || chunkSettling || a.fabricPending
	a.viewMu.Lock()
	a.view = view
	a.viewMu.Unlock()
	if collided && !a.rotating && !now.Before(a.nextEarlyAfter) {
		a.nextEarlyAfter = now.Add(earlyRotationEvery)
		a.log.Warn("inbound SPI collision; rotating our key early")
		a.rotate(now)
	}
	return collided, nil
}

// confirm starts the switch delay and grace period of a rotation once its
// key is published (Confirmer); until then it holds them off.
func (a *Agent) confirm(now time.Time) {
	if !a.awaiting {
		return
	}
	a.switchAt, a.eraseAt = now.Add(a.cfg.SwitchDelay), now.Add(a.cfg.Grace)
	if c, ok := a.m.(Confirmer); !ok || c.Published() {
		a.awaiting = false
		a.log.Info("rotated key published; switching after the switch delay", "epoch", a.epoch)
	}
}

// mayClaim says why this host may not claim a new block now ("" if it
// may). The evidence is the other hosts holding blocks that it knows of,
// reachable or not (a dead member's claim stays until it leaves or is
// forgotten, gossip.Config.ForgetAfter):
//
//   - none known: only once joined to some member (a new cluster), or
//     alone with MayClaimAlone (its first host);
//   - otherwise more than half of them must be reachable. Two sides of a
//     partition cannot both see more than half of the holders known before
//     the cut, and a side without a majority claims nothing, so the holders
//     it knows stay the same: at most one side makes new claims, and claims
//     made on two sides never meet on one block.
func (a *Agent) mayClaim(believed map[string]*checked) string {
	known, live := 0, 0
	for _, c := range believed {
		if c.refusedAll != "" || !c.block.Block.IsValid() {
			continue
		}
		known++
		if c.block.Live {
			live++
		}
	}
	switch {
	case known == 0 && (a.joined.Load() || a.cfg.MayClaimAlone):
		return ""
	case known == 0:
		return NotJoined
	case 2*live > known:
		return ""
	}
	return fmt.Sprintf(noQuorum, live, known)
}

// compatible says why we cannot talk to a member ("" if we can).
func (a *Agent) compatible(in gossip.NodeInfo) string {
	if a.cfg.Encap == EncapESP {
		if in.Encaps&gossip.EncapESP == 0 {
			return "does not speak esp"
		}
		if in.Ciphers&gossip.CipherBit(a.cfg.Cipher) == 0 {
			return "does not support " + a.cfg.CipherName
		}
		return ""
	}
	if in.Encaps&gossip.EncapVXLAN == 0 {
		return "does not speak vxlan"
	}
	return ""
}

// Data paths of RouteView.Path.
const (
	PathDirect = "direct"
	PathBGP    = "bgp"
	PathESP    = EncapESP
	PathVXLAN  = EncapVXLAN
)

// path is how a member is reached: directly via its underlay address
// (direct), through the fabric via the router that routes its blocks
// (bgp), or through the TUN (via invalid; note says why not unencapsulated,
// when direct routing or the fabric is on).
type path struct {
	via  netip.Addr
	kind string
	note string
}

// fabricVia returns the fabric's next hop for a member's prefixes and
// that router's MAC when the member is reached through the fabric: every
// prefix is routed by it, through one router on our underlay's subnets.
// If not, why (empty when the fabric is not used).
func (a *Agent) fabricVia(prefixes []netip.Prefix) (netip.Addr, [6]byte, string) {
	if a.cfg.Fabric == nil || len(prefixes) == 0 {
		return netip.Addr{}, [6]byte{}, ""
	}
	var via netip.Addr
	var mac [6]byte
	for _, pfx := range prefixes {
		v, m, ok := a.cfg.Fabric.Route(pfx)
		switch {
		case !ok:
			return netip.Addr{}, [6]byte{}, "the fabric announces no route to " + pfx.String()
		case via.IsValid() && v != via:
			return netip.Addr{}, [6]byte{}, "the fabric routes the member's prefixes through several routers"
		}
		via, mac = v, m
	}
	for _, n := range a.cfg.UnderlayNets {
		if n.Contains(via) {
			if mac == ([6]byte{}) {
				a.fabricPending = true // the router's MAC is learned with its first ARP reply
				return netip.Addr{}, [6]byte{}, "the fabric's next hop " + via.String() + " has no known MAC address yet"
			}
			return via, mac, ""
		}
	}
	return netip.Addr{}, [6]byte{}, "the fabric's next hop " + via.String() + " is not on this host's underlay subnets"
}

// directVia returns the member's underlay address when it is reached
// directly: both sides route directly, and its underlay address lies on
// one of our underlay's subnets (so the kernel reaches it in one hop). If
// not, why (empty when direct routing is off here).
func (a *Agent) directVia(in gossip.NodeInfo) (netip.Addr, string) {
	if !a.cfg.Direct {
		return netip.Addr{}, ""
	}
	if !in.Direct {
		return netip.Addr{}, "the member does not route directly (cluster.direct)"
	}
	u := in.Underlay.Addr().Unmap()
	for _, n := range a.cfg.UnderlayNets {
		if n.Contains(u) && u != n.Masked().Addr() {
			return u, ""
		}
	}
	return netip.Addr{}, "the member's underlay " + u.String() + " is not on this host's underlay subnets"
}

// admit gives the filter the direct members' sources when they changed.
// It reports a failure (retried at the next tick).
func (a *Agent) admit(srcs []firewall.Source) (failed bool) {
	if a.cfg.DirectFilter == nil || (!a.cfg.Direct && a.cfg.Fabric == nil) {
		return false
	}
	slices.SortFunc(srcs, func(x, y firewall.Source) int { return x.Prefix.Addr().Compare(y.Prefix.Addr()) })
	if a.admitted != nil && slices.Equal(srcs, a.admitted) {
		return false
	}
	if err := a.cfg.DirectFilter.SetDirect(srcs); err != nil {
		a.log.Error("admit direct members in the forward filter", "err", err)
		return true
	}
	a.admitted = append([]firewall.Source{}, srcs...)
	return false
}

// syncRoutes makes the kernel's routes match the peers' prefixes: through
// the TUN, or via a direct member's underlay address (paths); new ones
// added, withdrawn or moved ones removed. A prefix that something else
// already routes is not taken over (Kernel.AddRoute does not replace); it
// is noted in the view and tried again on the next step.
func (a *Agent) syncRoutes(peers []*router.Peer, paths map[string]path, view *gossip.View) (failed bool) {
	want := map[netip.Prefix]tun.Route{}
	owner := map[netip.Prefix]string{}
	for _, p := range peers {
		for _, pfx := range p.Prefixes {
			want[pfx] = tun.Route{Prefix: pfx, Src: sourceFor(a.addrs, pfx.Addr().Is4()), Via: paths[p.Name].via}
			owner[pfx] = p.Name
		}
	}
	for pfx, rt := range a.routes {
		if w, ok := want[pfx]; ok && w == rt {
			continue
		}
		if err := a.k.DelRoute(rt); err != nil {
			a.log.Warn("remove route", "prefix", pfx, "err", err)
		}
		delete(a.routes, pfx)
		if _, ok := want[pfx]; !ok {
			a.log.Info("route withdrawn", "prefix", pfx)
		}
	}
	notes := map[netip.Prefix]string{}
	for pfx, rt := range want {
		if _, ok := a.routes[pfx]; ok {
			continue
		}
		if err := a.k.AddRoute(rt); err != nil {
			if errors.Is(err, tun.ErrRouteExists) {
				notes[pfx] = "not installed: the prefix is already routed by something other than drover"
				a.log.Warn("route not installed: a route drover did not install is present", "prefix", pfx, "peer", owner[pfx])
			} else {
				notes[pfx] = "not installed: " + err.Error()
				a.log.Error("add route", "prefix", pfx, "err", err)
			}
			continue
		}
		a.routes[pfx] = rt
		if rt.Via.IsValid() {
			a.log.Info("route added", "prefix", pfx, "peer", owner[pfx], "path", paths[owner[pfx]].kind, "via", rt.Via)
		} else {
			a.log.Info("route added", "prefix", pfx, "peer", owner[pfx], "path", a.cfg.Encap)
		}
	}
	for pfx, rt := range want {
		pt := paths[owner[pfx]]
		rv := gossip.RouteView{Prefix: pfx.String(), Peer: owner[pfx], Note: notes[pfx], Path: a.cfg.Encap, PathNote: pt.note}
		if rt.Via.IsValid() {
			rv.Path, rv.Via = pt.kind, rt.Via.String()
		}
		if rt, ok := a.routes[pfx]; ok && rt.Src.IsValid() {
			rv.Src = rt.Src.String()
		}
		view.Routes = append(view.Routes, rv)
	}
	slices.SortFunc(view.Routes, func(x, y gossip.RouteView) int { return strings.Compare(x.Prefix, y.Prefix) })
	return len(notes) > 0
}

// sourceFor is the first of addrs in the family v4 says, or none.
func sourceFor(addrs []netip.Addr, v4 bool) netip.Addr {
	for _, a := range addrs {
		if a.Is4() == v4 {
			return a
		}
	}
	return netip.Addr{}
}
