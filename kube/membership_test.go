package kube

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/drovernet/drover/gossip"
)

var created = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func info(i byte, block string) gossip.NodeInfo {
	in := gossip.NodeInfo{
		Version:  "test",
		Underlay: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, i}), 4500),
		Epoch:    1, Encaps: gossip.EncapESP, Ciphers: gossip.CipherAES128GCM,
		MAC: [6]byte{2, 0, 0, 0, 0, i},
	}
	in.Identity[0], in.Ephemeral[0] = i, i+100
	if block != "" {
		in.Block, in.BlockSince = netip.MustParsePrefix(block), created.UnixNano()
	}
	return in
}

func encoded(t *testing.T, in gossip.NodeInfo) string {
	t.Helper()
	b, err := in.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// node is a Node with an InternalIP, an optional pod CIDR and annotations.
func node(name, podCIDR string, ip byte, ann map[string]string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann, CreationTimestamp: metav1.NewTime(created.Add(time.Duration(ip) * time.Minute))}}
	if podCIDR != "" {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = podCIDR, []string{podCIDR}
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("192.0.2.%d", ip)}}
	return n
}

// start runs a Membership for node h1 over api until the test ends.
func start(t *testing.T, api *fakeAPI, mode string) *Membership {
	t.Helper()
	m, err := New(api, Config{Node: "h1", Mode: mode})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := m.WaitSynced(wctx); err != nil {
		t.Fatal(err)
	}
	return m
}

// poll calls f until it returns nil or the deadline passes.
func poll(t *testing.T, what string, f func() error) {
	t.Helper()
	// Generous: it returns as soon as f holds, and CI runs these under
	// -race beside the lab's router processes on two cores.
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// summary renders members as "name block" sorted, InfoErr as "name !err".
func summary(ms []gossip.Member) []string {
	var out []string
	for _, m := range ms {
		switch {
		case m.InfoErr != nil:
			out = append(out, m.Name+" !"+m.InfoErr.Error())
		case m.State != gossip.Alive:
			out = append(out, m.Name+" "+m.State.String())
		default:
			out = append(out, m.Name+" "+m.Info.Block.String())
		}
	}
	slices.Sort(out)
	return out
}

func TestMembersFromNodes(t *testing.T) {
	for _, tc := range []struct {
		mode string
		want []string
	}{
		// node: blocks are the Nodes' podCIDRs, whatever is published.
		{ModeNode, []string{"h2 10.42.2.0/24", "h3 invalid Prefix", "h4 !drover.network/node-info: illegal base64 data at input byte 2"}},
		// claim: blocks are what each host published.
		{ModeClaim, []string{"h2 10.42.9.0/24", "h3 10.42.3.0/24", "h4 !drover.network/node-info: illegal base64 data at input byte 2"}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			api := newFakeAPI()
			api.put(node("h2", "10.42.2.0/24", 2, map[string]string{AnnotationInfo: encoded(t, info(2, "10.42.9.0/24"))}))
			api.put(node("h3", "", 3, map[string]string{AnnotationInfo: encoded(t, info(3, "10.42.3.0/24"))}))
			api.put(node("h4", "10.42.4.0/24", 4, map[string]string{AnnotationInfo: "no!base64"}))
			api.put(node("h5", "10.42.5.0/24", 5, nil)) // not running drover
			m := start(t, api, tc.mode)
			got := summary(m.Members())
			if !slices.Equal(got, tc.want) {
				t.Fatalf("members: got %q, want %q", got, tc.want)
			}
			for _, mem := range m.Members() {
				if mem.Name == "h2" {
					if tc.mode == ModeNode && mem.Info.BlockSince != created.Add(2*time.Minute).UnixNano() {
						t.Errorf("h2 block since: got %v, want the Node's creation", time.Unix(0, mem.Info.BlockSince))
					}
					if mem.Addr.Addr() != netip.MustParseAddr("192.0.2.2") {
						t.Errorf("h2 address: got %v, want its InternalIP", mem.Addr)
					}
				}
			}
		})
	}
}

// Changes fires for what the agent reads (a Node added, deleted, its info
// or pod CIDR changed), not for heartbeats; a deleted Node is no member.
func TestChangesAndDelete(t *testing.T) {
	api := newFakeAPI()
	m := start(t, api, ModeNode)
	drain := func() {
		select {
		case <-m.Changes():
		default:
		}
	}
	waitChange := func(what string) {
		t.Helper()
		select {
		case <-m.Changes():
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no change signalled", what)
		}
	}
	drain()
	n2 := node("h2", "10.42.2.0/24", 2, map[string]string{AnnotationInfo: encoded(t, info(2, ""))})
	api.put(n2)
	waitChange("h2 added")
	if got := summary(m.Members()); !slices.Equal(got, []string{"h2 10.42.2.0/24"}) {
		t.Fatalf("after add: got %q", got)
	}
	// A heartbeat: a condition changes, nothing drover reads.
	hb := api.get("h2")
	hb.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now()}}
	api.put(hb)
	marker := node("h9", "", 9, nil)
	api.put(marker) // an unrelated add, to know the heartbeat was processed
	waitChange("h9 added")
	select {
	case <-m.Changes():
		t.Fatal("a heartbeat signalled a change")
	case <-time.After(50 * time.Millisecond):
	}
	api.del("h2")
	waitChange("h2 deleted")
	if got := summary(m.Members()); len(got) != 0 {
		t.Fatalf("after delete: got %q, want no members", got)
	}
}

// Update publishes on our Node; while the server is away the last state
// stays and publication is retried; when it returns, changes made
// meanwhile are seen and ours is published.
func TestPublishAndServerAway(t *testing.T) {
	retryFirst, retryMax = 10*time.Millisecond, 50*time.Millisecond
	defer func() { retryFirst, retryMax = 500*time.Millisecond, 10*time.Second }()
	api := newFakeAPI()
	api.put(node("h1", "10.42.1.0/24", 1, nil))
	api.put(node("h2", "10.42.2.0/24", 2, map[string]string{AnnotationInfo: encoded(t, info(2, ""))}))
	m := start(t, api, ModeNode)
	in := info(1, "10.42.1.0/24")
	if err := m.Update(in); err != nil {
		t.Fatal(err)
	}
	poll(t, "published", func() error {
		n := api.get("h1")
		if n.Annotations[AnnotationInfo] != encoded(t, in) || n.Annotations[AnnotationBlock] != "10.42.1.0/24" || n.Annotations[AnnotationUnderlay] != "192.0.2.1:4500" {
			return fmt.Errorf("annotations %v", n.Annotations)
		}
		if !m.Published() {
			return fmt.Errorf("Published false")
		}
		return nil
	})

	api.setDown(true)
	in.Epoch = 2
	if err := m.Update(in); err != nil {
		t.Fatal(err)
	}
	if got := summary(m.Members()); !slices.Equal(got, []string{"h1 10.42.1.0/24", "h2 10.42.2.0/24"}) {
		t.Fatalf("members while the server is away: got %q, want the last known", got)
	}
	time.Sleep(100 * time.Millisecond) // several failed retries
	if m.Published() {
		t.Fatal("published while the server is away")
	}
	// Meanwhile h3 appears and h2 goes (as if done by others).
	api.mu.Lock()
	api.nodes["h3"] = node("h3", "10.42.3.0/24", 3, map[string]string{AnnotationInfo: encoded(t, info(3, ""))})
	delete(api.nodes, "h2")
	api.rv += 2
	api.mu.Unlock()
	api.setDown(false)
	poll(t, "resynced and published", func() error {
		if got := summary(m.Members()); !slices.Equal(got, []string{"h1 10.42.1.0/24", "h3 10.42.3.0/24"}) {
			return fmt.Errorf("members %q", got)
		}
		if api.get("h1").Annotations[AnnotationInfo] != encoded(t, in) || !m.Published() {
			return fmt.Errorf("epoch 2 not published")
		}
		return nil
	})
}

// Our Node deleted and created again (a node re-registered) gets our info
// again without the agent doing anything.
func TestRepublishOnRecreate(t *testing.T) {
	api := newFakeAPI()
	api.put(node("h1", "10.42.1.0/24", 1, nil))
	m := start(t, api, ModeNode)
	in := info(1, "")
	_ = m.Update(in)
	poll(t, "published", func() error {
		if !m.Published() {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	api.del("h1")
	api.put(node("h1", "10.42.1.0/24", 1, nil))
	poll(t, "published again", func() error {
		if api.get("h1").Annotations[AnnotationInfo] != encoded(t, in) {
			return fmt.Errorf("annotations %v", api.get("h1").Annotations)
		}
		return nil
	})
}

func TestNetworkAvailable(t *testing.T) {
	api := newFakeAPI()
	n := node("h1", "10.42.1.0/24", 1, nil)
	n.Status.Conditions = []corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue},
		{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionTrue, Reason: "NoRouteCreated"},
	}
	api.put(n)
	m := start(t, api, ModeNode)
	if !NetworkUnavailable(api.get("h1")) {
		t.Fatal("precondition: NetworkUnavailable should be true")
	}
	if err := m.NetworkAvailable(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := api.get("h1")
	if NetworkUnavailable(got) || len(got.Status.Conditions) != 2 {
		t.Fatalf("conditions: got %+v, want NetworkUnavailable False and Ready kept", got.Status.Conditions)
	}
	for _, c := range got.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable && c.Reason != "DroverIsUp" {
			t.Errorf("reason: got %q, want DroverIsUp", c.Reason)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Mode: ModeNode}, "empty node name"},
		{Config{Node: "h1", Mode: "auto"}, `pod_cidr mode "auto"`},
	} {
		if _, err := New(newFakeAPI(), tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): got %v, want an error containing %q", tc.cfg, err, tc.want)
		}
	}
}
