package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// FieldError is what is wrong with one field of a policy, named by its path
// in the object ("spec.ingress[0].from[1].ipBlock.cidr").
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

func fieldErr(path, format string, args ...any) error {
	return &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// Policy is a validated NetworkPolicy with its defaults applied and its
// addresses parsed: what evaluation and compilation read. Build one with
// Compile.
type Policy struct {
	Ref Ref
	// Selector selects the pods of Ref.Namespace the policy applies to.
	Selector Selector
	// Isolates says which directions the policy isolates (policyTypes
	// after defaulting).
	Isolates [2]bool // indexed by DirIngress, DirEgress
	// Rules are the ingress and egress rules, indexed by DirIngress,
	// DirEgress.
	Rules [2][]Rule
	// Source is the object as given.
	Source *NetworkPolicy
}

// Dir indexes Policy.Isolates and Policy.Rules.
type Dir int

// The two directions as indexes.
const (
	DirIngress Dir = iota
	DirEgress
)

func (d Dir) String() string {
	if d == DirEgress {
		return "egress"
	}
	return "ingress"
}

// Rule is one ingress or egress rule: traffic to or from any of Peers
// (every address when AllPeers) on any of Ports (every port and protocol
// when AllPorts).
type Rule struct {
	AllPeers bool
	Peers    []RulePeer
	AllPorts bool
	Ports    []RulePort
}

// RulePeer is a validated Peer. Exactly one of Block or (Pods, Namespaces)
// is set; Pods nil and Namespaces non-nil selects every pod of the
// selected namespaces; Namespaces nil means the policy's own namespace.
type RulePeer struct {
	Pods       *Selector
	Namespaces *Selector
	Block      *Block
}

// Block is a parsed IPBlock.
type Block struct {
	CIDR   netip.Prefix
	Except []netip.Prefix
}

// Contains reports whether a is in the CIDR and in none of the excepts.
func (b *Block) Contains(a netip.Addr) bool {
	if !b.CIDR.Contains(a) {
		return false
	}
	for _, e := range b.Except {
		if e.Contains(a) {
			return false
		}
	}
	return true
}

// RulePort is a validated Port: Protocol, and either Name (a named
// container port of the destination pod) or the range Lo..Hi (Lo 0 and
// Hi 65535 for every port).
type RulePort struct {
	Protocol Protocol
	Name     string
	Lo, Hi   uint16
}

// Compile validates p, applies the API's defaults and parses it. The
// error joins a *FieldError per problem, each naming its field.
func Compile(p *NetworkPolicy) (*Policy, error) {
	var errs []error
	if p.APIVersion != "" && p.APIVersion != "networking.k8s.io/v1" {
		errs = append(errs, fieldErr("apiVersion", "%q: want networking.k8s.io/v1", p.APIVersion))
	}
	if p.Kind != "" && p.Kind != "NetworkPolicy" {
		errs = append(errs, fieldErr("kind", "%q: want NetworkPolicy", p.Kind))
	}
	if err := ValidName(p.Metadata.Name); err != nil {
		errs = append(errs, fieldErr("metadata.name", "%v", err))
	}
	if err := ValidNamespace(p.Metadata.Namespace); err != nil {
		errs = append(errs, fieldErr("metadata.namespace", "%v", err))
	}
	c := &Policy{Ref: p.Ref(), Selector: p.Spec.PodSelector, Source: p}
	errs = append(errs, c.Selector.validate("spec.podSelector")...)

	if len(p.Spec.PolicyTypes) == 0 {
		// The API server's defaulting (networking/v1 NetworkPolicySpec):
		// every policy isolates ingress, and egress too when it has egress
		// rules.
		c.Isolates[DirIngress] = true
		c.Isolates[DirEgress] = len(p.Spec.Egress) > 0
	}
	for i, t := range p.Spec.PolicyTypes {
		switch t {
		case Ingress:
			c.Isolates[DirIngress] = true
		case Egress:
			c.Isolates[DirEgress] = true
		default:
			errs = append(errs, fieldErr(fmt.Sprintf("spec.policyTypes[%d]", i), "%q: want Ingress or Egress", t))
		}
	}
	for i, r := range p.Spec.Ingress {
		rule, e := compileRule(fmt.Sprintf("spec.ingress[%d]", i), "from", r.From, r.Ports)
		errs = append(errs, e...)
		c.Rules[DirIngress] = append(c.Rules[DirIngress], rule)
	}
	for i, r := range p.Spec.Egress {
		rule, e := compileRule(fmt.Sprintf("spec.egress[%d]", i), "to", r.To, r.Ports)
		errs = append(errs, e...)
		c.Rules[DirEgress] = append(c.Rules[DirEgress], rule)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("policy %s: %w", c.Ref, errors.Join(errs...))
	}
	return c, nil
}

func compileRule(path, peersKey string, peers []Peer, ports []Port) (Rule, []error) {
	var errs []error
	r := Rule{AllPeers: len(peers) == 0, AllPorts: len(ports) == 0}
	for i, pe := range peers {
		pp := fmt.Sprintf("%s.%s[%d]", path, peersKey, i)
		var rp RulePeer
		switch {
		case pe.IPBlock != nil && (pe.PodSelector != nil || pe.NamespaceSelector != nil):
			errs = append(errs, fieldErr(pp, "ipBlock may not be combined with podSelector or namespaceSelector"))
			continue
		case pe.IPBlock != nil:
			b, e := compileBlock(pp+".ipBlock", pe.IPBlock)
			errs = append(errs, e...)
			rp.Block = b
		case pe.PodSelector == nil && pe.NamespaceSelector == nil:
			errs = append(errs, fieldErr(pp, "a peer needs podSelector, namespaceSelector or ipBlock"))
			continue
		default:
			if pe.PodSelector != nil {
				errs = append(errs, pe.PodSelector.validate(pp+".podSelector")...)
			}
			if pe.NamespaceSelector != nil {
				errs = append(errs, pe.NamespaceSelector.validate(pp+".namespaceSelector")...)
			}
			rp.Pods, rp.Namespaces = pe.PodSelector, pe.NamespaceSelector
		}
		r.Peers = append(r.Peers, rp)
	}
	for i, po := range ports {
		pp := fmt.Sprintf("%s.ports[%d]", path, i)
		proto := po.Protocol
		if proto == "" {
			proto = TCP
		}
		if proto.Number() == 0 {
			errs = append(errs, fieldErr(pp+".protocol", "%q: want TCP, UDP or SCTP", po.Protocol))
			continue
		}
		rp := RulePort{Protocol: proto, Lo: 0, Hi: 65535}
		switch {
		case po.Port == nil:
			if po.EndPort != nil {
				errs = append(errs, fieldErr(pp+".endPort", "needs port"))
				continue
			}
		case po.Port.Name != "":
			if po.EndPort != nil {
				errs = append(errs, fieldErr(pp+".endPort", "needs a numeric port, not the named port %q", po.Port.Name))
				continue
			}
			if err := ValidPortName(po.Port.Name); err != nil {
				errs = append(errs, fieldErr(pp+".port", "%v", err))
				continue
			}
			rp.Name = po.Port.Name
		default:
			if po.Port.Num < 1 || po.Port.Num > 65535 {
				errs = append(errs, fieldErr(pp+".port", "%d: want 1-65535", po.Port.Num))
				continue
			}
			rp.Lo, rp.Hi = uint16(po.Port.Num), uint16(po.Port.Num)
			if po.EndPort != nil {
				if *po.EndPort < po.Port.Num || *po.EndPort > 65535 {
					errs = append(errs, fieldErr(pp+".endPort", "%d: want %d-65535 (at least port)", *po.EndPort, po.Port.Num))
					continue
				}
				rp.Hi = uint16(*po.EndPort)
			}
		}
		r.Ports = append(r.Ports, rp)
	}
	return r, errs
}

func compileBlock(path string, b *IPBlock) (*Block, []error) {
	var errs []error
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return nil, []error{fieldErr(path+".cidr", "%q is not a CIDR", b.CIDR)}
	}
	out := &Block{CIDR: cidr.Masked()}
	for i, e := range b.Except {
		ex, err := netip.ParsePrefix(e)
		switch {
		case err != nil:
			errs = append(errs, fieldErr(fmt.Sprintf("%s.except[%d]", path, i), "%q is not a CIDR", e))
		case ex.Addr().Is4() != cidr.Addr().Is4():
			errs = append(errs, fieldErr(fmt.Sprintf("%s.except[%d]", path, i), "%v is not of the same family as cidr %v", ex, cidr))
		case !cidr.Contains(ex.Addr()) || ex.Bits() < cidr.Bits():
			// The API requires every except to lie strictly within cidr.
			errs = append(errs, fieldErr(fmt.Sprintf("%s.except[%d]", path, i), "%v is not within cidr %v", ex, cidr))
		default:
			out.Except = append(out.Except, ex.Masked())
		}
	}
	return out, errs
}

// ValidPortName checks an IANA service name as the API does for container
// port names: at most 15 characters, lower-case alphanumerics and '-', at
// least one letter, no '-' at either end or twice in a row (RFC 6335
// section 5.1).
func ValidPortName(s string) error {
	ok := len(s) >= 1 && len(s) <= 15 && s[0] != '-' && s[len(s)-1] != '-'
	letter := false
	for i := 0; ok && i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z':
			letter = true
		case c >= '0' && c <= '9':
		case c == '-':
			ok = s[i-1] != '-'
		default:
			ok = false
		}
	}
	if !ok || !letter {
		return fmt.Errorf("%q is not a port name (RFC 6335: 1-15 lower-case alphanumerics and '-', with a letter)", s)
	}
	return nil
}

// Matches reports whether the port rule admits proto/port to a destination
// with the given container ports (named ports resolve against them).
func (rp *RulePort) Matches(proto Protocol, port uint16, dstPorts []ContainerPort) bool {
	if rp.Protocol != proto {
		return false
	}
	if rp.Name == "" {
		return port >= rp.Lo && port <= rp.Hi
	}
	return slices.ContainsFunc(dstPorts, func(cp ContainerPort) bool {
		return cp.Name == rp.Name && cp.Protocol == proto && cp.Port == port
	})
}

func (rp RulePort) String() string {
	switch {
	case rp.Name != "":
		return rp.Name + "/" + string(rp.Protocol)
	case rp.Lo == 0 && rp.Hi == 65535:
		return "any/" + string(rp.Protocol)
	case rp.Lo == rp.Hi:
		return fmt.Sprintf("%d/%s", rp.Lo, rp.Protocol)
	}
	return fmt.Sprintf("%d-%d/%s", rp.Lo, rp.Hi, rp.Protocol)
}
