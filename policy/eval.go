package policy

import (
	"fmt"
	"strings"
)

// Verdict is the answer to "may src open a flow to dst on proto/port?",
// with the reason on each side: Egress is decided at the source pod,
// Ingress at the destination pod. The flow is allowed when both sides
// allow it; replies of an allowed flow are always allowed.
type Verdict struct {
	Allowed bool
	Side    [2]Side // indexed by DirIngress, DirEgress
}

// Side is one direction's decision.
type Side struct {
	// Applies is false when that end is not a pod (no policy can select
	// it) or the flow never reaches the filter (a pod to itself, a node to
	// its own pod).
	Applies bool
	// Isolating are the policies that select the pod for this direction;
	// none means the pod is not isolated and everything is allowed.
	Isolating []Ref
	Allowed   bool
	// Match is the first rule, in policy name order, that allows the
	// flow; nil when the side is not isolated or denies.
	Match *Match
	// Why says it in words.
	Why string
}

// Match names a rule: policy, direction, the rule's index in
// spec.ingress or spec.egress, and the peer's and port's index in it (-1
// when the rule has no peers or no ports, which admits all).
type Match struct {
	Policy     Ref
	Dir        Dir
	Rule       int
	Peer, Port int
}

func (m Match) String() string {
	s := fmt.Sprintf("%s spec.%s[%d]", m.Policy, m.Dir, m.Rule)
	key := "from"
	if m.Dir == DirEgress {
		key = "to"
	}
	if m.Peer >= 0 {
		s += fmt.Sprintf(".%s[%d]", key, m.Peer)
	} else {
		s += " (any peer)"
	}
	if m.Port >= 0 {
		s += fmt.Sprintf(" ports[%d]", m.Port)
	} else {
		s += " (any port)"
	}
	return s
}

// Evaluate decides a new flow from src to dst on proto/port by the
// NetworkPolicy semantics: each side is allowed unless policies isolate
// it in that direction and none of their rules admits the other end and
// the port; a pod's own node always reaches it (kubelet probes), and a
// pod reaching itself never leaves it.
func (w *World) Evaluate(src, dst Endpoint, proto Protocol, port uint16) Verdict {
	var v Verdict
	switch {
	case src.Pod != nil && src.Pod == dst.Pod:
		why := "a pod's traffic to itself stays in the pod"
		v.Side[DirEgress] = Side{Allowed: true, Why: why}
		v.Side[DirIngress] = Side{Allowed: true, Why: why}
		v.Allowed = true
		return v
	}
	v.Side[DirEgress] = w.side(DirEgress, src, dst, proto, port)
	if dst.Pod != nil && src.Node != "" && src.Node == dst.Pod.Node {
		v.Side[DirIngress] = Side{Allowed: true, Why: "from the pod's own node (always allowed, for kubelet probes)"}
	} else {
		v.Side[DirIngress] = w.side(DirIngress, dst, src, proto, port)
	}
	v.Allowed = v.Side[DirEgress].Allowed && v.Side[DirIngress].Allowed
	return v
}

// side decides direction d at the pod self (the source for egress, the
// destination for ingress) for a flow with the other end peer.
func (w *World) side(d Dir, self, peer Endpoint, proto Protocol, port uint16) Side {
	if self.Pod == nil {
		return Side{Allowed: true, Why: fmt.Sprintf("%v is not a pod: no %s policy applies", self, d)}
	}
	s := Side{Applies: true}
	pols := w.Selecting(self.Pod, d)
	if len(pols) == 0 {
		s.Allowed = true
		s.Why = fmt.Sprintf("no policy isolates %s for %s", self.Pod.Key(), d)
		return s
	}
	// Named ports resolve against the destination: the pod itself for
	// ingress, the peer for egress.
	dstPod := self.Pod
	if d == DirEgress {
		dstPod = peer.Pod
	}
	var dstPorts []ContainerPort
	if dstPod != nil {
		dstPorts = dstPod.Ports
	}
	for _, p := range pols {
		s.Isolating = append(s.Isolating, p.Ref)
		if s.Match != nil {
			continue
		}
		for ri := range p.Rules[d] {
			if m, ok := w.ruleMatches(p, d, ri, peer, proto, port, dstPorts); ok {
				s.Match = &m
				break
			}
		}
	}
	if s.Match != nil {
		s.Allowed = true
		s.Why = fmt.Sprintf("%s allowed by %v", d, *s.Match)
		return s
	}
	names := make([]string, len(s.Isolating))
	for i, r := range s.Isolating {
		names[i] = r.String()
	}
	s.Why = fmt.Sprintf("%s denied: %s isolated by %s, no rule admits %v on %d/%s", d, self.Pod.Key(), strings.Join(names, ", "), peer, port, proto)
	return s
}

func (w *World) ruleMatches(p *Policy, d Dir, ri int, peer Endpoint, proto Protocol, port uint16, dstPorts []ContainerPort) (Match, bool) {
	r := &p.Rules[d][ri]
	m := Match{Policy: p.Ref, Dir: d, Rule: ri, Peer: -1, Port: -1}
	if !r.AllPeers {
		m.Peer = -2
		for i := range r.Peers {
			if w.PeerMatches(&r.Peers[i], p.Ref.Namespace, peer) {
				m.Peer = i
				break
			}
		}
		if m.Peer == -2 {
			return m, false
		}
	}
	if !r.AllPorts {
		m.Port = -2
		for i := range r.Ports {
			if r.Ports[i].Matches(proto, port, dstPorts) {
				m.Port = i
				break
			}
		}
		if m.Port == -2 {
			return m, false
		}
	}
	return m, true
}
