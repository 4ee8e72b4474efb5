package policy_test

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/drovernet/drover/policy/policytest"
)

// modelIPs places the 3x3 model's pods at 10.42.<ns>.<pod+10>, and spreads
// them over three nodes by pod name.
func modelIPs() (map[string]netip.Addr, func(string) string) {
	ips := map[string]netip.Addr{}
	for i, ns := range policytest.Namespaces {
		for j, p := range policytest.PodNames {
			ips[ns+"/"+p] = netip.AddrFrom4([4]byte{10, 42, byte(i + 1), byte(j + 10)})
		}
	}
	return ips, func(pod string) string { return "n-" + pod[len(pod)-1:] }
}

// TestUpstreamCases checks policy.Evaluate against every ported upstream
// e2e case: every probe's 72 non-loopback cells on each port and protocol.
func TestUpstreamCases(t *testing.T) { runCases(t, "testdata/upstream-netpol.yaml", "") }

// TestProjectCases: drover's cases for the project-isolation preset.
func TestProjectCases(t *testing.T) {
	runCases(t, "testdata/project-isolation.yaml", "project")
}

func runCases(t *testing.T, file, project string) {
	f, err := policytest.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	ips, nodeOf := modelIPs()
	cells := 0
	for ci, c := range f.Cases {
		t.Run(fmt.Sprintf("%02d", ci), func(t *testing.T) {
			st := policytest.NewState()
			st.ProjectLabel = project
			ports := c.PortsOf()
			for si := range c.Steps {
				step := &c.Steps[si]
				if err := st.Apply(step, ips); err != nil {
					t.Fatalf("%s: step %d: %v", c.Name, si, err)
				}
				w, err := st.World(ips, nodeOf, ports)
				if err != nil {
					t.Fatalf("%s: step %d: %v", c.Name, si, err)
				}
				for pi, pr := range step.Probes {
					want, err := pr.Expect.Build()
					if err != nil {
						t.Fatalf("%s: step %d probe %d: %v", c.Name, si, pi, err)
					}
					for _, proto := range pr.Protocols {
						for _, port := range pr.Ports {
							got := policytest.Table{}
							for _, from := range policytest.Pods() {
								got[from] = map[string]bool{}
								for _, to := range policytest.Pods() {
									v := w.Evaluate(w.EndpointAt(ips[from]), w.EndpointAt(ips[to]), proto, port)
									got[from][to] = v.Allowed
									cells++
								}
							}
							if d := policytest.Diff(want, got, pr.Expect.Loopback); len(d) > 0 {
								t.Errorf("%s: step %d probe %d %d/%s: %d cells differ:\n%v", c.Name, si, pi, port, proto, len(d), d)
							}
						}
					}
				}
			}
		})
	}
	t.Logf("%d cases, %d cells evaluated", len(f.Cases), cells)
}
