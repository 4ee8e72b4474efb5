package policy

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

func TestSelectorMatches(t *testing.T) {
	l := map[string]string{"app": "web", "tier": "front"}
	tests := []struct {
		name string
		sel  Selector
		want bool
	}{
		{"empty", Selector{}, true},
		{"label", Selector{MatchLabels: map[string]string{"app": "web"}}, true},
		{"label other value", Selector{MatchLabels: map[string]string{"app": "db"}}, false},
		{"label missing", Selector{MatchLabels: map[string]string{"x": ""}}, false},
		{"in", Selector{MatchExpressions: []Requirement{{Key: "tier", Operator: In, Values: []string{"back", "front"}}}}, true},
		{"in missing key", Selector{MatchExpressions: []Requirement{{Key: "zone", Operator: In, Values: []string{"a"}}}}, false},
		{"notin", Selector{MatchExpressions: []Requirement{{Key: "tier", Operator: NotIn, Values: []string{"front"}}}}, false},
		{"notin missing key", Selector{MatchExpressions: []Requirement{{Key: "zone", Operator: NotIn, Values: []string{"a"}}}}, true},
		{"exists", Selector{MatchExpressions: []Requirement{{Key: "app", Operator: Exists}}}, true},
		{"doesnotexist", Selector{MatchExpressions: []Requirement{{Key: "app", Operator: DoesNotExist}}}, false},
		{"both must hold", Selector{MatchLabels: map[string]string{"app": "web"}, MatchExpressions: []Requirement{{Key: "tier", Operator: In, Values: []string{"back"}}}}, false},
	}
	for _, tt := range tests {
		if got := tt.sel.Matches(l); got != tt.want {
			t.Errorf("%s: %s matches %v: got %v, want %v", tt.name, tt.sel.String(), l, got, tt.want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // a substring of the error
	}{
		{"bad cidr", `spec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]}`, "spec.ingress[0].from[0].ipBlock.cidr"},
		{"except outside", `spec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/24, except: [10.0.1.0/28]}}]}]}`, "spec.ingress[0].from[0].ipBlock.except[0]: 10.0.1.0/28 is not within"},
		{"ipblock with selector", `spec: {podSelector: {}, egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]}`, "spec.egress[0].to[0]: ipBlock may not be combined"},
		{"empty peer", `spec: {podSelector: {}, ingress: [{from: [{}]}]}`, "spec.ingress[0].from[0]: a peer needs"},
		{"bad protocol", `spec: {podSelector: {}, ingress: [{ports: [{protocol: ICMP}]}]}`, "spec.ingress[0].ports[0].protocol"},
		{"port zero", `spec: {podSelector: {}, ingress: [{ports: [{port: 0}]}]}`, "spec.ingress[0].ports[0].port: 0"},
		{"endPort below port", `spec: {podSelector: {}, ingress: [{ports: [{port: 90, endPort: 80}]}]}`, "spec.ingress[0].ports[0].endPort: 80"},
		{"endPort with name", `spec: {podSelector: {}, ingress: [{ports: [{port: http, endPort: 80}]}]}`, "needs a numeric port"},
		{"bad port name", `spec: {podSelector: {}, ingress: [{ports: [{port: Http_1}]}]}`, "is not a port name"},
		{"bad policy type", `spec: {podSelector: {}, policyTypes: [Both]}`, "spec.policyTypes[0]"},
		{"bad operator", `spec: {podSelector: {matchExpressions: [{key: a, operator: Has}]}}`, "spec.podSelector.matchExpressions[0].operator"},
		{"in without values", `spec: {podSelector: {matchExpressions: [{key: a, operator: In}]}}`, "needs at least one value"},
		{"bad label key", `spec: {podSelector: {matchLabels: {"-a": b}}}`, "label key"},
		{"bad label value", `spec: {podSelector: {matchLabels: {a: "b c"}}}`, "label value"},
		{"unknown field", `spec: {podSelector: {}, ingres: []}`, "field ingres not found"},
		{"bad namespace", `metadata: {namespace: X_Y}
spec: {podSelector: {}}`, "metadata.namespace"},
	}
	for _, tt := range tests {
		doc := "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
		if !strings.Contains(tt.yaml, "metadata:") {
			doc += "metadata: {name: p}\n"
		} else {
			tt.yaml = strings.Replace(tt.yaml, "metadata: {", "metadata: {name: p, ", 1)
		}
		_, err := Parse([]byte(doc+tt.yaml), "default")
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

func TestParseFile(t *testing.T) {
	const file = `
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {env: prod}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: prod, annotations: {a: b}}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - ports: [{port: 80}, {port: http}, {protocol: UDP, port: 5000, endPort: 5010}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: out}
spec:
  podSelector: {}
  egress: [{to: [{namespaceSelector: {matchLabels: {env: prod}}, podSelector: {}}]}]
---
`
	set, err := Parse([]byte(file), "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Policies) != 2 || len(set.Namespaces) != 1 {
		t.Fatalf("got %d policies, %d namespaces; want 2, 1", len(set.Policies), len(set.Namespaces))
	}
	web, out := set.Policies[0], set.Policies[1]
	if got := web.Rules[DirIngress][0].Ports; len(got) != 3 || got[0].String() != "80/TCP" || got[1].String() != "http/TCP" || got[2].String() != "5000-5010/UDP" {
		t.Errorf("web ports: got %v, want [80/TCP http/TCP 5000-5010/UDP]", got)
	}
	if !web.Isolates[DirIngress] || web.Isolates[DirEgress] {
		t.Errorf("web isolates %v, want ingress only (no policyTypes, no egress rules)", web.Isolates)
	}
	if out.Ref.String() != "default/out" || !out.Isolates[DirIngress] || !out.Isolates[DirEgress] {
		t.Errorf("out: %v isolates %v, want default/out isolating both (egress rules present)", out.Ref, out.Isolates)
	}

	if _, err := Parse([]byte(file+"apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"), "default"); err == nil || !strings.Contains(err.Error(), `document 4: apiVersion "v1" kind "Service"`) {
		t.Errorf("a Service: got %v, want document 4 named", err)
	}
	dup := file + "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: out}\nspec: {podSelector: {}}\n"
	if _, err := Parse([]byte(dup), "default"); err == nil || !strings.Contains(err.Error(), "already defined in document 3") {
		t.Errorf("a duplicate: got %v, want it named", err)
	}
	if _, err := Parse([]byte("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  podSelector: {}\n  ingres: []\n"), "default"); err == nil || !strings.Contains(err.Error(), "line 6") {
		t.Errorf("an unknown field: got %v, want its line (6) named", err)
	}
}

func TestPortRefJSON(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want PortRef
	}{{`80`, PortRef{Num: 80}}, {`"http"`, PortRef{Name: "http"}}, {`"81"`, PortRef{Num: 81}}} {
		var p PortRef
		if err := json.Unmarshal([]byte(tt.in), &p); err != nil || p != tt.want {
			t.Errorf("%s: got %+v, %v; want %+v", tt.in, p, err, tt.want)
		}
	}
}

// world builds namespaces x, y (labelled ns=<name>) with pods a, b (pod=<name>,
// a named port http=8080/TCP), addresses 10.0.<ns>.<pod>, a on node n1, b on n2.
func testWorld(t *testing.T, policies string) *World {
	t.Helper()
	set, err := Parse([]byte(policies), "x")
	if err != nil {
		t.Fatal(err)
	}
	var pods []Pod
	for i, ns := range []string{"x", "y"} {
		for j, name := range []string{"a", "b"} {
			pods = append(pods, Pod{
				Namespace: ns, Name: name, Labels: map[string]string{"pod": name},
				Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 0, byte(i), byte(j + 1)})},
				Node:  "n" + string(rune('1'+j)),
				Ports: []ContainerPort{{Name: "http", Port: 8080, Protocol: TCP}},
			})
		}
	}
	nss := []Namespace{{Name: "x", Labels: map[string]string{"ns": "x"}}, {Name: "y", Labels: map[string]string{"ns": "y"}}}
	return NewWorld(set.Policies, nss, pods)
}

func TestEvaluate(t *testing.T) {
	const hdr = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
	tests := []struct {
		name     string
		policies string
		from, to string // ns/pod or an address
		proto    Protocol
		port     uint16
		want     bool
		why      string // a substring of the deciding side's Why
	}{
		{"no policy", "", "x/a", "y/b", TCP, 80, true, "no policy isolates"},
		{"deny all ingress", hdr + "metadata: {name: deny}\nspec: {podSelector: {}}", "y/a", "x/b", TCP, 80, false, "isolated by x/deny"},
		{"deny all ingress, other namespace unaffected", hdr + "metadata: {name: deny}\nspec: {podSelector: {}}", "x/a", "y/b", TCP, 80, true, "no policy isolates"},
		{"deny all ingress, self", hdr + "metadata: {name: deny}\nspec: {podSelector: {}}", "x/a", "x/a", TCP, 80, true, "stays in the pod"},
		{"allow same namespace", hdr + "metadata: {name: ns}\nspec: {podSelector: {}, ingress: [{from: [{podSelector: {}}]}]}", "x/a", "x/b", TCP, 80, true, "x/ns spec.ingress[0].from[0] (any port)"},
		{"allow same namespace, other denied", hdr + "metadata: {name: ns}\nspec: {podSelector: {}, ingress: [{from: [{podSelector: {}}]}]}", "y/a", "x/b", TCP, 80, false, "isolated by x/ns"},
		{"namespace selector", hdr + "metadata: {name: fromy}\nspec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}", "y/b", "x/a", UDP, 53, true, "allowed by x/fromy"},
		{"both selectors, wrong pod", hdr + "metadata: {name: yb}\nspec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]}]}", "y/a", "x/a", TCP, 80, false, "no rule admits"},
		{"both selectors, right pod", hdr + "metadata: {name: yb}\nspec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]}]}", "y/b", "x/a", TCP, 80, true, "from[0]"},
		{"port number", hdr + "metadata: {name: p}\nspec: {podSelector: {}, ingress: [{ports: [{port: 81}]}]}", "y/a", "x/a", TCP, 80, false, "no rule admits"},
		{"port protocol", hdr + "metadata: {name: p}\nspec: {podSelector: {}, ingress: [{ports: [{port: 80}]}]}", "y/a", "x/a", UDP, 80, false, "no rule admits"},
		{"port range", hdr + "metadata: {name: p}\nspec: {podSelector: {}, ingress: [{ports: [{port: 80, endPort: 90}]}]}", "y/a", "x/a", TCP, 85, true, "ports[0]"},
		{"named port", hdr + "metadata: {name: p}\nspec: {podSelector: {}, ingress: [{ports: [{port: http}]}]}", "y/a", "x/a", TCP, 8080, true, "ports[0]"},
		{"named port, other number", hdr + "metadata: {name: p}\nspec: {podSelector: {}, ingress: [{ports: [{port: http}]}]}", "y/a", "x/a", TCP, 80, false, "no rule admits"},
		{"ipBlock", hdr + "metadata: {name: p}\nspec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.1.0/24}}]}]}", "y/a", "x/a", TCP, 80, true, "from[0]"},
		{"ipBlock except", hdr + "metadata: {name: p}\nspec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.1.0/24, except: [10.0.1.1/32]}}]}]}", "y/a", "x/a", TCP, 80, false, "no rule admits"},
		{"ipBlock external", hdr + "metadata: {name: p}\nspec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 192.0.2.0/24}}]}]}", "192.0.2.7", "x/a", TCP, 80, true, "from[0]"},
		{"selector does not match external", hdr + "metadata: {name: p}\nspec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {}}]}]}", "192.0.2.7", "x/a", TCP, 80, false, "no rule admits"},
		{"egress deny", hdr + "metadata: {name: e}\nspec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress]}", "x/a", "y/b", TCP, 80, false, "egress denied"},
		{"egress deny leaves ingress", hdr + "metadata: {name: e}\nspec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress]}", "y/b", "x/a", TCP, 80, true, "no policy isolates"},
		{"egress named port at destination", hdr + "metadata: {name: e}\nspec: {podSelector: {}, egress: [{ports: [{port: http}]}]}", "x/a", "y/b", TCP, 8080, true, "egress allowed by x/e"},
		{"egress named port, external", hdr + "metadata: {name: e}\nspec: {podSelector: {}, egress: [{ports: [{port: http}]}]}", "x/a", "192.0.2.7", TCP, 8080, false, "no rule admits"},
		{"union of policies", hdr + "metadata: {name: p1}\nspec: {podSelector: {}, ingress: [{ports: [{port: 81}]}]}\n---\n" + hdr + "metadata: {name: p2}\nspec: {podSelector: {}, ingress: [{ports: [{port: 80}]}]}", "y/a", "x/a", TCP, 80, true, "x/p2"},
		{"node", hdr + "metadata: {name: deny}\nspec: {podSelector: {}}", "node:n1", "x/a", TCP, 80, true, "own node"},
		{"other node", hdr + "metadata: {name: deny}\nspec: {podSelector: {}}", "node:n2", "x/a", TCP, 80, false, "isolated by x/deny"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := testWorld(t, tt.policies)
			from, to := endpoint(t, w, tt.from), endpoint(t, w, tt.to)
			v := w.Evaluate(from, to, tt.proto, tt.port)
			if v.Allowed != tt.want {
				t.Errorf("%v -> %v %d/%s: got allowed %v, want %v (%s; %s)", from, to, tt.port, tt.proto, v.Allowed, tt.want, v.Side[DirEgress].Why, v.Side[DirIngress].Why)
			}
			why := v.Side[DirEgress].Why + " | " + v.Side[DirIngress].Why
			if !strings.Contains(why, tt.why) {
				t.Errorf("why: got %q, want it to contain %q", why, tt.why)
			}
		})
	}
}

func endpoint(t *testing.T, w *World, s string) Endpoint {
	t.Helper()
	if n, ok := strings.CutPrefix(s, "node:"); ok {
		return Endpoint{Node: n, Addr: netip.MustParseAddr("192.0.2.1")}
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return w.EndpointAt(a)
	}
	ns, name, _ := strings.Cut(s, "/")
	p := w.Pod(ns, name)
	if p == nil {
		t.Fatalf("no pod %s", s)
	}
	return Endpoint{Pod: p, Addr: p.Addrs[0]}
}

func TestProjectPolicies(t *testing.T) {
	pods := []Pod{
		{Namespace: "x", Name: "a", Labels: map[string]string{"project": "shop"}, Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}},
		{Namespace: "y", Name: "b", Labels: map[string]string{"project": "shop"}, Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.2")}},
		{Namespace: "x", Name: "c", Labels: map[string]string{"project": "Back_Office"}, Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.3")}},
		{Namespace: "x", Name: "d", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.4")}},
	}
	pols := ProjectPolicies("project", pods)
	var names []string
	for _, p := range pols {
		names = append(names, p.Ref.String())
	}
	if len(pols) != 3 || names[1] != "x/drover-project-shop" || names[2] != "y/drover-project-shop" || !strings.HasPrefix(names[0], "x/drover-project-") {
		t.Fatalf("policies: got %v, want x/<hash>, x/drover-project-shop, y/drover-project-shop", names)
	}
	w := NewWorld(pols, nil, pods)
	ep := func(i int) Endpoint {
		return Endpoint{Pod: w.Pod(pods[i].Namespace, pods[i].Name), Addr: pods[i].Addrs[0]}
	}
	for _, tc := range []struct {
		from, to int
		want     bool
	}{
		{0, 1, true}, {1, 0, true}, // one project across namespaces
		{2, 0, false}, {0, 2, false}, // other projects
		{3, 0, false}, // no project: not admitted into one
		{0, 3, true},  // a project's pod reaches an open one
	} {
		if got := w.Evaluate(ep(tc.from), ep(tc.to), TCP, 80).Allowed; got != tc.want {
			t.Errorf("%s -> %s: got %v, want %v", pods[tc.from].Key(), pods[tc.to].Key(), got, tc.want)
		}
	}
	if ProjectPolicies("", pods) != nil {
		t.Error("an empty label made policies")
	}
}
