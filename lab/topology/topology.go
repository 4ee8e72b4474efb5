// Package topology reads containerlab topology files (the .clab.yml of
// srl-labs/containerlab) for `drover lab --topology`: the subset a drover
// lab can realize in network namespaces — kind linux and bridge nodes,
// veth links with their addresses and MTU, binds, exec lines, sysctls,
// labels — with containerlab's inheritance (defaults, then the node's
// kind, then the node). What it does not realize is listed, not silently
// dropped (Topology.Ignored); what it cannot realize is an error naming the
// node or link.
//
// The schema itself (containerlab's clab.schema.json) is checked in the
// tests of examples/containerlab, not here: this package reads what the
// lab needs and refuses what it cannot do.
package topology

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Kinds the lab realizes.
const (
	KindLinux  = "linux"
	KindBridge = "bridge"
)

// Labels drover lab reads from a node (containerlab passes them to the
// container as labels, where they do nothing).
const (
	// LabelProbe is an address the node answers ICMP echo on: the lab
	// checks that every probe node reaches every other one.
	LabelProbe = "drover.lab/probe"
	// LabelArch is the GOARCH of the node's drover ("arm64"): under
	// containerlab, the image's platform decides; under drover lab, the
	// node runs the binary given for that architecture under qemu-user.
	LabelArch = "drover.lab/arch"
)

// Topology is a containerlab topology as the lab realizes it.
type Topology struct {
	Name string
	// Dir is the file's directory: relative bind paths start there.
	Dir   string
	Nodes []*Node // sorted by name
	Links []Link
	// Ignored lists the settings present in the file that the lab does
	// not realize ("mgmt", "nodes.h1.ports"), for the operator to see.
	Ignored []string
}

// Node is one node with defaults and its kind's settings applied.
type Node struct {
	Name, Kind, Image string
	// Cmd is the container's command (the image's entrypoint's
	// arguments), split into fields; empty for the image's default.
	Cmd   []string
	Binds []Bind
	Exec  []string
	Env   map[string]string
	// Sysctls are set in the node's namespace before its exec lines run.
	Sysctls map[string]string
	Labels  map[string]string
	// Probe is LabelProbe's address, if any.
	Probe netip.Addr
	// Arch is LabelArch, or "" for the machine's own.
	Arch string
}

// Bind is host-path:container-path[:ro].
type Bind struct {
	Host, Container string
	ReadOnly        bool
}

// Endpoint is one end of a link.
type Endpoint struct {
	Node, Iface string
	MAC         string
	IPv4        netip.Prefix // zero: none
}

// Link is a veth pair between two endpoints.
type Link struct {
	A, B Endpoint
	MTU  int
}

// Node returns the named node, or nil.
func (t *Topology) Node(name string) *Node {
	for _, n := range t.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// IsDrover says whether the node runs the drover image: an image whose
// repository's last path element is drover or drover-full, whatever the
// registry and tag (drover:v1, localhost/drover:dev, ghcr.io/o/drover-full:x).
func (n *Node) IsDrover() bool {
	if n.Kind != KindLinux || n.Image == "" {
		return false
	}
	repo := n.Image
	if i := strings.IndexByte(repo, '@'); i >= 0 {
		repo = repo[:i]
	}
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	base := repo[strings.LastIndex(repo, "/")+1:]
	return base == "drover" || base == "drover-full"
}

// HostPath maps a path inside the node's container to the host path a
// bind gives it (relative host paths from dir), or "" when no bind covers
// it.
func (n *Node) HostPath(dir, p string) string {
	best := -1
	for i, b := range n.Binds {
		if (p == b.Container || strings.HasPrefix(p, strings.TrimSuffix(b.Container, "/")+"/")) &&
			(best < 0 || len(b.Container) > len(n.Binds[best].Container)) {
			best = i
		}
	}
	if best < 0 {
		return ""
	}
	b := n.Binds[best]
	host := b.Host
	if !filepath.IsAbs(host) {
		host = filepath.Join(dir, host)
	}
	return filepath.Join(host, strings.TrimPrefix(p, b.Container))
}

// file is the part of a containerlab file this package reads; the rest
// is recorded as ignored.
type file struct {
	Name     string         `yaml:"name"`
	Topology topo           `yaml:"topology"`
	Rest     map[string]any `yaml:",inline"`
}

type topo struct {
	Defaults nodeConfig            `yaml:"defaults"`
	Kinds    map[string]nodeConfig `yaml:"kinds"`
	Groups   map[string]nodeConfig `yaml:"groups"`
	Nodes    map[string]nodeConfig `yaml:"nodes"`
	Links    []rawLink             `yaml:"links"`
	Rest     map[string]any        `yaml:",inline"`
}

type nodeConfig struct {
	Kind    string            `yaml:"kind"`
	Group   string            `yaml:"group"`
	Image   string            `yaml:"image"`
	Cmd     string            `yaml:"cmd"`
	Binds   []string          `yaml:"binds"`
	Exec    []string          `yaml:"exec"`
	Env     map[string]string `yaml:"env"`
	Sysctls map[string]any    `yaml:"sysctls"`
	Labels  map[string]string `yaml:"labels"`
	Rest    map[string]any    `yaml:",inline"`
}

type rawLink struct {
	Type      string         `yaml:"type"`
	Endpoints []yaml.Node    `yaml:"endpoints"`
	MTU       int            `yaml:"mtu"`
	IPv4      []string       `yaml:"ipv4"`
	Rest      map[string]any `yaml:",inline"`
}

// ignoredKeys are node settings the lab accepts and does not realize
// (namespaces are not containers: no resources, ports, management
// network, startup configuration or health checks).
var nodeIgnored = regexp.MustCompile(`^(aliases|auto-remove|cap-add|certificate|cgroup-parent|cgroupns-mode|components|config|cpu|cpu-set|credentials|devices|dns|enforce-startup-config|entrypoint|env-files|extras|healthcheck|hostname|image-pull-policy|license|link-apply-mode|memory|mgmt-ipv4|mgmt-ipv6|network-mode|pid-mode|ports|privileged|restart-policy|runtime|security-opts|shm-size|stages|startup-config|startup-delay|suppress-startup-config|tmpfs|type|user|volumes)$`)

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9-._]*$`)

// Error is a topology file that cannot be read or realized: the
// operator's input, which `drover lab` reports with exit status 2.
type Error struct {
	File string
	Err  error
}

func (e *Error) Error() string { return e.File + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Load reads and checks the topology file at path; every error is *Error.
func Load(path string) (*Topology, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Err: err}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, &Error{File: path, Err: err}
	}
	t, err := Parse(b, filepath.Dir(abs))
	if err != nil {
		return nil, &Error{File: path, Err: err}
	}
	return t, nil
}

// Parse reads a topology; dir is where relative binds start.
func Parse(b []byte, dir string) (*Topology, error) {
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("not a containerlab topology: %w", err)
	}
	if f.Name == "" || !nameRE.MatchString(f.Name) {
		return nil, fmt.Errorf("name: %q: want letters, digits, '-', '.', '_', not first", f.Name)
	}
	t := &Topology{Name: f.Name, Dir: dir}
	for k := range f.Rest {
		t.Ignored = append(t.Ignored, k)
	}
	for k := range f.Topology.Rest {
		t.Ignored = append(t.Ignored, "topology."+k)
	}
	if len(f.Topology.Nodes) == 0 {
		return nil, errors.New("topology.nodes: no nodes")
	}
	names := make([]string, 0, len(f.Topology.Nodes))
	for n := range f.Topology.Nodes {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		n, ignored, err := node(name, f.Topology.Nodes[name], f.Topology)
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", name, err)
		}
		t.Nodes = append(t.Nodes, n)
		t.Ignored = append(t.Ignored, ignored...)
	}
	used := map[Endpoint]int{}
	for i, rl := range f.Topology.Links {
		l, err := t.link(rl)
		if err != nil {
			return nil, fmt.Errorf("links[%d]: %w", i, err)
		}
		for _, e := range []Endpoint{l.A, l.B} {
			key := Endpoint{Node: e.Node, Iface: e.Iface}
			if j, ok := used[key]; ok {
				return nil, fmt.Errorf("links[%d]: endpoint %s:%s is already used by links[%d]", i, e.Node, e.Iface, j)
			}
			used[key] = i
		}
		t.Links = append(t.Links, l)
	}
	slices.Sort(t.Ignored)
	t.Ignored = slices.Compact(t.Ignored) // a group's or kind's key, once
	return t, nil
}

// node merges, as containerlab does, defaults, the node's kind, its group
// and its own settings: scalars and exec from the most specific that sets
// them; binds, env, labels and sysctls combined, the more specific winning
// on a key (binds by container path).
func node(name string, nc nodeConfig, tp topo) (*Node, []string, error) {
	if !nameRE.MatchString(name) {
		return nil, nil, fmt.Errorf("name %q: want letters, digits, '-', '.', '_'", name)
	}
	defaults := tp.Defaults
	var gc nodeConfig
	if g := first(nc.Group, defaults.Group); g != "" {
		var ok bool
		if gc, ok = tp.Groups[g]; !ok {
			return nil, nil, fmt.Errorf("group %q: not in topology.groups", g)
		}
	}
	kind := first(nc.Kind, gc.Kind, defaults.Kind)
	if kind == "" {
		return nil, nil, errors.New("kind: missing (drover lab realizes linux and bridge)")
	}
	if kind != KindLinux && kind != KindBridge {
		return nil, nil, fmt.Errorf("kind %q: drover lab realizes linux and bridge nodes only", kind)
	}
	layers := []nodeConfig{defaults, tp.Kinds[kind], gc, nc} // least specific first
	n := &Node{Name: name, Kind: kind, Env: map[string]string{}, Sysctls: map[string]string{}, Labels: map[string]string{}}
	var ignored []string
	for li, c := range layers {
		where := [...]string{"topology.defaults", "topology.kinds." + kind, "topology.groups." + first(nc.Group, defaults.Group), "topology.nodes." + name}[li]
		n.Image = first(c.Image, n.Image)
		if c.Cmd != "" {
			n.Cmd = strings.Fields(c.Cmd)
		}
		if len(c.Exec) > 0 {
			n.Exec = c.Exec
		}
		for _, s := range c.Binds {
			b, err := parseBind(s)
			if err != nil {
				return nil, nil, fmt.Errorf("binds: %w", err)
			}
			n.Binds = slices.DeleteFunc(n.Binds, func(o Bind) bool { return o.Container == b.Container })
			n.Binds = append(n.Binds, b)
		}
		for k, v := range c.Env {
			n.Env[k] = v
		}
		for k, v := range c.Labels {
			n.Labels[k] = v
		}
		for k, v := range c.Sysctls {
			n.Sysctls[k] = fmt.Sprint(v)
		}
		for k := range c.Rest {
			if !nodeIgnored.MatchString(k) {
				return nil, nil, fmt.Errorf("%s: unknown key %q", where, k)
			}
			ignored = append(ignored, where+"."+k)
		}
	}
	for k := range n.Sysctls {
		if !strings.HasPrefix(k, "net.") || strings.Contains(k, "..") || strings.ContainsAny(k, "/ ") {
			return nil, nil, fmt.Errorf("sysctls: %q: only net.* sysctls are per namespace", k)
		}
	}
	if v, ok := n.Labels[LabelProbe]; ok {
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is4() {
			return nil, nil, fmt.Errorf("labels: %s: %q is not an IPv4 address", LabelProbe, v)
		}
		n.Probe = a
	}
	if v, ok := n.Labels[LabelArch]; ok {
		if v != "amd64" && v != "arm64" && v != "arm" {
			return nil, nil, fmt.Errorf("labels: %s: %q: want amd64, arm64 or arm", LabelArch, v)
		}
		n.Arch = v
	}
	if n.Kind == KindBridge && (n.Image != "" || len(n.Exec) > 0 || len(n.Cmd) > 0) {
		return nil, nil, errors.New("a bridge node takes no image, cmd or exec")
	}
	if n.Kind == KindLinux && n.Image == "" {
		return nil, nil, errors.New("image: missing")
	}
	return n, ignored, nil
}

func first(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func parseBind(s string) (Bind, error) {
	parts := strings.Split(s, ":")
	switch {
	case len(parts) == 2:
	case len(parts) == 3 && (parts[2] == "ro" || parts[2] == "rw"):
	default:
		return Bind{}, fmt.Errorf("%q: want HOST:CONTAINER[:ro|rw]", s)
	}
	if parts[0] == "" || !filepath.IsAbs(parts[1]) {
		return Bind{}, fmt.Errorf("%q: want a host path and an absolute container path", s)
	}
	return Bind{Host: parts[0], Container: filepath.Clean(parts[1]), ReadOnly: len(parts) == 3 && parts[2] == "ro"}, nil
}

// link reads a brief link (endpoints "node:iface", ipv4 list) or an
// extended veth link (endpoints as objects).
func (t *Topology) link(rl rawLink) (Link, error) {
	if rl.Type != "" && rl.Type != "veth" {
		return Link{}, fmt.Errorf("type %q: drover lab realizes veth links only", rl.Type)
	}
	for k := range rl.Rest {
		return Link{}, fmt.Errorf("unknown key %q", k)
	}
	if len(rl.Endpoints) != 2 {
		return Link{}, fmt.Errorf("endpoints: got %d, want 2", len(rl.Endpoints))
	}
	var eps [2]Endpoint
	for i, y := range rl.Endpoints {
		var e Endpoint
		switch y.Kind {
		case yaml.ScalarNode:
			node, iface, ok := strings.Cut(y.Value, ":")
			if !ok || node == "" || iface == "" {
				return Link{}, fmt.Errorf("endpoints[%d]: %q is not NODE:INTERFACE", i, y.Value)
			}
			e = Endpoint{Node: node, Iface: iface}
		case yaml.MappingNode:
			var raw struct {
				Node      string `yaml:"node"`
				Interface string `yaml:"interface"`
				MAC       string `yaml:"mac"`
				IPv4      string `yaml:"ipv4"`
				IPv6      string `yaml:"ipv6"`
			}
			if err := y.Decode(&raw); err != nil {
				return Link{}, fmt.Errorf("endpoints[%d]: %w", i, err)
			}
			if raw.IPv6 != "" {
				return Link{}, fmt.Errorf("endpoints[%d]: ipv6: drover lab's underlay is IPv4", i)
			}
			e = Endpoint{Node: raw.Node, Iface: raw.Interface, MAC: raw.MAC}
			if raw.IPv4 != "" {
				p, err := netip.ParsePrefix(raw.IPv4)
				if err != nil || !p.Addr().Is4() {
					return Link{}, fmt.Errorf("endpoints[%d]: ipv4 %q: want an IPv4 address with its prefix length", i, raw.IPv4)
				}
				e.IPv4 = p
			}
		default:
			return Link{}, fmt.Errorf("endpoints[%d]: want NODE:INTERFACE or an endpoint object", i)
		}
		n := t.Node(e.Node)
		if n == nil {
			return Link{}, fmt.Errorf("endpoints[%d]: no node %q", i, e.Node)
		}
		if len(e.Iface) > 15 || strings.ContainsAny(e.Iface, "/ :") || e.Iface == "lo" {
			return Link{}, fmt.Errorf("endpoints[%d]: %s: interface name %q: at most 15 characters, no '/', ' ' or ':', not lo", i, e.Node, e.Iface)
		}
		if n.Kind == KindBridge && e.IPv4.IsValid() {
			return Link{}, fmt.Errorf("endpoints[%d]: %s is a bridge: its ports take no address", i, e.Node)
		}
		eps[i] = e
	}
	if len(rl.IPv4) > 0 {
		for i, s := range rl.IPv4 {
			if s == "" {
				continue
			}
			p, err := netip.ParsePrefix(s)
			if err != nil || !p.Addr().Is4() {
				return Link{}, fmt.Errorf("ipv4[%d]: %q: want an IPv4 address with its prefix length", i, s)
			}
			if eps[i].IPv4.IsValid() {
				return Link{}, fmt.Errorf("ipv4[%d]: endpoint %s:%s has an address already", i, eps[i].Node, eps[i].Iface)
			}
			eps[i].IPv4 = p
		}
	}
	if rl.MTU != 0 && (rl.MTU < 576 || rl.MTU > 65535) {
		return Link{}, fmt.Errorf("mtu %s: want 576 to 65535", strconv.Itoa(rl.MTU))
	}
	return Link{A: eps[0], B: eps[1], MTU: rl.MTU}, nil
}
