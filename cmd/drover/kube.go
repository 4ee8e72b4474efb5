//go:build !nokube

package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/drovernet/drover/agent"
	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/gossip/blocks"
	"github.com/drovernet/drover/internal/ratelog"
	"github.com/drovernet/drover/kube"
	"github.com/drovernet/drover/policy/engine"
)

// kubeStore is the kubernetes datastore's membership and its goroutine.
// withKube is shown by `drover version` (-tags nokube builds leave it out).
const withKube = true

type kubeStore struct {
	m      *kube.Membership
	cancel context.CancelFunc
	done   chan struct{}
	log    *slog.Logger
}

func (k *kubeStore) stop() { k.cancel(); <-k.done }

// ready: the Nodes are listed and our info is on our Node.
func (k *kubeStore) ready() bool { return k.m.Synced() && k.m.Published() }

// waitLog is how often startKube says what it still waits for.
const waitLog = 10 * time.Second

// startKube starts the Node informer, waits for the first list (and with
// pod_cidr node for our Node's podCIDR), then starts the agent over it.
func startKube(ctx context.Context, cfg *config.Config, acfg agent.Config, r agent.Router, kern tunKernel, pins *agent.Pins, bs *bgpSpeaker, log *slog.Logger) (*cluster, error) {
	cc := cfg.Cluster
	kube.LogTo(log)
	client, err := kube.NewClient(cc.Kubernetes.Kubeconfig)
	if err != nil {
		return nil, err
	}
	m, err := kube.New(client, kube.Config{Node: acfg.Name, Mode: cc.Kubernetes.PodCIDR, Log: log})
	if err != nil {
		return nil, err
	}
	kctx, cancel := context.WithCancel(context.Background())
	k := &kubeStore{m: m, cancel: cancel, done: make(chan struct{}), log: ratelog.New(log.With("component", "kubernetes"), 0, 0)}
	go func() { defer close(k.done); defer client.Close(); m.Run(kctx) }()
	ok := false
	defer func() {
		if !ok {
			k.stop()
		}
	}()
	if err := k.waitFor(ctx, "the API server's list of Nodes", func() (bool, string) { return m.Synced(), "" }); err != nil {
		return nil, err
	}
	k.log.Info("nodes listed", "members", len(m.Members()))
	if cc.Kubernetes.PodCIDR == kube.ModeNode {
		var block blocks.Claim
		err := k.waitFor(ctx, "this host's Node and its spec.podCIDR", func() (bool, string) {
			n, found := m.Own()
			if !found {
				return false, fmt.Sprintf("no Node %q (node.name, or NODE_NAME)", acfg.Name)
			}
			b, has := kube.PodCIDR(n)
			if !has {
				return false, fmt.Sprintf("Node %q has no IPv4 spec.podCIDR: is the controller-manager run with --allocate-node-cidrs? (else pod_cidr: claim)", acfg.Name)
			}
			block = blocks.Claim{Block: b, Since: n.CreationTimestamp.UnixNano()}
			return true, ""
		})
		if err != nil {
			return nil, err
		}
		acfg.Assigned = block
		k.log.Info("block assigned by the Node's podCIDR", "prefix", block.Block)
	} else {
		// The list is every claim there is: no other side of a partition
		// can claim unseen, as the API server orders all writes.
		acfg.MayClaimAlone = true
		acfg.ClaimSettle = kubeClaimSettle
	}
	ag, err := agent.New(acfg, r, kern)
	if err != nil {
		return nil, err
	}
	ag.Start()
	bs.follow(ctx, ag)
	ag.Attach(m)
	if err := m.Update(ag.Info()); err != nil {
		return nil, err
	}
	ok = true
	return &cluster{ag: ag, kube: k, pins: pins, log: ratelog.New(log.With("component", "cluster"), 0, 0)}, nil
}

// kubeClaimSettle: two hosts that claim one block at the same moment see
// each other's annotation within a watch event's latency (milliseconds);
// two seconds also cover an API server under load.
const kubeClaimSettle = 2 * time.Second

// waitFor polls done until it reports true or ctx ends, logging what it
// waits for (and why, when done says) every waitLog.
func (k *kubeStore) waitFor(ctx context.Context, what string, done func() (bool, string)) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	start, logged := time.Now(), time.Now()
	for {
		ok, why := done()
		if ok {
			return nil
		}
		if time.Since(logged) >= waitLog {
			logged = time.Now()
			k.log.Warn("waiting for "+what, "for", time.Since(start).Round(time.Second), "why", why)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kubernetes: stopped while waiting for %s: %s", what, why)
		case <-t.C:
		}
	}
}

// networkCheck is how often keepNetworkAvailable looks at our Node (in the
// informer's cache, so no request) for a NetworkUnavailable condition to
// clear.
const networkCheck = 2 * time.Second

// keepNetworkAvailable clears our Node's NetworkUnavailable condition once
// the agent has stepped (routes in place) and our info is on the Node, and
// again whenever the condition comes back (a Node re-created), until ctx
// is done.
func (k *kubeStore) keepNetworkAvailable(ctx context.Context, ag *agent.Agent) {
	t := time.NewTicker(networkCheck)
	defer t.Stop()
	var clearedUID string
	for {
		if n, ok := k.m.Own(); ok && k.m.Published() {
			if last, _ := ag.Health(); !last.IsZero() && (kube.NetworkUnavailable(n) || string(n.UID) != clearedUID) {
				if err := k.m.NetworkAvailable(ctx); err != nil {
					k.log.Warn("clear the Node's NetworkUnavailable condition; retrying", "err", err)
				} else {
					clearedUID = string(n.UID)
					k.log.Info("node network available", "node", n.Name)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// startKubePolicy returns the loop that feeds the policy engine from the
// API server (Pods, Namespaces, NetworkPolicies), until its ctx ends.
func startKubePolicy(cfg *config.Config, e *engine.Engine, log *slog.Logger) (func(context.Context), error) {
	client, err := kube.NewClient(cfg.Cluster.Kubernetes.Kubeconfig)
	if err != nil {
		return nil, err
	}
	src := kube.NewPolicySource(client, e, log)
	return func(ctx context.Context) {
		defer client.Close()
		src.Run(ctx)
	}, nil
}
