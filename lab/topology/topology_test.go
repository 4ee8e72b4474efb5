package topology

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/drovernet/drover/cmd/drover/config"
)

// repoRoot is the module's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(filepath.Dir(file)))
}

// clabSchema is containerlab's own JSON schema (srl-labs/containerlab,
// BSD-3), from ../shared/containerlab.
func clabSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	path := filepath.Join(repoRoot(t), "..", "shared", "containerlab", "clab.schema.json")
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("containerlab's schema: %v", err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("clab.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("clab.schema.json")
	if err != nil {
		t.Fatalf("compile %s: %v", path, err)
	}
	return s
}

// validate checks a YAML topology against the schema, as JSON: YAML's
// values through encoding/json, as containerlab's own checker sees them.
func validate(s *jsonschema.Schema, y []byte) error {
	var v any
	if err := yaml.Unmarshal(y, &v); err != nil {
		return err
	}
	j, err := json.Marshal(v)
	if err != nil {
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		return err
	}
	return s.Validate(inst)
}

func examples(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "examples", "containerlab", "*.clab.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("examples/containerlab: %d topologies, want at least 3 (ESP cluster, mixed arch, kernel VXLAN)", len(files))
	}
	return files
}

// Every shipped topology is valid containerlab (its own schema), and
// drover lab can realize it: drover nodes whose configurations are where
// their binds say and load, at least two probes.
func TestExamplesValidate(t *testing.T) {
	s := clabSchema(t)
	for _, f := range examples(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			y, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := validate(s, y); err != nil {
				t.Fatalf("containerlab schema: %v", err)
			}
			tp, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			probes, drovers := 0, 0
			for _, n := range tp.Nodes {
				if n.Probe.IsValid() {
					probes++
				}
				if !n.IsDrover() {
					continue
				}
				drovers++
				cfg := n.HostPath(tp.Dir, "/etc/drover/drover.yaml")
				if cfg == "" {
					t.Fatalf("node %s: no bind for /etc/drover/drover.yaml", n.Name)
				}
				c, err := config.Load(cfg)
				if err != nil {
					t.Fatalf("node %s: %s: %v", n.Name, cfg, err)
				}
				if c.Cluster != nil && c.Cluster.KeyFile != "" && n.HostPath(tp.Dir, c.Cluster.KeyFile) == "" {
					t.Errorf("node %s: cluster.key_file %s: no bind gives it", n.Name, c.Cluster.KeyFile)
				}
			}
			if drovers < 2 || probes < 2 {
				t.Errorf("%d drover nodes, %d probes; want at least 2 of each", drovers, probes)
			}
			t.Logf("%d nodes (%d drover), %d links, %d probes; not realized: %s", len(tp.Nodes), drovers, len(tp.Links), probes, strings.Join(tp.Ignored, ", "))
		})
	}
}

// The schema check bites: a misspelt node key, a misspelt top-level key
// and a bad name fail it. (Its brief-link endpoint pattern is a draft
// 2020 prefixItems in a draft-07 schema, so no validator applies it;
// Parse checks endpoints itself, TestParseErrors.)
func TestSchemaRejects(t *testing.T) {
	s := clabSchema(t)
	for _, y := range []string{
		"name: x\ntopology:\n  nodes:\n    a: {kind: linux, imgae: alpine}\n",
		"name: x\ntopolgy:\n  nodes:\n    a: {kind: linux}\n",
		"name: 'bad name'\ntopology:\n  nodes:\n    a: {kind: linux}\n",
	} {
		if err := validate(s, []byte(y)); err == nil {
			t.Errorf("schema accepted %q", y)
		}
	}
}

// A malformed topology is refused with the node or link named.
func TestParseErrors(t *testing.T) {
	const head = "name: t\ntopology:\n  nodes:\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"no nodes", "name: t\ntopology: {}\n", "topology.nodes: no nodes"},
		{"bad name", "name: 'a b'\ntopology:\n  nodes: {a: {kind: linux, image: x}}\n", `name: "a b"`},
		{"unsupported kind", head + "    r1: {kind: nokia_srlinux, image: x}\n", `node r1: kind "nokia_srlinux"`},
		{"no kind", head + "    r1: {image: x}\n", "node r1: kind: missing"},
		{"no image", head + "    r1: {kind: linux}\n", "node r1: image: missing"},
		{"unknown key", head + "    r1: {kind: linux, image: x, imgae: y}\n", `node r1: topology.nodes.r1: unknown key "imgae"`},
		{"bad bind", head + "    r1: {kind: linux, image: x, binds: [a]}\n", `node r1: binds: "a"`},
		{"missing group", head + "    r1: {group: g, image: x}\n", `node r1: group "g"`},
		{"bad probe", head + "    r1: {kind: linux, image: x, labels: {drover.lab/probe: nope}}\n", "node r1: labels: drover.lab/probe"},
		{"bad sysctl", head + "    r1: {kind: linux, image: x, sysctls: {kernel.panic: 1}}\n", `node r1: sysctls: "kernel.panic"`},
		{"bridge exec", head + "    b: {kind: bridge, exec: [true]}\n", "node b: a bridge node takes no image"},
		{"link to nowhere", head + "    a: {kind: linux, image: x}\n  links:\n    - endpoints: [a:eth1, b:eth1]\n", `links[0]: endpoints[1]: no node "b"`},
		{"link not node:iface", head + "    a: {kind: linux, image: x}\n  links:\n    - endpoints: [a, a:eth1]\n", `links[0]: endpoints[0]: "a" is not NODE:INTERFACE`},
		{"long iface", head + "    a: {kind: linux, image: x}\n    b: {kind: linux, image: x}\n  links:\n    - endpoints: [a:eth1, b:sixteencharsxxxx]\n", "links[0]: endpoints[1]: b: interface name"},
		{"endpoint twice", head + "    a: {kind: linux, image: x}\n    b: {kind: linux, image: x}\n  links:\n    - endpoints: [a:eth1, b:eth1]\n    - endpoints: [a:eth1, b:eth2]\n", "links[1]: endpoint a:eth1 is already used by links[0]"},
		{"macvlan", head + "    a: {kind: linux, image: x}\n  links:\n    - type: macvlan\n      endpoint: {node: a, interface: m}\n      host-interface: eth0\n", `links[0]: type "macvlan"`},
		{"bad ipv4", head + "    a: {kind: linux, image: x}\n    b: {kind: linux, image: x}\n  links:\n    - endpoints: [a:eth1, b:eth1]\n      ipv4: [10.0.0.1]\n", `links[0]: ipv4[0]: "10.0.0.1"`},
		{"address on bridge", head + "    a: {kind: linux, image: x}\n    b: {kind: bridge}\n  links:\n    - type: veth\n      endpoints: [{node: a, interface: e1}, {node: b, interface: p1, ipv4: 10.0.0.2/24}]\n", "links[0]: endpoints[1]: b is a bridge"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "/x")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// containerlab's inheritance: defaults < kind < group < node for scalars
// and exec; binds, labels, env and sysctls merged with the node winning.
func TestInheritance(t *testing.T) {
	y := `name: t
topology:
  defaults:
    labels: {a: defaults, b: defaults}
  kinds:
    linux:
      image: k:1
      binds: [k.key:/etc/k.key, kc.yaml:/etc/c.yaml]
      exec: [echo kind]
  groups:
    g:
      kind: linux
      cmd: run --config /etc/c.yaml
      labels: {b: group}
      sysctls: {net.ipv4.ip_forward: 1}
  nodes:
    n1:
      group: g
      binds: [n1.yaml:/etc/c.yaml:ro]
      labels: {c: node, drover.lab/probe: 10.0.0.1}
    n2:
      kind: linux
      image: drover:dev
      exec: [echo node]
`
	tp, err := Parse([]byte(y), "/topo")
	if err != nil {
		t.Fatal(err)
	}
	n1, n2 := tp.Node("n1"), tp.Node("n2")
	if n1.Image != "k:1" || !slices.Equal(n1.Cmd, []string{"run", "--config", "/etc/c.yaml"}) || !slices.Equal(n1.Exec, []string{"echo kind"}) {
		t.Errorf("n1: image %q cmd %q exec %q; want k:1, the group's cmd, the kind's exec", n1.Image, n1.Cmd, n1.Exec)
	}
	if got := n1.HostPath(tp.Dir, "/etc/c.yaml"); got != "/topo/n1.yaml" {
		t.Errorf("n1 /etc/c.yaml: got %q, want the node's bind /topo/n1.yaml", got)
	}
	if got := n1.HostPath(tp.Dir, "/etc/k.key"); got != "/topo/k.key" {
		t.Errorf("n1 /etc/k.key: got %q, want the kind's bind /topo/k.key", got)
	}
	if n1.Labels["a"] != "defaults" || n1.Labels["b"] != "group" || n1.Labels["c"] != "node" || n1.Probe != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("n1 labels %v probe %v", n1.Labels, n1.Probe)
	}
	if n1.Sysctls["net.ipv4.ip_forward"] != "1" {
		t.Errorf("n1 sysctls %v", n1.Sysctls)
	}
	if !slices.Equal(n2.Exec, []string{"echo node"}) || n2.IsDrover() == n1.IsDrover() {
		t.Errorf("n2: exec %q, drover %v (n1 %v)", n2.Exec, n2.IsDrover(), n1.IsDrover())
	}
}

func TestIsDrover(t *testing.T) {
	for img, want := range map[string]bool{
		"drover:v1": true, "localhost/drover:dev": true, "ghcr.io/o/drover-full:x": true,
		"registry:5000/drover": true, "drover@sha256:abcd": true,
		"busybox:1.36": false, "drovers:1": false, "drover/other:1": false, "registry:5000/x": false,
	} {
		n := &Node{Kind: KindLinux, Image: img}
		if got := n.IsDrover(); got != want {
			t.Errorf("IsDrover(%q): got %v, want %v", img, got, want)
		}
	}
}

func TestSplitCommand(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  bool
	}{
		{"ip addr add 10.0.0.1/24 dev eth1", []string{"ip", "addr", "add", "10.0.0.1/24", "dev", "eth1"}, false},
		{`sh -c 'echo a b; echo c'`, []string{"sh", "-c", "echo a b; echo c"}, false},
		{`echo "a \"b\" c" d\ e`, []string{"echo", `a "b" c`, "d e"}, false},
		{`  spaced   out  `, []string{"spaced", "out"}, false},
		{`x''y ""`, []string{"xy", ""}, false},
		{`echo 'open`, nil, true},
		{`echo "open`, nil, true},
		{`echo \`, nil, true},
	} {
		got, err := SplitCommand(tc.in)
		if (err != nil) != tc.err || !slices.Equal(got, tc.want) {
			t.Errorf("SplitCommand(%q): got %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// FuzzParse: any bytes parse or fail without panicking, and what parses
// has links between nodes it has.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("../../examples/containerlab/*.clab.yml")
	for _, file := range files {
		if b, err := os.ReadFile(file); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("name: t\ntopology:\n  nodes: {a: {kind: bridge}}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tp, err := Parse(b, "/x")
		if err != nil {
			return
		}
		for _, l := range tp.Links {
			if tp.Node(l.A.Node) == nil || tp.Node(l.B.Node) == nil {
				t.Fatalf("link %+v names a node the topology lacks", l)
			}
		}
	})
}
