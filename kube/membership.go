package kube

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/drovernet/drover/gossip"
	"github.com/drovernet/drover/internal/ratelog"
)

// Annotations drover writes on its own Node.
const (
	// AnnotationInfo is the node's published facts: gossip.NodeInfo's
	// binary encoding (the same bytes gossip carries, decoded by the same
	// validated, fuzzed decoder), base64. Authoritative.
	AnnotationInfo = "drover.network/node-info"
	// AnnotationUnderlay and AnnotationBlock repeat the underlay address
	// and block for people (kubectl describe node); never read.
	AnnotationUnderlay = "drover.network/underlay"
	AnnotationBlock    = "drover.network/block"
)

// PodCIDR modes (cluster.kubernetes.pod_cidr).
const (
	// ModeNode: each host's block is its Node's spec.podCIDRs, allocated by
	// the controller-manager (--allocate-node-cidrs, the default of
	// kubeadm, k3s and RKE2), as flannel's kube subnet manager does.
	ModeNode = "node"
	// ModeClaim: drover claims blocks itself, as in gossip mode, and
	// records each on its Node (controller-manager allocating nothing).
	ModeClaim = "claim"
)

// Config configures a Membership.
type Config struct {
	Node string // this host's Node name
	Mode string // ModeNode or ModeClaim
	Log  *slog.Logger
}

// Membership is agent.Membership over Node objects: every Node that carries
// AnnotationInfo is a member, alive while the Node exists; a deleted Node is
// gone (its routes withdrawn everywhere). Its cache is kept by an informer,
// so while the API server is away Members keeps answering with the last
// state known (the data plane forwards on), and the informer relists when
// the server returns.
type Membership struct {
	api   API
	cfg   Config
	log   *slog.Logger // rate-limited: paths here run per event and retry
	store cache.Store
	ctrl  cache.Controller

	changes chan struct{}
	kick    chan struct{} // publisher: something to publish

	mu        sync.Mutex
	want      map[string]string // annotations to publish; nil before Update
	published bool              // want is on our Node as last seen
}

// New makes a Membership; Run starts it.
func New(api API, cfg Config) (*Membership, error) {
	if cfg.Node == "" {
		return nil, errors.New("kube: empty node name")
	}
	if cfg.Mode != ModeNode && cfg.Mode != ModeClaim {
		return nil, fmt.Errorf("kube: pod_cidr mode %q: want %q or %q", cfg.Mode, ModeNode, ModeClaim)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	m := &Membership{
		api: api, cfg: cfg,
		log:     ratelog.New(cfg.Log.With("component", "kubernetes"), 0, 0),
		changes: make(chan struct{}, 1),
		kick:    make(chan struct{}, 1),
	}
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return api.ListNodes(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return api.WatchNodes(ctx, o)
		},
	}
	m.store, m.ctrl = cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: lw,
		ObjectType:    &corev1.Node{},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { m.changed(nil, obj) },
			UpdateFunc: m.changed,
			DeleteFunc: func(obj any) { m.changed(obj, nil) },
		},
	})
	return m, nil
}

// Run keeps the cache and publishes this host's info until ctx is done.
func (m *Membership) Run(ctx context.Context) {
	done := make(chan struct{})
	go func() { defer close(done); m.ctrl.RunWithContext(ctx) }()
	m.publish(ctx)
	<-done
}

// WaitSynced waits until the first list of Nodes is in the cache: before
// it, Members knows nothing, and a host could claim a block another one
// holds.
func (m *Membership) WaitSynced(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), m.ctrl.HasSynced) {
		return fmt.Errorf("kubernetes: nodes not listed: %w", context.Cause(ctx))
	}
	return nil
}

// Synced reports whether the first list of Nodes is in.
func (m *Membership) Synced() bool { return m.ctrl.HasSynced() }

// Changes implements agent.Membership.
func (m *Membership) Changes() <-chan struct{} { return m.changes }

// changed is the informer's handler: it signals Changes when what the agent
// reads of a Node changed (Nodes are also updated for heartbeats and
// conditions, which it does not read), and republishes our info when our
// Node lost it (re-created, or annotations overwritten).
func (m *Membership) changed(oldObj, newObj any) {
	o, n := nodeOf(oldObj), nodeOf(newObj)
	if n != nil && n.Name == m.cfg.Node {
		m.mu.Lock()
		ok := m.want != nil && hasAnnotations(n, m.want)
		if m.published && !ok && m.want != nil {
			m.log.Warn("our node lost drover's annotations; publishing again", "node", n.Name)
		}
		m.published = ok
		m.mu.Unlock()
		if !ok {
			m.poke(m.kick)
		}
	}
	if o != nil && n != nil && sameFacts(o, n) {
		return
	}
	m.poke(m.changes)
}

func (m *Membership) poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// nodeOf unwraps an informer object (a tombstone on delete).
func nodeOf(obj any) *corev1.Node {
	switch v := obj.(type) {
	case *corev1.Node:
		return v
	case cache.DeletedFinalStateUnknown:
		n, _ := v.Obj.(*corev1.Node)
		return n
	}
	return nil
}

// sameFacts reports whether a and b agree in everything Members reads.
func sameFacts(a, b *corev1.Node) bool {
	return a.Annotations[AnnotationInfo] == b.Annotations[AnnotationInfo] &&
		a.Spec.PodCIDR == b.Spec.PodCIDR && slices.Equal(a.Spec.PodCIDRs, b.Spec.PodCIDRs) &&
		a.CreationTimestamp.Equal(&b.CreationTimestamp) && a.UID == b.UID
}

func hasAnnotations(n *corev1.Node, want map[string]string) bool {
	for k, v := range want {
		if n.Annotations[k] != v {
			return false
		}
	}
	return true
}

// Members implements agent.Membership: one member per Node that carries
// AnnotationInfo, alive (the Node exists). In ModeNode a member's block is
// its Node's spec.podCIDR(s), dated by the Node's creation, whatever the
// annotation says: the controller-manager allocates them, and a member
// cannot claim another's.
func (m *Membership) Members() []gossip.Member {
	objs := m.store.List()
	out := make([]gossip.Member, 0, len(objs))
	for _, obj := range objs {
		n := nodeOf(obj)
		if n == nil {
			continue
		}
		v, ok := n.Annotations[AnnotationInfo]
		if !ok {
			continue // not (yet) running drover
		}
		mem := gossip.Member{Name: n.Name, State: gossip.Alive, Since: n.CreationTimestamp.Time}
		if ip := InternalIP(n); ip.IsValid() {
			mem.Addr = netip.AddrPortFrom(ip, 0)
		}
		if err := decodeInfo(v, &mem.Info); err != nil {
			mem.Info = gossip.NodeInfo{}
			mem.InfoErr = err
		}
		if m.cfg.Mode == ModeNode && mem.InfoErr == nil {
			mem.Info.Block, mem.Info.BlockSince = netip.Prefix{}, 0
			if b, ok := PodCIDR(n); ok {
				mem.Info.Block, mem.Info.BlockSince = b, n.CreationTimestamp.UnixNano()
			}
			mem.Info.Prefixes = nil
		}
		out = append(out, mem)
	}
	return out
}

// decodeInfo reads AnnotationInfo's value.
func decodeInfo(v string, in *gossip.NodeInfo) error {
	raw, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return fmt.Errorf("%s: %w", AnnotationInfo, err)
	}
	if err := in.UnmarshalBinary(raw); err != nil {
		return fmt.Errorf("%s: %w", AnnotationInfo, err)
	}
	return nil
}

// PodCIDR is the Node's IPv4 pod CIDR (spec.podCIDRs, or the older
// spec.podCIDR), masked.
func PodCIDR(n *corev1.Node) (netip.Prefix, bool) {
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err == nil && p.Addr().Is4() && p == p.Masked() {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// InternalIP is the Node's first InternalIP address.
func InternalIP(n *corev1.Node) netip.Addr {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				return ip
			}
		}
	}
	return netip.Addr{}
}

// Own returns this host's Node as the cache has it.
func (m *Membership) Own() (*corev1.Node, bool) {
	obj, ok, err := m.store.GetByKey(m.cfg.Node)
	if err != nil || !ok {
		return nil, false
	}
	n := nodeOf(obj)
	return n, n != nil
}

// Update implements agent.Membership: the info is published on our Node by
// Run, retried until the API server takes it; Update itself does not wait
// for the server (the agent calls it from its loop, which must go on
// while the server is away).
func (m *Membership) Update(in gossip.NodeInfo) error {
	raw, err := in.MarshalBinary()
	if err != nil {
		return err
	}
	want := map[string]string{
		AnnotationInfo:     base64.StdEncoding.EncodeToString(raw),
		AnnotationUnderlay: in.Underlay.String(),
		AnnotationBlock:    "",
	}
	if in.Block.IsValid() {
		want[AnnotationBlock] = in.Block.String()
	}
	m.mu.Lock()
	m.want, m.published = want, false
	m.mu.Unlock()
	m.poke(m.kick)
	return nil
}

// Published reports whether our latest info is on our Node.
func (m *Membership) Published() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.published
}

// Retry bounds for publishing (publish).
var (
	retryFirst = 500 * time.Millisecond
	retryMax   = 10 * time.Second
)

// publish patches our Node with the latest info whenever it changes or our
// Node lost it, retrying with backoff while the server refuses or is away,
// until ctx is done.
func (m *Membership) publish(ctx context.Context) {
	wait := retryFirst
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
		case <-retry.C:
		}
		m.mu.Lock()
		want, done := m.want, m.published
		m.mu.Unlock()
		if want == nil || done {
			continue
		}
		body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": want}})
		if err == nil {
			err = m.api.PatchNode(ctx, m.cfg.Node, types.MergePatchType, body, "")
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			m.log.Warn("publish node info on the Node; retrying", "node", m.cfg.Node, "in", wait, "err", err)
			retry.Reset(wait)
			wait = min(2*wait, retryMax)
			continue
		}
		wait = retryFirst
		m.mu.Lock()
		if maps.Equal(m.want, want) {
			m.published = true
		}
		m.mu.Unlock()
		m.log.Debug("node info published", "node", m.cfg.Node)
	}
}

// NetworkAvailable sets the Node's NetworkUnavailable condition to False,
// as every network provider does once the node's pod network works (the
// node controller adds the condition as True on clouds whose routes it
// manages, and the scheduler keeps pods off a node where it is True).
func (m *Membership) NetworkAvailable(ctx context.Context) error {
	now := metav1.Now()
	cond := corev1.NodeCondition{
		Type:               corev1.NodeNetworkUnavailable,
		Status:             corev1.ConditionFalse,
		Reason:             "DroverIsUp",
		Message:            "drover routes this node's pod network",
		LastTransitionTime: now,
		LastHeartbeatTime:  now,
	}
	// A strategic merge patch merges conditions by type, leaving the
	// kubelet's own untouched.
	body, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{cond}}})
	if err != nil {
		return err
	}
	return m.api.PatchNode(ctx, m.cfg.Node, types.StrategicMergePatchType, body, "status")
}

// NetworkUnavailable reports the Node's NetworkUnavailable condition: true
// when it is there and not False.
func NetworkUnavailable(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable {
			return c.Status != corev1.ConditionFalse
		}
	}
	return false
}

// LogTo sends client-go's own logging (klog: reflector errors while the
// API server is away, and the like) to log instead of stderr. Global, as
// klog is: the daemon calls it once.
func LogTo(log *slog.Logger) { klog.SetSlogLogger(log.With("component", "kubernetes")) }
