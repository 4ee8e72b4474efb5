package cni

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/drovernet/drover/lab"
	"github.com/drovernet/drover/testenv"
)

// tcpServe accepts connections on addr:port in ns until the test ends,
// writing "ok" to each.
func tcpServe(t *testing.T, ns *testenv.NetNS, addr netip.Addr, port int) {
	t.Helper()
	ln := listenIn(t, ns, fmt.Sprintf("%v:%d", addr, port))
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

// tcpReaches reports whether from opens a connection to addr:port and
// reads the server's "ok" (so the reply path is checked too).
func tcpReaches(t *testing.T, from *testenv.NetNS, addr netip.Addr, port int) bool {
	t.Helper()
	ok := false
	err := from.Do(func() error {
		c, err := net.DialTimeout("tcp4", fmt.Sprintf("%v:%d", addr, port), 400*time.Millisecond)
		if err != nil {
			return nil
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(400 * time.Millisecond))
		b := make([]byte, 2)
		_, err = c.Read(b)
		ok = err == nil && string(b) == "ok"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// TestLabPolicyFile runs network policy from a file on two lab hosts with
// containers the CNI plugin attaches (labels through CNI_ARGS): same-host
// and cross-host flows, a reload while traffic flows, the drop counters
// in /metrics, and `drover policy explain` agreeing with what happens;
// over ESP with the routed model and over VXLAN with the flat one. The
// lab's hosts are static peers, not a gossip cluster, so they do not
// share their pods: a remote container is matched by ipBlock only.
func TestLabPolicyFile(t *testing.T) {
	testenv.NeedRoot(t)
	if !hasPacketFilter() {
		t.Skip("needs nft")
	}
	t.Run("esp-routed", func(t *testing.T) { testLabPolicyFile(t, "esp", false) })
	t.Run("vxlan-flat", func(t *testing.T) { testLabPolicyFile(t, "vxlan", true) })
}

func testLabPolicyFile(t *testing.T, encap string, flat bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	polFile := filepath.Join(dir, "policy.yaml")
	writePolicy := func(s string) {
		t.Helper()
		tmp := polFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, polFile); err != nil {
			t.Fatal(err)
		}
	}
	const aFromB = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-b, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: b}}}]
    ports: [{port: 80}]
`
	writePolicy(aFromB)
	lb, err := lab.NewLab(ctx, lab.Options{Hosts: 2, Containers: 1, Tag: "pol" + encap[:1], Bin: testenv.DroverBinary(t), PolicyFile: polFile, Encapsulation: encap, Flat: flat})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lb.Close() })

	type pod struct {
		name string // ns/name
		host int
		ns   *testenv.NetNS
		addr netip.Addr
	}
	attach := func(name string, host int, labels string) *pod {
		t.Helper()
		h := lb.Hosts[host-1]
		list := exampleConflist(t, "drover.conflist", "drvpol", map[string]any{
			"bridge": h.Bridge, "daemonSocket": h.Router.Config.ControlSocket, "flat": flat,
			"ipam": map[string]any{"type": "drover", "dataDir": filepath.Join(dir, h.Name), "rangeStart": fmt.Sprintf("10.42.%d.100", h.Index)},
		})
		withoutPlugin(list, "portmap")
		e := newCNIEnv(t, h.NS, list)
		ns, pname, _ := strings.Cut(name, "/")
		e.args = fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;DROVER_LABELS=%s", ns, pname, labels)
		ctr := testenv.NewNetNS(t, "cnip")
		out, err := e.run("add", ctr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.run("del", ctr) })
		p := &pod{name: name, host: host, ns: ctr, addr: resultAddr(t, parseResult(t, out)).Addr()}
		tcpServe(t, ctr, p.addr, 80)
		tcpServe(t, ctr, p.addr, 81)
		return p
	}
	a := attach("x/a", 1, "app:a")
	b := attach("x/b", 1, "app:b")
	c := attach("y/c", 2, "app:c")

	type flow struct {
		from, to *pod
		port     int
		want     bool
	}
	check := func(stage string, flows []flow) {
		t.Helper()
		for _, f := range flows {
			// Enforcement follows notices and the file asynchronously:
			// poll a little before calling a flow wrong.
			deadline := time.Now().Add(3 * time.Second)
			got := tcpReaches(t, f.from.ns, f.to.addr, f.port)
			for got != f.want && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
				got = tcpReaches(t, f.from.ns, f.to.addr, f.port)
			}
			if got != f.want {
				t.Errorf("%s: %s -> %s:%d: got connected %v, want %v", stage, f.from.name, f.to.name, f.port, got, f.want)
			}
			// Asked at the destination's host, which knows a remote
			// source by its address only.
			src := f.from.name
			if f.from.host != f.to.host {
				src = f.from.addr.String()
			}
			x := explain(t, lb.Hosts[f.to.host-1], src, f.to.addr.String(), f.port)
			if x.Allowed != f.want {
				t.Errorf("%s: explain %s -> %s:%d on the destination's host: allowed %v, want %v (%s / %s)", stage, f.from.name, f.to.name, f.port, x.Allowed, f.want, x.Egress.Why, x.Ingress.Why)
			}
		}
	}
	check("x/a admits x/b on 80", []flow{
		{b, a, 80, true}, // same host: routed between isolated bridge ports
		{b, a, 81, false},
		{c, a, 80, false}, // cross host: y/c is not known here, only its address
		{a, b, 81, true},
		{a, c, 81, true},
		{c, b, 80, true},
	})

	// A reload while traffic flows: admit h2's block by ipBlock.
	t0 := time.Now()
	writePolicy(aFromB + `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-h2, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress: [{from: [{ipBlock: {cidr: 10.42.2.0/24}}]}]
`)
	for !tcpReaches(t, c.ns, a.addr, 81) {
		if time.Since(t0) > 10*time.Second {
			t.Fatal("the reloaded policy file was not enforced within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("policy file change enforced within %v (reload_interval 1s)", time.Since(t0).Round(time.Millisecond))
	check("after the reload", []flow{{c, a, 81, true}, {b, a, 81, false}})

	// The denied flows were counted under the policy that isolates x/a.
	m, err := exec.Command(lb.Options().Bin, "status", "--socket", lb.Hosts[0].Router.Config.ControlSocket, "-o", "json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		PolicyDrops []struct {
			Namespace, Policy, Direction string
			Packets                      uint64
		} `json:"policy_drops"`
	}
	if err := json.Unmarshal(m, &st); err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, d := range st.PolicyDrops {
		if d.Namespace == "x" && d.Policy == "a-from-b" && d.Direction == "ingress" {
			n = d.Packets
		}
	}
	if n == 0 {
		t.Errorf("policy drops: got %+v, want x/a-from-b ingress counted", st.PolicyDrops)
	}
	// And in /metrics, as Prometheus reads it.
	raw, err := lb.Hosts[0].ControlGet("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	if !regexp.MustCompile(`(?m)^drover_policy_drops_total\{namespace="x",policy="a-from-b",direction="ingress"\} [1-9][0-9]*$`).MatchString(text) {
		t.Errorf("/metrics has no non-zero drover_policy_drops_total for x/a-from-b ingress:\n%s", grepLines(text, "drover_policy"))
	}

	// A broken file changes nothing enforced and says why.
	writePolicy(aFromB + "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: bad, namespace: x}\nspec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.42.2.0/33}}]}]}\n")
	out, err := exec.Command(lb.Options().Bin, "policy", "list", "--socket", lb.Hosts[0].Router.Config.ControlSocket).CombinedOutput()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(string(out), "ipBlock.cidr") && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		out, err = exec.Command(lb.Options().Bin, "policy", "list", "--socket", lb.Hosts[0].Router.Config.ControlSocket).CombinedOutput()
	}
	if err != nil || !strings.Contains(string(out), "spec.ingress[0].from[0].ipBlock.cidr") || !strings.Contains(string(out), "x/a-from-h2") {
		t.Errorf("policy list after a broken file: %v\n%s\nwant the error named and the old policies listed", err, out)
	}
	check("after a broken file", []flow{{c, a, 81, true}, {b, a, 81, false}})
}

type explanation struct {
	Allowed         bool
	Egress, Ingress struct{ Why string }
}

// explain runs `drover policy explain -o json` against h's daemon.
func explain(t *testing.T, h *lab.Host, from, to string, port int) explanation {
	t.Helper()
	out, err := exec.Command(testenvBin(t), "policy", "explain", "-o", "json", "--socket", h.Router.Config.ControlSocket, from, to, fmt.Sprintf("%d/tcp", port)).CombinedOutput()
	if err != nil {
		t.Fatalf("policy explain %s %s: %v\n%s", from, to, err, out)
	}
	var x explanation
	if err := json.Unmarshal(out, &x); err != nil {
		t.Fatalf("policy explain: %v\n%s", err, out)
	}
	return x
}

func testenvBin(t *testing.T) string {
	t.Helper()
	bin, err := testenv.BuildDrover()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
