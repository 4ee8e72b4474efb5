package policy

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
)

// Pod is an endpoint policies select: a Kubernetes pod, or a container
// attached by the CNI plugin with a namespace, a name and labels.
type Pod struct {
	Namespace, Name string
	Labels          map[string]string
	// Addrs are the pod's addresses on the container network.
	Addrs []netip.Addr
	// Node is the host the pod runs on (its drover node name).
	Node string
	// Ports are its named container ports.
	Ports []ContainerPort
}

// Key is namespace/name.
func (p *Pod) Key() string { return p.Namespace + "/" + p.Name }

// World is a snapshot of everything policies are evaluated against:
// policies, namespaces and pods. It is immutable once built; a change
// builds a new one.
type World struct {
	policies   []*Policy // sorted by Ref
	namespaces map[string]Namespace
	pods       []*Pod // sorted by Key
	byAddr     map[netip.Addr]*Pod
	byKey      map[string]*Pod
}

// NewWorld indexes policies, namespaces and pods. A namespace that pods or
// policies name but namespaces does not list gets the one label the API
// server gives every namespace, its name. Two pods claiming one address:
// the first by Key keeps it (the conflict is the CNI's and the block
// claims' to prevent; a policy engine must not guess).
func NewWorld(policies []*Policy, namespaces []Namespace, pods []Pod) *World {
	w := &World{
		policies:   slices.Clone(policies),
		namespaces: make(map[string]Namespace, len(namespaces)),
		byAddr:     make(map[netip.Addr]*Pod, len(pods)),
		byKey:      make(map[string]*Pod, len(pods)),
	}
	slices.SortFunc(w.policies, func(a, b *Policy) int {
		return cmp.Or(cmp.Compare(a.Ref.Namespace, b.Ref.Namespace), cmp.Compare(a.Ref.Name, b.Ref.Name))
	})
	for _, ns := range namespaces {
		l := maps.Clone(ns.Labels)
		if l == nil {
			l = map[string]string{}
		}
		l[NameLabel] = ns.Name
		w.namespaces[ns.Name] = Namespace{Name: ns.Name, Labels: l}
	}
	for i := range pods {
		p := pods[i]
		w.pods = append(w.pods, &p)
	}
	slices.SortFunc(w.pods, func(a, b *Pod) int { return cmp.Compare(a.Key(), b.Key()) })
	for _, p := range w.pods {
		w.byKey[p.Key()] = p
		for _, a := range p.Addrs {
			if _, dup := w.byAddr[a]; !dup {
				w.byAddr[a] = p
			}
		}
		w.ensureNamespace(p.Namespace)
	}
	for _, p := range w.policies {
		w.ensureNamespace(p.Ref.Namespace)
	}
	return w
}

func (w *World) ensureNamespace(name string) {
	if _, ok := w.namespaces[name]; !ok {
		w.namespaces[name] = Namespace{Name: name, Labels: map[string]string{NameLabel: name}}
	}
}

// Policies returns the policies, sorted by namespace and name.
func (w *World) Policies() []*Policy { return w.policies }

// Pods returns the pods, sorted by namespace and name.
func (w *World) Pods() []*Pod { return w.pods }

// PodAt returns the pod holding a, or nil.
func (w *World) PodAt(a netip.Addr) *Pod { return w.byAddr[a] }

// Pod returns the pod namespace/name, or nil.
func (w *World) Pod(namespace, name string) *Pod { return w.byKey[namespace+"/"+name] }

// NamespaceLabels returns the labels of namespace ns.
func (w *World) NamespaceLabels(ns string) map[string]string {
	if n, ok := w.namespaces[ns]; ok {
		return n.Labels
	}
	return map[string]string{NameLabel: ns}
}

// Selecting returns the policies that select pod and isolate it in
// direction d, in name order.
func (w *World) Selecting(pod *Pod, d Dir) []*Policy {
	var out []*Policy
	for _, p := range w.policies {
		if p.Isolates[d] && p.Ref.Namespace == pod.Namespace && p.Selector.Matches(pod.Labels) {
			out = append(out, p)
		}
	}
	return out
}

// PeerMatches reports whether peer, in a rule of a policy of namespace
// policyNS, admits the endpoint e.
func (w *World) PeerMatches(peer *RulePeer, policyNS string, e Endpoint) bool {
	if peer.Block != nil {
		return e.Addr.IsValid() && peer.Block.Contains(e.Addr)
	}
	if e.Pod == nil {
		return false
	}
	if peer.Namespaces == nil {
		if e.Pod.Namespace != policyNS {
			return false
		}
	} else if !peer.Namespaces.Matches(w.NamespaceLabels(e.Pod.Namespace)) {
		return false
	}
	return peer.Pods == nil || peer.Pods.Matches(e.Pod.Labels)
}

// Endpoint is one end of a flow: a pod (Pod set, Addr one of its
// addresses), a node (Node set: a host's own traffic), or any other
// address.
type Endpoint struct {
	Pod  *Pod
	Node string
	Addr netip.Addr
}

func (e Endpoint) String() string {
	switch {
	case e.Pod != nil:
		return fmt.Sprintf("%s (%v)", e.Pod.Key(), e.Addr)
	case e.Node != "":
		return fmt.Sprintf("node %s (%v)", e.Node, e.Addr)
	}
	return e.Addr.String()
}

// EndpointAt is the endpoint holding a: its pod if a pod holds it.
func (w *World) EndpointAt(a netip.Addr) Endpoint {
	return Endpoint{Pod: w.byAddr[a], Addr: a}
}
