package enforce

import (
	"net/netip"
	"testing"

	"github.com/drovernet/drover/policy"
	"github.com/drovernet/drover/policy/policytest"
)

// TestUpstreamCasesCompiled runs the ported upstream e2e cases through
// Compile on three nodes (pods a, b, c of each namespace on nodes n-a,
// n-b, n-c): a flow passes when the source's node admits it for egress
// and the destination's node for ingress, as the kernel will decide.
func TestUpstreamCasesCompiled(t *testing.T) {
	f, err := policytest.Load("../testdata/upstream-netpol.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ips := map[string]netip.Addr{}
	for i, ns := range policytest.Namespaces {
		for j, p := range policytest.PodNames {
			ips[ns+"/"+p] = netip.AddrFrom4([4]byte{10, 42, byte(i + 1), byte(j + 10)})
		}
	}
	nodeOf := func(pod string) string { return "n-" + pod[len(pod)-1:] }
	ids := map[string]*Idents{}
	for _, c := range f.Cases {
		st := policytest.NewState()
		ports := c.PortsOf()
		for si := range c.Steps {
			step := &c.Steps[si]
			if err := st.Apply(step, ips); err != nil {
				t.Fatal(err)
			}
			w, err := st.World(ips, nodeOf, ports)
			if err != nil {
				t.Fatal(err)
			}
			rs := map[string]*Ruleset{}
			for _, n := range []string{"n-a", "n-b", "n-c"} {
				if ids[n] == nil {
					ids[n] = &Idents{}
				}
				rs[n] = Compile(w, n, ids[n])
				checkDisjoint(t, rs[n])
			}
			for pi, pr := range step.Probes {
				want, err := pr.Expect.Build()
				if err != nil {
					t.Fatal(err)
				}
				for _, proto := range pr.Protocols {
					for _, port := range pr.Ports {
						got := policytest.Table{}
						for _, from := range policytest.Pods() {
							got[from] = map[string]bool{}
							for _, to := range policytest.Pods() {
								s, d := ips[from], ips[to]
								got[from][to] = rs[nodeOf(from)].Allows(policy.DirEgress, s, d, proto.Number(), port) &&
									rs[nodeOf(to)].Allows(policy.DirIngress, d, s, proto.Number(), port)
							}
						}
						if d := policytest.Diff(want, got, pr.Expect.Loopback); len(d) > 0 {
							t.Errorf("%s: step %d probe %d %d/%s: %d cells differ:\n%v", c.Name, si, pi, port, proto, len(d), d)
						}
					}
				}
			}
		}
	}
}
