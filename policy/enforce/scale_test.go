package enforce

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/drovernet/drover/internal/netnstest"
	"github.com/drovernet/drover/policy"
)

// scaleState is issue 12's scale point as data that changes can edit:
// pods over three nodes in 10 namespaces, 50 apps, and policies each
// isolating one app and admitting another app, web pods of namespaces
// labelled env=prod and an ipBlock with except, on a named port, a port
// range and UDP 53; a quarter isolate egress too. With unique, every pod
// also has a label of its own (as a StatefulSet's pod name) and each
// policy admits one pod by it.
type scaleState struct {
	pods   []policy.Pod
	pols   []*policy.NetworkPolicy
	unique bool
}

func newScaleState(pods, pols int, unique bool) *scaleState {
	st := &scaleState{unique: unique}
	for i := range pods {
		st.pods = append(st.pods, scalePod(i, unique))
	}
	for i := range pols {
		st.pols = append(st.pols, scalePolicy(i, 0, pods, unique))
	}
	return st
}

func scalePod(i int, unique bool) policy.Pod {
	p := policy.Pod{
		Namespace: fmt.Sprintf("ns%d", i%10), Name: fmt.Sprintf("p%d", i),
		Labels: map[string]string{"app": fmt.Sprintf("app%d", i%50), "tier": []string{"web", "db"}[i%2]},
		Addrs:  []netip.Addr{netip.AddrFrom4([4]byte{10, 42, byte(i / 250), byte(i%250 + 2)})},
		Node:   fmt.Sprintf("n%d", i%3),
		Ports:  []policy.ContainerPort{{Name: "http", Port: 8080, Protocol: policy.TCP}},
	}
	if unique {
		p.Labels["name"] = p.Name
	}
	return p
}

func scalePolicy(i, gen, pods int, unique bool) *policy.NetworkPolicy {
	np := &policy.NetworkPolicy{Metadata: policy.Metadata{Name: fmt.Sprintf("np%d", i), Namespace: fmt.Sprintf("ns%d", i%10)}}
	np.Spec.PodSelector = policy.Selector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", i%50)}}
	end := int32(9000 + (i+gen)%7)
	np.Spec.Ingress = []policy.IngressRule{{
		From: []policy.Peer{
			{PodSelector: &policy.Selector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", (i+1+gen)%50)}}},
			{NamespaceSelector: &policy.Selector{MatchLabels: map[string]string{"env": "prod"}}, PodSelector: &policy.Selector{MatchLabels: map[string]string{"tier": "web"}}},
			{IPBlock: &policy.IPBlock{CIDR: "192.168.0.0/16", Except: []string{fmt.Sprintf("192.168.%d.0/24", (i+gen)%256)}}},
		},
		Ports: []policy.Port{{Port: &policy.PortRef{Name: "http"}}, {Port: &policy.PortRef{Num: 9000}, EndPort: &end}, {Protocol: policy.UDP, Port: &policy.PortRef{Num: 53}}},
	}}
	if unique {
		np.Spec.Ingress[0].From = append(np.Spec.Ingress[0].From, policy.Peer{PodSelector: &policy.Selector{MatchLabels: map[string]string{"name": fmt.Sprintf("p%d", (i*7+gen)%pods)}}})
	}
	if i%4 == 0 {
		np.Spec.PolicyTypes = []policy.Direction{policy.Ingress, policy.Egress}
		np.Spec.Egress = []policy.EgressRule{{To: []policy.Peer{{NamespaceSelector: &policy.Selector{}}}, Ports: []policy.Port{{Port: &policy.PortRef{Name: "http"}}}}}
	}
	return np
}

func (st *scaleState) world(t testing.TB) *policy.World {
	var out []*policy.Policy
	for _, np := range st.pols {
		c, err := policy.Compile(np)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	var nss []policy.Namespace
	for i := range 10 {
		l := map[string]string{}
		if i%2 == 0 {
			l["env"] = "prod"
		}
		nss = append(nss, policy.Namespace{Name: fmt.Sprintf("ns%d", i), Labels: l})
	}
	return policy.NewWorld(out, nss, st.pods)
}

func BenchmarkCompile1000x200(b *testing.B) {
	w := newScaleState(1000, 200, false).world(b)
	var ids Idents
	b.ReportAllocs()
	for b.Loop() {
		Compile(w, "n0", &ids)
	}
}

// TestApplyScale measures, in a namespace, the time from a change to the
// kernel enforcing it on one host (compile and apply), with 1000 pods and
// 200 policies: the first install, then 40 single changes in turn - a
// policy replaced, a pod added, a pod relabelled, a pod deleted - whose
// p99 issue 12 wants under 1 s, then every policy replaced at once.
func TestApplyScale(t *testing.T) {
	if testing.Short() {
		t.Skip("scale: 1000 pods, 200 policies (skipped with -short)")
	}
	if raceEnabled {
		t.Skip("timed scale test: runs without -race in .ci/run's scale step: go test -run TestApplyScale ./policy/enforce/")
	}
	netnstest.NeedRoot(t)
	for _, unique := range []bool{false, true} {
		t.Run(fmt.Sprintf("unique=%v", unique), func(t *testing.T) {
			ns := netnstest.New(t, "ps")
			e, err := NewIn(ns.Handle())
			if err != nil {
				t.Fatal(err)
			}
			var ids Idents
			st := newScaleState(1000, 200, unique)
			t0 := time.Now()
			rs := Compile(st.world(t), "n0", &ids)
			compiled := time.Since(t0)
			if err := e.Apply(rs); err != nil {
				t.Fatal(err)
			}
			full := time.Since(t0)
			n, pods := 0, 0
			for d := range 2 {
				for _, g := range rs.Groups[d] {
					n += len(g.Peers) + len(g.Ranges)
					pods += len(g.Pods)
				}
			}
			t.Logf("1000 pods, 200 policies: %d groups, %d isolated (pod, direction) pairs, %d range elements; compile %v, first install %v",
				len(rs.Groups[0])+len(rs.Groups[1]), pods, n, compiled.Round(time.Millisecond), full.Round(time.Millisecond))

			var took []time.Duration
			apply := func() time.Duration {
				t.Helper()
				t0 := time.Now()
				if err := e.Apply(Compile(st.world(t), "n0", &ids)); err != nil {
					t.Fatal(err)
				}
				return time.Since(t0)
			}
			for i := range 40 {
				switch i % 4 {
				case 0:
					k := (i * 13) % len(st.pols)
					st.pols[k] = scalePolicy(k, i+1, 1000, unique)
				case 1:
					st.pods = append(st.pods, scalePod(1000+i, unique))
				case 2:
					p := &st.pods[(i*31)%1000]
					p.Labels = map[string]string{"app": fmt.Sprintf("app%d", (i*7)%50), "tier": "web"}
				case 3:
					st.pods = st.pods[:len(st.pods)-1]
				}
				took = append(took, apply())
			}
			slices.Sort(took)
			p50, p99 := took[len(took)/2], took[len(took)*99/100]
			t.Logf("single changes (compile + apply, %d): p50 %v, p99 %v, max %v", len(took), p50.Round(time.Millisecond), p99.Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
			if p99 > time.Second {
				t.Errorf("p99 of single changes %v, want under 1 s", p99)
			}
			for k := range st.pols {
				st.pols[k] = scalePolicy(k, 100, 1000, unique)
			}
			t.Logf("all 200 policies replaced at once: %v (%+v)", apply().Round(time.Millisecond), e.LastApply())
			if err := e.Remove(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
