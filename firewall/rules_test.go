package firewall

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// packet is what the filter looks at.
type packet struct {
	iif      string
	src, dst string
	ctState  uint32
	ctStatus uint32
	// mac is the source MAC (arrived on an Ethernet device); empty: the
	// device has no link-layer header (a TUN).
	mac string
}

func (p packet) header(t *testing.T) (nfproto byte, hdr []byte) {
	t.Helper()
	s, d := netip.MustParseAddr(p.src), netip.MustParseAddr(p.dst)
	if s.Is4() != d.Is4() {
		t.Fatalf("packet %+v mixes families", p)
	}
	if s.Is4() {
		hdr = make([]byte, 20)
		hdr[0] = 0x45
		copy(hdr[12:], s.AsSlice())
		copy(hdr[16:], d.AsSlice())
		return unix.NFPROTO_IPV4, hdr
	}
	hdr = make([]byte, 40)
	hdr[0] = 0x60
	copy(hdr[8:], s.AsSlice())
	copy(hdr[24:], d.AsSlice())
	return unix.NFPROTO_IPV6, hdr
}

// eval runs p through rs as the kernel would, for the expressions Build
// uses (anything else fails the test): the forward chain, jumps, the
// policy. It returns the verdict and how many times the drop counter was
// referenced.
func eval(t *testing.T, rs Ruleset, p packet, direct ...Source) (verdict string, counted int) {
	t.Helper()
	proto, hdr := p.header(t)
	d, err := BuildDirect(rs.Table, direct, idDirectFirst)
	if err != nil {
		t.Fatal(err)
	}
	sets := map[string][]nftables.SetElement{}
	for i, s := range d.Sets {
		sets[s.Name] = d.Elements[i]
	}
	var mac []byte
	if p.mac != "" {
		hw, err := net.ParseMAC(p.mac)
		if err != nil {
			t.Fatal(err)
		}
		mac = hw
	}
	// Registers as the kernel numbers them: NFT_REG_1..4 (16 bytes each)
	// are NFT_REG32_00.. (8..) four at a time.
	reg32 := func(r uint32) uint32 {
		if r >= 1 && r <= 4 {
			return reg32First + (r-1)*4
		}
		return r
	}
	chains := map[string][]*nftables.Rule{}
	for _, r := range append(slices.Clone(rs.Rules), d.Rules...) {
		chains[r.Chain.Name] = append(chains[r.Chain.Name], r)
	}
	var run func(chain string, depth int) (expr.VerdictKind, bool)
	run = func(chain string, depth int) (expr.VerdictKind, bool) {
		if depth > 4 {
			t.Fatalf("jump loop at %s", chain)
		}
	rules:
		for _, r := range chains[chain] {
			regs := map[uint32][]byte{}
			reg := regView{regs, reg32}
			for _, e := range r.Exprs {
				switch e := e.(type) {
				case *expr.Meta:
					switch e.Key {
					case expr.MetaKeyNFPROTO:
						reg.set(e.Register, []byte{proto})
					case expr.MetaKeyIIFNAME:
						b := make([]byte, unix.IFNAMSIZ)
						copy(b, p.iif)
						reg.set(e.Register, b)
					case expr.MetaKeyIIFTYPE:
						typ := uint16(unix.ARPHRD_NONE)
						if mac != nil {
							typ = unix.ARPHRD_ETHER
						}
						reg.set(e.Register, binary.NativeEndian.AppendUint16(nil, typ))
					default:
						t.Fatalf("meta key %v not modelled", e.Key)
					}
				case *expr.Payload:
					switch {
					case e.Base == expr.PayloadBaseLLHeader && e.Offset == 6 && e.Len == 6:
						if mac == nil {
							continue rules // no link-layer header: the rule ends
						}
						reg.set(e.DestRegister, slices.Clone(mac))
					case e.Base != expr.PayloadBaseNetworkHeader || int(e.Offset+e.Len) > len(hdr):
						t.Fatalf("payload %+v outside the network header (%d bytes)", e, len(hdr))
					default:
						reg.set(e.DestRegister, slices.Clone(hdr[e.Offset:e.Offset+e.Len]))
					}
				case *expr.Lookup:
					if e.IsDestRegSet {
						// A verdict map on the input interface.
						var m *nftables.Set
						for _, s := range rs.Maps {
							if s.Name == e.SetName && s.ID == e.SetID {
								m = s
							}
						}
						if m == nil || !m.IsMap || m.KeyType != nftables.TypeIFName || e.DestRegister != 0 {
							t.Fatalf("lookup %+v: no such verdict map", e)
						}
						key := reg.get(e.SourceRegister)
						var v *expr.Verdict
						for _, el := range rs.Elements[m.Name] {
							if bytes.Equal(el.Key, key) {
								v = el.VerdictData
							}
						}
						if v == nil {
							continue rules // no element: the rule ends
						}
						if v.Kind == expr.VerdictJump {
							if got, ok := run(v.Chain, depth+1); ok {
								return got, true
							}
							continue rules
						}
						return v.Kind, true
					}
					var set *nftables.Set
					for _, s := range d.Sets {
						if s.Name == e.SetName && s.ID == e.SetID {
							set = s
						}
					}
					if set == nil || !set.Concatenation || set.Interval {
						t.Fatalf("lookup %+v: no such direct set (exact keys, concatenated)", e)
					}
					// The key's fields: the address, then the MAC padded
					// to 8 bytes.
					alen := uint32(4)
					if strings.HasPrefix(set.Name, DirectSet6+"_") {
						alen = 16
					}
					a, m := reg.get(e.SourceRegister), regs[reg32(e.SourceRegister)+alen/4]
					if len(a) != int(alen) || len(m) != 6 {
						t.Fatalf("lookup %+v: key fields of %d and %d bytes", e, len(a), len(m))
					}
					key := append(append(slices.Clone(a), m...), 0, 0)
					found := false
					for _, el := range sets[set.Name] {
						if bytes.Equal(el.Key, key) {
							found = true
						}
					}
					if found == e.Invert {
						continue rules
					}
				case *expr.Ct:
					var v uint32
					switch e.Key {
					case expr.CtKeySTATE:
						v = p.ctState
					case expr.CtKeySTATUS:
						v = p.ctStatus
					default:
						t.Fatalf("ct key %v not modelled", e.Key)
					}
					reg.set(e.Register, binary.NativeEndian.AppendUint32(nil, v))
				case *expr.Bitwise:
					in := reg.get(e.SourceRegister)
					if len(in) != int(e.Len) || len(e.Mask) != int(e.Len) || len(e.Xor) != int(e.Len) {
						t.Fatalf("bitwise %+v on %d bytes", e, len(in))
					}
					out := make([]byte, e.Len)
					for i := range out {
						out[i] = in[i]&e.Mask[i] ^ e.Xor[i]
					}
					reg.set(e.DestRegister, out)
				case *expr.Cmp:
					v := reg.get(e.Register)
					if len(v) != len(e.Data) {
						t.Fatalf("cmp of %d bytes against %d", len(v), len(e.Data))
					}
					eq := bytes.Equal(v, e.Data)
					if (e.Op == expr.CmpOpEq) != eq {
						continue rules
					}
					if e.Op != expr.CmpOpEq && e.Op != expr.CmpOpNeq {
						t.Fatalf("cmp op %v not modelled", e.Op)
					}
				case *expr.Objref:
					if e.Type != int(nftables.ObjTypeCounter) || e.Name != rs.Counter.Name {
						t.Fatalf("objref %+v: not the drop counter", e)
					}
					counted++
				case *expr.Verdict:
					if e.Kind == expr.VerdictJump {
						if v, ok := run(e.Chain, depth+1); ok {
							return v, true
						}
						continue rules
					}
					return e.Kind, true
				default:
					t.Fatalf("expression %T not modelled", e)
				}
			}
		}
		return 0, false
	}
	v, ok := run(ForwardChain, 0)
	switch {
	case !ok, v == expr.VerdictAccept:
		return "accept", counted // policy accept
	case v == expr.VerdictDrop:
		return "drop", counted
	}
	t.Fatalf("verdict %v", v)
	return "", 0
}

// regView reads and writes registers by either numbering.
type regView struct {
	m     map[uint32][]byte
	reg32 func(uint32) uint32
}

func (r regView) set(n uint32, b []byte) { r.m[r.reg32(n)] = b }
func (r regView) get(n uint32) []byte    { return r.m[r.reg32(n)] }

const (
	est = expr.CtStateBitESTABLISHED
	rel = expr.CtStateBitRELATED
	nw  = expr.CtStateBitNEW
)

func TestBuildVerdicts(t *testing.T) {
	spec := Spec{
		Protected: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("fd42::/32")},
		TUN:       "drover0",
		Bridge:    "drover-br0",
	}
	noBridge := spec
	noBridge.Bridge = ""
	tests := []struct {
		name string
		spec Spec
		p    packet
		want string
	}{
		{"underlay to a container", spec, packet{iif: "eth0", src: "192.0.2.200", dst: "10.42.1.2", ctState: nw}, "drop"},
		{"underlay to a remote block (into the TUN)", spec, packet{iif: "eth0", src: "192.0.2.200", dst: "10.42.2.2", ctState: nw}, "drop"},
		{"underlay, forged source of another block", spec, packet{iif: "eth0", src: "10.42.2.9", dst: "10.42.1.2", ctState: nw}, "drop"},
		{"forged source matching a live flow", spec, packet{iif: "eth0", src: "10.42.2.9", dst: "10.42.1.2", ctState: est}, "drop"},
		{"invalid state", spec, packet{iif: "eth0", src: "192.0.2.200", dst: "10.42.1.2", ctState: expr.CtStateBitINVALID}, "drop"},
		{"interface name is not a prefix match", spec, packet{iif: "drover01", src: "192.0.2.200", dst: "10.42.1.2", ctState: nw}, "drop"},
		{"out of the tunnel", spec, packet{iif: "drover0", src: "10.42.2.2", dst: "10.42.1.2", ctState: nw}, "accept"},
		{"container to a remote container", spec, packet{iif: "drover-br0", src: "10.42.1.2", dst: "10.42.2.2", ctState: nw}, "accept"},
		{"reply to host NAT", spec, packet{iif: "eth0", src: "198.51.100.7", dst: "10.42.1.2", ctState: est}, "accept"},
		{"ICMP error for a container's flow", spec, packet{iif: "eth0", src: "192.0.2.254", dst: "10.42.1.2", ctState: rel}, "accept"},
		{"host port (portmap DNAT)", spec, packet{iif: "eth0", src: "192.0.2.200", dst: "10.42.1.2", ctState: nw, ctStatus: ctStatusDstNAT}, "accept"},
		{"host port from a cluster address (no host NAT on the client)", spec, packet{iif: "eth0", src: "10.42.2.9", dst: "10.42.1.2", ctState: nw, ctStatus: ctStatusDstNAT}, "accept"},
		{"not for containers", spec, packet{iif: "eth0", src: "192.0.2.200", dst: "198.51.100.7", ctState: nw}, "accept"},
		{"outside the cluster CIDR", spec, packet{iif: "eth0", src: "192.0.2.200", dst: "10.43.1.2", ctState: nw}, "accept"},
		{"IPv6 underlay to a container", spec, packet{iif: "eth0", src: "2001:db8::200", dst: "fd42:0:1::2", ctState: nw}, "drop"},
		{"IPv6 forged source", spec, packet{iif: "eth0", src: "fd42:0:2::9", dst: "fd42:0:1::2", ctState: est}, "drop"},
		{"IPv6 out of the tunnel", spec, packet{iif: "drover0", src: "fd42:0:2::2", dst: "fd42:0:1::2", ctState: nw}, "accept"},
		{"IPv6 reply", spec, packet{iif: "eth0", src: "2001:db8::200", dst: "fd42:0:1::2", ctState: est}, "accept"},
		{"IPv6 outside", spec, packet{iif: "eth0", src: "2001:db8::200", dst: "fd43::2", ctState: nw}, "accept"},
		{"no bridge: from the bridge", noBridge, packet{iif: "drover-br0", src: "10.42.1.2", dst: "10.42.2.2", ctState: nw}, "drop"},
		{"no bridge: out of the tunnel", noBridge, packet{iif: "drover0", src: "10.42.2.2", dst: "10.42.1.2", ctState: nw}, "accept"},
		{"no underlay: a direct member's container", spec, packet{iif: "eth0", src: "10.42.2.9", dst: "10.42.1.2", ctState: nw, mac: macB}, "drop"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := Build(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			got, counted := eval(t, rs, tc.p)
			if got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
			if want := map[string]int{"drop": 1, "accept": 0}[tc.want]; counted != want {
				t.Errorf("drop counter referenced %d times, want %d", counted, want)
			}
		})
	}
}

// TestBuildAllowFrom: allowed sources open connections to containers from
// any interface; a cluster source is still forged.
func TestBuildAllowFrom(t *testing.T) {
	spec := Spec{
		Protected: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}, TUN: "drover0",
		AllowFrom: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("10.42.0.0/8")},
	}
	rs, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		p    packet
		want string
	}{
		{packet{iif: "eth0", src: "198.51.100.7", dst: "10.42.1.2", ctState: nw}, "accept"},
		{packet{iif: "eth0", src: "198.51.101.7", dst: "10.42.1.2", ctState: nw}, "drop"},
		{packet{iif: "eth0", src: "10.42.2.9", dst: "10.42.1.2", ctState: nw}, "drop"},
		{packet{iif: "eth0", src: "10.43.2.9", dst: "10.42.1.2", ctState: nw}, "accept"},
	} {
		if got, _ := eval(t, rs, tc.p); got != tc.want {
			t.Errorf("%s → %s: got %s, want %s", tc.p.src, tc.p.dst, got, tc.want)
		}
	}
}

// MACs of direct members B and C, and of an underlay host that is none.
const (
	macB     = "02:00:00:00:00:0b"
	macC     = "02:00:00:00:00:0c"
	macOther = "02:00:00:00:00:99"
)

// TestDirectVerdicts: with an underlay interface, a member's prefix is
// accepted there from its MAC only; every other rule stands.
func TestDirectVerdicts(t *testing.T) {
	spec := Spec{
		Protected: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("fd42::/32")},
		TUN:       "drover0", Bridge: "drover-br0", Underlay: "eth0",
	}
	mac := func(s string) [6]byte { hw, _ := net.ParseMAC(s); return [6]byte(hw) }
	direct := []Source{
		{netip.MustParsePrefix("10.42.2.0/24"), mac(macB)},
		{netip.MustParsePrefix("10.42.3.0/24"), mac(macC)},
		{netip.MustParsePrefix("fd42:0:2::/48"), mac(macB)},
	}
	tests := []struct {
		name string
		p    packet
		want string
	}{
		{"B's container from B", packet{iif: "eth0", src: "10.42.2.9", dst: "10.42.1.2", ctState: nw, mac: macB}, "accept"},
		{"B's block, first and last address", packet{iif: "eth0", src: "10.42.2.255", dst: "10.42.1.2", ctState: nw, mac: macB}, "accept"},
		{"C's container from C", packet{iif: "eth0", src: "10.42.3.1", dst: "10.42.1.2", ctState: nw, mac: macC}, "accept"},
		{"C's block from B's MAC", packet{iif: "eth0", src: "10.42.3.1", dst: "10.42.1.2", ctState: nw, mac: macB}, "drop"},
		{"B's block from another MAC", packet{iif: "eth0", src: "10.42.2.9", dst: "10.42.1.2", ctState: nw, mac: macOther}, "drop"},
		{"B's block, established, from another MAC", packet{iif: "eth0", src: "10.42.2.9", dst: "10.42.1.2", ctState: est, mac: macOther}, "drop"},
		{"a block nobody reaches directly", packet{iif: "eth0", src: "10.42.4.9", dst: "10.42.1.2", ctState: nw, mac: macB}, "drop"},
		{"B's MAC with an underlay source", packet{iif: "eth0", src: "192.0.2.2", dst: "10.42.1.2", ctState: nw, mac: macB}, "drop"},
		{"B's block on another interface", packet{iif: "eth1", src: "10.42.2.9", dst: "10.42.1.2", ctState: nw, mac: macB}, "drop"},
		{"B's block on the underlay without a link-layer header", packet{iif: "eth0", src: "10.42.2.9", dst: "10.42.1.2", ctState: nw}, "drop"},
		{"IPv6: B's block from B", packet{iif: "eth0", src: "fd42:0:2::9", dst: "fd42:0:1::2", ctState: nw, mac: macB}, "accept"},
		{"IPv6: B's block from C", packet{iif: "eth0", src: "fd42:0:2::9", dst: "fd42:0:1::2", ctState: nw, mac: macC}, "drop"},
		{"out of the tunnel still", packet{iif: "drover0", src: "10.42.4.2", dst: "10.42.1.2", ctState: nw}, "accept"},
		{"replies still", packet{iif: "eth0", src: "198.51.100.7", dst: "10.42.1.2", ctState: est, mac: macOther}, "accept"},
	}
	rs, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := eval(t, rs, tc.p, direct...); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
	// With no direct sources (none admitted yet), B's container is dropped.
	if got, _ := eval(t, rs, tests[0].p); got != "drop" {
		t.Errorf("empty sets: got %s, want drop", got)
	}
}

// BuildDirect: one set per family and prefix length, IPv4 first and the
// most used length first, the key the masked address and the MAC padded
// to 8 bytes; duplicates once; IPv4-mapped prefixes as IPv4.
func TestBuildDirect(t *testing.T) {
	mac := [6]byte{2, 0, 0, 0, 0, 0xb}
	var srcs []Source
	for _, p := range []string{"fd42:0:2::/48", "10.42.9.1/32", "10.42.2.7/23", "::ffff:10.42.4.0/119", "10.42.4.0/23", "10.42.6.0/24"} {
		srcs = append(srcs, Source{netip.MustParsePrefix(p), mac})
	}
	tbl := &nftables.Table{Name: Table, Family: nftables.TableFamilyINet}
	d, err := BuildDirect(tbl, srcs, 40)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i, s := range d.Sets {
		var keys []string
		for _, e := range d.Elements[i] {
			keys = append(keys, fmt.Sprintf("%x", e.Key))
		}
		got = append(got, fmt.Sprintf("%s#%d{%s}", s.Name, s.ID, strings.Join(keys, " ")))
		if s.Interval || !s.Concatenation {
			t.Errorf("set %s: interval %v, concatenation %v; want exact keys, concatenated", s.Name, s.Interval, s.Concatenation)
		}
	}
	want := []string{
		"direct4_23#40{0a2a020002000000000b0000 0a2a040002000000000b0000}",
		"direct4_24#41{0a2a060002000000000b0000}",
		"direct4_32#42{0a2a090102000000000b0000}",
		"direct6_48#43{fd42000000020000000000000000000002000000000b0000}",
	}
	if !slices.Equal(got, want) {
		t.Errorf("sets:\n got %q\nwant %q", got, want)
	}
	if len(d.Rules) != len(d.Sets) {
		t.Fatalf("got %d rules for %d sets", len(d.Rules), len(d.Sets))
	}
	for i, r := range d.Rules {
		var bits int
		for _, e := range r.Exprs {
			if b, ok := e.(*expr.Bitwise); ok {
				for _, m := range b.Mask {
					bits += popcount(m)
				}
			}
		}
		if want := []int{23, 24, 0, 48}[i]; bits != want || r.Chain.Name != UnderlayChain {
			t.Errorf("rule %d: chain %s, mask of %d bits; want %s, %d (none for a full length)", i, r.Chain.Name, bits, UnderlayChain, want)
		}
	}
	for _, p := range []netip.Prefix{{}, netip.MustParsePrefix("::ffff:0:0/80")} {
		if _, err := BuildDirect(tbl, []Source{{Prefix: p}}, 40); err == nil {
			t.Errorf("prefix %v: got nil error, want one", p)
		}
	}
}

func popcount(b byte) (n int) {
	for ; b != 0; b &= b - 1 {
		n++
	}
	return n
}

func TestBuildShape(t *testing.T) {
	rs, err := Build(Spec{Protected: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}, TUN: "drover0", Bridge: "br0"})
	if err != nil {
		t.Fatal(err)
	}
	if rs.Table.Name != "drover_filter" || rs.Table.Family != nftables.TableFamilyINet {
		t.Errorf("table %+v, want inet drover_filter", rs.Table)
	}
	fwd := rs.Chains[0]
	if fwd.Hooknum == nil || *fwd.Hooknum != *nftables.ChainHookForward || *fwd.Priority != *nftables.ChainPriorityFilter ||
		fwd.Type != nftables.ChainTypeFilter || *fwd.Policy != nftables.ChainPolicyAccept {
		t.Errorf("forward chain %+v: want type filter hook forward priority filter policy accept", fwd)
	}
	if rs.Chains[1].Hooknum != nil {
		t.Errorf("%s is a base chain, want a regular one", rs.Chains[1].Name)
	}
	// The bridge and the TUN, 1 jump; dnat, 1 source, replies, drop.
	if got := len(rs.Rules); got != 7 {
		t.Errorf("got %d rules, want 7", got)
	}
	if len(rs.Maps) != 0 {
		t.Errorf("maps %v, want none without NoTrack", rs.Maps)
	}
	for _, r := range rs.Rules {
		if r.Table != rs.Table || len(r.UserData) == 0 {
			t.Errorf("rule %+v: wrong table or no comment", r)
		}
	}
}

func TestSpecPrefixes(t *testing.T) {
	tests := []struct {
		in   []string
		want []string
	}{
		{[]string{"10.42.0.0/16"}, []string{"10.42.0.0/16"}},
		{[]string{"10.42.1.0/24", "10.42.0.0/16", "10.42.2.0/24"}, []string{"10.42.0.0/16"}},
		{[]string{"10.42.1.7/24", "10.42.1.0/24"}, []string{"10.42.1.0/24"}},
		{[]string{"10.42.2.0/24", "10.42.1.0/24"}, []string{"10.42.1.0/24", "10.42.2.0/24"}},
		{[]string{"::ffff:10.43.0.0/112", "fd42::/48", "10.42.0.0/16"}, []string{"10.42.0.0/16", "10.43.0.0/16", "fd42::/48"}},
	}
	for _, tc := range tests {
		var s Spec
		for _, p := range tc.in {
			s.Protected = append(s.Protected, netip.MustParsePrefix(p))
		}
		var got []string
		for _, p := range s.prefixes() {
			got = append(got, p.String())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%v: got %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestSpecValidate(t *testing.T) {
	ok := []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}
	tests := []struct {
		spec Spec
		want string
	}{
		{Spec{Protected: ok, TUN: "drover0"}, ""},
		{Spec{Protected: ok}, "TUN"},
		{Spec{Protected: ok, TUN: "a-name-too-long-0"}, "TUN"},
		{Spec{Protected: ok, TUN: "drover0", Bridge: "b/r"}, "bridge"},
		{Spec{TUN: "drover0"}, "no protected prefix"},
		{Spec{Protected: []netip.Prefix{{}}, TUN: "drover0"}, "not valid"},
	}
	for _, tc := range tests {
		err := tc.spec.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: got %v, want an error containing %q", tc.spec, err, tc.want)
		}
		if _, berr := Build(tc.spec); (berr == nil) != (err == nil) {
			t.Errorf("%+v: Build and Validate disagree: %v, %v", tc.spec, berr, err)
		}
	}
}

// fakeConn records the calls the filter makes.
type fakeConn struct {
	calls    []string
	flushErr error
	obj      nftables.Obj
}

func (f *fakeConn) AddTable(t *nftables.Table) *nftables.Table {
	f.calls = append(f.calls, "add table "+t.Name)
	return t
}
func (f *fakeConn) DelTable(t *nftables.Table) { f.calls = append(f.calls, "del table "+t.Name) }
func (f *fakeConn) AddObj(o nftables.Obj) nftables.Obj {
	f.calls = append(f.calls, "add counter")
	return o
}
func (f *fakeConn) AddChain(c *nftables.Chain) *nftables.Chain {
	f.calls = append(f.calls, "add chain "+c.Name)
	return c
}
func (f *fakeConn) AddRule(r *nftables.Rule) *nftables.Rule {
	f.calls = append(f.calls, "add rule "+r.Chain.Name)
	return r
}
func (f *fakeConn) AddSet(s *nftables.Set, _ []nftables.SetElement) error {
	f.calls = append(f.calls, "add set "+s.Name)
	return nil
}
func (f *fakeConn) FlushSet(s *nftables.Set) { f.calls = append(f.calls, "flush set "+s.Name) }
func (f *fakeConn) DelSet(s *nftables.Set)   { f.calls = append(f.calls, "del set "+s.Name) }
func (f *fakeConn) FlushChain(c *nftables.Chain) {
	f.calls = append(f.calls, "flush chain "+c.Name)
}
func (f *fakeConn) SetAddElements(s *nftables.Set, es []nftables.SetElement) error {
	f.calls = append(f.calls, fmt.Sprintf("add %d elements to %s", len(es), s.Name))
	return nil
}
func (f *fakeConn) Flush() error {
	f.calls = append(f.calls, "flush")
	return f.flushErr
}
func (f *fakeConn) GetObject(nftables.Obj) (nftables.Obj, error) { return f.obj, nil }

// Install replaces the table in one transaction: add (so the delete never
// fails), delete, add again with everything, one flush.
func TestInstallOneTransaction(t *testing.T) {
	c := &fakeConn{}
	spec := Spec{Protected: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}, TUN: "drover0", Bridge: "br0"}
	f, err := install(c, spec)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"add table drover_filter", "del table drover_filter", "add table drover_filter", "add counter",
		"add chain forward", "add chain to_containers", "add rule forward", "add rule forward", "add rule forward",
		"add rule to_containers", "add rule to_containers", "add rule to_containers", "add rule to_containers",
		"flush"}
	if !slices.Equal(c.calls, want) {
		t.Errorf("install calls:\n got %q\nwant %q", c.calls, want)
	}
	c.calls = nil
	if err := f.Remove(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"add table drover_filter", "del table drover_filter", "flush"}; !slices.Equal(c.calls, want) {
		t.Errorf("remove calls: got %q, want %q", c.calls, want)
	}

	c.obj = &nftables.NamedObj{Obj: &expr.Counter{Packets: 3, Bytes: 252}}
	if p, b, err := f.Drops(); err != nil || p != 3 || b != 252 {
		t.Errorf("Drops: got %d, %d, %v; want 3, 252, nil", p, b, err)
	}
	c.obj = &nftables.NamedObj{Obj: &expr.Quota{}}
	if _, _, err := f.Drops(); err == nil {
		t.Error("Drops of a non-counter: got nil error")
	}

	bad := &fakeConn{flushErr: errors.New("EPERM")}
	if f, err := install(bad, spec); err == nil || f != nil {
		t.Errorf("failed flush: got %v, %v; want an error", f, err)
	}
	if _, err := install(&fakeConn{}, Spec{}); err == nil {
		t.Error("invalid spec: got nil error")
	}
}

// SetDirect replaces the direct sets and rules in one transaction: sets
// of lengths still used are refilled, new ones added, unused ones
// removed after the rules that used them; a bad prefix changes nothing.
func TestSetDirectOneTransaction(t *testing.T) {
	c := &fakeConn{}
	spec := Spec{Protected: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}, TUN: "drover0", Underlay: "eth0", NoTrack: true}
	f, err := install(c, spec)
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(c.calls, func(s string) bool { return strings.HasPrefix(s, "add set direct4") }) {
		t.Errorf("install calls %q: want no direct set before SetDirect", c.calls)
	}
	steps := []struct {
		srcs []string
		want []string
	}{
		{[]string{"10.42.2.0/24", "::ffff:10.42.3.0/120", "fd42:0:2::/48"}, []string{
			"flush chain from_underlay", "add set direct4_24", "add set direct6_48",
			"add rule from_underlay", "add rule from_underlay",
			"flush set direct_dst4", "add 2 elements to direct_dst4", "flush set direct_dst6", "add 2 elements to direct_dst6", "flush"}},
		{[]string{"10.42.2.0/24", "10.42.9.1/32"}, []string{
			"flush chain from_underlay", "flush set direct4_24", "add 1 elements to direct4_24", "add set direct4_32", "del set direct6_48",
			"add rule from_underlay", "add rule from_underlay",
			"flush set direct_dst4", "add 4 elements to direct_dst4", "flush set direct_dst6", "flush"}},
		{nil, []string{"flush chain from_underlay", "del set direct4_24", "del set direct4_32",
			"flush set direct_dst4", "flush set direct_dst6", "flush"}},
	}
	for i, st := range steps {
		c.calls = nil
		var srcs []Source
		for _, p := range st.srcs {
			srcs = append(srcs, Source{Prefix: netip.MustParsePrefix(p)})
		}
		if err := f.SetDirect(srcs); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(c.calls, st.want) {
			t.Errorf("step %d, SetDirect calls:\n got %q\nwant %q", i, c.calls, st.want)
		}
	}
	c.calls = nil
	if err := f.SetDirect([]Source{{}}); err == nil || len(c.calls) != 0 {
		t.Errorf("invalid prefix: got %v after %q, want an error and no calls", err, c.calls)
	}
}

func TestDstElements(t *testing.T) {
	var ps []netip.Prefix
	for _, s := range []string{"10.42.3.0/24", "10.42.2.0/24", "10.42.9.0/24", "10.42.9.128/25", "255.255.255.0/24"} {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	var got []string
	for _, e := range dstElements(ps) {
		a, _ := netip.AddrFromSlice(e.Key)
		got = append(got, fmt.Sprintf("%s%s", a, map[bool]string{true: ")", false: "["}[e.IntervalEnd]))
	}
	want := []string{"10.42.2.0[", "10.42.4.0)", "10.42.9.0[", "10.42.10.0)", "255.255.255.0["}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v (adjacent and covered prefixes merged, no end past the family)", got, want)
	}
}
