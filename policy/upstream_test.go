package policy_test

import (
	"net/netip"
	"testing"

	"github.com/drovernet/drover/policy"
	"github.com/drovernet/drover/policy/policytest"
)

// TestUpstreamCases checks policy.Evaluate against every ported upstream
// e2e case: every probe's 72 non-loopback cells on each port and protocol.
func TestUpstreamCases(t *testing.T) {
	n := policytest.Check(t, "testdata/upstream-netpol.yaml", "", policytest.Evaluated)
	t.Logf("%d cells evaluated", n)
}

// TestProjectCases: drover's cases for the project-isolation preset.
func TestProjectCases(t *testing.T) {
	n := policytest.Check(t, "testdata/project-isolation.yaml", "project", policytest.Evaluated)
	t.Logf("%d cells evaluated", n)
}

// TestExplainRules: for every cell of the upstream cases, the rule that
// explain names as allowing a side does allow it on its own (a World
// holding that policy with only that rule), and a denied side names the
// policies that isolate the pod.
func TestExplainRules(t *testing.T) {
	checked := 0
	policytest.Check(t, "testdata/upstream-netpol.yaml", "", func(w *policy.World, ips map[string]netip.Addr, nodeOf func(string) string, proto policy.Protocol, port uint16) policytest.Table {
		for _, from := range policytest.Pods() {
			for _, to := range policytest.Pods() {
				src, dst := w.EndpointAt(ips[from]), w.EndpointAt(ips[to])
				v := w.Evaluate(src, dst, proto, port)
				for d, side := range v.Side {
					switch {
					case side.Match != nil:
						m := side.Match
						var only *policy.Policy
						for _, p := range w.Policies() {
							if p.Ref == m.Policy {
								c := *p
								c.Rules = [2][]policy.Rule{}
								c.Rules[m.Dir] = []policy.Rule{p.Rules[m.Dir][m.Rule]}
								only = &c
							}
						}
						if only == nil {
							t.Fatalf("%s -> %s: explain names %v, which does not exist", from, to, m)
						}
						var pods []policy.Pod
						for _, p := range w.Pods() {
							pods = append(pods, *p)
						}
						var nss []policy.Namespace
						for _, ns := range policytest.Namespaces {
							nss = append(nss, policy.Namespace{Name: ns, Labels: w.NamespaceLabels(ns)})
						}
						w1 := policy.NewWorld([]*policy.Policy{only}, nss, pods)
						if !w1.Evaluate(w1.EndpointAt(ips[from]), w1.EndpointAt(ips[to]), proto, port).Side[d].Allowed {
							t.Errorf("%s -> %s %d/%s: %v alone does not allow %v", from, to, port, proto, m, policy.Dir(d))
						}
						checked++
					case side.Applies && !side.Allowed && len(side.Isolating) == 0:
						t.Errorf("%s -> %s: %v denied without an isolating policy", from, to, policy.Dir(d))
					}
				}
			}
		}
		return policytest.Evaluated(w, ips, nodeOf, proto, port)
	})
	t.Logf("%d allowing rules re-checked alone", checked)
}
