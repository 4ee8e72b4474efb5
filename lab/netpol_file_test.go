package lab

import (
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/drovernet/drover/policy"
	"github.com/drovernet/drover/policy/policytest"
)

// TestNetpolFile runs the same upstream cases off Kubernetes: three
// gossip-mode hosts enforcing policy.file, the 3x3 model's pods attached
// by the CNI plugin with their labels in CNI_ARGS (a relabelled pod is
// re-created, as a container would be) and upstream's named ports in
// CNI_ARGS DROVER_PORTS, namespaces' labels in the file,
// and every host learning the others' pods over the overlay. The same
// truth tables, probes and explain checks as TestNetpolKube, then the
// project-isolation preset's cases (policy.project_label: project).
func TestNetpolFile(t *testing.T) {
	dir := t.TempDir()
	polFile := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(polFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	lab := newClusterLab(t, Options{Hosts: 3, Containers: 1, Tag: "npf", PolicyFile: polFile, PolicyProjectLabel: "project"})
	// The upstream cases (no pod carries "project": the preset leaves
	// them alone), then drover's own for the project-isolation preset.
	f, err := policytest.Load("../policy/testdata/upstream-netpol.yaml")
	if err != nil {
		t.Fatal(err)
	}
	proj, err := policytest.Load("../policy/testdata/project-isolation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	upstream := len(f.Cases)
	f.Cases = append(f.Cases, proj.Cases...)
	pods := map[string]*PolicyPod{}
	ips := map[string]netip.Addr{}
	// Upstream's container port names, declared through the CNI call.
	var ports []string
	for _, proto := range []policy.Protocol{policy.TCP, policy.UDP, policy.SCTP} {
		for _, port := range []uint16{80, 81} {
			ports = append(ports, fmt.Sprintf("%s:%d/%s", policytest.PortName(port, proto), port, proto))
		}
	}
	attach := func(key string, labels map[string]string) {
		t.Helper()
		ns, name, _ := strings.Cut(key, "/")
		var l []string
		for _, k := range slices.Sorted(maps.Keys(labels)) {
			l = append(l, k+":"+labels[k])
		}
		i := slices.Index(policytest.Pods(), key)
		p := lab.AttachPod(t, lab.Hosts[i%3], ns, name, strings.Join(l, ","), ports)
		p.Serve(t, []uint16{80, 81})
		pods[key], ips[key] = p, p.Addr
	}
	st := policytest.NewState()
	for _, key := range policytest.Pods() {
		attach(key, st.PodLabels[key])
	}
	// Every host knows all nine pods (its own from the CNI, the others'
	// over the overlay): explain finds each by name.
	err = Poll(t.Context(), 30*time.Second, 100*time.Millisecond, func() error {
		for _, h := range lab.Hosts {
			for _, key := range policytest.Pods() {
				if _, err := h.Explain(key, "x/a", policy.TCP, 80); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	var cells, cases, reprobed, ups int
	var failed []string
	for ci, c := range f.Cases {
		if !caseSelected(ci) {
			continue
		}
		ok := t.Run(fmt.Sprintf("%02d", ci), func(t *testing.T) {
			// Back to the model: no policy, default labels (pods whose
			// labels a previous case changed are re-created).
			fresh := policytest.NewState()
			for _, key := range policytest.Pods() {
				if !maps.Equal(st.PodLabels[key], fresh.PodLabels[key]) {
					if err := pods[key].Detach(); err != nil {
						t.Fatal(err)
					}
					attach(key, fresh.PodLabels[key])
				}
			}
			st = fresh
			writePolicyFile(t, polFile, st, ips)
			for si := range c.Steps {
				step := &c.Steps[si]
				for key, l := range step.SetPodLabels {
					if err := pods[key].Detach(); err != nil {
						t.Fatal(err)
					}
					attach(key, l)
				}
				if err := st.Apply(step, ips); err != nil {
					t.Fatal(err)
				}
				writePolicyFile(t, polFile, st, ips)
				waitPolicies(t, lab, step, c.Steps[:si+1])
				ps := probeStep(t, lab, c.Name, si, step, pods)
				cells, reprobed = cells+ps.cells, reprobed+ps.reprobed
			}
		})
		cases++
		if ci < upstream {
			ups++
		}
		if !ok {
			failed = append(failed, fmt.Sprintf("%02d %s", ci, c.Name))
		}
	}
	t.Logf("RESULT netpol file: %d cases run (%d upstream, %d project isolation), %d passed; %d cells probed and explained (%d re-probed matrices)", cases, ups, cases-ups, cases-len(failed), cells, reprobed)
	for _, n := range failed {
		t.Logf("failed: %s", n)
	}
}

// writePolicyFile writes the state's policies and namespace labels as a
// policy file (replaced by rename, as an editor or a ConfigMap does).
func writePolicyFile(t *testing.T, path string, st *policytest.State, ips map[string]netip.Addr) {
	t.Helper()
	var docs []string
	for _, ns := range policytest.Namespaces {
		b, err := yaml.Marshal(map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns, "labels": st.NamespaceLabels[ns]}})
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(b))
	}
	for _, ref := range slices.SortedFunc(maps.Keys(st.Policies), func(a, b policy.Ref) int { return strings.Compare(a.String(), b.String()) }) {
		np := *st.Policies[ref]
		np.APIVersion, np.Kind = "networking.k8s.io/v1", "NetworkPolicy"
		b, err := yaml.Marshal(&np)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(b))
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(docs, "---\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
