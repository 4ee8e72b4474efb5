package enforce

import (
	"cmp"
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
// policies filled them. Build it with Compile; package-level Install
// writes it to nftables.
type Ruleset struct {
	// Local are the addresses of this host's pods: flows from them are
	// checked for egress, flows to them for ingress.
	Local []netip.Addr
	// Idents maps every pod address in the cluster to its identity: pods
	// with the same namespace, labels and named ports share one, since
	// selectors and named ports cannot tell them apart.
	Idents map[netip.Addr]uint32
	// Open are the local pods no policy isolates, per direction.
	Open [2][]netip.Addr
	// Ident are the allowed (local pod, peer identity, protocols, ports)
	// boxes per direction; CIDR the allowed (local pod, peer address
	// range, protocols, ports) boxes (ipBlock peers, rules without peers).
	// Within a set and a local pod the boxes are disjoint, as the
	// kernel's concatenated-range sets require.
	Ident [2][]IdentElem
	CIDR  [2][]CIDRElem
	// Drops are the groups of isolated local pods by the policies that
	// isolate them, per direction: a denied packet is counted under each
	// of the group's policies.
	Drops [2][]DropGroup
}

// IdentElem allows traffic between the local pod Self and pods of
// identity Ident on protocols ProtoLo..ProtoHi, ports PortLo..PortHi
// (destination ports).
type IdentElem struct {
	Self             netip.Addr
	Ident            uint32
	ProtoLo, ProtoHi uint8
	PortLo, PortHi   uint16
}

// CIDRElem allows traffic between the local pod Self and the addresses
// Lo..Hi on protocols ProtoLo..ProtoHi, ports PortLo..PortHi.
type CIDRElem struct {
	Self             netip.Addr
	Lo, Hi           netip.Addr
	ProtoLo, ProtoHi uint8
	PortLo, PortHi   uint16
}

// DropGroup is the local pods one set of policies isolates in one
// direction.
type DropGroup struct {
	// Chain is the name of the chain that counts and drops for the group.
	Chain    string
	Policies []policy.Ref
	Pods     []netip.Addr
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
// for them all.
type identity struct {
	id  uint32
	rep *policy.Pod
}

func identKey(p *policy.Pod) string {
	var b strings.Builder
	b.WriteString(p.Namespace)
	b.WriteByte(0)
	for _, k := range slices.Sorted(maps.Keys(p.Labels)) {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(p.Labels[k])
		b.WriteByte(0)
	}
	ports := slices.Clone(p.Ports)
	slices.SortFunc(ports, func(a, b policy.ContainerPort) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port))
	})
	for _, cp := range ports {
		b.WriteByte(1)
		b.WriteString(cp.Name + "/" + string(cp.Protocol) + "/" + strconv.Itoa(int(cp.Port)))
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
		local  []*policy.Pod
	)
	for _, p := range w.Pods() {
		k := identKey(p)
		used[k] = true
		i, ok := seen[k]
		if !ok {
			i = len(idents)
			seen[k] = i
			idents = append(idents, identity{id: ids.get(k), rep: p})
		}
		for _, a := range p.Addrs {
			if a.Is4() && w.PodAt(a) == p {
				rs.Idents[a] = idents[i].id
			}
		}
		if p.Node == node {
			local = append(local, p)
		}
	}
	ids.retain(used)

	for _, p := range local {
		addrs := ipv4Of(w, p)
		rs.Local = append(rs.Local, addrs...)
		for d := range policy.Dir(2) {
			pols := w.Selecting(p, d)
			if len(pols) == 0 {
				rs.Open[d] = append(rs.Open[d], addrs...)
				continue
			}
			identBoxes, cidrBoxes := allowed(w, p, d, pols, idents)
			for _, self := range addrs {
				for _, id := range slices.Sorted(maps.Keys(identBoxes)) {
					for _, b := range identBoxes[id].boxes() {
						rs.Ident[d] = append(rs.Ident[d], IdentElem{Self: self, Ident: id,
							ProtoLo: b.protoLo, ProtoHi: b.protoHi, PortLo: b.portLo, PortHi: b.portHi})
					}
				}
				for _, r := range disjoint(cidrBoxes) {
					for _, b := range r.ps.boxes() {
						rs.CIDR[d] = append(rs.CIDR[d], CIDRElem{Self: self, Lo: u32addr(r.lo), Hi: u32addr(r.hi),
							ProtoLo: b.protoLo, ProtoHi: b.protoHi, PortLo: b.portLo, PortHi: b.portHi})
					}
				}
			}
			rs.addDrop(d, pols, addrs)
		}
	}
	slices.SortFunc(rs.Local, netip.Addr.Compare)
	for d := range rs.Drops {
		slices.SortFunc(rs.Drops[d], func(a, b DropGroup) int { return cmp.Compare(a.Chain, b.Chain) })
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

func (rs *Ruleset) addDrop(d policy.Dir, pols []*policy.Policy, addrs []netip.Addr) {
	refs := make([]policy.Ref, len(pols))
	var key strings.Builder
	for i, p := range pols {
		refs[i] = p.Ref
		key.WriteString(p.Ref.String())
		key.WriteByte(0)
	}
	sum := sha256.Sum256([]byte(key.String()))
	chain := "drop_" + d.String() + "_" + hex.EncodeToString(sum[:6])
	for i := range rs.Drops[d] {
		if rs.Drops[d][i].Chain == chain {
			rs.Drops[d][i].Pods = append(rs.Drops[d][i].Pods, addrs...)
			return
		}
	}
	rs.Drops[d] = append(rs.Drops[d], DropGroup{Chain: chain, Policies: refs, Pods: slices.Clone(addrs)})
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
	if slices.Contains(rs.Open[d], self) {
		return true
	}
	if id, ok := rs.Idents[peer]; ok {
		for _, e := range rs.Ident[d] {
			if e.Self == self && e.Ident == id && e.ProtoLo <= proto && proto <= e.ProtoHi && e.PortLo <= port && port <= e.PortHi {
				return true
			}
		}
	}
	for _, e := range rs.CIDR[d] {
		if e.Self == self && e.Lo.Compare(peer) <= 0 && peer.Compare(e.Hi) <= 0 && e.ProtoLo <= proto && proto <= e.ProtoHi && e.PortLo <= port && port <= e.PortHi {
			return true
		}
	}
	return false
}
