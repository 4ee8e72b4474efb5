package lab

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/drovernet/drover/gossip"
	"github.com/drovernet/drover/kube"
	"github.com/drovernet/drover/testenv"
)

// The acceptance tests of drover's kubernetes datastore (issue 11): real
// etcd and kube-apiserver (StartKube), drover daemons in lab host
// namespaces with cluster.datastore kubernetes and the service account and
// ClusterRole of deploy/kubernetes, pods made by a real kubelet and by
// containerd's CRI with drover as their CNI plugin.

// deployDir is deploy/kubernetes of this repository.
func deployDir(t *testing.T) string {
	t.Helper()
	_, src, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(filepath.Dir(src)), "deploy", "kubernetes")
}

// droverIdentity applies the manifests' Namespace, ServiceAccount,
// ClusterRole and ClusterRoleBinding and returns a kubeconfig with that
// service account's token: the daemons run with exactly the rights the
// DaemonSet gives them.
func droverIdentity(t *testing.T, k *Kube) string {
	t.Helper()
	for _, f := range []string{"00-namespace.yaml", "10-serviceaccount.yaml", "20-clusterrole.yaml", "21-clusterrolebinding.yaml"} {
		b, err := os.ReadFile(filepath.Join(deployDir(t), f))
		if err != nil {
			t.Fatal(err)
		}
		if err := k.Apply(string(b)); err != nil {
			t.Fatalf("apply %s: %v", f, err)
		}
	}
	kc, err := k.ServiceAccountKubeconfig("drover-system", "drover")
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

// kubeLab is a lab of hosts h1..hN whose routers use k's API server; none
// is started (StartRouters, once its Node exists). The Nodes are deleted
// when the test ends.
func kubeLab(t *testing.T, k *Kube, kubeconfig string, opts Options, podCIDR string) *Lab {
	t.Helper()
	opts.ClusterOptions.Kubeconfig = kubeconfig
	opts.ClusterOptions.PodCIDR = podCIDR
	opts.HostOptions = make([]HostOptions, opts.Hosts)
	for i := range opts.HostOptions {
		opts.HostOptions[i].Manual = true
	}
	lab := newClusterLab(t, opts)
	for _, h := range lab.Hosts {
		k.ServeIn(t, h.NS)
		t.Cleanup(func() { _ = k.DeleteNode(h.Name) })
	}
	return lab
}

// hostBlock is the pod CIDR the tests give host h: 10.42.(10+h).0/24.
func hostBlock(h *Host) string { return fmt.Sprintf("10.42.%d.0/24", 10+h.Index) }

// createNode makes h's Node with its pod CIDR (pod_cidr node) or none
// (claim), its underlay address as InternalIP, and NetworkUnavailable True
// as a cloud's node controller sets it.
func createNode(t *testing.T, k *Kube, h *Host, withCIDR bool) {
	t.Helper()
	o := NodeOptions{InternalIP: h.Underlay.String()}
	if withCIDR {
		o.PodCIDRs = []string{hostBlock(h)}
	}
	if err := k.CreateNode(h.Name, o); err != nil {
		t.Fatal(err)
	}
	patch := `{"status":{"conditions":[{"type":"NetworkUnavailable","status":"True","reason":"NoRouteCreated","message":"set by the test"}]}}`
	if _, err := k.Kubectl("patch", "node", h.Name, "--subresource=status", "--type=strategic", "-p", patch); err != nil {
		t.Fatal(err)
	}
}

// networkUnavailable is h's Node's NetworkUnavailable condition status and
// reason ("" if absent).
func networkUnavailable(k *Kube, name string) (status, reason string, err error) {
	n, err := k.GetNode(name)
	if err != nil {
		return "", "", err
	}
	for _, c := range n.Status.Conditions {
		if c.Type == "NetworkUnavailable" {
			return c.Status, c.Reason, nil
		}
	}
	return "", "", nil
}

// droverCNI writes a CNI bin directory (drover as the plugin, loopback) and
// a conf directory with a conflist attaching pods to h's bridge through
// h's daemon, addresses from .100 of its block up (the lab's containers
// hold the low ones). cniVersion 1.0.0: Debian's containerd 1.6 refuses
// 1.1.0.
func droverCNI(t *testing.T, lab *Lab, h *Host) ContainerdOptions {
	t.Helper()
	bin, conf := t.TempDir(), t.TempDir()
	if err := os.Symlink(lab.opts.Bin, filepath.Join(bin, "drover")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(ReferenceCNIPlugins(t), "loopback"), filepath.Join(bin, "loopback")); err != nil {
		t.Fatal(err)
	}
	start := h.Prefix.Addr().As4()
	start[3] = 100
	list := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "drover",
		"plugins": []any{map[string]any{
			"type":             "drover",
			"bridge":           h.Bridge,
			"daemonSocket":     h.cfg.ControlSocket,
			"clusterCIDR":      "10.42.0.0/16",
			"isDefaultGateway": true,
			"ipam":             map[string]any{"type": "drover", "dataDir": filepath.Join(t.TempDir(), "ipam"), "rangeStart": netip.AddrFrom4(start).String()},
		}},
	}
	b, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(conf, "10-drover.conflist"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return ContainerdOptions{CNIBinDir: bin, CNIConfDir: conf}
}

// pingFrom pings addr from a lab container, to a deadline.
func pingFrom(ctx context.Context, c *Container, addr string) error {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return err
	}
	return Poll(ctx, 10*time.Second, 100*time.Millisecond, func() error {
		_, err := c.Ping(ctx, a, time.Second)
		return err
	})
}

// TestKubeMode: three hosts in Kubernetes mode, pods on one made by a real
// kubelet and on the others by containerd's CRI (crictl runp), over ESP
// with pod_cidr node (blocks are the Nodes' podCIDRs) and over VXLAN with
// pod_cidr claim (drover claims and records them); then, over ESP, a Node
// deleted and re-created, and the API server stopped for 30 s under a
// running flow, with a Node added after it returns.
func TestKubeMode(t *testing.T) {
	testenv.NeedRoot(t)
	k := StartKube(t)
	kc := droverIdentity(t, k)
	t.Run("manifests", func(t *testing.T) { testKubeManifests(t, k) })
	t.Run("esp-node", func(t *testing.T) { testKubeMode(t, k, kc, "esp", "node") })
	t.Run("vxlan-claim", func(t *testing.T) { testKubeMode(t, k, kc, "vxlan", "claim") })
}

func testKubeMode(t *testing.T, k *Kube, kc, encap, mode string) {
	ctx := t.Context()
	full := encap == "esp"
	hosts := 3
	if full {
		hosts = 4 // h4 joins after the API server's outage
	}
	lab := kubeLab(t, k, kc, Options{Hosts: hosts, Containers: 1, Encapsulation: encap, Tag: "k" + encap[:1]}, mode)
	three := lab.Hosts[:3]
	for _, h := range three {
		createNode(t, k, h, mode == "node")
	}
	t0 := time.Now()
	if err := lab.StartRouters(ctx, three); err != nil {
		t.Fatal(err)
	}
	t.Logf("RESULT %s/%s: 3 routers converged %v after start; blocks %s %s %s", encap, mode,
		time.Since(t0).Round(time.Millisecond), three[0].Prefix, three[1].Prefix, three[2].Prefix)
	for _, h := range three {
		if mode == "node" && h.Prefix.String() != hostBlock(h) {
			t.Errorf("%s: block %s, want its Node's podCIDR %s", h.Name, h.Prefix, hostBlock(h))
		}
		n, err := k.GetNode(h.Name)
		if err != nil {
			t.Fatal(err)
		}
		if got := n.Metadata.Annotations["drover.network/block"]; got != h.Prefix.String() {
			t.Errorf("%s: annotation drover.network/block %q, want %s", h.Name, got, h.Prefix)
		}
	}
	err := Poll(ctx, 10*time.Second, 100*time.Millisecond, func() error {
		for _, h := range three {
			st, reason, err := networkUnavailable(k, h.Name)
			if err != nil {
				return err
			}
			if st != "False" || reason != "DroverIsUp" {
				return fmt.Errorf("%s: NetworkUnavailable %s (%s)", h.Name, st, reason)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("RESULT %s/%s: NetworkUnavailable False (DroverIsUp) on all 3 Nodes %v after start", encap, mode, time.Since(t0).Round(time.Millisecond))

	// Pods: a kubelet on h1, containerd's CRI on h2 and h3.
	h1, h2, h3 := three[0], three[1], three[2]
	ctd1 := StartContainerd(t, h1.NS, droverCNI(t, lab, h1))
	kl := StartKubelet(t, k, ctd1, KubeletOptions{NodeName: h1.Name, NodeIP: h1.Underlay.String()})
	podName := "drv-" + encap
	t.Cleanup(func() { _, _ = k.Kubectl("delete", "pod", podName, "--grace-period=0", "--force", "--wait=false") })
	err = k.Apply(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: default}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 1
  containers:
  - name: sleep
    image: %s
    imagePullPolicy: Never
    command: [sleep, "3600"]
`, podName, h1.Name, BusyboxImage))
	if err != nil {
		t.Fatal(err)
	}
	var kubeletIP string
	err = Poll(ctx, 60*time.Second, 200*time.Millisecond, func() error {
		running, ip, err := k.PodRunning("default", podName)
		if err == nil && !running {
			err = errors.New("not Running")
		}
		kubeletIP = ip
		return err
	})
	if err != nil {
		out, _ := k.Kubectl("describe", "pod", podName)
		t.Fatalf("pod %s: %v\n%s\n%s", podName, err, out, kl.LogTail(20))
	}
	if ready, err := k.NodeReady(h1.Name); err != nil || !ready {
		t.Errorf("kubelet node %s: Ready %v %v, want Ready", h1.Name, ready, err)
	}
	var cri []*CRIPod
	for _, h := range []*Host{h2, h3} {
		ctd := StartContainerd(t, h.NS, droverCNI(t, lab, h))
		p, err := ctd.RunPod("crip-"+h.Name, "x")
		if err != nil {
			t.Fatal(err)
		}
		cri = append(cri, p)
	}
	pods := map[string]string{"kubelet pod on h1": kubeletIP, "CRI pod on h2": cri[0].IP, "CRI pod on h3": cri[1].IP}
	for what, ip := range pods {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			t.Fatalf("%s: address %q", what, ip)
		}
		owner := map[string]*Host{"kubelet pod on h1": h1, "CRI pod on h2": h2, "CRI pod on h3": h3}[what]
		if !owner.Prefix.Contains(a) {
			t.Errorf("%s: %s outside its host's block %s", what, a, owner.Prefix)
		}
	}
	// Every lab container reaches every pod; the pods reach across hosts.
	for _, h := range three {
		for what, ip := range pods {
			if err := pingFrom(ctx, h.Containers[0], ip); err != nil {
				t.Errorf("%s → %s %s: %v", h.Containers[0].Ref, what, ip, err)
			}
		}
	}
	for i, p := range cri {
		for what, ip := range pods {
			if ip == p.IP {
				continue
			}
			if out, err := p.Exec("ping", "-c", "1", "-W", "2", ip); err != nil {
				t.Errorf("CRI pod on h%d → %s %s: %v\n%s", i+2, what, ip, err, out)
			}
		}
	}
	// The lab's containers of the three running hosts (h4, if any, is not
	// started yet).
	m, err := lab.Reachability(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ok, total := 0, 0
	for i := range 3 {
		for j := range 3 {
			if i == j {
				continue
			}
			total++
			if m.Reachable(i, j) {
				ok++
			}
		}
	}
	if ok != total {
		t.Fatalf("lab containers of h1..h3: %d/%d reachable\n%s", ok, total, m)
	}
	t.Logf("RESULT %s/%s: kubelet pod %s (h1), CRI pods %s (h2), %s (h3) reach each other and the lab's containers; lab matrix %d/%d", encap, mode, kubeletIP, cri[0].IP, cri[1].IP, ok, total)
	if !full {
		return
	}

	// A deleted Node is withdrawn everywhere; re-created, it is back.
	routesTo := func(h, peer *Host) (bool, error) {
		v, err := h.Router.Cluster()
		if err != nil {
			return false, err
		}
		for _, r := range v.Routes {
			if r.Peer == peer.Name {
				return true, nil
			}
		}
		return false, nil
	}
	del := time.Now()
	if err := k.DeleteNode(h3.Name); err != nil {
		t.Fatal(err)
	}
	err = Poll(ctx, 10*time.Second, 10*time.Millisecond, func() error {
		for _, h := range []*Host{h1, h2} {
			if has, err := routesTo(h, h3); err != nil || has {
				return fmt.Errorf("%s still routes to %s (%v)", h.Name, h3.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	withdrawn := time.Since(del)
	if withdrawn > 2*time.Second {
		t.Errorf("Node %s deleted: routes withdrawn after %v, want within 2 s", h3.Name, withdrawn)
	}
	if _, err := h1.Containers[0].Ping(ctx, h3.Containers[0].Addr, 500*time.Millisecond); err == nil {
		t.Errorf("%s still reaches %s after its Node was deleted", h1.Containers[0].Ref, h3.Containers[0].Ref)
	}
	re := time.Now()
	createNode(t, k, h3, true)
	if err := lab.WaitConverged(ctx, three, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	restored := time.Since(re)
	if err := pingFrom(ctx, h1.Containers[0], h3.Containers[0].Addr.String()); err != nil {
		t.Fatalf("after re-creating %s: %v", h3.Name, err)
	}
	t.Logf("RESULT Node %s deleted: routes withdrawn on h1 and h2 in %v; re-created: routes back (h3 republished its info) in %v", h3.Name, withdrawn.Round(time.Millisecond), restored.Round(time.Millisecond))

	// The API server away for 30 s: flows go on; afterwards a new Node is
	// picked up.
	const rate = 100
	var streams []*Stream
	for _, p := range [][2]ContainerRef{{{1, 1}, {2, 1}}, {{2, 1}, {3, 1}}, {{3, 1}, {1, 1}}} {
		s, err := lab.StartStream(ctx, p[0], p[1], rate)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, s)
		t.Cleanup(func() { s.Stop(0) })
	}
	trafficFor(t, time.Now().Add(2*time.Second))
	down := time.Now()
	if err := k.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	trafficFor(t, down.Add(30*time.Second))
	if err := k.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	trafficFor(t, back.Add(2*time.Second))
	for _, s := range streams {
		s.Stop(time.Second)
		w := s.Window(down.Add(-time.Second), back.Add(time.Second))
		t.Logf("RESULT API server stopped %v: %s → %s at %d/s: %s", back.Sub(down).Round(time.Millisecond), s.From, s.To, rate, w)
		if w.Lost != 0 || w.Received == 0 {
			t.Errorf("%s → %s while the API server was away: %s, want nothing lost", s.From, s.To, w)
		}
	}
	h4 := lab.Hosts[3]
	createNode(t, k, h4, true)
	added := time.Now()
	if err := lab.StartRouters(ctx, []*Host{h4}); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitConverged(ctx, lab.Hosts, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("RESULT Node h4 added %v after the API server returned: every host routes to it %v after its Node was created", added.Sub(back).Round(time.Millisecond), time.Since(added).Round(time.Millisecond))
	if err := pingFrom(ctx, h1.Containers[0], h4.Containers[0].Addr.String()); err != nil {
		t.Fatal(err)
	}
	for _, h := range lab.Hosts {
		log := h.Router.LogTail(400)
		if strings.Contains(log, "panic") {
			t.Errorf("%s: panic in the log:\n%s", h.Name, log)
		}
	}
}

// TestKubeRotation: key rotation in Kubernetes mode loses nothing, as in
// gossip mode (TestClusterRotation): two hosts rotate three times each
// under a flow both ways; no (SA, seq) pair is seen twice on the wire.
func TestKubeRotation(t *testing.T) {
	testenv.NeedRoot(t)
	const (
		rotation = 3 * time.Second
		rate     = 250
	)
	k := StartKube(t)
	kc := droverIdentity(t, k)
	lab := kubeLab(t, k, kc, Options{Hosts: 2, Containers: 1, Tag: "kr", ClusterOptions: ClusterOptions{
		RotationInterval: rotation, SwitchDelay: 750 * time.Millisecond, Grace: 3 * time.Second,
	}}, "node")
	for _, h := range lab.Hosts {
		createNode(t, k, h, true)
	}
	if err := lab.StartRouters(t.Context(), lab.Hosts); err != nil {
		t.Fatal(err)
	}
	h1, h2 := lab.Hosts[0], lab.Hosts[1]
	capture := startCapture(t, lab)
	epochs := func() (uint32, uint32) {
		t.Helper()
		v1, err := h1.Router.Cluster()
		if err != nil {
			t.Fatal(err)
		}
		v2, err := h2.Router.Cluster()
		if err != nil {
			t.Fatal(err)
		}
		return v1.Epoch, v2.Epoch
	}
	e1, e2 := epochs()
	var streams []*Stream
	for _, p := range [][2]ContainerRef{{{1, 1}, {2, 1}}, {{2, 1}, {1, 1}}} {
		s, err := lab.StartStream(t.Context(), p[0], p[1], rate)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, s)
		t.Cleanup(func() { s.Stop(0) })
	}
	begin := time.Now()
	err := Poll(t.Context(), 6*rotation, 100*time.Millisecond, func() error {
		a, b := epochs()
		if a < e1+3 || b < e2+3 {
			return fmt.Errorf("epochs h1 %d→%d, h2 %d→%d", e1, a, e2, b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	a1, a2 := epochs()
	trafficFor(t, time.Now().Add(800*time.Millisecond))
	end := time.Now()
	for _, s := range streams {
		s.Stop(time.Second)
	}
	res := checkCapture(t, capture)
	for _, s := range streams {
		w := s.Window(begin, end)
		t.Logf("RESULT kubernetes mode: %s → %s at %d/s during %d+%d rotations (%v): %s", s.From, s.To, rate, a1-e1, a2-e2, end.Sub(begin).Round(time.Millisecond), w)
		if w.Lost != 0 || w.Duplicates != 0 {
			t.Errorf("%s → %s: %s, want nothing lost or duplicated", s.From, s.To, w)
		}
	}
	for _, d := range [][2]*Host{{h1, h2}, {h2, h1}} {
		if spis := res.SPIs(d[0].Underlay, d[1].Underlay); len(spis) < 4 {
			t.Errorf("%s → %s used %d SAs, want >= 4 (3 rotations)", d[0].Name, d[1].Name, len(spis))
		}
	}
	t.Logf("RESULT kubernetes mode: %d ESP packets captured, no (SA, seq) pair twice", res.Packets)
}

// testKubeManifests: every manifest of deploy/kubernetes is accepted by the
// real API server (server-side dry-run, then applied), with the cluster
// key's Secret made as docs/kubernetes.md says; the DaemonSet is there.
func testKubeManifests(t *testing.T, k *Kube) {
	ents, err := os.ReadDir(deployDir(t))
	if err != nil {
		t.Fatal(err)
	}
	var applied []string
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".yaml") || e.Name() == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(deployDir(t), e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := k.DryRun(string(b)); err != nil {
			t.Fatalf("%s: server-side dry-run: %v", e.Name(), err)
		}
		if err := k.Apply(string(b)); err != nil {
			t.Fatalf("%s: apply: %v", e.Name(), err)
		}
		applied = append(applied, e.Name())
	}
	key := filepath.Join(t.TempDir(), "cluster.key")
	if err := os.WriteFile(key, []byte(strings.Repeat("42", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Kubectl("-n", "drover-system", "create", "secret", "generic", "drover-cluster-key", "--from-file=cluster.key="+key); err != nil {
		t.Fatal(err)
	}
	out, err := k.Kubectl("-n", "drover-system", "get", "daemonset", "drover", "-o", "jsonpath={.spec.template.spec.containers[0].securityContext.capabilities.add}")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("RESULT manifests accepted by kube-apiserver %s (dry-run and applied): %s; DaemonSet drover capabilities %s", KubeVersion, strings.Join(applied, ", "), out)
}

// TestKubeHostileAnnotation: a member with the cluster key and drover's
// service-account token (the ClusterRole may patch any Node) rewrites
// another Node's drover.network/node-info: once with another identity key
// and the other host's underlay address pointed elsewhere, once claiming
// the first host's block. The victim's daemon publishes its own info again
// at once; the others refuse the forged identity (pinned) and never route
// a block but the Node's podCIDR to it; a flow to the victim resumes.
func TestKubeHostileAnnotation(t *testing.T) {
	testenv.NeedRoot(t)
	k := StartKube(t)
	kc := droverIdentity(t, k)
	lab := kubeLab(t, k, kc, Options{Hosts: 2, Containers: 1, Tag: "kh"}, "node")
	// Before the lab's goroutine check: GetNode below keeps a connection.
	t.Cleanup(k.client.CloseIdleConnections)
	for _, h := range lab.Hosts {
		createNode(t, k, h, true)
	}
	ctx := t.Context()
	if err := lab.StartRouters(ctx, lab.Hosts); err != nil {
		t.Fatal(err)
	}
	h1, h2 := lab.Hosts[0], lab.Hosts[1]
	hostile, err := kube.NewClient(kc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hostile.Close)
	node, err := k.GetNode(h2.Name)
	if err != nil {
		t.Fatal(err)
	}
	real := node.Metadata.Annotations["drover.network/node-info"]
	raw, err := base64.StdEncoding.DecodeString(real)
	if err != nil {
		t.Fatal(err)
	}
	var info gossip.NodeInfo
	if err := info.UnmarshalBinary(raw); err != nil {
		t.Fatal(err)
	}
	s, err := lab.StartStream(ctx, ContainerRef{1, 1}, ContainerRef{2, 1}, 100)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(0) })
	trafficFor(t, time.Now().Add(time.Second))

	forge := func(what string, f func(in *gossip.NodeInfo)) {
		t.Helper()
		in := info
		f(&in)
		b, err := in.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		at := time.Now()
		patch := fmt.Sprintf(`{"metadata":{"annotations":{"drover.network/node-info":%q}}}`, base64.StdEncoding.EncodeToString(b))
		// As a hostile daemon would: drover's own client, the service
		// account's token (kubectl patch reads the Node first, which the
		// ClusterRole does not allow).
		if err := hostile.PatchNode(ctx, h2.Name, types.MergePatchType, []byte(patch), ""); err != nil {
			t.Fatalf("%s: the service account may patch any Node, yet: %v", what, err)
		}
		// h2 sees its annotation changed and publishes its own again.
		err = Poll(ctx, 10*time.Second, 5*time.Millisecond, func() error {
			n, err := k.GetNode(h2.Name)
			if err != nil {
				return err
			}
			if n.Metadata.Annotations["drover.network/node-info"] != real {
				return errors.New("still forged")
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: h2 did not publish its info again: %v", what, err)
		}
		restored := time.Since(at)
		// h1 never routes anything to h2 but h2's podCIDR, and routes that
		// again once the real info is back.
		err = Poll(ctx, 10*time.Second, 10*time.Millisecond, func() error {
			v, err := h1.Router.Cluster()
			if err != nil {
				return err
			}
			for _, r := range v.Routes {
				if r.Peer == h2.Name && r.Prefix != hostBlock(h2) {
					t.Errorf("%s: h1 routes %s to h2", what, r.Prefix)
				}
			}
			if len(v.Routes) != 1 || v.Routes[0].Prefix != hostBlock(h2) {
				return fmt.Errorf("h1 routes %v", v.Routes)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !s.ArrivedSince(time.Now()) {
			if err := Poll(ctx, 10*time.Second, 20*time.Millisecond, func() error {
				if !s.ArrivedSince(at.Add(restored)) {
					return errors.New("nothing arrived since the real info was back")
				}
				return nil
			}); err != nil {
				t.Fatalf("%s: flow h1c1 → h2c1: %v", what, err)
			}
		}
		t.Logf("RESULT forged node-info on h2 (%s): h2 published its own again %v later; h1 routes only h2's podCIDR %s", what, restored.Round(time.Millisecond), hostBlock(h2))
	}
	forge("another identity key, underlay 192.0.2.99", func(in *gossip.NodeInfo) {
		in.Identity[0] ^= 0xff
		in.Underlay = netip.MustParseAddrPort("192.0.2.99:4500")
	})
	forge("h2's identity claiming h1's block", func(in *gossip.NodeInfo) {
		in.Block = netip.MustParsePrefix(hostBlock(h1))
		in.Prefixes = []netip.Prefix{netip.MustParsePrefix(hostBlock(h1))}
	})
	trafficFor(t, time.Now().Add(time.Second))
	s.Stop(time.Second)
	w := s.Window(time.Time{}, time.Time{})
	t.Logf("RESULT flow h1c1 → h2c1 at 100/s across both forgeries: %s", w)
	if !strings.Contains(h1.Router.LogTail(200), "differs from the one pinned for h2") {
		t.Errorf("h1 did not log the forged identity as refused:\n%s", h1.Router.LogTail(30))
	}
}
