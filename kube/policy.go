package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/drovernet/drover/internal/ratelog"
	"github.com/drovernet/drover/policy"
)

// PolicyAPI is the part of the Kubernetes API network policy reads: Pods,
// Namespaces and NetworkPolicies, listed and watched. *Client is the real
// one.
type PolicyAPI interface {
	List(ctx context.Context, resource string, opts metav1.ListOptions) (runtime.Object, error)
	Watch(ctx context.Context, resource string, opts metav1.ListOptions) (watch.Interface, error)
}

// Resources PolicyAPI serves.
const (
	ResPods            = "pods"
	ResNamespaces      = "namespaces"
	ResNetworkPolicies = "networkpolicies"
)

// PolicySink receives the cluster's policy state: the engine.
type PolicySink interface {
	SetPolicies(*policy.Set)
	SetPods([]policy.Pod)
}

// PolicySource keeps a PolicySink fed from three informers. Every change
// is handed on as a whole snapshot after settle (a burst - a namespace
// deleted, a deployment scaled - is one snapshot).
type PolicySource struct {
	sink   PolicySink
	log    *slog.Logger
	settle time.Duration
	inf    [3]cache.SharedIndexInformer // pods, namespaces, policies
	kick   chan struct{}
}

// NewPolicySource prepares the informers; Run starts them.
func NewPolicySource(api PolicyAPI, sink PolicySink, log *slog.Logger) *PolicySource {
	s := &PolicySource{sink: sink, log: ratelog.New(log.With("component", "kubernetes-policy"), 0, 0), settle: 20 * time.Millisecond, kick: make(chan struct{}, 1)}
	for i, r := range []struct {
		res  string
		obj  runtime.Object
		trim cache.TransformFunc
	}{
		{ResPods, &corev1.Pod{}, trimPod},
		{ResNamespaces, &corev1.Namespace{}, trimMeta},
		{ResNetworkPolicies, &networkingv1.NetworkPolicy{}, trimMeta},
	} {
		lw := &cache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				return api.List(ctx, r.res, o)
			},
			WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return api.Watch(ctx, r.res, o)
			},
		}
		inf := cache.NewSharedIndexInformer(lw, r.obj, 0, cache.Indexers{})
		// Pods are the bulk of the cache: keep what policy reads.
		_ = inf.SetTransform(r.trim)
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { s.poke() },
			UpdateFunc: func(any, any) { s.poke() },
			DeleteFunc: func(any) { s.poke() },
		})
		s.inf[i] = inf
	}
	return s
}

func (s *PolicySource) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Synced reports whether all three first lists are in.
func (s *PolicySource) Synced() bool {
	for _, inf := range s.inf {
		if !inf.HasSynced() {
			return false
		}
	}
	return true
}

// Run runs the informers and hands snapshots to the sink until ctx is
// done. Nothing is handed on before all three lists are in: a partial
// view (policies without their pods) would enforce the wrong thing.
func (s *PolicySource) Run(ctx context.Context) {
	for _, inf := range s.inf {
		go inf.RunWithContext(ctx)
	}
	syncs := make([]cache.InformerSynced, len(s.inf))
	for i, inf := range s.inf {
		syncs[i] = inf.HasSynced
	}
	if !cache.WaitForCacheSync(ctx.Done(), syncs...) {
		return
	}
	s.poke()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		t := time.NewTimer(s.settle)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		set, pods := s.snapshot()
		s.sink.SetPolicies(set)
		s.sink.SetPods(pods)
	}
}

// snapshot converts the caches. A NetworkPolicy drover cannot compile
// (the API server validated it, so this is a field drover does not know)
// is skipped and logged, never guessed at.
func (s *PolicySource) snapshot() (*policy.Set, []policy.Pod) {
	set := &policy.Set{}
	for _, obj := range s.inf[2].GetStore().List() {
		np, ok := obj.(*networkingv1.NetworkPolicy)
		if !ok {
			continue
		}
		p, err := convertPolicy(np)
		if err != nil {
			s.log.Warn("network policy not enforced", "policy", np.Namespace+"/"+np.Name, "err", err)
			continue
		}
		set.Policies = append(set.Policies, p)
	}
	for _, obj := range s.inf[1].GetStore().List() {
		if ns, ok := obj.(*corev1.Namespace); ok {
			set.Namespaces = append(set.Namespaces, policy.Namespace{Name: ns.Name, Labels: ns.Labels})
		}
	}
	var pods []policy.Pod
	for _, obj := range s.inf[0].GetStore().List() {
		if p, ok := obj.(*corev1.Pod); ok {
			if pod, ok := convertPod(p); ok {
				pods = append(pods, pod)
			}
		}
	}
	return set, pods
}

// convertPolicy turns an API NetworkPolicy into drover's through its JSON:
// policy.NetworkPolicy has the API's field names, so nothing is mapped by
// hand and nothing can be mapped wrong.
func convertPolicy(np *networkingv1.NetworkPolicy) (*policy.Policy, error) {
	b, err := json.Marshal(struct {
		Metadata policy.Metadata                `json:"metadata"`
		Spec     networkingv1.NetworkPolicySpec `json:"spec"`
	}{policy.Metadata{Name: np.Name, Namespace: np.Namespace}, np.Spec})
	if err != nil {
		return nil, err
	}
	var p policy.NetworkPolicy
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, err
	}
	return policy.Compile(&p)
}

// convertPod is what policy needs of a pod: nil for pods that hold no
// address of their own (host network) or no longer hold one (finished).
func convertPod(p *corev1.Pod) (policy.Pod, bool) {
	if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || p.DeletionTimestamp != nil && len(p.Status.PodIPs) == 0 {
		return policy.Pod{}, false
	}
	out := policy.Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels, Node: p.Spec.NodeName}
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			out.Addrs = append(out.Addrs, a)
		}
	}
	if len(out.Addrs) == 0 {
		return policy.Pod{}, false
	}
	for _, c := range slices.Concat(p.Spec.InitContainers, p.Spec.Containers) {
		for _, cp := range c.Ports {
			if cp.Name == "" {
				continue
			}
			proto := policy.Protocol(cp.Protocol)
			if proto == "" {
				proto = policy.TCP
			}
			out.Ports = append(out.Ports, policy.ContainerPort{Name: cp.Name, Port: uint16(cp.ContainerPort), Protocol: proto})
		}
	}
	return out, true
}

// trimPod keeps of a Pod what convertPod reads.
func trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, Labels: p.Labels, ResourceVersion: p.ResourceVersion, DeletionTimestamp: p.DeletionTimestamp, UID: p.UID},
		Spec:       corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
		Status:     corev1.PodStatus{Phase: p.Status.Phase, PodIPs: p.Status.PodIPs},
	}
	for _, c := range slices.Concat(p.Spec.InitContainers, p.Spec.Containers) {
		var ports []corev1.ContainerPort
		for _, cp := range c.Ports {
			if cp.Name != "" {
				ports = append(ports, corev1.ContainerPort{Name: cp.Name, ContainerPort: cp.ContainerPort, Protocol: cp.Protocol})
			}
		}
		if len(ports) > 0 {
			out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Ports: ports})
		}
	}
	return out, nil
}

// trimMeta drops managedFields and annotations, which nothing here reads
// (kubectl apply's last-applied annotation can hold a whole object).
func trimMeta(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
		m.SetAnnotations(nil)
	}
	return obj, nil
}

// List implements PolicyAPI.
func (c *Client) List(ctx context.Context, resource string, opts metav1.ListOptions) (runtime.Object, error) {
	rc, out, err := c.forResource(resource, true)
	if err != nil {
		return nil, err
	}
	err = rc.Get().Resource(resource).VersionedParams(&opts, paramCodec).Do(ctx).Into(out)
	return out, err
}

// Watch implements PolicyAPI.
func (c *Client) Watch(ctx context.Context, resource string, opts metav1.ListOptions) (watch.Interface, error) {
	rc, _, err := c.forResource(resource, false)
	if err != nil {
		return nil, err
	}
	opts.Watch = true
	return rc.Get().Resource(resource).VersionedParams(&opts, paramCodec).Watch(ctx)
}

func (c *Client) forResource(resource string, list bool) (restClient, runtime.Object, error) {
	switch resource {
	case ResPods:
		return c.rc, &corev1.PodList{}, nil
	case ResNamespaces:
		return c.rc, &corev1.NamespaceList{}, nil
	case ResNetworkPolicies:
		if c.netrc == nil {
			return nil, nil, fmt.Errorf("kube: no networking.k8s.io/v1 client")
		}
		return c.netrc, &networkingv1.NetworkPolicyList{}, nil
	}
	return nil, nil, fmt.Errorf("kube: resource %q not served", resource)
}
