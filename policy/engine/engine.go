// Package engine keeps one host's network policy enforced: it holds what
// the sources say (policies and namespaces from a file or the API server,
// this host's pods from the CNI plugin's records, other hosts' pods),
// builds a policy.World whenever any of it changes, compiles what this
// host enforces and applies it, retrying until the kernel takes it. It
// answers explain questions against the same World the kernel enforces.
//
// The package owns no kernel state itself: the Enforcer (package
// policy/enforce in the daemon, a fake in tests) does.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/drovernet/drover/policy"
	"github.com/drovernet/drover/policy/enforce"
)

// Enforcer is what the engine needs of package enforce.
type Enforcer interface {
	Apply(*enforce.Ruleset) error
	Drops() (map[string]uint64, error)
	Remove() error
}

// Engine is one host's policy engine.
type Engine struct {
	node string
	enf  Enforcer
	log  *slog.Logger
	// Settle is how long a change waits for the next before the engine
	// compiles: a burst (a file rewritten, a deployment scaled) becomes
	// one transaction.
	settle time.Duration

	mu         sync.Mutex
	policies   []*policy.Policy
	namespaces []policy.Namespace
	local      []policy.Pod
	remote     map[string][]policy.Pod // by node
	// api, once SetPods was called, are every pod of the cluster as the
	// API server lists them (Kubernetes mode); local and remote are then
	// used only to find local pods the API does not show yet (pending).
	api       []policy.Pod
	useAPI    bool
	sourceErr error         // the policy source's last error, if any
	gen       uint64        // bumped by every change
	applied   uint64        // the gen the kernel holds
	world     *policy.World // the World of applied
	appliedAt time.Time
	applyErr  error
	kick      chan struct{}
	ids       enforce.Idents
	// holding: nothing is applied until the first SetPods (HoldForPods).
	holding bool
	// project is the project-isolation preset's label ("": off).
	project string
	// firstSeen is when a local pod the API does not list was first seen.
	firstSeen map[netip.Addr]time.Time
}

// SetProjectLabel turns on the project-isolation preset with label
// (policy.ProjectPolicies); "" turns it off.
func (e *Engine) SetProjectLabel(label string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.project = label
	e.changed()
}

// HoldForPods makes the engine apply nothing until the first SetPods: a
// Kubernetes source has not listed anything yet, and an empty first
// apply would replace the table a previous daemon left with nothing.
func (e *Engine) HoldForPods() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.holding = true
}

// New returns an engine for node. It enforces nothing until Run.
func New(node string, enf Enforcer, log *slog.Logger) *Engine {
	return &Engine{node: node, enf: enf, log: log.With("component", "policy"), settle: 20 * time.Millisecond,
		remote: map[string][]policy.Pod{}, kick: make(chan struct{}, 1), firstSeen: map[netip.Addr]time.Time{}, world: policy.NewWorld(nil, nil, nil)}
}

func (e *Engine) changed() {
	e.gen++
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// SetPolicies replaces the policies and namespaces (a policy source's
// whole state).
func (e *Engine) SetPolicies(set *policy.Set) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.policies, e.namespaces = slices.Clone(set.Policies), slices.Clone(set.Namespaces)
	e.sourceErr = nil
	e.changed()
}

// SourceError records that the policy source could not be read; what was
// enforced stays.
func (e *Engine) SourceError(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.sourceErr = err
}

// SetLocal replaces this host's pods.
func (e *Engine) SetLocal(pods []policy.Pod) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range pods {
		pods[i].Node = e.node
	}
	e.local = pods
	e.changed()
}

// SetPods replaces every pod of the cluster with what the API server
// lists (Kubernetes mode).
func (e *Engine) SetPods(pods []policy.Pod) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.api, e.useAPI, e.holding = pods, true, false
	e.changed()
}

// PendingPolicy names the policy that isolates a pending pod: one the CNI
// plugin attached here that the API server does not list, neither by
// address nor by namespace/name (a Pod listed by name gets its labels at
// once, with the CNI's address). It is denied all ingress until the API
// lists it, for at most PendingGrace (fail closed, as Calico does):
// otherwise a pod that policies isolate would be open in the moment
// between the kubelet's sandbox and our watch seeing its Pod.
const PendingPolicy = "drover-pending"

// PendingGrace bounds how long a local pod the API server does not list
// stays pending: a sandbox made outside the kubelet (crictl runp) never
// gets a Pod object, and NetworkPolicy cannot select what the API does
// not know.
const PendingGrace = 5 * time.Second

// pendingLabel marks pending pods for PendingPolicy's selector.
const pendingLabel = "drover.network/pending"

// SetRemote replaces the pods of another host; none forgets it.
func (e *Engine) SetRemote(node string, pods []policy.Pod) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(pods) == 0 {
		delete(e.remote, node)
	} else {
		for i := range pods {
			pods[i].Node = node
		}
		e.remote[node] = pods
	}
	e.changed()
}

// Run applies changes until ctx is done, then removes what it applied.
// A failed apply is retried with backoff (0.1 s doubling to 5 s).
func (e *Engine) Run(ctx context.Context) error {
	retry := time.Duration(0)
	select { // apply once at start, even with nothing: the table exists
	case e.kick <- struct{}{}:
	default:
	}
	for {
		var wait <-chan time.Time
		if retry > 0 {
			wait = time.After(retry)
		}
		select {
		case <-ctx.Done():
			if err := e.enf.Remove(); err != nil {
				e.log.Warn("remove policy table", "err", err)
			}
			return nil
		case <-e.kick:
			// Let a burst settle.
			t := time.NewTimer(e.settle)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				continue
			}
		case <-wait:
		}
		if err := e.applyOnce(); err != nil {
			retry = min(max(2*retry, 100*time.Millisecond), 5*time.Second)
			e.log.Warn("apply network policy", "err", err, "retry_in", retry)
			continue
		}
		retry = 0
	}
}

func (e *Engine) applyOnce() error {
	e.mu.Lock()
	if e.holding {
		e.mu.Unlock()
		return nil
	}
	gen := e.gen
	pols := e.policies
	var pods []policy.Pod
	if e.useAPI {
		pods = slices.Clone(e.api)
		known := map[netip.Addr]bool{}
		byKey := map[string]int{}
		for i, p := range pods {
			for _, a := range p.Addrs {
				known[a] = true
			}
			byKey[p.Key()] = i
		}
		pending := map[string]bool{}
		now := time.Now()
		var nextExpiry time.Time
		for _, l := range e.local {
			if len(l.Addrs) == 0 || known[l.Addrs[0]] {
				continue
			}
			if i, ok := byKey[l.Key()]; ok && l.Namespace != "" {
				// The Pod is listed, its address not reported yet (the
				// kubelet does after the CNI ADD): its labels and ports
				// are known, the address is the CNI's.
				pods[i].Addrs = append(slices.Clone(pods[i].Addrs), l.Addrs...)
				continue
			}
			first, seen := e.firstSeen[l.Addrs[0]]
			if !seen {
				first = now
				e.firstSeen[l.Addrs[0]] = now
			}
			if exp := first.Add(PendingGrace); now.Before(exp) {
				l.Labels = map[string]string{pendingLabel: "true"}
				pending[l.Namespace] = true
				if nextExpiry.IsZero() || exp.Before(nextExpiry) {
					nextExpiry = exp
				}
			}
			// After the grace, a pod the API server never listed (a
			// sandbox made outside the kubelet) is a pod without labels
			// in its namespace: only policies selecting every pod there
			// isolate it.
			pods = append(pods, l)
		}
		if !nextExpiry.IsZero() {
			time.AfterFunc(time.Until(nextExpiry)+10*time.Millisecond, func() {
				e.mu.Lock()
				defer e.mu.Unlock()
				e.changed()
			})
		}
		for a := range e.firstSeen {
			if !slices.ContainsFunc(e.local, func(p policy.Pod) bool { return len(p.Addrs) > 0 && p.Addrs[0] == a }) {
				delete(e.firstSeen, a)
			}
		}
		if len(pending) > 0 {
			pols = slices.Clone(pols)
			for _, ns := range slices.Sorted(maps.Keys(pending)) {
				pols = append(pols, pendingPolicy(ns))
			}
		}
	} else {
		pods = slices.Clone(e.local)
		for _, n := range slices.Sorted(maps.Keys(e.remote)) {
			pods = append(pods, e.remote[n]...)
		}
	}
	if e.project != "" {
		pols = append(slices.Clone(pols), policy.ProjectPolicies(e.project, pods)...)
	}
	w := policy.NewWorld(pols, e.namespaces, pods)
	rs := enforce.Compile(w, e.node, &e.ids)
	e.mu.Unlock()

	err := e.enf.Apply(rs)

	e.mu.Lock()
	defer e.mu.Unlock()
	e.applyErr = err
	if err != nil {
		return err
	}
	if gen > e.applied {
		e.applied, e.world, e.appliedAt = gen, w, time.Now()
	}
	return nil
}

// World is the World the kernel enforces now.
func (e *Engine) World() *policy.World {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.world
}

// WaitApplied waits until every change made before the call is enforced,
// or ctx ends.
func (e *Engine) WaitApplied(ctx context.Context) error {
	e.mu.Lock()
	want := e.gen
	e.mu.Unlock()
	for {
		e.mu.Lock()
		done := e.applied >= want
		e.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Status is what `drover policy list` shows.
type Status struct {
	Node      string         `json:"node"`
	AppliedAt time.Time      `json:"applied_at,omitzero"`
	Pending   bool           `json:"pending"` // changes not enforced yet
	Error     string         `json:"error,omitempty"`
	Source    string         `json:"source_error,omitempty"`
	Policies  []PolicyStatus `json:"policies"`
	Pods      []PodStatus    `json:"pods"` // this host's
}

// PolicyStatus is one policy and what it does on this host.
type PolicyStatus struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Ingress   bool   `json:"ingress"` // isolates ingress
	Egress    bool   `json:"egress"`
	// Local are this host's pods it selects.
	Local []string `json:"local_pods"`
	// Drops are the packets it denied here, per direction.
	DroppedIngress uint64 `json:"dropped_ingress"`
	DroppedEgress  uint64 `json:"dropped_egress"`
}

// PodStatus is one of this host's pods and what isolates it.
type PodStatus struct {
	Pod     string   `json:"pod"`
	Addr    string   `json:"addr"`
	Labels  []string `json:"labels,omitempty"`
	Ingress []string `json:"ingress_isolated_by,omitempty"`
	Egress  []string `json:"egress_isolated_by,omitempty"`
}

// Status reports what this host enforces.
func (e *Engine) Status() Status { return e.status(false) }

// Brief is Status without the pods and each policy's local pods: cheap
// enough to poll.
func (e *Engine) Brief() Status { return e.status(true) }

func (e *Engine) status(brief bool) Status {
	e.mu.Lock()
	w, st := e.world, Status{Node: e.node, AppliedAt: e.appliedAt, Pending: e.applied < e.gen}
	if e.applyErr != nil {
		st.Error = e.applyErr.Error()
	}
	if e.sourceErr != nil {
		st.Source = e.sourceErr.Error()
	}
	e.mu.Unlock()
	drops, err := e.enf.Drops()
	if err != nil && st.Error == "" {
		st.Error = err.Error()
	}
	st.Policies = []PolicyStatus{}
	st.Pods = []PodStatus{}
	for _, p := range w.Policies() {
		ps := PolicyStatus{Namespace: p.Ref.Namespace, Name: p.Ref.Name, Ingress: p.Isolates[policy.DirIngress], Egress: p.Isolates[policy.DirEgress],
			Local:          []string{},
			DroppedIngress: drops[enforce.CounterName(p.Ref, policy.DirIngress)],
			DroppedEgress:  drops[enforce.CounterName(p.Ref, policy.DirEgress)]}
		for _, pod := range w.Pods() {
			if !brief && pod.Node == e.node && pod.Namespace == p.Ref.Namespace && p.Selector.Matches(pod.Labels) {
				ps.Local = append(ps.Local, pod.Key())
			}
		}
		st.Policies = append(st.Policies, ps)
	}
	if brief {
		return st
	}
	for _, pod := range w.Pods() {
		if pod.Node != e.node {
			continue
		}
		ps := PodStatus{Pod: pod.Key()}
		if len(pod.Addrs) > 0 {
			ps.Addr = pod.Addrs[0].String()
		}
		for _, k := range slices.Sorted(maps.Keys(pod.Labels)) {
			ps.Labels = append(ps.Labels, k+"="+pod.Labels[k])
		}
		for _, p := range w.Selecting(pod, policy.DirIngress) {
			ps.Ingress = append(ps.Ingress, p.Ref.String())
		}
		for _, p := range w.Selecting(pod, policy.DirEgress) {
			ps.Egress = append(ps.Egress, p.Ref.String())
		}
		st.Pods = append(st.Pods, ps)
	}
	return st
}

// Explanation is the answer of `drover policy explain`.
type Explanation struct {
	From, To string
	Port     uint16
	Protocol policy.Protocol
	Allowed  bool
	Egress   policy.Side
	Ingress  policy.Side
}

// ErrNoEndpoint: a name that is no known pod.
var ErrNoEndpoint = errors.New("no such pod")

// Explain decides a new flow from one endpoint to another in the World
// the kernel enforces. Endpoints are "namespace/name" of a known pod or an
// address.
func (e *Engine) Explain(from, to string, proto policy.Protocol, port uint16) (Explanation, error) {
	w := e.World()
	src, err := endpoint(w, from)
	if err != nil {
		return Explanation{}, fmt.Errorf("from: %w", err)
	}
	dst, err := endpoint(w, to)
	if err != nil {
		return Explanation{}, fmt.Errorf("to: %w", err)
	}
	v := w.Evaluate(src, dst, proto, port)
	return Explanation{From: src.String(), To: dst.String(), Port: port, Protocol: proto, Allowed: v.Allowed,
		Egress: v.Side[policy.DirEgress], Ingress: v.Side[policy.DirIngress]}, nil
}

func endpoint(w *policy.World, s string) (policy.Endpoint, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return w.EndpointAt(a), nil
	}
	ns, name, ok := strings.Cut(s, "/")
	if !ok {
		return policy.Endpoint{}, fmt.Errorf("%q: want namespace/name or an address", s)
	}
	p := w.Pod(ns, name)
	if p == nil || len(p.Addrs) == 0 {
		return policy.Endpoint{}, fmt.Errorf("%s: %w", s, ErrNoEndpoint)
	}
	return policy.Endpoint{Pod: p, Addr: p.Addrs[0]}, nil
}

func pendingPolicy(ns string) *policy.Policy {
	p := &policy.Policy{Ref: policy.Ref{Namespace: ns, Name: PendingPolicy},
		Selector: policy.Selector{MatchExpressions: []policy.Requirement{{Key: pendingLabel, Operator: policy.Exists}}}}
	p.Isolates[policy.DirIngress] = true
	return p
}
