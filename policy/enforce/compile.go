package enforce

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/drovernet/drover/policy"
)

// Ruleset is what one host enforces, as set contents: the kernel's lookup
// cost per packet depends on the sets' types, not on how many pods or
// policies filled them. Build it with Compile; Enforcer.Apply writes it to
// nftables.
type Ruleset struct {
	// Idents maps every pod address in the cluster to its identity: pods
	// with the same namespace, labels and named ports share one, since
	// selectors and named ports cannot tell them apart.
	Idents map[netip.Addr]uint32
	// Groups are this host's isolated pods by identity, per direction
	// (pods of one identity are selected by the same policies, so they
	// share one chain and its sets). A local pod in no group is open.
	Groups [2][]Group
}

// Group is the local pods of one identity that policies isolate in one
// direction, and what those policies allow them.
type Group struct {
	Ident uint32
	Pods  []netip.Addr
	// Policies are the isolating policies: a denied packet is counted
	// under each.
	Policies []policy.Ref
	// Peers are the allowed (peer identity, protocols, ports) boxes;
	// Ranges the allowed (peer address range, protocols, ports) boxes
	// (ipBlock peers, rules without peers). Within a set the boxes are
	// disjoint, as the kernel's concatenated-range sets require.
	Peers  []IdentElem
	Ranges []CIDRElem
}

// IdentElem allows traffic with pods of identity Ident on protocols
// ProtoLo..ProtoHi, ports PortLo..PortHi (destination ports).
type IdentElem struct {
	Ident            uint32
	ProtoLo, ProtoHi uint8
	PortLo, PortHi   uint16
}

// CIDRElem allows traffic with the addresses Lo..Hi on protocols
// ProtoLo..ProtoHi, ports PortLo..PortHi.
type CIDRElem struct {
	Lo, Hi           netip.Addr
	ProtoLo, ProtoHi uint8
	PortLo, PortHi   uint16
}

// Idents numbers identities across compilations, so that a pod's change
// rewrites its own elements and not everyone's.
type Idents struct {
	next  uint32
	byKey map[string]uint32
}

func (id *Idents) get(key string) uint32 {
	if id.byKey == nil {
		id.byKey = map[string]uint32{}
	}
	if n, ok := id.byKey[key]; ok {
		return n
	}
	id.next++
	id.byKey[key] = id.next
	return id.next
}

// retain forgets identities not in used.
func (id *Idents) retain(used map[string]bool) {
	maps.DeleteFunc(id.byKey, func(k string, _ uint32) bool { return !used[k] })
}

// identity is the identity of pods sharing a key, with one pod standing
// for them all: the key holds everything selectors and named ports can
// see, so any of them decides as all would.
type identity struct {
	id  uint32
	rep *policy.Pod
}

// relevance is what of a pod can change a decision: the label keys some
// pod selector names and the port names some policy names. Identities are
// computed over these alone (as Cilium's "identity-relevant labels", but
// exact: a label no selector mentions cannot change a verdict), so a
// label unique to each pod (a StatefulSet's pod name, a template hash)
// does not give every pod an identity of its own.
//
// Values too: a selector's outcome depends only on whether the key is
// absent, has one of the values some selector names, or has any other
// value, so all "other" values are one.
type relevance struct {
	keys  map[string]map[string]bool // key -> the values selectors name
	ports map[string]bool
}

func relevanceOf(w *policy.World) relevance {
	r := relevance{keys: map[string]map[string]bool{}, ports: map[string]bool{}}
	add := func(k string, vals ...string) {
		if r.keys[k] == nil {
			r.keys[k] = map[string]bool{}
		}
		for _, v := range vals {
			r.keys[k][v] = true
		}
	}
	addSel := func(s *policy.Selector) {
		for k, v := range s.MatchLabels {
			add(k, v)
		}
		for _, m := range s.MatchExpressions {
			add(m.Key, m.Values...)
		}
	}
	for _, p := range w.Policies() {
		addSel(&p.Selector)
		for d := range p.Rules {
			for _, rule := range p.Rules[d] {
				for _, peer := range rule.Peers {
					if peer.Pods != nil {
						addSel(peer.Pods)
					}
				}
				for _, rp := range rule.Ports {
					if rp.Name != "" {
						r.ports[rp.Name] = true
					}
				}
			}
		}
	}
	return r
}

func (r relevance) key(p *policy.Pod) string {
	var b strings.Builder
	b.WriteString(p.Namespace)
	b.WriteByte(0)
	for _, k := range slices.Sorted(maps.Keys(p.Labels)) {
		vals, ok := r.keys[k]
		if !ok {
			continue
		}
		b.WriteString(k)
		if v := p.Labels[k]; vals[v] {
			b.WriteByte('=')
			b.WriteString(v)
		} else {
			b.WriteByte('*') // a value no selector names
		}
		b.WriteByte(0)
	}
	var ports []string
	for _, cp := range p.Ports {
		if r.ports[cp.Name] {
			ports = append(ports, cp.Name+"/"+string(cp.Protocol)+"/"+strconv.Itoa(int(cp.Port)))
		}
	}
	slices.Sort(ports)
	for _, s := range ports {
		b.WriteByte(1)
		b.WriteString(s)
	}
	return b.String()
}

// Compile computes what node enforces of w. ids keeps identity numbers
// stable from one compilation to the next. Only IPv4 is compiled: drover's
// container network is IPv4, and an IPv6 ipBlock cannot match it.
func Compile(w *policy.World, node string, ids *Idents) *Ruleset {
	rs := &Ruleset{Idents: map[netip.Addr]uint32{}}
	var (
		idents []identity
		seen   = map[string]int{}
		used   = map[string]bool{}
		local  = map[int][]netip.Addr{} // identity index -> local addresses
	)
	rel := relevanceOf(w)
	for _, p := range w.Pods() {
		k := rel.key(p)
		used[k] = true
		i, ok := seen[k]
		if !ok {
			i = len(idents)
			seen[k] = i
			idents = append(idents, identity{id: ids.get(k), rep: p})
		}
		addrs := ipv4Of(w, p)
		for _, a := range addrs {
			rs.Idents[a] = idents[i].id
		}
		if p.Node == node {
			local[i] = append(local[i], addrs...)
		}
	}
	ids.retain(used)

	for _, i := range slices.Sorted(maps.Keys(local)) {
		id, addrs := idents[i], local[i]
		slices.SortFunc(addrs, netip.Addr.Compare)
		for d := range policy.Dir(2) {
			pols := w.Selecting(id.rep, d)
			if len(pols) == 0 {
				continue
			}
			g := Group{Ident: id.id, Pods: addrs}
			for _, p := range pols {
				g.Policies = append(g.Policies, p.Ref)
			}
			identBoxes, cidrBoxes := allowed(w, id.rep, d, pols, idents)
			for _, peer := range slices.Sorted(maps.Keys(identBoxes)) {
				for _, b := range identBoxes[peer].boxes() {
					g.Peers = append(g.Peers, IdentElem{Ident: peer, ProtoLo: b.protoLo, ProtoHi: b.protoHi, PortLo: b.portLo, PortHi: b.portHi})
				}
			}
			for _, r := range disjoint(cidrBoxes) {
				for _, b := range r.ps.boxes() {
					g.Ranges = append(g.Ranges, CIDRElem{Lo: u32addr(r.lo), Hi: u32addr(r.hi), ProtoLo: b.protoLo, ProtoHi: b.protoHi, PortLo: b.portLo, PortHi: b.portHi})
				}
			}
			rs.Groups[d] = append(rs.Groups[d], g)
		}
	}
	return rs
}

func ipv4Of(w *policy.World, p *policy.Pod) []netip.Addr {
	var out []netip.Addr
	for _, a := range p.Addrs {
		if a.Is4() && w.PodAt(a) == p {
			out = append(out, a)
		}
	}
	return out
}

// CounterName is the name of the nftables counter that counts policy
// ref's drops in direction d: "ingress:ns/name". Object names are at most
// 255 bytes; a longer one is cut and ends in a hash of the whole.
func CounterName(ref policy.Ref, d policy.Dir) string {
	s := d.String() + ":" + ref.String()
	if len(s) <= 255 {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return s[:238] + "~" + hex.EncodeToString(sum[:8])
}

// allowed returns the boxes the rules of pols admit for the local pod
// self in direction d: per peer identity, and per peer address range.
func allowed(w *policy.World, self *policy.Pod, d policy.Dir, pols []*policy.Policy, idents []identity) (map[uint32]*portSet, []cidrBox) {
	byIdent := map[uint32]*portSet{}
	var cidrs []cidrBox
	addIdent := func(id uint32, ps *portSet) {
		if ps.empty() {
			return
		}
		if byIdent[id] == nil {
			byIdent[id] = &portSet{}
		}
		byIdent[id].union(ps)
	}
	for _, p := range pols {
		for ri := range p.Rules[d] {
			r := &p.Rules[d][ri]
			// Numeric ports hold for every peer; named ones resolve
			// against the destination: self for ingress, each peer pod
			// for egress.
			var numeric portSet
			var named []policy.RulePort
			switch {
			case r.AllPorts:
				numeric.all = true
			default:
				for _, rp := range r.Ports {
					switch {
					case rp.Name == "":
						numeric.add(rp.Protocol, rp.Lo, rp.Hi)
					case d == policy.DirIngress:
						addNamed(&numeric, rp, self.Ports)
					default:
						named = append(named, rp)
					}
				}
			}
			forPod := func(peer *policy.Pod) *portSet {
				if len(named) == 0 {
					return &numeric
				}
				ps := numeric.clone()
				for _, rp := range named {
					addNamed(ps, rp, peer.Ports)
				}
				return ps
			}
			if r.AllPeers {
				if !numeric.empty() {
					cidrs = append(cidrs, cidrBox{0, 1<<32 - 1, numeric.clone()})
				}
				for _, id := range idents {
					if len(named) > 0 {
						addIdent(id.id, forPod(id.rep))
					}
				}
				continue
			}
			for pi := range r.Peers {
				peer := &r.Peers[pi]
				if peer.Block != nil {
					if !peer.Block.CIDR.Addr().Is4() {
						continue
					}
					if !numeric.empty() {
						for _, rg := range blockRanges(peer.Block) {
							cidrs = append(cidrs, cidrBox{rg[0], rg[1], numeric.clone()})
						}
					}
					// A named port matches pods of the block that have it.
					if len(named) > 0 {
						for _, pod := range w.Pods() {
							ps := &portSet{}
							for _, rp := range named {
								addNamed(ps, rp, pod.Ports)
							}
							if ps.empty() {
								continue
							}
							for _, a := range ipv4Of(w, pod) {
								if peer.Block.Contains(a) {
									cidrs = append(cidrs, cidrBox{addrU32(a), addrU32(a), ps})
								}
							}
						}
					}
					continue
				}
				for _, id := range idents {
					if w.PeerMatches(peer, p.Ref.Namespace, policy.Endpoint{Pod: id.rep}) {
						addIdent(id.id, forPod(id.rep))
					}
				}
			}
		}
	}
	return byIdent, cidrs
}

// addNamed adds to ps the ports named rp.Name with rp's protocol among
// ports.
func addNamed(ps *portSet, rp policy.RulePort, ports []policy.ContainerPort) {
	for _, cp := range ports {
		if cp.Name == rp.Name && cp.Protocol == rp.Protocol {
			ps.add(cp.Protocol, cp.Port, cp.Port)
		}
	}
}

// blockRanges is b's CIDR minus its excepts, as inclusive ranges.
func blockRanges(b *policy.Block) [][2]uint32 {
	lo, hi := prefixRange(b.CIDR)
	out := [][2]uint32{{lo, hi}}
	for _, e := range b.Except {
		elo, ehi := prefixRange(e)
		var next [][2]uint32
		for _, r := range out {
			if ehi < r[0] || elo > r[1] {
				next = append(next, r)
				continue
			}
			if elo > r[0] {
				next = append(next, [2]uint32{r[0], elo - 1})
			}
			if ehi < r[1] {
				next = append(next, [2]uint32{ehi + 1, r[1]})
			}
		}
		out = next
	}
	return out
}

func prefixRange(p netip.Prefix) (lo, hi uint32) {
	lo = addrU32(p.Masked().Addr())
	return lo, lo | uint32(uint64(1)<<(32-p.Bits())-1)
}

func addrU32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func u32addr(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

type cidrBox struct {
	lo, hi uint32
	ps     *portSet
}

// disjoint cuts possibly overlapping address ranges into disjoint ones,
// each with the union of the port sets of the ranges covering it, and
// merges neighbours with equal port sets.
func disjoint(boxes []cidrBox) []cidrBox {
	if len(boxes) == 0 {
		return nil
	}
	var cuts []uint64
	for _, b := range boxes {
		cuts = append(cuts, uint64(b.lo), uint64(b.hi)+1)
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	var out []cidrBox
	for i := 0; i+1 < len(cuts); i++ {
		lo, hi := uint32(cuts[i]), uint32(cuts[i+1]-1)
		var ps portSet
		for _, b := range boxes {
			if b.lo <= lo && hi <= b.hi {
				ps.union(b.ps)
			}
		}
		if ps.empty() {
			continue
		}
		if n := len(out); n > 0 && out[n-1].hi+1 == lo && out[n-1].ps.equal(&ps) {
			out[n-1].hi = hi
			continue
		}
		out = append(out, cidrBox{lo, hi, &ps})
	}
	return out
}

// Allows answers, as the kernel will from the sets, whether direction d
// lets a new flow through at the local pod self with peer on proto/port
// (the destination port). self must be local.
func (rs *Ruleset) Allows(d policy.Dir, self, peer netip.Addr, proto uint8, port uint16) bool {
	i := slices.IndexFunc(rs.Groups[d], func(g Group) bool { return slices.Contains(g.Pods, self) })
	if i < 0 {
		return true // open
	}
	g := &rs.Groups[d][i]
	if id, ok := rs.Idents[peer]; ok {
		for _, e := range g.Peers {
			if e.Ident == id && e.ProtoLo <= proto && proto <= e.ProtoHi && e.PortLo <= port && port <= e.PortHi {
				return true
			}
		}
	}
	for _, e := range g.Ranges {
		if e.Lo.Compare(peer) <= 0 && peer.Compare(e.Hi) <= 0 && e.ProtoLo <= proto && proto <= e.ProtoHi && e.PortLo <= port && port <= e.PortHi {
			return true
		}
	}
	return false
}
