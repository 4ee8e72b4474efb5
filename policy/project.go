package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"
)

// ProjectPrefix starts the name of every policy the project-isolation
// preset makes.
const ProjectPrefix = "drover-project-"

// ProjectPolicies is the project-isolation preset, Rancher's "project
// network isolation": the pods carrying label (a project) reach each
// other, across namespaces and hosts, and nothing else reaches them
// unless another policy says so (policies add up). For every namespace
// and project value among pods, one policy:
//
//	metadata: {namespace: NS, name: drover-project-VALUE}
//	spec:
//	  podSelector: {matchLabels: {LABEL: VALUE}}
//	  policyTypes: [Ingress]
//	  ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {LABEL: VALUE}}}]}]
//
// Ingress only, as Rancher's was: a project's pods still reach the
// outside and other projects' open pods. Pods without the label are not
// touched. A value that is not a DNS label is named by its hash.
func ProjectPolicies(label string, pods []Pod) []*Policy {
	if label == "" {
		return nil
	}
	type key struct{ ns, value string }
	seen := map[key]bool{}
	for _, p := range pods {
		if v, ok := p.Labels[label]; ok {
			seen[key{p.Namespace, v}] = true
		}
	}
	keys := slices.SortedFunc(maps.Keys(seen), func(a, b key) int {
		if a.ns != b.ns {
			if a.ns < b.ns {
				return -1
			}
			return 1
		}
		if a.value < b.value {
			return -1
		}
		if a.value > b.value {
			return 1
		}
		return 0
	})
	out := make([]*Policy, 0, len(keys))
	for _, k := range keys {
		sel := Selector{MatchLabels: map[string]string{label: k.value}}
		p := &Policy{
			Ref:      Ref{Namespace: k.ns, Name: projectName(k.value)},
			Selector: sel,
			Rules: [2][]Rule{DirIngress: {{AllPorts: true, Peers: []RulePeer{{
				Pods: &Selector{MatchLabels: map[string]string{label: k.value}}, Namespaces: &Selector{},
			}}}}},
		}
		p.Isolates[DirIngress] = true
		out = append(out, p)
	}
	return out
}

func projectName(v string) string {
	if ValidNamespace(v) == nil && len(ProjectPrefix)+len(v) <= 253 {
		return ProjectPrefix + v
	}
	sum := sha256.Sum256([]byte(v))
	return ProjectPrefix + hex.EncodeToString(sum[:6])
}
