package lab

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drovernet/drover/testenv"
)

// KubeletOptions configure StartKubelet.
type KubeletOptions struct {
	// NodeName is the Node the kubelet registers (--hostname-override).
	// Required.
	NodeName string
	// NodeIP is the node's InternalIP (--node-ip): an address of an
	// interface inside the containerd's namespace; the kubelet refuses
	// loopback. Required.
	NodeIP string
	// Kubeconfig is the kubelet's kubeconfig. Empty: the admin's
	// (kube.Kubeconfig), reachable from the namespace through ServeIn,
	// which StartKubelet calls.
	Kubeconfig string
}

// Kubelet is a kubelet (DROVER_KUBE_BIN) running inside a Containerd's
// network namespace, registered as a Node.
type Kubelet struct {
	// NodeName and NodeIP are the options'.
	NodeName, NodeIP string
	// Dir holds the kubelet's configuration, log, root-dir, cert-dir and
	// pod logs. It is removed when the test ends.
	Dir string
	// CgroupRoot is the kubelet's cgroupRoot, /drv-kl-*: its kubepods
	// hierarchy, and so every pod it runs, sits under it in each cgroup v1
	// controller, and is removed when the test ends.
	CgroupRoot string

	proc *process
}

// Host state the kubelet changes outside its namespace and directories
// (../shared/kubernetes/README.md): sysctls it sets at start. Saved before
// the first kubelet of the process starts and restored after the last one
// stops.
var kubeletSysctls = []string{
	"vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

var kubeletHost struct {
	mu      sync.Mutex
	running int
	saved   map[string]string // sysctl -> value before the first kubelet
	created []string          // host paths the kubelets made that were not there
}

// Host paths the kubelet uses whatever its --root-dir: device plugins'
// sockets (a fixed path in the kubelet) and the /var/log/containers links.
var kubeletHostPaths = []string{"/var/lib/kubelet/device-plugins", "/var/lib/kubelet", "/var/log/containers"}

// StartKubelet starts a kubelet inside ctd's namespace, against ctd's CRI
// and kube's API server (made reachable there with ServeIn), configured as
// in ../shared/kubernetes/README.md: cgroupfs on cgroup v1, swap allowed,
// anonymous read-only API on the namespace's loopback, no eviction that a
// busy CI disk could trigger. It returns once the Node is registered; tests
// wait for it to be Ready (Kube.NodeReady) themselves.
//
// What it changes outside its namespace is undone when the test ends, in
// this order: the kubelet stops, every pod sandbox of ctd is removed (their
// containers end), the cgroups under CgroupRoot are removed, the kernel
// sysctls the kubelet set get back their earlier values (after the last
// kubelet of the process), /var/lib/kubelet (device-plugins) and
// /var/log/containers are removed if the kubelets made them, and Dir goes.
// Its iptables-nft KUBE-* tables live in the namespace and go with it. The
// Node object stays in the API server.
func StartKubelet(t testing.TB, kube *Kube, ctd *Containerd, o KubeletOptions) *Kubelet {
	t.Helper()
	testenv.NeedRoot(t)
	bin, err := KubeBin("kubelet")
	needTool(t, err, "the kube tests need kubelet "+KubeVersion)
	if o.NodeName == "" || o.NodeIP == "" {
		t.Fatalf("StartKubelet: NodeName (%q) and NodeIP (%q) are required", o.NodeName, o.NodeIP)
	}
	if o.Kubeconfig == "" {
		o.Kubeconfig = kube.Kubeconfig
	}
	kube.ServeIn(t, ctd.NS)
	dir, err := os.MkdirTemp("", Prefix+"kl-")
	if err != nil {
		t.Fatal(err)
	}
	k := &Kubelet{NodeName: o.NodeName, NodeIP: o.NodeIP, Dir: dir,
		CgroupRoot: "/" + filepath.Base(dir)}
	hostSaved := false
	t.Cleanup(func() {
		var errs []error
		if k.proc != nil {
			errs = append(errs, k.proc.stop(15*time.Second))
		}
		if _, err := ctd.Crictl("rmp", "--all", "--force"); err != nil {
			errs = append(errs, fmt.Errorf("remove pods: %w", err))
		}
		errs = append(errs, killCgroup(k.CgroupRoot), removeCgroups(k.CgroupRoot))
		if hostSaved {
			errs = append(errs, kubeletHostRelease(dir))
		}
		errs = append(errs, unmountUnder(dir))
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
		if err := errors.Join(errs...); err != nil {
			t.Errorf("kubelet %s: cleanup: %v", o.NodeName, err)
		}
	})
	if err := makeCgroups(k.CgroupRoot); err != nil {
		t.Fatal(err)
	}
	if err := kubeletHostAcquire(); err != nil {
		t.Fatal(err)
	}
	hostSaved = true
	cfg := filepath.Join(dir, "kubelet.yaml")
	if err := os.WriteFile(cfg, []byte(k.config(ctd)), 0o644); err != nil {
		t.Fatal(err)
	}
	argv := []string{bin, "--config", cfg, "--kubeconfig", o.Kubeconfig,
		"--hostname-override", o.NodeName, "--node-ip", o.NodeIP,
		"--root-dir", filepath.Join(dir, "root"), "--cert-dir", filepath.Join(dir, "certs"), "--v", "2"}
	k.proc, err = startProcess("kubelet "+o.NodeName, ctd.NS, filepath.Join(dir, "kubelet.log"), argv, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = Poll(t.Context(), 60*time.Second, 100*time.Millisecond, func() error {
		if k.proc.exited() {
			return k.proc.exitedErr()
		}
		_, err := kube.GetNode(o.NodeName)
		return err
	})
	if err != nil {
		t.Fatalf("kubelet %s did not register its node: %v\n%s", o.NodeName, err, k.proc.tail(30))
	}
	return k
}

// LogTail returns the last n lines of the kubelet's log.
func (k *Kubelet) LogTail(n int) string { return k.proc.tail(n) }

// config is the KubeletConfiguration.
func (k *Kubelet) config(ctd *Containerd) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failSwapOn: false
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %s
containerRuntimeEndpoint: unix://%s
address: 127.0.0.1
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
enforceNodeAllocatable: []
localStorageCapacityIsolation: false
resolvConf: ""
podLogsDir: %s
evictionHard: {memory.available: "1Mi", nodefs.available: "1%%", imagefs.available: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
`, k.CgroupRoot, ctd.Socket, filepath.Join(k.Dir, "pods"))
}

// cgroupMounts returns the mount points of the cgroup v1 hierarchies and,
// with v2, of the cgroup2 one (mounted beside them on hybrid machines, where
// runc uses it too).
func cgroupMounts(v2 bool) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ... mountpoint ... - fstype source options
		fields := strings.Fields(sc.Text())
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) && (fields[i+1] == "cgroup" || v2 && fields[i+1] == "cgroup2") {
				out = append(out, fields[4])
			}
		}
	}
	return out, sc.Err()
}

// makeCgroups creates root in every cgroup v1 hierarchy: the kubelet
// refuses a cgroupRoot that does not exist.
func makeCgroups(root string) error {
	ms, err := cgroupMounts(false)
	if err != nil {
		return err
	}
	if len(ms) == 0 {
		return errors.New("no cgroup v1 hierarchy mounted (the kubelet configuration here is for cgroup v1)")
	}
	for _, m := range ms {
		if err := os.Mkdir(filepath.Join(m, root), 0o755); err != nil {
			return fmt.Errorf("cgroup root: %w", err)
		}
	}
	return nil
}

// removeCgroups removes root and every cgroup below it, deepest first, in
// every cgroup hierarchy. A cgroup that still has processes cannot go:
// that is reported.
func removeCgroups(root string) error {
	ms, err := cgroupMounts(true)
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range ms {
		top := filepath.Join(m, root)
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
		for _, d := range dirs {
			var err error
			// A cgroup whose last process just exited can be busy a
			// moment longer.
			for range 50 {
				if err = os.Remove(d); err == nil || errors.Is(err, os.ErrNotExist) {
					err = nil
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}

// kubeletHostAcquire records the host state before the first kubelet.
func kubeletHostAcquire() error {
	kubeletHost.mu.Lock()
	defer kubeletHost.mu.Unlock()
	if kubeletHost.running == 0 {
		kubeletHost.saved = map[string]string{}
		for _, s := range kubeletSysctls {
			b, err := os.ReadFile(filepath.Join("/proc/sys", s))
			if err != nil {
				return fmt.Errorf("save sysctl %s: %w", s, err)
			}
			kubeletHost.saved[s] = strings.TrimSpace(string(b))
		}
		kubeletHost.created = nil
		for _, p := range kubeletHostPaths {
			if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
				kubeletHost.created = append(kubeletHost.created, p)
			}
		}
	}
	kubeletHost.running++
	return nil
}

// kubeletHostRelease removes the kubelet's links in /var/log/containers
// (those into dir) and, after the last kubelet, restores the sysctls and
// removes the host paths the kubelets made.
func kubeletHostRelease(dir string) error {
	kubeletHost.mu.Lock()
	defer kubeletHost.mu.Unlock()
	var errs []error
	ents, _ := os.ReadDir("/var/log/containers")
	for _, e := range ents {
		p := filepath.Join("/var/log/containers", e.Name())
		if dst, err := os.Readlink(p); err == nil && strings.HasPrefix(dst, dir+"/") {
			errs = append(errs, os.Remove(p))
		}
	}
	kubeletHost.running--
	if kubeletHost.running > 0 {
		return errors.Join(errs...)
	}
	for s, v := range kubeletHost.saved {
		p := filepath.Join("/proc/sys", s)
		if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == v {
			continue
		}
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", s, v, err))
		}
	}
	for _, p := range kubeletHost.created { // deepest first, as listed
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
