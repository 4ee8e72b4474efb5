package enforce

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/drovernet/drover/policy"
)

// randomWorld builds pods in namespaces x, y, z on nodes n1, n2 with labels
// from a small vocabulary (so that selectors hit and miss) and policies
// with every kind of peer and port.
func randomWorld(r *rand.Rand, pods, pols int) *policy.World {
	nsNames := []string{"x", "y", "z"}
	vals := []string{"a", "b", "c"}
	randLabels := func() map[string]string {
		l := map[string]string{}
		for _, k := range []string{"app", "tier"} {
			if r.IntN(3) > 0 {
				l[k] = vals[r.IntN(len(vals))]
			}
		}
		return l
	}
	randSel := func() *policy.Selector {
		s := &policy.Selector{}
		switch r.IntN(4) {
		case 0:
		case 1:
			s.MatchLabels = map[string]string{"app": vals[r.IntN(3)]}
		case 2:
			s.MatchExpressions = []policy.Requirement{{Key: "tier", Operator: policy.In, Values: []string{vals[r.IntN(3)], vals[r.IntN(3)]}}}
		case 3:
			ops := []policy.Operator{policy.NotIn, policy.Exists, policy.DoesNotExist}
			op := ops[r.IntN(3)]
			req := policy.Requirement{Key: "app", Operator: op}
			if op == policy.NotIn {
				req.Values = []string{vals[r.IntN(3)]}
			}
			s.MatchExpressions = []policy.Requirement{req}
		}
		return s
	}
	randPorts := func() []policy.Port {
		var out []policy.Port
		for range r.IntN(3) {
			p := policy.Port{Protocol: []policy.Protocol{policy.TCP, policy.UDP, policy.SCTP}[r.IntN(3)]}
			switch r.IntN(4) {
			case 0:
			case 1:
				p.Port = &policy.PortRef{Num: int32(80 + r.IntN(3))}
			case 2:
				p.Port = &policy.PortRef{Num: int32(80 + r.IntN(2))}
				end := int32(81 + r.IntN(3))
				p.EndPort = &end
			case 3:
				p.Port = &policy.PortRef{Name: []string{"web", "dns"}[r.IntN(2)]}
			}
			out = append(out, p)
		}
		return out
	}
	randPeers := func() []policy.Peer {
		var out []policy.Peer
		for range r.IntN(3) {
			switch r.IntN(4) {
			case 0:
				out = append(out, policy.Peer{PodSelector: randSel()})
			case 1:
				out = append(out, policy.Peer{NamespaceSelector: randSel()})
			case 2:
				out = append(out, policy.Peer{PodSelector: randSel(), NamespaceSelector: &policy.Selector{MatchLabels: map[string]string{"team": vals[r.IntN(3)]}}})
			case 3:
				b := &policy.IPBlock{CIDR: fmt.Sprintf("10.0.0.%d/%d", r.IntN(4)*64, 26+r.IntN(3))}
				if r.IntN(2) == 0 {
					b.CIDR = "10.0.0.0/24"
					b.Except = []string{fmt.Sprintf("10.0.0.%d/28", r.IntN(16)*16), fmt.Sprintf("10.0.0.%d/30", r.IntN(64)*4)}
				}
				out = append(out, policy.Peer{IPBlock: b})
			}
		}
		return out
	}

	var ps []policy.Pod
	for i := range pods {
		p := policy.Pod{
			Namespace: nsNames[r.IntN(3)], Name: fmt.Sprintf("p%d", i), Labels: randLabels(),
			Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)})},
			Node:  []string{"n1", "n2"}[r.IntN(2)],
		}
		if r.IntN(2) == 0 {
			p.Ports = append(p.Ports, policy.ContainerPort{Name: "web", Port: uint16(80 + r.IntN(2)), Protocol: policy.TCP})
		}
		if r.IntN(2) == 0 {
			p.Ports = append(p.Ports, policy.ContainerPort{Name: "dns", Port: 81, Protocol: policy.UDP})
		}
		ps = append(ps, p)
	}
	var compiled []*policy.Policy
	for i := range pols {
		np := &policy.NetworkPolicy{Metadata: policy.Metadata{Name: fmt.Sprintf("np%d", i), Namespace: nsNames[r.IntN(3)]}}
		np.Spec.PodSelector = *randSel()
		switch r.IntN(3) {
		case 0:
			np.Spec.PolicyTypes = []policy.Direction{policy.Ingress}
		case 1:
			np.Spec.PolicyTypes = []policy.Direction{policy.Egress}
		case 2:
			np.Spec.PolicyTypes = []policy.Direction{policy.Ingress, policy.Egress}
		}
		for range r.IntN(3) {
			np.Spec.Ingress = append(np.Spec.Ingress, policy.IngressRule{From: randPeers(), Ports: randPorts()})
		}
		for range r.IntN(3) {
			np.Spec.Egress = append(np.Spec.Egress, policy.EgressRule{To: randPeers(), Ports: randPorts()})
		}
		c, err := policy.Compile(np)
		if err != nil {
			panic(err)
		}
		compiled = append(compiled, c)
	}
	nss := []policy.Namespace{
		{Name: "x", Labels: map[string]string{"team": "a"}},
		{Name: "y", Labels: map[string]string{"team": "b"}},
		{Name: "z", Labels: map[string]string{"team": "c"}},
	}
	return policy.NewWorld(compiled, nss, ps)
}

// TestCompileAgreesWithEvaluate is the differential test: for random
// worlds, what the sets admit at each local pod is what policy.Evaluate
// decides for that side, for pods, external addresses, every protocol and
// the ports around the ones policies name.
func TestCompileAgreesWithEvaluate(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	external := []netip.Addr{netip.MustParseAddr("10.0.0.200"), netip.MustParseAddr("10.0.0.33"), netip.MustParseAddr("192.0.2.1")}
	checked := 0
	for round := range 60 {
		w := randomWorld(r, 24, 1+r.IntN(8))
		var ids Idents
		rs := Compile(w, "n1", &ids)
		checkDisjoint(t, rs)
		var peers []policy.Endpoint
		for _, p := range w.Pods() {
			peers = append(peers, policy.Endpoint{Pod: p, Addr: p.Addrs[0]})
		}
		for _, a := range external {
			peers = append(peers, w.EndpointAt(a))
		}
		for _, self := range w.Pods() {
			if self.Node != "n1" {
				continue
			}
			me := policy.Endpoint{Pod: self, Addr: self.Addrs[0]}
			for _, peer := range peers {
				if peer.Pod == self {
					continue
				}
				for _, proto := range []policy.Protocol{policy.TCP, policy.UDP, policy.SCTP} {
					for _, port := range []uint16{79, 80, 81, 82, 83, 84} {
						out := w.Evaluate(me, peer, proto, port).Side[policy.DirEgress].Allowed
						if got := rs.Allows(policy.DirEgress, me.Addr, peer.Addr, proto.Number(), port); got != out {
							t.Fatalf("round %d: egress %v -> %v %d/%s: sets say %v, Evaluate %v (%s)", round, me, peer, port, proto, got, out, w.Evaluate(me, peer, proto, port).Side[policy.DirEgress].Why)
						}
						in := w.Evaluate(peer, me, proto, port).Side[policy.DirIngress].Allowed
						if got := rs.Allows(policy.DirIngress, me.Addr, peer.Addr, proto.Number(), port); got != in {
							t.Fatalf("round %d: ingress %v -> %v %d/%s: sets say %v, Evaluate %v (%s)", round, peer, me, port, proto, got, in, w.Evaluate(peer, me, proto, port).Side[policy.DirIngress].Why)
						}
						checked++
					}
				}
			}
		}
	}
	t.Logf("%d flows checked in both directions", checked)
}

// checkDisjoint fails when two elements of one set overlap: the kernel
// refuses them (EEXIST), so Compile must never produce them.
func checkDisjoint(t *testing.T, rs *Ruleset) {
	t.Helper()
	for d := range 2 {
		for _, g := range rs.Groups[d] {
			el := g.Peers
			for i := range el {
				for j := i + 1; j < len(el); j++ {
					a, b := el[i], el[j]
					if a.Ident == b.Ident && a.ProtoLo <= b.ProtoHi && b.ProtoLo <= a.ProtoHi && a.PortLo <= b.PortHi && b.PortLo <= a.PortHi {
						t.Fatalf("group %d: peer elements overlap: %+v and %+v", g.Ident, a, b)
					}
				}
			}
			cl := g.Ranges
			for i := range cl {
				for j := i + 1; j < len(cl); j++ {
					a, b := cl[i], cl[j]
					if a.Lo.Compare(b.Hi) <= 0 && b.Lo.Compare(a.Hi) <= 0 && a.ProtoLo <= b.ProtoHi && b.ProtoLo <= a.ProtoHi && a.PortLo <= b.PortHi && b.PortLo <= a.PortHi {
						t.Fatalf("group %d: range elements overlap: %+v and %+v", g.Ident, a, b)
					}
				}
			}
		}
	}
}

func TestBlockRanges(t *testing.T) {
	b := &policy.Block{CIDR: netip.MustParsePrefix("10.0.0.0/24"), Except: []netip.Prefix{netip.MustParsePrefix("10.0.0.16/28"), netip.MustParsePrefix("10.0.0.255/32")}}
	got := fmt.Sprint(blockRanges(b))
	want := fmt.Sprint([][2]uint32{{0x0a000000, 0x0a00000f}, {0x0a000020, 0x0a0000fe}})
	if got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
