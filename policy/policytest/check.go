package policytest

import (
	"net/netip"
	"testing"

	"github.com/drovernet/drover/policy"
)

// ModelIPs places the model's pods at 10.42.<ns>.<pod+10> and spreads them
// over three nodes by pod name (n-a, n-b, n-c).
func ModelIPs() (map[string]netip.Addr, func(pod string) string) {
	ips := map[string]netip.Addr{}
	for i, ns := range Namespaces {
		for j, p := range PodNames {
			ips[ns+"/"+p] = netip.AddrFrom4([4]byte{10, 42, byte(i + 1), byte(j + 10)})
		}
	}
	return ips, func(pod string) string { return "n-" + pod[len(pod)-1:] }
}

// Observed decides the reachability of the model's pods in World w on
// proto/port: Table[from][to].
type Observed func(w *policy.World, ips map[string]netip.Addr, nodeOf func(string) string, proto policy.Protocol, port uint16) Table

// Check runs every case of file without a network: each step's state
// becomes a World (with the project-isolation preset on label project,
// if set), observed decides each probe's table, and every non-loopback
// cell must match the case's. It returns the cells compared.
func Check(t *testing.T, file, project string, observed Observed) int {
	t.Helper()
	f, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	ips, nodeOf := ModelIPs()
	cells := 0
	for _, c := range f.Cases {
		st := NewState()
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
						got := observed(w, ips, nodeOf, proto, port)
						if d := Diff(want, got, pr.Expect.Loopback); len(d) > 0 {
							t.Errorf("%s: step %d probe %d %d/%s: %d cells differ:\n%v", c.Name, si, pi, port, proto, len(d), d)
						}
						cells += len(Pods()) * (len(Pods()) - 1)
					}
				}
			}
		}
	}
	return cells
}

// Evaluated is Observed by policy.Evaluate.
func Evaluated(w *policy.World, ips map[string]netip.Addr, _ func(string) string, proto policy.Protocol, port uint16) Table {
	got := Table{}
	for _, from := range Pods() {
		got[from] = map[string]bool{}
		for _, to := range Pods() {
			got[from][to] = w.Evaluate(w.EndpointAt(ips[from]), w.EndpointAt(ips[to]), proto, port).Allowed
		}
	}
	return got
}
