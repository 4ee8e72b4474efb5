package enforce

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/drovernet/drover/internal/netnstest"
	"github.com/drovernet/drover/policy"
)

// podNet is a host namespace routing between pod namespaces, each on a
// veth of its own (a /30 per pod), forwarding on: the forward hook sees
// every pod-to-pod flow, as on a drover host.
type podNet struct {
	host *netnstest.NetNS
	pods map[string]*netnstest.NetNS // by ns/pod
	ips  map[string]netip.Addr
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func newPodNet(t *testing.T, pods ...string) *podNet {
	t.Helper()
	n := &podNet{host: netnstest.New(t, "ph"), pods: map[string]*netnstest.NetNS{}, ips: map[string]netip.Addr{}}
	run(t, "ip", "-n", n.host.Name, "link", "set", "lo", "up")
	run(t, "ip", "netns", "exec", n.host.Name, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	for i, p := range pods {
		ns := netnstest.New(t, "pp")
		n.pods[p] = ns
		hostIP := fmt.Sprintf("10.42.%d.1", i+1)
		podIP := netip.AddrFrom4([4]byte{10, 42, byte(i + 1), 2})
		n.ips[p] = podIP
		h := fmt.Sprintf("drv-pv%d", i)
		run(t, "ip", "-n", n.host.Name, "link", "add", h, "type", "veth", "peer", "name", "eth0", "netns", ns.Name)
		run(t, "ip", "-n", n.host.Name, "addr", "add", hostIP+"/30", "dev", h)
		run(t, "ip", "-n", n.host.Name, "link", "set", h, "up")
		run(t, "ip", "-n", ns.Name, "link", "set", "lo", "up")
		run(t, "ip", "-n", ns.Name, "addr", "add", podIP.String()+"/30", "dev", "eth0")
		run(t, "ip", "-n", ns.Name, "link", "set", "eth0", "up")
		run(t, "ip", "-n", ns.Name, "route", "add", "default", "via", hostIP)
	}
	return n
}

// serve accepts TCP connections on port in every pod until the test ends.
func (n *podNet) serve(t *testing.T, ports ...int) {
	t.Helper()
	for p, ns := range n.pods {
		for _, port := range ports {
			var ln net.Listener
			err := ns.Do(func() error {
				var err error
				ln, err = net.Listen("tcp4", fmt.Sprintf("%v:%d", n.ips[p], port))
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Write([]byte("ok"))
					c.Close()
				}
			}()
		}
	}
}

// connects reports whether from reaches to:port over TCP (and reads the
// server's reply, so the return path is checked too).
func (n *podNet) connects(t *testing.T, from, to string, port int) bool {
	t.Helper()
	ok := false
	err := n.pods[from].Do(func() error {
		d := net.Dialer{Timeout: 300 * time.Millisecond}
		c, err := d.DialContext(context.Background(), "tcp4", fmt.Sprintf("%v:%d", n.ips[to], port))
		if err != nil {
			return nil
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		buf := make([]byte, 2)
		if _, err := c.Read(buf); err == nil && string(buf) == "ok" {
			ok = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func parsePolicies(t *testing.T, s string) []*policy.Policy {
	t.Helper()
	set, err := policy.Parse([]byte(s), "x")
	if err != nil {
		t.Fatal(err)
	}
	return set.Policies
}

// TestEnforcerKernel installs rulesets in a namespace and checks real TCP
// flows against them: ingress and egress, ports, an update applied as a
// difference, the drop counters and removal.
func TestEnforcerKernel(t *testing.T) {
	netnstest.NeedRoot(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip")
	}
	n := newPodNet(t, "x/a", "x/b", "y/c")
	n.serve(t, 80, 81)
	world := func(pols string) *policy.World {
		var pods []policy.Pod
		for p, a := range n.ips {
			ns, name, _ := strings.Cut(p, "/")
			node := "h"
			if p == "y/c" {
				node = "elsewhere" // a remote pod: only its identity matters here
			}
			pods = append(pods, policy.Pod{Namespace: ns, Name: name, Labels: map[string]string{"pod": name}, Addrs: []netip.Addr{a}, Node: node,
				Ports: []policy.ContainerPort{{Name: "http", Port: 80, Protocol: policy.TCP}}})
		}
		return policy.NewWorld(parsePolicies(t, pols), nil, pods)
	}
	e, err := NewIn(n.host.Handle())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Remove() })
	var ids Idents
	apply := func(pols string) {
		t.Helper()
		if err := e.Apply(Compile(world(pols), "h", &ids)); err != nil {
			t.Fatal(err)
		}
	}
	type flow struct {
		from, to string
		port     int
		want     bool
	}
	check := func(stage string, flows []flow) {
		t.Helper()
		for _, f := range flows {
			if got := n.connects(t, f.from, f.to, f.port); got != f.want {
				t.Errorf("%s: %s -> %s:%d: got connected %v, want %v", stage, f.from, f.to, f.port, got, f.want)
			}
		}
	}
	const hdr = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"

	apply("")
	check("no policy", []flow{{"x/b", "x/a", 80, true}, {"y/c", "x/a", 81, true}, {"x/a", "y/c", 80, true}})

	onlyB := hdr + "metadata: {name: a-from-b}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}], ports: [{port: http}]}]\n"
	apply(onlyB)
	check("x/a admits x/b on http", []flow{
		{"x/b", "x/a", 80, true}, {"x/b", "x/a", 81, false}, {"y/c", "x/a", 80, false},
		{"x/a", "x/b", 81, true}, {"y/c", "x/b", 80, true}, {"x/a", "y/c", 80, true},
	})

	fromY := onlyB + "---\n" + hdr + "metadata: {name: a-from-y}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]}]\n---\n" +
		hdr + "metadata: {name: b-egress}\nspec:\n  podSelector: {matchLabels: {pod: b}}\n  policyTypes: [Egress]\n  egress: [{to: [{ipBlock: {cidr: 10.42.0.0/16, except: [10.42.3.0/24]}}], ports: [{port: 80, endPort: 81}]}]\n"
	apply(fromY)
	check("union, egress ipBlock with except", []flow{
		{"y/c", "x/a", 81, true}, {"x/b", "x/a", 80, true}, {"x/b", "x/a", 81, false},
		{"x/b", "y/c", 80, false}, {"x/a", "y/c", 81, true},
	})

	drops, err := e.Drops()
	if err != nil {
		t.Fatal(err)
	}
	if drops["egress:x/b-egress"] == 0 || drops["ingress:x/a-from-b"] == 0 || drops["ingress:x/a-from-y"] == 0 {
		t.Errorf("drop counters: got %v, want egress:x/b-egress and both ingress:x/a-* counted", drops)
	}

	apply(onlyB)
	if drops, err = e.Drops(); err != nil || drops["egress:x/b-egress"] != 0 || drops["ingress:x/a-from-y"] != 0 {
		t.Errorf("after removing two policies: counters %v, %v; want theirs gone", drops, err)
	}
	check("back to one policy", []flow{{"y/c", "x/a", 81, false}, {"x/b", "y/c", 80, true}})

	if err := e.Remove(); err != nil {
		t.Fatal(err)
	}
	check("removed", []flow{{"y/c", "x/a", 81, true}})
	if out, _ := exec.Command("ip", "netns", "exec", n.host.Name, "nft", "list", "tables").CombinedOutput(); strings.Contains(string(out), Table) {
		t.Errorf("table left after Remove: %s", out)
	}
}
