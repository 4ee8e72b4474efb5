package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drovernet/drover/testenv"
	"github.com/vishvananda/netlink"
)

// The kube infrastructure's own tests: real etcd, kube-apiserver,
// containerd and kubelet, with the reference bridge plugin as the pod
// network. No drover is involved; drover's Kubernetes mode is tested on top
// of these helpers.

// TestKubeAPIServer: the API server comes up, takes Nodes (with pod CIDRs
// and an InternalIP) and their deletion, validates a manifest with
// server-side dry-run, authenticates the non-admin users and applies RBAC
// to them, and keeps its data across a restart.
func TestKubeAPIServer(t *testing.T) {
	start := time.Now()
	k := StartKube(t)
	t.Logf("etcd and kube-apiserver ready in %v (%s)", time.Since(start).Round(time.Millisecond), k.Server)

	t.Run("nodes", func(t *testing.T) {
		err := k.CreateNode("drv-n1", NodeOptions{
			PodCIDRs:    []string{"10.42.1.0/24"},
			InternalIP:  "192.0.2.1",
			Labels:      map[string]string{"drover.test/role": "a"},
			Annotations: map[string]string{"drover.test/note": "x"},
		})
		if err != nil {
			t.Fatal(err)
		}
		n, err := k.GetNode("drv-n1")
		if err != nil {
			t.Fatal(err)
		}
		if n.Spec.PodCIDR != "10.42.1.0/24" || len(n.Spec.PodCIDRs) != 1 {
			t.Errorf("podCIDR %q podCIDRs %v, want 10.42.1.0/24", n.Spec.PodCIDR, n.Spec.PodCIDRs)
		}
		if len(n.Status.Addresses) == 0 || n.Status.Addresses[0].Type != "InternalIP" || n.Status.Addresses[0].Address != "192.0.2.1" {
			t.Errorf("addresses %+v, want InternalIP 192.0.2.1 first", n.Status.Addresses)
		}
		if n.Metadata.Labels["drover.test/role"] != "a" || n.Metadata.Annotations["drover.test/note"] != "x" {
			t.Errorf("labels %v annotations %v", n.Metadata.Labels, n.Metadata.Annotations)
		}
		if ready, err := k.NodeReady("drv-n1"); err != nil || ready {
			t.Errorf("NodeReady of a node no kubelet runs: %v, %v; want false, nil", ready, err)
		}
		out, err := k.Kubectl("get", "nodes", "-o", "name")
		if err != nil || !strings.Contains(out, "node/drv-n1") {
			t.Errorf("kubectl get nodes: %q, %v", out, err)
		}
		if err := k.DeleteNode("drv-n1"); err != nil {
			t.Fatal(err)
		}
		var apiErr *APIError
		if _, err := k.GetNode("drv-n1"); !errors.As(err, &apiErr) || apiErr.Code != 404 {
			t.Errorf("node after delete: %v, want a 404", err)
		}
	})

	t.Run("dry-run", func(t *testing.T) {
		good := `apiVersion: v1
kind: Namespace
metadata: {name: drv-dry}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: drv-dry}
rules:
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list, watch]
`
		if err := k.DryRun(good); err != nil {
			t.Fatal(err)
		}
		if _, err := k.Kubectl("get", "namespace", "drv-dry"); err == nil {
			t.Error("dry-run stored the namespace")
		}
		bad := "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: drv-bad, namespace: default}\nspec: {}\n"
		if err := k.DryRun(bad); err == nil || !strings.Contains(err.Error(), "selector") {
			t.Errorf("dry-run of a DaemonSet without selector: %v, want the API server's refusal", err)
		}
	})

	t.Run("rbac", func(t *testing.T) {
		kc, err := k.UserKubeconfig("drover")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.UserKubeconfig("nobody"); err == nil {
			t.Error("UserKubeconfig of an unknown user: no error")
		}
		if _, err := k.KubectlAs(kc, "get", "nodes"); err == nil || !strings.Contains(err.Error(), "forbidden") {
			t.Fatalf("drover lists nodes before any binding: %v, want forbidden", err)
		}
		err = k.Apply(`apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: drv-node-reader}
rules:
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list, watch]
`)
		if err != nil {
			t.Fatal(err)
		}
		if err := k.BindClusterRole("drover", "drv-node-reader"); err != nil {
			t.Fatal(err)
		}
		if _, err := k.KubectlAs(kc, "get", "nodes"); err != nil {
			t.Errorf("drover lists nodes after the binding: %v", err)
		}
		if out, err := k.KubectlAs(kc, "auth", "can-i", "delete", "nodes"); err == nil || strings.TrimSpace(out) != "no" {
			t.Errorf("drover may delete nodes: %q, %v; want no", out, err)
		}
		sa, err := k.ServiceAccountKubeconfig("drv-sa", "drover")
		if err != nil {
			t.Fatal(err)
		}
		if err := k.BindClusterRole("system:serviceaccount:drv-sa:drover", "drv-node-reader"); err != nil {
			t.Fatal(err)
		}
		if out, err := k.KubectlAs(sa, "auth", "can-i", "list", "nodes"); err != nil || strings.TrimSpace(out) != "yes" {
			t.Errorf("service account may list nodes: %q, %v; want yes", out, err)
		}
	})

	// Also through ServeIn's relay from a lab namespace (as root): the
	// same URL answers there, not while the API server is stopped, and
	// again after it is back.
	t.Run("restart", func(t *testing.T) {
		var ns *NetNS
		readyIn := func() (string, error) {
			return runIn(ns, "", k.kubectl, "--kubeconfig", k.Kubeconfig, "--cache-dir", t.TempDir(),
				"--request-timeout", "5s", "get", "--raw", "/readyz")
		}
		if os.Geteuid() == 0 {
			ns = testenv.NewNetNS(t, "ksv")
			k.ServeIn(t, ns)
			if out, err := readyIn(); err != nil || strings.TrimSpace(out) != "ok" {
				t.Fatalf("kubectl get --raw /readyz inside %s: %q, %v", ns.Name, out, err)
			}
		} else {
			t.Log("not root: ServeIn not tested")
		}
		if err := k.CreateNode("drv-keep", NodeOptions{PodCIDRs: []string{"10.42.9.0/24"}}); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if err := k.StopAPIServer(); err != nil {
			t.Fatal(err)
		}
		stopped := time.Since(t0)
		if _, err := k.GetNode("drv-keep"); err == nil {
			t.Fatal("API server answers after StopAPIServer")
		}
		if ns != nil {
			if _, err := readyIn(); err == nil {
				t.Error("readyz through the relay answers while the API server is stopped")
			}
		}
		t0 = time.Now()
		if err := k.StartAPIServer(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Logf("stopped in %v, ready again in %v", stopped.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
		n, err := k.GetNode("drv-keep")
		if err != nil {
			t.Fatalf("node after the restart: %v", err)
		}
		if n.Spec.PodCIDR != "10.42.9.0/24" {
			t.Errorf("podCIDR after the restart %q, want 10.42.9.0/24", n.Spec.PodCIDR)
		}
		if ns != nil {
			if out, err := readyIn(); err != nil || strings.TrimSpace(out) != "ok" {
				t.Errorf("readyz through the relay after the restart: %q, %v", out, err)
			}
		}
	})
}

// labNode gives ns an interface with addr (a bridge with no ports: the
// dummy module may be missing; the kubelet wants a non-loopback node
// address) and returns the address.
func labNode(t *testing.T, ns *NetNS, addr string) string {
	t.Helper()
	nl, err := ns.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	d := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "drv-up0"}}
	if err := nl.LinkAdd(d); err != nil {
		t.Fatal(err)
	}
	a, err := netlink.ParseAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := nl.AddrAdd(d, a); err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetUp(d); err != nil {
		t.Fatal(err)
	}
	return a.IP.String()
}

// TestKubeContainerd: containerd's CRI in a lab namespace makes pods whose
// addresses come from the reference bridge conflist, pods reach each other
// over the bridge, and removing a pod deletes its network namespace.
func TestKubeContainerd(t *testing.T) {
	testenv.NeedRoot(t)
	ns := testenv.NewNetNS(t, "ctd")
	conf := t.TempDir()
	if _, err := WriteBridgeConflist(conf, "ctd0", "10.88.7.0/24"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ctd := StartContainerd(t, ns, ContainerdOptions{CNIConfDir: conf})
	t.Logf("containerd up with images in %v", time.Since(start).Round(time.Millisecond))
	subnet := netip.MustParsePrefix("10.88.7.0/24")
	var pods []*CRIPod
	for _, name := range []string{"drv-a", "drv-b"} {
		t0 := time.Now()
		p, err := ctd.RunPod(name, "default")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("pod %s: %s in %s (%v)", name, p.IP, p.NetNS, time.Since(t0).Round(time.Millisecond))
		if ip, err := netip.ParseAddr(p.IP); err != nil || !subnet.Contains(ip) {
			t.Errorf("pod %s address %q, want one in %v", name, p.IP, subnet)
		}
		pods = append(pods, p)
	}
	if pods[0].IP == pods[1].IP {
		t.Errorf("both pods got %s", pods[0].IP)
	}
	if _, err := netlinkLinkIn(ns, "drv-ctd0"); err != nil {
		t.Errorf("bridge in the containerd's namespace: %v", err)
	}
	t0 := time.Now()
	out, err := pods[0].Exec("ping", "-c", "1", "-W", "2", pods[1].IP)
	if err != nil {
		t.Fatalf("ping %s from %s: %v\n%s", pods[1].IP, pods[0].Name, err, out)
	}
	t.Logf("container started and pinged in %v", time.Since(t0).Round(time.Millisecond))
	for _, p := range pods {
		if err := p.Remove(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(p.NetNS); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pod %s: netns %s still there after Remove: %v", p.Name, p.NetNS, err)
		}
	}
	if out, err := ctd.Crictl("pods", "-q"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("pods after Remove: %q, %v", out, err)
	}
}

// netlinkLinkIn looks a link up by name inside ns.
func netlinkLinkIn(ns *NetNS, name string) (netlink.Link, error) {
	nl, err := ns.Netlink()
	if err != nil {
		return nil, err
	}
	defer nl.Close()
	return nl.LinkByName(name)
}

// TestKubelet: a kubelet in a lab namespace, against containerd there and
// the API server on the test's loopback, registers a node that goes Ready
// with the namespace's address as InternalIP, and runs a Pod (nodeName set,
// imagePullPolicy Never) with an address from the bridge conflist.
//
// After the kubelet's subtest has cleaned up, the host is as before: the
// sysctls the kubelet sets have their old values, no cgroup of the kubelet
// or its pods is left, nor /var/lib/kubelet or /var/log/containers if they
// were not there.
func TestKubelet(t *testing.T) {
	testenv.NeedRoot(t)
	k := StartKube(t)
	before := kubeletHostState(t)
	t.Run("pod", func(t *testing.T) { testKubeletPod(t, k) })
	if after := kubeletHostState(t); after != before {
		t.Errorf("host state after the kubelet:\n%s\nbefore:\n%s", after, before)
	}
}

// kubeletHostState describes what a kubelet could leave on the host.
func kubeletHostState(t *testing.T) string {
	var b strings.Builder
	for _, s := range kubeletSysctls {
		v, err := os.ReadFile("/proc/sys/" + s)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s=%s", s, v)
	}
	ms, err := cgroupMounts(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		for _, pat := range []string{"drv-kl-*", "drv-ctd-*", "kubepods*", "k8s.io"} {
			found, _ := filepath.Glob(m + "/" + pat)
			for _, f := range found {
				fmt.Fprintf(&b, "cgroup %s\n", f)
			}
		}
	}
	for _, p := range kubeletHostPaths {
		_, err := os.Lstat(p)
		fmt.Fprintf(&b, "%s exists: %v\n", p, err == nil)
	}
	return b.String()
}

func testKubeletPod(t *testing.T, k *Kube) {
	ns := testenv.NewNetNS(t, "kl")
	ip := labNode(t, ns, "198.18.0.1/24")
	conf := t.TempDir()
	if _, err := WriteBridgeConflist(conf, "kl0", "10.88.8.0/24"); err != nil {
		t.Fatal(err)
	}
	ctd := StartContainerd(t, ns, ContainerdOptions{CNIConfDir: conf})
	t0 := time.Now()
	kl := StartKubelet(t, k, ctd, KubeletOptions{NodeName: "drv-kl1", NodeIP: ip})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	err := Poll(ctx, 60*time.Second, 200*time.Millisecond, func() error {
		ready, err := k.NodeReady("drv-kl1")
		if err == nil && !ready {
			err = errors.New("not Ready")
		}
		return err
	})
	if err != nil {
		t.Fatalf("node drv-kl1: %v\n%s", err, kl.LogTail(30))
	}
	t.Logf("node Ready %v after the kubelet started", time.Since(t0).Round(time.Millisecond))
	if v, err := os.ReadFile("/proc/sys/kernel/panic"); err == nil {
		t.Logf("kernel.panic while the kubelet runs: %s (restored after it)", strings.TrimSpace(string(v)))
	}
	n, err := k.GetNode("drv-kl1")
	if err != nil {
		t.Fatal(err)
	}
	internal := ""
	for _, a := range n.Status.Addresses {
		if a.Type == "InternalIP" {
			internal = a.Address
		}
	}
	if internal != ip {
		t.Errorf("InternalIP %q, want %s", internal, ip)
	}

	t0 = time.Now()
	err = k.Apply(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: drv-sleep, namespace: default}
spec:
  nodeName: drv-kl1
  terminationGracePeriodSeconds: 1
  containers:
  - name: sleep
    image: %s
    imagePullPolicy: Never
    command: [sleep, "3600"]
`, BusyboxImage))
	if err != nil {
		t.Fatal(err)
	}
	var podIP string
	err = Poll(ctx, 60*time.Second, 200*time.Millisecond, func() error {
		running, ip, err := k.PodRunning("default", "drv-sleep")
		if err == nil && !running {
			err = errors.New("not Running")
		}
		podIP = ip
		return err
	})
	if err != nil {
		out, _ := k.Kubectl("describe", "pod", "drv-sleep")
		t.Fatalf("pod drv-sleep: %v\n%s\n%s", err, out, kl.LogTail(20))
	}
	t.Logf("pod Running with %s %v after it was created", podIP, time.Since(t0).Round(time.Millisecond))
	if a, err := netip.ParseAddr(podIP); err != nil || !netip.MustParsePrefix("10.88.8.0/24").Contains(a) {
		t.Errorf("pod IP %q, want one in 10.88.8.0/24", podIP)
	}
}

// TestKubeContainerdFailedPod: when the CNI ADD fails, RunPod returns the
// plugin's error and leaves neither a sandbox nor a network namespace; when
// the DEL fails too (a plugin that is missing), the sandbox stays until the
// Containerd's cleanup, which removes its network namespace itself.
func TestKubeContainerdFailedPod(t *testing.T) {
	testenv.NeedRoot(t)
	ref := ReferenceCNIPlugins(t)
	bin := t.TempDir()
	if err := os.Symlink(filepath.Join(ref, "loopback"), filepath.Join(bin, "loopback")); err != nil {
		t.Fatal(err)
	}
	// A plugin whose ADD fails and whose DEL succeeds.
	plugin := `#!/bin/sh
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}' ;;
ADD) echo '{"cniVersion":"1.0.0","code":100,"msg":"drv-refuse: no address today"}'; exit 1 ;;
esac
`
	if err := os.WriteFile(filepath.Join(bin, "drv-refuse"), []byte(plugin), 0o755); err != nil {
		t.Fatal(err)
	}
	netnsBefore, _ := filepath.Glob("/run/netns/cni-*")
	for _, tc := range []struct{ name, plugin, want string }{
		{"add-fails", "drv-refuse", "no address today"},
		{"add-and-del-fail", "drv-missing", "failed to find plugin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := testenv.NewNetNS(t, "ctf")
			conf := t.TempDir()
			cl := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "drv-broken", "plugins": [{"type": %q}]}`, tc.plugin)
			if err := os.WriteFile(filepath.Join(conf, "broken.conflist"), []byte(cl), 0o644); err != nil {
				t.Fatal(err)
			}
			ctd := StartContainerd(t, ns, ContainerdOptions{CNIBinDir: bin, CNIConfDir: conf})
			p, err := ctd.RunPod("drv-fail", "default")
			if err == nil {
				t.Fatalf("RunPod: pod %s, no error", p.IP)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("RunPod error %q, want it to say %q", err, tc.want)
			}
			out, err := ctd.Crictl("pods", "-q")
			if err != nil {
				t.Fatal(err)
			}
			if left := strings.TrimSpace(out) != ""; left != (tc.plugin == "drv-missing") {
				t.Errorf("sandboxes after the failed RunPod: %q", out)
			}
		})
		if after, _ := filepath.Glob("/run/netns/cni-*"); len(after) > len(netnsBefore) {
			t.Errorf("%s: network namespaces after the cleanup: %v, before: %v", tc.name, after, netnsBefore)
		}
	}
}
