package firewall

import (
	"errors"
	"fmt"
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
	if len(s.Protected) == 0 {
		errs = append(errs, errors.New("firewall: no protected prefix"))
	}
	for _, p := range s.Protected {
		if !p.IsValid() {
			errs = append(errs, fmt.Errorf("firewall: protected prefix %v is not valid", p))
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
	Rules  []*nftables.Rule
}

// Build returns the filter for s, without touching the kernel:
//
//	table inet drover_filter {
//	  counter forward_drops {}
//	  chain forward {
//	    type filter hook forward priority filter; policy accept;
//	    ip daddr 10.42.0.0/16 jump to_containers        # one rule per protected prefix
//	  }
//	  chain to_containers {
//	    iifname "drover0" accept                        # out of the tunnel
//	    iifname "drover-br0" accept                     # from the containers
//	    ct status dnat accept                           # a host port (portmap)
//	    ip saddr 10.42.0.0/16 counter name forward_drops drop   # a container source from elsewhere
//	    ct state established,related accept             # replies (host NAT)
//	    counter name forward_drops drop
//	  }
//	}
//
// The source rule comes before the conntrack accept: an address of the
// cluster never arrives from outside the TUN and the bridge, so such a
// packet is forged, and without the rule one that hits the tuple of a live
// flow (conntrack does not look at interfaces) would pass as established.
// DNAT comes before it, as a mapped host port is open to every source.
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
		Table:   t,
		Counter: &nftables.NamedObj{Table: t, Name: DropCounter, Type: nftables.ObjTypeCounter, Obj: &expr.Counter{}},
		Chains:  []*nftables.Chain{fwd, ctr},
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

	pfx := s.prefixes()
	for _, p := range pfx {
		add(fwd, "drover: to containers "+p.String(),
			append(matchAddr(p, false), &expr.Verdict{Kind: expr.VerdictJump, Chain: ContainersChain})...)
	}
	add(ctr, "drover: out of the tunnel", append(matchIfname(s.TUN), accept)...)
	if s.Bridge != "" {
		add(ctr, "drover: from the containers", append(matchIfname(s.Bridge), accept)...)
	}
	add(ctr, "drover: host port (dnat)", append(matchCt(expr.CtKeySTATUS, ctStatusDstNAT), accept)...)
	for _, p := range pfx {
		add(ctr, "drover: forged source "+p.String(), append(matchAddr(p, true), drop...)...)
	}
	add(ctr, "drover: replies", append(matchCt(expr.CtKeySTATE, ctStateEstablished|ctStateRelated), accept)...)
	add(ctr, "drover: everything else to containers", drop...)
	return rs, nil
}

// matchAddr matches packets of p's family whose source (src) or
// destination address lies in p.
func matchAddr(p netip.Prefix, src bool) []expr.Any {
	proto, off := byte(unix.NFPROTO_IPV4), uint32(16) // RFC 791: daddr at 16, saddr at 12
	if src {
		off = 12
	}
	if p.Addr().Is6() {
		proto, off = unix.NFPROTO_IPV6, 24 // RFC 8200: daddr at 24, saddr at 8
		if src {
			off = 8
		}
	}
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
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

// matchIfname matches packets that arrived on the named interface. By
// name, not index: the bridge may not exist yet (the CNI plugin creates it
// with the first container) and the TUN may be recreated.
func matchIfname(name string) []expr.Any {
	b := make([]byte, ifnameLen)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b},
	}
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
