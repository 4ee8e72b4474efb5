package engine

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drovernet/drover/policy"
	"github.com/drovernet/drover/policy/enforce"
)

// fakeEnforcer records what it was given; failing makes Apply fail.
type fakeEnforcer struct {
	mu      sync.Mutex
	last    *enforce.Ruleset
	applies int
	failing int // fail this many more applies
	removed bool
}

func (f *fakeEnforcer) Apply(rs *enforce.Ruleset) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applies++
	if f.failing > 0 {
		f.failing--
		return errors.New("netlink: device or resource busy")
	}
	f.last = rs
	return nil
}

func (f *fakeEnforcer) Drops() (map[string]uint64, error) {
	return map[string]uint64{"ingress:x/deny": 3}, nil
}

func (f *fakeEnforcer) Remove() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = true
	return nil
}

func startEngine(t *testing.T, f *fakeEnforcer) *Engine {
	t.Helper()
	e := New("h1", f, slog.New(slog.NewTextHandler(t.Output(), nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if !f.removed {
			t.Error("Run returned without removing the table")
		}
	})
	return e
}

func waitApplied(t *testing.T, e *Engine) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.WaitApplied(ctx); err != nil {
		t.Fatalf("changes not applied: %v", err)
	}
}

const denyX = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec: {podSelector: {}}\n"

func pods() []policy.Pod {
	return []policy.Pod{{Namespace: "x", Name: "a", Labels: map[string]string{"app": "a"}, Addrs: []netip.Addr{netip.MustParseAddr("10.42.1.2")}}}
}

func TestEngineAppliesAndExplains(t *testing.T) {
	f := &fakeEnforcer{}
	e := startEngine(t, f)
	set, err := policy.Parse([]byte(denyX), "default")
	if err != nil {
		t.Fatal(err)
	}
	e.SetPolicies(set)
	e.SetLocal(pods())
	e.SetRemote("h2", []policy.Pod{{Namespace: "y", Name: "b", Addrs: []netip.Addr{netip.MustParseAddr("10.42.2.2")}}})
	waitApplied(t, e)
	f.mu.Lock()
	rs := f.last
	f.mu.Unlock()
	if len(rs.Groups[policy.DirIngress]) != 1 || rs.Groups[policy.DirIngress][0].Pods[0] != netip.MustParseAddr("10.42.1.2") {
		t.Fatalf("ingress groups: got %+v, want x/a isolated", rs.Groups[policy.DirIngress])
	}
	if _, ok := rs.Idents[netip.MustParseAddr("10.42.2.2")]; !ok {
		t.Errorf("remote pod y/b has no identity: %v", rs.Idents)
	}

	x, err := e.Explain("y/b", "x/a", policy.TCP, 80)
	if err != nil {
		t.Fatal(err)
	}
	if x.Allowed || !strings.Contains(x.Ingress.Why, "isolated by x/deny") {
		t.Errorf("explain y/b -> x/a: got allowed %v (%s), want denied by x/deny", x.Allowed, x.Ingress.Why)
	}
	if x, err := e.Explain("10.42.1.2", "10.42.2.2", policy.UDP, 53); err != nil || !x.Allowed {
		t.Errorf("explain by address x/a -> y/b: got %+v, %v; want allowed", x, err)
	}
	if _, err := e.Explain("x/nope", "x/a", policy.TCP, 80); !errors.Is(err, ErrNoEndpoint) {
		t.Errorf("explain an unknown pod: got %v, want ErrNoEndpoint", err)
	}

	st := e.Status()
	if len(st.Policies) != 1 || st.Policies[0].DroppedIngress != 3 || len(st.Policies[0].Local) != 1 || len(st.Pods) != 1 || st.Pods[0].Ingress[0] != "x/deny" {
		t.Errorf("status: got %+v", st)
	}
}

func TestEngineRetriesFailedApply(t *testing.T) {
	f := &fakeEnforcer{failing: 2}
	e := startEngine(t, f)
	e.SetLocal(pods())
	waitApplied(t, e)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.applies < 3 || f.last == nil {
		t.Errorf("got %d applies, last %v; want the third to succeed", f.applies, f.last)
	}
}

func TestWatchFile(t *testing.T) {
	f := &fakeEnforcer{}
	e := startEngine(t, f)
	path := filepath.Join(t.TempDir(), "policy.yaml")
	write := func(s string) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil { // as editors and ConfigMaps do
			t.Fatal(err)
		}
	}
	write(denyX)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.WatchFile(ctx, path, "default", nil, 10*time.Millisecond)
	policies := func() int { return len(e.World().Policies()) }
	eventually(t, func() bool { return policies() == 1 }, "the file's policy enforced")

	write(denyX + "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: bad}\nspec: {podSelector: {}, ingres: []}\n")
	eventually(t, func() bool { return strings.Contains(e.Status().Source, "ingres") }, "the broken file reported")
	if policies() != 1 {
		t.Errorf("a broken file changed what is enforced: %d policies", policies())
	}

	write(denyX + "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: two, namespace: x}\nspec: {podSelector: {}}\n")
	eventually(t, func() bool { return policies() == 2 && e.Status().Source == "" }, "the fixed file enforced")
}

func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// In Kubernetes mode a local pod the API server does not list yet is
// denied all ingress until it does (fail closed), and then gets its own.
func TestEnginePendingPods(t *testing.T) {
	f := &fakeEnforcer{}
	e := startEngine(t, f)
	e.SetPods(pods()) // x/a, 10.42.1.2, no policy: open
	e.SetLocal([]policy.Pod{
		{Namespace: "x", Name: "a", Addrs: []netip.Addr{netip.MustParseAddr("10.42.1.2")}},
		{Namespace: "x", Name: "new", Addrs: []netip.Addr{netip.MustParseAddr("10.42.1.3")}},
	})
	waitApplied(t, e)
	isolated := func() []netip.Addr {
		f.mu.Lock()
		defer f.mu.Unlock()
		var out []netip.Addr
		for _, g := range f.last.Groups[policy.DirIngress] {
			out = append(out, g.Pods...)
		}
		return out
	}
	if got := isolated(); len(got) != 1 || got[0] != netip.MustParseAddr("10.42.1.3") {
		t.Fatalf("ingress-isolated: got %v, want only the pending x/new", got)
	}
	if x, err := e.Explain("10.42.1.2", "10.42.1.3", policy.TCP, 80); err != nil || x.Allowed || !strings.Contains(x.Ingress.Why, PendingPolicy) {
		t.Errorf("explain to a pending pod: got %+v, %v; want denied by %s", x, err, PendingPolicy)
	}
	e.SetPods(append(pods(), policy.Pod{Namespace: "x", Name: "new", Node: "h1", Addrs: []netip.Addr{netip.MustParseAddr("10.42.1.3")}}))
	waitApplied(t, e)
	if got := isolated(); len(got) != 0 {
		t.Errorf("once listed, x/new is still isolated: %v", got)
	}
}

// A local pod whose Pod the API lists by name, before the kubelet reports
// its address, gets its labels at once with the CNI's address.
func TestEngineListedByName(t *testing.T) {
	f := &fakeEnforcer{}
	e := startEngine(t, f)
	set, err := policy.Parse([]byte(denyX), "default")
	if err != nil {
		t.Fatal(err)
	}
	e.SetPolicies(set)
	e.SetPods([]policy.Pod{{Namespace: "y", Name: "b", Node: "h1", Labels: map[string]string{"app": "b"}}}) // no address yet
	e.SetLocal([]policy.Pod{{Namespace: "y", Name: "b", Addrs: []netip.Addr{netip.MustParseAddr("10.42.1.7")}}})
	waitApplied(t, e)
	x, err := e.Explain("10.42.1.9", "y/b", policy.TCP, 80)
	if err != nil || !x.Allowed || strings.Contains(x.Ingress.Why, PendingPolicy) {
		t.Errorf("explain to y/b listed by name: got %+v, %v; want allowed, not pending", x, err)
	}
	if p := e.World().PodAt(netip.MustParseAddr("10.42.1.7")); p == nil || p.Labels["app"] != "b" {
		t.Errorf("10.42.1.7: got %+v, want y/b with its API labels", p)
	}
}
