package enforce

import (
	"net/netip"
	"testing"

	"github.com/drovernet/drover/policy"
	"github.com/drovernet/drover/policy/policytest"
)

// TestUpstreamCasesCompiled runs the ported upstream e2e cases (and the
// project-isolation preset's) through Compile on three nodes (pods a, b,
// c of each namespace on nodes n-a, n-b, n-c): a flow passes when the
// source's node admits it for egress and the destination's node for
// ingress, as the kernel will decide.
func TestUpstreamCasesCompiled(t *testing.T) {
	ids := map[string]*Idents{}
	compiled := func(w *policy.World, ips map[string]netip.Addr, nodeOf func(string) string, proto policy.Protocol, port uint16) policytest.Table {
		rs := map[string]*Ruleset{}
		for _, n := range []string{"n-a", "n-b", "n-c"} {
			if ids[n] == nil {
				ids[n] = &Idents{}
			}
			rs[n] = Compile(w, n, ids[n])
			checkDisjoint(t, rs[n])
		}
		got := policytest.Table{}
		for _, from := range policytest.Pods() {
			got[from] = map[string]bool{}
			for _, to := range policytest.Pods() {
				s, d := ips[from], ips[to]
				got[from][to] = rs[nodeOf(from)].Allows(policy.DirEgress, s, d, proto.Number(), port) &&
					rs[nodeOf(to)].Allows(policy.DirIngress, d, s, proto.Number(), port)
			}
		}
		return got
	}
	n := policytest.Check(t, "../testdata/upstream-netpol.yaml", "", compiled)
	n += policytest.Check(t, "../testdata/project-isolation.yaml", "project", compiled)
	t.Logf("%d cells decided by the compiled sets", n)
}
