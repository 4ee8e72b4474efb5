// Package policytest runs NetworkPolicy truth tables: the upstream
// Kubernetes e2e cases (test/e2e/network/netpol), ported as data in
// policy/testdata/upstream-netpol.yaml, and drover's own cases in the same
// format. A case is a sequence of steps (policies applied or deleted,
// labels changed) each followed by probes whose expected reachability over
// the 3x3 model (namespaces x, y, z; pods a, b, c) is built by upstream's
// Reachability operations. The same tables are checked against
// policy.Evaluate (no root, milliseconds) and against real traffic in the
// namespace lab (package testenv).
package policytest

import (
	"bytes"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/drovernet/drover/policy"
)

// File is a case file.
type File struct {
	Cases []Case `yaml:"cases"`
	Model yaml.Node
}

// Case is one upstream It(...): steps run in order on the same pods.
type Case struct {
	Name  string `yaml:"name"`
	Steps []Step `yaml:"steps"`
}

// Step changes labels, applies and deletes policies, then probes.
type Step struct {
	// SetNamespaceLabels and SetPodLabels give full new label maps, by
	// namespace and by "ns/pod".
	SetNamespaceLabels map[string]map[string]string `yaml:"setNamespaceLabels"`
	SetPodLabels       map[string]map[string]string `yaml:"setPodLabels"`
	// Apply creates or replaces policies (by namespace/name); they may
	// hold "{ip ns/pod}" placeholders.
	Apply []yaml.Node `yaml:"apply"`
	// Delete removes policies by "ns/name".
	Delete []string `yaml:"delete"`
	Probes []Probe  `yaml:"probes"`
}

// Probe is a set of flows checked against one expected table: every
// ordered pair of pods on each port and protocol.
type Probe struct {
	Ports     []uint16          `yaml:"ports"`
	Protocols []policy.Protocol `yaml:"protocols"`
	Expect    Expect            `yaml:"expect"`
}

// Expect is upstream's Reachability: every cell Default, then Ops in order.
type Expect struct {
	Default  bool `yaml:"default"`
	Loopback bool `yaml:"loopback"`
	Ops      []Op `yaml:"ops"`
}

// Op is one Reachability call.
type Op struct {
	Op    string    `yaml:"op"` // allIngress, allEgress, peer, expect
	Pod   string    `yaml:"pod"`
	From  yaml.Node `yaml:"from"` // "ns/pod" for expect, a PeerSpec for peer
	To    yaml.Node `yaml:"to"`
	Value bool      `yaml:"value"`
}

// PeerSpec is upstream's Peer: empty fields match everything.
type PeerSpec struct {
	Namespace string `yaml:"namespace"`
	Pod       string `yaml:"pod"`
}

// Load reads a case file.
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &f, nil
}

// The 3x3 model.
var (
	Namespaces = []string{"x", "y", "z"}
	PodNames   = []string{"a", "b", "c"}
)

// Pods are the model's pods as "ns/pod", in table order.
func Pods() []string {
	var out []string
	for _, ns := range Namespaces {
		for _, p := range PodNames {
			out = append(out, ns+"/"+p)
		}
	}
	return out
}

// PortName is the container port name upstream gives port/proto:
// serve-80-tcp.
func PortName(port uint16, proto policy.Protocol) string {
	return fmt.Sprintf("serve-%d-%s", port, strings.ToLower(string(proto)))
}

// PortsOf lists the (port, protocol) pairs a case probes: what its pods
// serve.
func (c *Case) PortsOf() []policy.ContainerPort {
	var out []policy.ContainerPort
	for _, s := range c.Steps {
		for _, p := range s.Probes {
			for _, proto := range p.Protocols {
				for _, port := range p.Ports {
					cp := policy.ContainerPort{Name: PortName(port, proto), Port: port, Protocol: proto}
					if !slices.Contains(out, cp) {
						out = append(out, cp)
					}
				}
			}
		}
	}
	return out
}

// Table is an expected or observed reachability: Table[from][to].
type Table map[string]map[string]bool

// Build applies e to the model's pods.
func (e *Expect) Build() (Table, error) {
	pods := Pods()
	t := Table{}
	for _, f := range pods {
		t[f] = map[string]bool{}
		for _, to := range pods {
			t[f][to] = e.Default
		}
	}
	for i, op := range e.Ops {
		switch op.Op {
		case "allIngress":
			for _, f := range pods {
				t[f][op.Pod] = op.Value
			}
		case "allEgress":
			for _, to := range pods {
				t[op.Pod][to] = op.Value
			}
		case "peer":
			var from, to PeerSpec
			if err := op.From.Decode(&from); err != nil {
				return nil, fmt.Errorf("op %d: from: %w", i, err)
			}
			if err := op.To.Decode(&to); err != nil {
				return nil, fmt.Errorf("op %d: to: %w", i, err)
			}
			for _, f := range pods {
				for _, d := range pods {
					if from.matches(f) && to.matches(d) {
						t[f][d] = op.Value
					}
				}
			}
		case "expect":
			var from, to string
			if err := op.From.Decode(&from); err != nil {
				return nil, fmt.Errorf("op %d: from: %w", i, err)
			}
			if err := op.To.Decode(&to); err != nil {
				return nil, fmt.Errorf("op %d: to: %w", i, err)
			}
			if _, ok := t[from][to]; !ok {
				return nil, fmt.Errorf("op %d: no pods %s -> %s", i, from, to)
			}
			t[from][to] = op.Value
		default:
			return nil, fmt.Errorf("op %d: unknown op %q", i, op.Op)
		}
	}
	return t, nil
}

func (p PeerSpec) matches(pod string) bool {
	ns, name, _ := strings.Cut(pod, "/")
	return (p.Namespace == "" || p.Namespace == ns) && (p.Pod == "" || p.Pod == name)
}

// Diff lists the cells where got differs from want, skipping a pod to
// itself unless loopback (upstream ignores those cells).
func Diff(want, got Table, loopback bool) []string {
	var out []string
	for _, f := range Pods() {
		for _, d := range Pods() {
			if f == d && !loopback {
				continue
			}
			if want[f][d] != got[f][d] {
				out = append(out, fmt.Sprintf("%s -> %s: got %v, want %v", f, d, got[f][d], want[f][d]))
			}
		}
	}
	return out
}

// RenderYAML is a step's policy as YAML, with "{ip ns/pod}" replaced by
// the pod's address from ips: what a test applies to the API server.
func RenderYAML(n *yaml.Node, ips map[string]netip.Addr) (string, error) {
	b, err := yaml.Marshal(n)
	if err != nil {
		return "", err
	}
	s := string(b)
	for _, k := range slices.Sorted(maps.Keys(ips)) {
		s = strings.ReplaceAll(s, "{ip "+k+"}", ips[k].String())
	}
	if strings.Contains(s, "{ip ") {
		return "", fmt.Errorf("unresolved placeholder in %s", s)
	}
	return s, nil
}

// Render turns a step's policy into a NetworkPolicy, replacing "{ip
// ns/pod}" with the pod's address from ips.
func Render(n *yaml.Node, ips map[string]netip.Addr) (*policy.NetworkPolicy, error) {
	s, err := RenderYAML(n, ips)
	if err != nil {
		return nil, err
	}
	set, err := policy.Parse([]byte(s), "default")
	if err != nil {
		return nil, err
	}
	if len(set.Policies) != 1 {
		return nil, fmt.Errorf("want one policy, got %d", len(set.Policies))
	}
	return set.Policies[0].Source, nil
}

// State is the model as a case has changed it so far: labels and
// policies. Steps are applied to it in order.
type State struct {
	// ProjectLabel turns on the project-isolation preset, as the daemon's
	// policy.project_label does.
	ProjectLabel    string
	NamespaceLabels map[string]map[string]string
	PodLabels       map[string]map[string]string
	Policies        map[policy.Ref]*policy.NetworkPolicy
}

// NewState is the model before any step: pods labelled pod=<name>,
// namespaces with no label but their name.
func NewState() *State {
	s := &State{NamespaceLabels: map[string]map[string]string{}, PodLabels: map[string]map[string]string{}, Policies: map[policy.Ref]*policy.NetworkPolicy{}}
	for _, ns := range Namespaces {
		s.NamespaceLabels[ns] = map[string]string{}
	}
	for _, p := range Pods() {
		_, name, _ := strings.Cut(p, "/")
		s.PodLabels[p] = map[string]string{"pod": name}
	}
	return s
}

// Apply runs step st's changes (not its probes).
func (s *State) Apply(st *Step, ips map[string]netip.Addr) error {
	for ns, l := range st.SetNamespaceLabels {
		s.NamespaceLabels[ns] = maps.Clone(l)
	}
	for p, l := range st.SetPodLabels {
		s.PodLabels[p] = maps.Clone(l)
	}
	for _, d := range st.Delete {
		ns, name, _ := strings.Cut(d, "/")
		delete(s.Policies, policy.Ref{Namespace: ns, Name: name})
	}
	for i := range st.Apply {
		np, err := Render(&st.Apply[i], ips)
		if err != nil {
			return err
		}
		s.Policies[np.Ref()] = np
	}
	return nil
}

// World is the state as a policy.World: pods on nodes by nodeOf, with
// addresses ips and container ports ports.
func (s *State) World(ips map[string]netip.Addr, nodeOf func(pod string) string, ports []policy.ContainerPort) (*policy.World, error) {
	var pols []*policy.Policy
	for _, ref := range slices.SortedFunc(maps.Keys(s.Policies), func(a, b policy.Ref) int { return strings.Compare(a.String(), b.String()) }) {
		p, err := policy.Compile(s.Policies[ref])
		if err != nil {
			return nil, err
		}
		pols = append(pols, p)
	}
	var nss []policy.Namespace
	for _, ns := range Namespaces {
		nss = append(nss, policy.Namespace{Name: ns, Labels: s.NamespaceLabels[ns]})
	}
	var pods []policy.Pod
	for _, p := range Pods() {
		ns, name, _ := strings.Cut(p, "/")
		pods = append(pods, policy.Pod{Namespace: ns, Name: name, Labels: s.PodLabels[p], Addrs: []netip.Addr{ips[p]}, Node: nodeOf(p), Ports: ports})
	}
	pols = append(pols, policy.ProjectPolicies(s.ProjectLabel, pods)...)
	return policy.NewWorld(pols, nss, pods), nil
}
