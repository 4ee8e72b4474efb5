package firewall

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Names of what the filter installs; docs/security.md shows them.
const (
	// Table is drover's filter table, family inet (IPv4 and IPv6 in one).
	// It is not the CNI plugin's NAT table ("ip drover").
	Table = "drover_filter"
	// ForwardChain is the base chain on the forward hook.
	ForwardChain = "forward"
	// ContainersChain holds the verdicts for traffic addressed to
	// containers; ForwardChain jumps to it.
	ContainersChain = "to_containers"
	// DropCounter is the named counter every drop of the filter updates.
	DropCounter = "forward_drops"
	// DirectSet4 and DirectSet6 start the names of the sets of sources
	// accepted from the underlay interface (Spec.Underlay): per prefix
	// length one set, "direct4_24" say, of a member's prefix and the MAC
	// address of its underlay interface, concatenated (cluster.direct).
	DirectSet4 = "direct4"
	DirectSet6 = "direct6"
	// DirectDst4 and DirectDst6 hold the direct members' prefixes alone
	// (Spec.NoTrack: traffic from the bridge to them skips conntrack).
	DirectDst4 = "direct_dst4"
	DirectDst6 = "direct_dst6"
	// RawChain is the prerouting chain at raw priority that exempts
	// direct members' traffic from conntrack (Spec.NoTrack).
	RawChain = "raw"
	// UnderlayChain holds the forward verdicts for what arrives on the
	// underlay interface (Spec.Underlay); RawBridgeChain and
	// RawUnderlayChain the notrack rules per interface (Spec.NoTrack).
	UnderlayChain    = "from_underlay"
	RawBridgeChain   = "raw_from_bridge"
	RawUnderlayChain = "raw_from_underlay"
	// Protected4 and Protected6 hold the protected prefixes, for the raw
	// chain (Spec.NoTrack).
	Protected4 = "protected4"
	Protected6 = "protected6"
)

// Set IDs name a set within the transaction that adds it (rules refer to
// it by ID there). Fixed, as every set of the table is added in one
// transaction with the table: google/nftables' own counter is global and
// unsynchronised.
const (
	idDst4  = 3
	idDst6  = 4
	idProt4 = 7
	idProt6 = 8
	// idDirectFirst is the first ID of the direct sets SetDirect adds,
	// one transaction each, after the table's.
	idDirectFirst = 16
)

// Priority of the forward chain: the filter priority (0), as iptables'
// filter table. In nftables every base chain on a hook sees the packet in
// priority order; a drop anywhere is final, an accept only ends that one
// chain. So the filter's accepts never open what another chain (an
// operator's, Docker's, kube-proxy's) drops, and another chain's accept
// never opens what this one drops.
var Priority = nftables.ChainPriorityFilter

// ifnameLen is IFNAMSIZ: the kernel compares interface names as 16
// zero-padded bytes.
const ifnameLen = unix.IFNAMSIZ

// conntrack bits (include/uapi/linux/netfilter/nf_conntrack_common.h).
const (
	ctStateEstablished = expr.CtStateBitESTABLISHED
	ctStateRelated     = expr.CtStateBitRELATED
	ctStatusDstNAT     = 1 << 5 // IPS_DST_NAT
)

// Spec is what the filter protects and what it lets through.
type Spec struct {
	// Protected are the destinations the filter guards: the cluster CIDR,
	// this host's prefixes (its block, the container bridge's subnet) and
	// statically configured peers' prefixes. IPv4 and IPv6.
	Protected []netip.Prefix
	// TUN is the router's TUN device. What arrives on it was
	// decapsulated by the router, after its authentication and source
	// checks. Required.
	TUN string
	// Bridge is the container bridge: containers' own traffic, routed
	// (to the TUN or between subnets) or, with br_netfilter, bridged.
	// Empty: no bridge is trusted.
	Bridge string
	// Underlay is the underlay interface, for direct routing: a source
	// in a member's prefix is accepted on it from that member's MAC
	// address only (Filter.SetDirect). Empty: nothing is accepted from
	// the underlay but replies and host ports.
	Underlay string
	// AllowFrom are sources outside the protected prefixes that may open
	// connections to containers from anywhere (firewall.allow_from: a
	// routed fabric's clients). A source inside a protected prefix is
	// still dropped as forged first.
	AllowFrom []netip.Prefix
	// NoTrack (with Underlay) exempts traffic between this host's
	// containers and direct members' containers from conntrack: it is
	// admitted by the direct sets and the bridge rule, never by
	// conntrack, and tracking every packet of it cost a fifth of the
	// throughput of a 2-core host. Only when nothing else needs its
	// conntrack state: network policy's reply rules do (the daemon
	// leaves NoTrack off with policy on).
	NoTrack bool
}

// Source is a member reached without encapsulation: its container
// prefixes arrive on the underlay interface from its MAC address.
type Source struct {
	Prefix netip.Prefix
	MAC    [6]byte
}

// Validate checks s.
func (s Spec) Validate() error {
	var errs []error
	if !validIfname(s.TUN) {
		errs = append(errs, fmt.Errorf("firewall: TUN %q is not an interface name", s.TUN))
	}
	if s.Bridge != "" && !validIfname(s.Bridge) {
		errs = append(errs, fmt.Errorf("firewall: bridge %q is not an interface name", s.Bridge))
	}
	if s.Underlay != "" && !validIfname(s.Underlay) {
		errs = append(errs, fmt.Errorf("firewall: underlay %q is not an interface name", s.Underlay))
	}
	if len(s.Protected) == 0 {
		errs = append(errs, errors.New("firewall: no protected prefix"))
	}
	for _, p := range s.Protected {
		if !p.IsValid() {
			errs = append(errs, fmt.Errorf("firewall: protected prefix %v is not valid", p))
		}
	}
	for _, p := range s.AllowFrom {
		if !p.IsValid() {
			errs = append(errs, fmt.Errorf("firewall: allowed source %v is not valid", p))
		}
	}
	return errors.Join(errs...)
}

func validIfname(n string) bool {
	return n != "" && len(n) < ifnameLen && !strings.ContainsAny(n, "/ \t\x00")
}

// prefixes returns s.Protected masked, unmapped, without prefixes that
// another one covers, IPv4 first then IPv6, each in address order: one
// rule per prefix, none redundant.
func (s Spec) prefixes() []netip.Prefix {
	var ps []netip.Prefix
	for _, p := range s.Protected {
		a := p.Addr()
		bits := p.Bits()
		if a.Is4In6() {
			a, bits = a.Unmap(), bits-96
		}
		ps = append(ps, netip.PrefixFrom(a, bits).Masked())
	}
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	out := ps[:0]
	for _, p := range ps {
		covered := false
		for _, q := range out {
			if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	return out
}

// Ruleset is everything the filter installs, in the order it is added.
type Ruleset struct {
	Table   *nftables.Table
	Counter *nftables.NamedObj
	// Chains: the forward base chain, then the containers chain.
	Chains []*nftables.Chain
	// Sets: with Spec.Underlay and NoTrack, DirectDst4 and DirectDst6,
	// else none. Filter.SetDirect fills them, and adds the direct sets
	// and the rules of UnderlayChain (Direct).
	Sets []*nftables.Set
	// Maps are the sets and maps whose elements never change, installed
	// with their Elements: the verdict maps keyed by input interface
	// (with NoTrack, Protected4 and Protected6).
	Maps     []*nftables.Set
	Elements map[string][]nftables.SetElement
	Rules    []*nftables.Rule
}

// dstSets are the filter's sets of direct members' prefixes in table t.
func dstSets(t *nftables.Table) (v4, v6 *nftables.Set) {
	return addrSets(t, DirectDst4, idDst4, DirectDst6, idDst6)
}

// addrSets are an IPv4 and an IPv6 interval set of addresses in table t.
func addrSets(t *nftables.Table, name4 string, id4 uint32, name6 string, id6 uint32) (v4, v6 *nftables.Set) {
	return &nftables.Set{Table: t, Name: name4, ID: id4, Interval: true, KeyType: nftables.TypeIPAddr},
		&nftables.Set{Table: t, Name: name6, ID: id6, Interval: true, KeyType: nftables.TypeIP6Addr}
}

// dstElements are prefixes (one family) as elements of an interval set:
// overlapping and adjacent prefixes merged into one range, each range its
// first address and the one after its last (an interval set's end is
// exclusive and flagged IntervalEnd; none past the family's end). The
// kernel refuses intervals that overlap or touch, as nft(8) merges them.
func dstElements(prefixes []netip.Prefix) []nftables.SetElement {
	type rng struct{ lo, hi netip.Addr }
	rs := make([]rng, 0, len(prefixes))
	for _, p := range prefixes {
		p = p.Masked()
		last := p.Addr().AsSlice()
		for i := p.Bits(); i < len(last)*8; i++ {
			last[i/8] |= 0x80 >> (i % 8)
		}
		hi, _ := netip.AddrFromSlice(last)
		rs = append(rs, rng{p.Addr(), hi})
	}
	slices.SortFunc(rs, func(a, b rng) int { return a.lo.Compare(b.lo) })
	var merged []rng
	for _, r := range rs {
		if n := len(merged); n > 0 {
			cur := &merged[n-1]
			if next := cur.hi.Next(); !next.IsValid() || r.lo.Compare(next) <= 0 {
				if r.hi.Compare(cur.hi) > 0 {
					cur.hi = r.hi
				}
				continue
			}
		}
		merged = append(merged, r)
	}
	var out []nftables.SetElement
	for _, r := range merged {
		out = append(out, nftables.SetElement{Key: r.lo.AsSlice()})
		if next := r.hi.Next(); next.IsValid() {
			out = append(out, nftables.SetElement{Key: next.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

// directPrefix is p as the filter keeps a direct source's prefix: an
// IPv4-mapped IPv6 prefix as IPv4 (one of fewer than 96 bits is not one).
func directPrefix(p netip.Prefix) (netip.Prefix, error) {
	if p.IsValid() && p.Addr().Is4In6() {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("firewall: direct source %v: not a prefix", p)
	}
	return p, nil
}

// Registers of a concatenated lookup key: the address in the first
// 128-bit register (NFT_REG_1), the MAC right after it in 32-bit
// registers (NFT_REG32_00 is 8), as nft(8) lays out `ip saddr . ether
// saddr`. Each field takes a multiple of 4 bytes.
const (
	regReg1     = 1
	reg32First  = 8
	etherPadLen = 8 // 6 bytes, padded to a 32-bit boundary
)

// Direct is what admits a set of direct sources: per family and prefix
// length one set of exact keys, the masked source address concatenated
// with the MAC, and one rule in UnderlayChain that looks it up:
//
//	set direct4_24 { type ipv4_addr . ether_addr; elements = { 10.42.2.0 . 02:42:c0:00:02:02, ... } }
//	ip saddr & 255.255.255.0 . ether saddr @direct4_24 accept
//
// Exact keys, not one set of intervals: the kernel keeps a concatenation
// of intervals in a pipapo set, whose lookup uses AVX2 and so saves the
// FPU state in softirq, for every packet of a direct flow; a hash of exact
// keys costs a third of that and in the harness's held topology moved 4
// streams about 3 % (docs/benchmarks.md). The prefix lengths a cluster
// uses are few (its block size, a host's /32): a rule each.
type Direct struct {
	Sets     []*nftables.Set
	Elements [][]nftables.SetElement // per set, in the order of Sets
	Rules    []*nftables.Rule
}

// directKey is a source's family, prefix length and set name.
type directKey struct {
	v6   bool
	bits int
}

func (k directKey) name() string {
	base := DirectSet4
	if k.v6 {
		base = DirectSet6
	}
	return fmt.Sprintf("%s_%d", base, k.bits)
}

// BuildDirect returns the sets and UnderlayChain's rules that admit srcs
// in table t, the sets numbered from id. A source of an IPv4-mapped IPv6
// prefix counts as IPv4; an invalid prefix is an error.
func BuildDirect(t *nftables.Table, srcs []Source, id uint32) (Direct, error) {
	byKey := map[directKey][]nftables.SetElement{}
	for _, s := range srcs {
		p, err := directPrefix(s.Prefix)
		if err != nil {
			return Direct{}, err
		}
		k := directKey{v6: p.Addr().Is6(), bits: p.Bits()}
		mac := make([]byte, etherPadLen)
		copy(mac, s.MAC[:])
		e := nftables.SetElement{Key: append(p.Masked().Addr().AsSlice(), mac...)}
		if !slices.ContainsFunc(byKey[k], func(o nftables.SetElement) bool { return bytes.Equal(o.Key, e.Key) }) {
			byKey[k] = append(byKey[k], e)
		}
	}
	keys := slices.Collect(maps.Keys(byKey))
	// IPv4 first; then the length with the most members first (a
	// cluster's blocks), as every packet tries the rules in order.
	slices.SortFunc(keys, func(a, b directKey) int {
		if a.v6 != b.v6 {
			if a.v6 {
				return 1
			}
			return -1
		}
		if d := len(byKey[b]) - len(byKey[a]); d != 0 {
			return d
		}
		return a.bits - b.bits
	})
	ul := &nftables.Chain{Name: UnderlayChain, Table: t}
	var d Direct
	for i, k := range keys {
		addr := nftables.TypeIPAddr
		if k.v6 {
			addr = nftables.TypeIP6Addr
		}
		set := &nftables.Set{Table: t, Name: k.name(), ID: id + uint32(i), Concatenation: true,
			KeyType: nftables.MustConcatSetType(addr, nftables.TypeEtherAddr)}
		d.Sets = append(d.Sets, set)
		d.Elements = append(d.Elements, byKey[k])
		comment := fmt.Sprintf("drover: a direct member's containers (/%d)", k.bits)
		d.Rules = append(d.Rules, &nftables.Rule{Table: t, Chain: ul,
			Exprs:    append(matchDirect(set, k.v6, k.bits), &expr.Verdict{Kind: expr.VerdictAccept}),
			UserData: userdata.AppendString(nil, userdata.TypeComment, comment)})
	}
	return d, nil
}

// matchDirect matches packets of a family (v6) whose source address,
// masked to bits, and source MAC are in set: `ip saddr & 255.255.255.0 .
// ether saddr @direct4_24`. The input interface is the map's
// (from_underlay), not compared again here.
func matchDirect(set *nftables.Set, v6 bool, bits int) []expr.Any {
	n := uint32(4)
	if v6 {
		n = 16
	}
	e := append(matchFamily(v6),
		// Interfaces without a link-layer header (a TUN, a WireGuard
		// device) have none to read: the payload load then ends the rule.
		&expr.Meta{Key: expr.MetaKeyIIFTYPE, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint16(unix.ARPHRD_ETHER)},
		&expr.Payload{DestRegister: regReg1, Base: expr.PayloadBaseNetworkHeader, Offset: addrOffset(v6, true), Len: n},
	)
	if bits < int(n)*8 {
		mask := make([]byte, n)
		for i := range bits {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		e = append(e, &expr.Bitwise{SourceRegister: regReg1, DestRegister: regReg1, Len: n, Mask: mask, Xor: make([]byte, n)})
	}
	return append(e,
		&expr.Payload{DestRegister: reg32First + n/4, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
		&expr.Lookup{SourceRegister: regReg1, SetName: set.Name, SetID: set.ID},
	)
}

// Build returns the filter for s, without touching the kernel:
//
//	table inet drover_filter {
//	  counter forward_drops {}
//	  chain forward {
//	    type filter hook forward priority filter; policy accept;
//	    iifname "eth0" jump from_underlay               # with Spec.Underlay
//	    iifname "drover-br0" accept                     # from the containers
//	    iifname "drover0" accept                        # out of the tunnel
//	    ip daddr 10.42.0.0/16 jump to_containers        # one rule per protected prefix
//	  }
//	  chain from_underlay {                             # with Spec.Underlay: direct members
//	    ip saddr & 255.255.255.0 . ether saddr @direct4_24 accept  # Filter.SetDirect (Direct)
//	  }
//	  chain to_containers {
//	    ct status dnat accept                           # a host port (portmap)
//	    ip saddr 10.42.0.0/16 counter name forward_drops drop   # a container source from elsewhere
//	    ip saddr 198.51.100.0/24 accept                 # firewall.allow_from, one rule each
//	    ct state established,related accept             # replies (host NAT)
//	    counter name forward_drops drop
//	  }
//	}
//
// The accepts for the TUN and the bridge cover every destination: for one
// outside the protected prefixes they only say early what the chain's
// policy says at its end. Every forwarded packet of the host passes this
// chain, and on a 2-core host each expression evaluated per packet is
// measurable (docs/benchmarks.md): a comparison of the input interface
// settles the container's own traffic, the tunnel's and, through
// from_underlay, a direct member's. Comparisons, not a verdict map: for
// the two or three interfaces the filter names, the map's hash lookup
// cost more (4 streams 4 % slower in the held topology).
//
// The source rule comes before the conntrack accept: an address of the
// cluster never arrives from outside the TUN and the bridge, so such a
// packet is forged, and without the rule one that hits the tuple of a live
// flow (conntrack does not look at interfaces) would pass as established.
// DNAT comes before it, as a mapped host port is open to every source.
//
// With NoTrack a prerouting chain at raw priority exempts direct members'
// traffic from conntrack, again by input interface:
//
//	chain raw {
//	  type filter hook prerouting priority raw; policy accept;
//	  iifname "eth0" jump raw_from_underlay
//	  iifname "drover-br0" jump raw_from_bridge
//	}
//	chain raw_from_bridge {
//	  ip daddr @direct_dst4 notrack
//	  ip6 daddr @direct_dst6 notrack
//	}
//	chain raw_from_underlay {
//	  ip saddr @direct_dst4 ip daddr @protected4 notrack
//	  ip6 saddr @direct_dst6 ip6 daddr @protected6 notrack
//	}
//
// raw_from_underlay looks at a member's prefix, not at its MAC address:
// the forward chain still admits the packet only from the member's MAC
// (from_underlay), and an untracked packet can never pass as established
// there, so a forged one is dropped as before. Only a packet to a
// protected prefix is exempt: a direct member's container reaching this
// host's own address (a host port's DNAT) stays tracked.
func Build(s Spec) (Ruleset, error) {
	if err := s.Validate(); err != nil {
		return Ruleset{}, err
	}
	t := &nftables.Table{Name: Table, Family: nftables.TableFamilyINet}
	policy := nftables.ChainPolicyAccept
	fwd := &nftables.Chain{
		Name: ForwardChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: Priority, Policy: &policy,
	}
	ctr := &nftables.Chain{Name: ContainersChain, Table: t}
	rs := Ruleset{
		Table:    t,
		Counter:  &nftables.NamedObj{Table: t, Name: DropCounter, Type: nftables.ObjTypeCounter, Obj: &expr.Counter{}},
		Chains:   []*nftables.Chain{fwd, ctr},
		Elements: map[string][]nftables.SetElement{},
	}
	add := func(ch *nftables.Chain, comment string, e ...expr.Any) {
		rs.Rules = append(rs.Rules, &nftables.Rule{
			Table: t, Chain: ch, Exprs: e,
			UserData: userdata.AppendString(nil, userdata.TypeComment, comment),
		})
	}
	drop := []expr.Any{
		&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: DropCounter},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	jump := func(chain string) *expr.Verdict { return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain} }

	// The underlay first: with direct members, half the packets of the
	// host come in there (the other half from the bridge), and each
	// comparison that fails is evaluated for nothing.
	if s.Underlay != "" {
		add(fwd, "drover: direct members, from the underlay", append(matchIif(s.Underlay), jump(UnderlayChain))...)
	}
	if s.Bridge != "" {
		add(fwd, "drover: the containers", append(matchIif(s.Bridge), accept)...)
	}
	add(fwd, "drover: the tunnel", append(matchIif(s.TUN), accept)...)

	pfx := s.prefixes()
	for _, p := range pfx {
		add(fwd, "drover: to containers "+p.String(), append(matchAddr(p, false), jump(ContainersChain))...)
	}
	add(ctr, "drover: host port (dnat)", append(matchCt(expr.CtKeySTATUS, ctStatusDstNAT), accept)...)
	if s.Underlay != "" {
		rs.Chains = append(rs.Chains, &nftables.Chain{Name: UnderlayChain, Table: t})
		if s.NoTrack {
			d4, d6 := dstSets(t)
			rs.Sets = append(rs.Sets, d4, d6)
			raw := &nftables.Chain{
				Name: RawChain, Table: t, Type: nftables.ChainTypeFilter,
				Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw, Policy: &policy,
			}
			rawUl := &nftables.Chain{Name: RawUnderlayChain, Table: t}
			rs.Chains = append(rs.Chains, raw, rawUl)
			add(raw, "drover: no conntrack for direct members, from the underlay",
				append(matchIif(s.Underlay), jump(RawUnderlayChain))...)
			notrack := &expr.Notrack{}
			if s.Bridge != "" {
				rawBr := &nftables.Chain{Name: RawBridgeChain, Table: t}
				rs.Chains = append(rs.Chains, rawBr)
				add(raw, "drover: no conntrack for direct members, from the containers",
					append(matchIif(s.Bridge), jump(RawBridgeChain))...)
				add(rawBr, "drover: no conntrack from the containers to a direct member's",
					append(matchDst(d4, false), notrack)...)
				add(rawBr, "drover: no conntrack from the containers to a direct member's (IPv6)",
					append(matchDst(d6, true), notrack)...)
			}
			// One rule per family, whatever the number of protected
			// prefixes: every packet from the underlay runs it.
			p4, p6 := addrSets(t, Protected4, idProt4, Protected6, idProt6)
			rs.Maps = append(rs.Maps, p4, p6)
			var v4p, v6p []netip.Prefix
			for _, p := range pfx {
				if p.Addr().Is6() {
					v6p = append(v6p, p)
				} else {
					v4p = append(v4p, p)
				}
			}
			rs.Elements[Protected4], rs.Elements[Protected6] = dstElements(v4p), dstElements(v6p)
			add(rawUl, "drover: no conntrack for a direct member's containers",
				append(matchFamily(false), append(lookupAddr(d4, false, true), append(lookupAddr(p4, false, false), notrack)...)...)...)
			add(rawUl, "drover: no conntrack for a direct member's containers (IPv6)",
				append(matchFamily(true), append(lookupAddr(d6, true, true), append(lookupAddr(p6, true, false), notrack)...)...)...)
		}
	}
	for _, p := range pfx {
		add(ctr, "drover: forged source "+p.String(), append(matchAddr(p, true), drop...)...)
	}
	for _, p := range s.AllowFrom {
		p = p.Masked()
		add(ctr, "drover: allowed source "+p.String()+" (firewall.allow_from)", append(matchAddr(p, true), accept)...)
	}
	add(ctr, "drover: replies", append(matchCt(expr.CtKeySTATE, ctStateEstablished|ctStateRelated), accept)...)
	add(ctr, "drover: everything else to containers", drop...)
	return rs, nil
}

// matchIif is `iifname "name"`: by name, not index, as the bridge may
// not exist yet (the CNI plugin creates it with the first container) and
// the TUN may be recreated.
func matchIif(name string) []expr.Any {
	b := make([]byte, ifnameLen)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b},
	}
}

// matchDst matches packets of a family (v6) whose destination address
// is in set (an interval set of addresses).
func matchDst(set *nftables.Set, v6 bool) []expr.Any {
	return append(matchFamily(v6), lookupAddr(set, v6, false)...)
}

// matchFamily is `meta nfproto ipv4` (or ipv6).
func matchFamily(v6 bool) []expr.Any {
	proto := byte(unix.NFPROTO_IPV4)
	if v6 {
		proto = unix.NFPROTO_IPV6
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// lookupAddr looks the source (src) or destination address up in set;
// the family must have been matched before.
func lookupAddr(set *nftables.Set, v6, src bool) []expr.Any {
	off, n := addrOffset(v6, src), uint32(4)
	if v6 {
		n = 16
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
	}
}

// addrOffset is where the source (src) or destination address starts in
// the network header: RFC 791 saddr at 12, daddr at 16; RFC 8200 saddr at
// 8, daddr at 24.
func addrOffset(v6, src bool) uint32 {
	switch {
	case v6 && src:
		return 8
	case v6:
		return 24
	case src:
		return 12
	}
	return 16
}

// matchAddr matches packets of p's family whose source (src) or
// destination address lies in p.
func matchAddr(p netip.Prefix, src bool) []expr.Any {
	v6 := p.Addr().Is6()
	off := addrOffset(v6, src)
	e := matchFamily(v6)
	if p.Bits() == 0 {
		return e // the whole family
	}
	n := uint32(p.Addr().BitLen() / 8)
	mask := make([]byte, n)
	for i := range p.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return append(e,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()},
	)
}

// matchCt matches packets whose conntrack key (state or status) has any of
// bits set.
func matchCt(key expr.CtKey, bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: key},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}
