package policy

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// NetworkPolicy is networking.k8s.io/v1 NetworkPolicy, the fields drover
// enforces, with the API's JSON and YAML names: the API server's objects
// decode into it as they are, and a policy file is the same YAML a user
// would kubectl apply. Status and other metadata are ignored.
type NetworkPolicy struct {
	APIVersion string   `json:"apiVersion,omitempty" yaml:"apiVersion,omitempty"`
	Kind       string   `json:"kind,omitempty" yaml:"kind,omitempty"`
	Metadata   Metadata `json:"metadata" yaml:"metadata"`
	Spec       Spec     `json:"spec" yaml:"spec"`
}

// Metadata is the part of ObjectMeta policies and namespaces need.
type Metadata struct {
	Name      string            `json:"name" yaml:"name"`
	Namespace string            `json:"namespace,omitempty" yaml:"namespace,omitempty"`
	Labels    map[string]string `json:"labels,omitempty" yaml:"labels,omitempty"`
	// Annotations are accepted and ignored, so that kubectl's output of
	// a policy is a valid policy file.
	Annotations map[string]string `json:"annotations,omitempty" yaml:"annotations,omitempty"`
}

// Ref names a policy: namespace/name.
type Ref struct {
	Namespace, Name string
}

func (r Ref) String() string { return r.Namespace + "/" + r.Name }

// Ref returns the policy's namespace/name.
func (p *NetworkPolicy) Ref() Ref { return Ref{p.Metadata.Namespace, p.Metadata.Name} }

// Spec is NetworkPolicySpec.
type Spec struct {
	// PodSelector selects the pods of the policy's namespace it applies
	// to; empty selects all of them.
	PodSelector Selector `json:"podSelector" yaml:"podSelector"`
	// PolicyTypes lists the directions the policy isolates. Omitted:
	// Ingress always, Egress when Egress rules are present (the API's
	// defaulting, applied by Normalize).
	PolicyTypes []Direction   `json:"policyTypes,omitempty" yaml:"policyTypes,omitempty"`
	Ingress     []IngressRule `json:"ingress,omitempty" yaml:"ingress,omitempty"`
	Egress      []EgressRule  `json:"egress,omitempty" yaml:"egress,omitempty"`
}

// IngressRule allows traffic from any of From (all sources when empty) to
// any of Ports (every port when empty).
type IngressRule struct {
	Ports []Port `json:"ports,omitempty" yaml:"ports,omitempty"`
	From  []Peer `json:"from,omitempty" yaml:"from,omitempty"`
}

// EgressRule allows traffic to any of To (every destination when empty) on
// any of Ports (every port when empty).
type EgressRule struct {
	Ports []Port `json:"ports,omitempty" yaml:"ports,omitempty"`
	To    []Peer `json:"to,omitempty" yaml:"to,omitempty"`
}

// Peer is NetworkPolicyPeer: exactly one of IPBlock or a pod/namespace
// selector pair. PodSelector alone selects pods of the policy's namespace,
// NamespaceSelector alone every pod of the selected namespaces, both the
// selected pods of the selected namespaces.
type Peer struct {
	PodSelector       *Selector `json:"podSelector,omitempty" yaml:"podSelector,omitempty"`
	NamespaceSelector *Selector `json:"namespaceSelector,omitempty" yaml:"namespaceSelector,omitempty"`
	IPBlock           *IPBlock  `json:"ipBlock,omitempty" yaml:"ipBlock,omitempty"`
}

// IPBlock is a CIDR minus the CIDRs in Except.
type IPBlock struct {
	CIDR   string   `json:"cidr" yaml:"cidr"`
	Except []string `json:"except,omitempty" yaml:"except,omitempty"`
}

// Port is NetworkPolicyPort. Protocol defaults to TCP; Port nil means
// every port of the protocol; EndPort makes Port..EndPort a range (Port
// must then be a number).
type Port struct {
	Protocol Protocol `json:"protocol,omitempty" yaml:"protocol,omitempty"`
	Port     *PortRef `json:"port,omitempty" yaml:"port,omitempty"`
	EndPort  *int32   `json:"endPort,omitempty" yaml:"endPort,omitempty"`
}

// PortRef is the API's IntOrString for a port: a number or the name of a
// container port of the destination pod.
type PortRef struct {
	Num  int32
	Name string
}

func (p PortRef) String() string {
	if p.Name != "" {
		return p.Name
	}
	return strconv.Itoa(int(p.Num))
}

// UnmarshalJSON takes 80 or "http" (and "80", as the API server does for
// IntOrString).
func (p *PortRef) UnmarshalJSON(b []byte) error {
	var n int32
	if err := json.Unmarshal(b, &n); err == nil {
		*p = PortRef{Num: n}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("port: want a number or a name, got %s", b)
	}
	*p = portRefFromString(s)
	return nil
}

// MarshalJSON writes a number or a name.
func (p PortRef) MarshalJSON() ([]byte, error) {
	if p.Name != "" {
		return json.Marshal(p.Name)
	}
	return json.Marshal(p.Num)
}

// UnmarshalYAML takes 80 or http.
func (p *PortRef) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: port: want a number or a name", n.Line)
	}
	if n.Tag == "!!int" {
		v, err := strconv.ParseInt(n.Value, 0, 32)
		if err != nil {
			return fmt.Errorf("line %d: port: %q is not a port number", n.Line, n.Value)
		}
		*p = PortRef{Num: int32(v)}
		return nil
	}
	*p = portRefFromString(n.Value)
	return nil
}

// MarshalYAML writes a number or a name.
func (p PortRef) MarshalYAML() (any, error) {
	if p.Name != "" {
		return p.Name, nil
	}
	return p.Num, nil
}

func portRefFromString(s string) PortRef {
	if n, err := strconv.ParseInt(s, 10, 32); err == nil {
		return PortRef{Num: int32(n)}
	}
	return PortRef{Name: s}
}

// Direction is a policy type: Ingress or Egress.
type Direction string

// The two policy types.
const (
	Ingress Direction = "Ingress"
	Egress  Direction = "Egress"
)

// Protocol is TCP, UDP or SCTP, as the API spells them.
type Protocol string

// The protocols NetworkPolicy knows.
const (
	TCP  Protocol = "TCP"
	UDP  Protocol = "UDP"
	SCTP Protocol = "SCTP"
)

// Number is the protocol's IP protocol number (RFC 790, RFC 768, RFC 9260),
// 0 for an unknown one.
func (p Protocol) Number() uint8 {
	switch p {
	case TCP, "":
		return 6
	case UDP:
		return 17
	case SCTP:
		return 132
	}
	return 0
}

// ProtocolOf is the Protocol of an IP protocol number, "" for any other.
func ProtocolOf(n uint8) Protocol {
	switch n {
	case 6:
		return TCP
	case 17:
		return UDP
	case 132:
		return SCTP
	}
	return ""
}

// ParseProtocol takes tcp, UDP, Sctp...
func ParseProtocol(s string) (Protocol, error) {
	p := Protocol(strings.ToUpper(s))
	if p.Number() == 0 || s == "" {
		return "", fmt.Errorf("protocol %q: want TCP, UDP or SCTP", s)
	}
	return p, nil
}

// Namespace is what policies need of a namespace: its labels. Kubernetes
// sets kubernetes.io/metadata.name on every namespace; Labels includes it.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// NameLabel is the label the API server puts on every namespace, its name.
const NameLabel = "kubernetes.io/metadata.name"

// ContainerPort is a named port of a pod, what a named policy port
// resolves to.
type ContainerPort struct {
	Name     string   `json:"name"`
	Port     uint16   `json:"port"`
	Protocol Protocol `json:"protocol"`
}
