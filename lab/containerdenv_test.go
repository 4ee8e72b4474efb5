package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drovernet/drover/testenv"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ContainerdOptions configure StartContainerd.
type ContainerdOptions struct {
	// CNIBinDir is containerd's CNI bin_dir. It must hold loopback (the CRI
	// calls it for every sandbox) and the plugins of the conflist. Empty:
	// ReferenceCNIPlugins.
	CNIBinDir string
	// CNIConfDir is containerd's CNI conf_dir (max_conf_num = 1: the first
	// conflist by name is the pod network). Empty: a directory of its own,
	// see Containerd.CNIConfDir; the CRI reports the network not ready
	// until a conflist appears there (it watches the directory).
	CNIConfDir string
	// V2Bin is a containerd 2.x build's bin directory (containerd, its
	// containerd-shim-runc-v2 and ctr; .ci/run step kube builds them from
	// the module proxy): run it instead of Debian's 1.6, with a version 3
	// configuration and its shim first on PATH. Empty: Debian's 1.6.
	V2Bin string
}

// Containerd2Bin is the containerd 2.x bin directory .ci/run builds
// (DROVER_CONTAINERD2_BIN), or an error naming how to get one.
func Containerd2Bin() (string, error) {
	dir := os.Getenv("DROVER_CONTAINERD2_BIN")
	if dir == "" {
		dir = DefaultContainerd2Bin
	}
	for _, c := range []string{"containerd", "containerd-shim-runc-v2", "ctr"} {
		if st, err := os.Stat(filepath.Join(dir, c)); err != nil || st.Mode()&0o111 == 0 {
			return "", fmt.Errorf("containerd 2.x: %s not found in %s (DROVER_CONTAINERD2_BIN; .ci/run step kube builds it: GOBIN=DIR go install github.com/containerd/containerd/v2/cmd/{containerd,containerd-shim-runc-v2,ctr}@%s)", c, dir, Containerd2Version)
		}
	}
	return dir, nil
}

// Containerd2Version is the containerd 2.x the tests run (the module
// proxy serves it; ../shared/kubernetes/README.md tried it).
const Containerd2Version = "v2.4.2"

// DefaultContainerd2Bin is where .ci/run's cache puts it.
const DefaultContainerd2Bin = "/var/cache/drover-ci/containerd-" + Containerd2Version + "/bin"

// Containerd is a containerd (Debian's 1.6, with its CRI plugin) running
// inside a network namespace, with its own root, state, socket and runc
// root in Dir, the test images imported. The pods it makes (their network
// namespaces are /run/netns/cni-*) get their network from the CNI
// configuration in CNIConfDir, run by containerd inside NS: a bridge the
// plugin makes is a device of NS.
type Containerd struct {
	// NS is the network namespace containerd runs in (a lab host's).
	NS *NetNS
	// Dir holds config.toml, root/, state/, runc/, the socket, logs, pod
	// logs and pod specs. It is removed when the test ends.
	Dir string
	// Socket is the CRI (and containerd) endpoint's path.
	Socket string
	// CNIBinDir and CNIConfDir are the CRI's CNI directories.
	CNIBinDir, CNIConfDir string

	// V2 is a containerd 2.x (ContainerdOptions.V2Bin).
	V2 bool

	crictl, ctr string
	proc        *process
	seq         atomicCounter
}

// atomicCounter numbers things a Containerd creates.
type atomicCounter struct {
	mu sync.Mutex
	n  int
}

func (c *atomicCounter) next() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return c.n
}

// StartContainerd starts containerd inside ns with a configuration after
// ../shared/kubernetes/README.md (restrict_oom_score_adj: else runc fails
// with "can't get final child's PID from pipe"; cgroupfs; max_conf_num 1),
// imports PauseImage and BusyboxImage, and returns once the CRI answers.
// When the test ends every pod sandbox is stopped and removed (which ends
// the shims), containerd is stopped, anything still mounted under Dir is
// unmounted and Dir removed. Needs root; without containerd, runc, crictl
// or ctr the test is skipped (fails in CI).
func StartContainerd(t testing.TB, ns *NetNS, o ContainerdOptions) *Containerd {
	t.Helper()
	testenv.NeedRoot(t)
	bin, err := lookPath("containerd")
	needTool(t, err, "apt-get install --no-install-recommends containerd runc")
	_, err = lookPath("runc")
	needTool(t, err, "apt-get install --no-install-recommends runc")
	ctr, err := lookPath("ctr")
	needTool(t, err, "ctr comes with Debian's containerd")
	var env []string
	if o.V2Bin != "" {
		bin, ctr = filepath.Join(o.V2Bin, "containerd"), filepath.Join(o.V2Bin, "ctr")
		// containerd 2 finds its shim on PATH: its own first, not 1.6's.
		env = append(os.Environ(), "PATH="+o.V2Bin+":"+os.Getenv("PATH"))
	}
	crictl, err := KubeBin("crictl")
	if err != nil {
		if p, err2 := lookPath("crictl"); err2 == nil {
			crictl, err = p, nil
		}
	}
	needTool(t, err, "go install sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0 (.ci/run step kube)")
	imgs, err := BuildImages()
	if err != nil {
		t.Fatal(err)
	}
	if o.CNIBinDir == "" {
		o.CNIBinDir = ReferenceCNIPlugins(t)
	}
	// A short directory of its own (not t.TempDir): the socket path must
	// fit a sockaddr_un, and leftovers of a killed run are recognisable.
	dir, err := os.MkdirTemp("", Prefix+"ctd-")
	if err != nil {
		t.Fatal(err)
	}
	c := &Containerd{NS: ns, Dir: dir, Socket: filepath.Join(dir, "containerd.sock"),
		CNIBinDir: o.CNIBinDir, CNIConfDir: o.CNIConfDir, V2: o.V2Bin != "", crictl: crictl, ctr: ctr}
	ctdHostAcquire()
	t.Cleanup(func() {
		err := c.stop()
		ctdHostRelease()
		if err != nil {
			t.Errorf("containerd in %s: %v", ns.Name, err)
		}
	})
	if c.CNIConfDir == "" {
		c.CNIConfDir = filepath.Join(dir, "net.d")
	}
	if err := os.MkdirAll(c.CNIConfDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(c.config()), 0o644); err != nil {
		t.Fatal(err)
	}
	crictlCfg := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n", c.Socket, c.Socket)
	if err := os.WriteFile(filepath.Join(dir, "crictl.yaml"), []byte(crictlCfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c.proc, err = startProcess("containerd", ns, filepath.Join(dir, "containerd.log"), []string{bin, "--config", cfg}, env)
	if err != nil {
		t.Fatal(err)
	}
	err = Poll(t.Context(), 30*time.Second, 50*time.Millisecond, func() error {
		if c.proc.exited() {
			return c.proc.exitedErr()
		}
		_, err := c.Crictl("version")
		return err
	})
	if err != nil {
		t.Fatalf("containerd in %s did not answer on %s: %v\n%s", ns.Name, c.Socket, err, c.proc.tail(30))
	}
	for _, tar := range []string{"pause.tar", "busybox.tar"} { // one file per import
		if _, err := c.Ctr("images", "import", filepath.Join(imgs, tar)); err != nil {
			t.Fatalf("containerd in %s: import images: %v", ns.Name, err)
		}
	}
	return c
}

// config is containerd's config.toml.
func (c *Containerd) config() string {
	if c.V2 {
		return c.configV3()
	}
	return fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # else runc: "can't get final child's PID from pipe: EOF" on these machines
  restrict_oom_score_adj = true
  # crictl exec/attach: on loopback of the namespace containerd runs in
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
    max_conf_num = 1
`, filepath.Join(c.Dir, "root"), filepath.Join(c.Dir, "state"), c.Socket, PauseImage,
		filepath.Join(c.Dir, "runc"), c.CNIBinDir, c.CNIConfDir)
}

// configV3 is containerd 2.x's config.toml (version 3: the CRI split
// into its images and runtime plugins; CNI bin_dirs a list), with the
// same settings as config's.
func (c *Containerd) configV3() string {
	return fmt.Sprintf(`version = 3
root = %q
state = %q
[grpc]
  address = %q
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %q
[plugins."io.containerd.cri.v1.runtime"]
  # else runc: "can't get final child's PID from pipe: EOF" on these machines
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %q
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = [%q]
    conf_dir = %q
    max_conf_num = 1
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`, filepath.Join(c.Dir, "root"), filepath.Join(c.Dir, "state"), c.Socket, PauseImage,
		filepath.Join(c.Dir, "runc"), c.CNIBinDir, c.CNIConfDir)
}

// stop removes every pod sandbox (ending their shims), stops containerd,
// and then removes by itself what a sandbox that could not be removed left
// (its CNI DEL failing, say): it kills the processes in the pods' cgroups
// and any shim of this containerd (by PID), unmounts and deletes the
// sandboxes' network namespaces, unmounts what is left under Dir and
// removes it.
func (c *Containerd) stop() error {
	var errs []error
	var netnsPaths []string
	if c.proc != nil && !c.proc.exited() {
		netnsPaths = c.sandboxNetNS()
		// A failure here (a CNI DEL that fails) is not reported: what
		// the sandbox left is removed below, and reported if it cannot be.
		_, _ = c.Crictl("rmp", "--all", "--force")
		errs = append(errs, c.proc.stop(15*time.Second))
	}
	errs = append(errs, killCgroup(c.cgroupParent()), killShims(c.Socket), removeCgroups(c.cgroupParent()))
	for _, p := range netnsPaths {
		if _, err := os.Lstat(p); err == nil {
			_ = unix.Unmount(p, unix.MNT_DETACH)
			if err := os.Remove(p); err != nil {
				errs = append(errs, fmt.Errorf("pod netns: %w", err))
			}
		}
	}
	errs = append(errs, unmountUnder(c.Dir))
	if err := os.RemoveAll(c.Dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", c.Dir, err))
	}
	return errors.Join(errs...)
}

// sandboxNetNS returns the network namespace paths of every sandbox.
func (c *Containerd) sandboxNetNS() []string {
	out, err := c.Crictl("pods", "-q")
	if err != nil {
		return nil
	}
	var paths []string
	for _, id := range strings.Fields(out) {
		p := &CRIPod{ID: id, c: c}
		_ = p.inspect() // NetNS is filled in even for a sandbox that is not ready
		if strings.HasPrefix(p.NetNS, "/var/run/netns/") || strings.HasPrefix(p.NetNS, "/run/netns/") {
			paths = append(paths, p.NetNS)
		}
	}
	return paths
}

// killCgroup SIGKILLs every process in the cgroup root and below (pids
// hierarchy): the pods' processes, which normally end with their pods.
func killCgroup(root string) error {
	top := filepath.Join("/sys/fs/cgroup/pids", root)
	var pids []string
	_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "cgroup.procs" {
			if b, err := os.ReadFile(p); err == nil {
				pids = append(pids, strings.Fields(string(b))...)
			}
		}
		return nil
	})
	for _, s := range pids {
		if pid, err := strconv.Atoi(s); err == nil {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
	if len(pids) > 0 {
		return fmt.Errorf("killed processes still in cgroup %s after the pods were removed: pids %s", root, strings.Join(pids, ", "))
	}
	return nil
}

// Host directories containerd and the CNI library use whatever containerd's
// root and state: the shims' sockets and the CNI result cache. Each holds a
// pod's files only while the pod exists; the directories themselves stay.
// Those that were not there before the first containerd of the process are
// removed after the last one stops, when empty. Deepest first.
var ctdHostDirs = []string{"/run/containerd/s", "/run/containerd", "/var/lib/cni/results", "/var/lib/cni"}

var ctdHost struct {
	mu      sync.Mutex
	running int
	created []string
}

func ctdHostAcquire() {
	ctdHost.mu.Lock()
	defer ctdHost.mu.Unlock()
	if ctdHost.running == 0 {
		ctdHost.created = nil
		for _, d := range ctdHostDirs {
			if _, err := os.Lstat(d); errors.Is(err, os.ErrNotExist) {
				ctdHost.created = append(ctdHost.created, d)
			}
		}
	}
	ctdHost.running++
}

func ctdHostRelease() {
	ctdHost.mu.Lock()
	defer ctdHost.mu.Unlock()
	ctdHost.running--
	if ctdHost.running == 0 {
		for _, d := range ctdHost.created {
			_ = os.Remove(d) // only when empty: another runtime may use it
		}
	}
}

// cgroupParent is the cgroup (in every hierarchy) under which RunPod's
// pods run, so that none is left behind: /drv-ctd-*, named after Dir.
func (c *Containerd) cgroupParent() string { return "/" + filepath.Base(c.Dir) }

// killShims SIGKILLs the containerd-shim processes serving socket (a shim
// names its containerd with -address) and their children, which normally
// end with their pods.
func killShims(socket string) error {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	var killed []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if !strings.Contains(args[0], "containerd-shim") {
			continue
		}
		for i, a := range args {
			if a == "-address" && i+1 < len(args) && args[i+1] == socket {
				_ = unix.Kill(pid, unix.SIGKILL)
				killed = append(killed, e.Name())
			}
		}
	}
	if len(killed) > 0 {
		return fmt.Errorf("killed shims still running after the pods were removed: pids %s", strings.Join(killed, ", "))
	}
	return nil
}

// unmountUnder lazily unmounts every mount point under dir, deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			points = append(points, fields[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	var errs []error
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// Crictl runs crictl against this containerd, inside its namespace (so that
// exec and attach reach the CRI's streaming server on that loopback), and
// returns its standard output and error.
func (c *Containerd) Crictl(args ...string) (string, error) {
	argv := append([]string{c.crictl, "--config", filepath.Join(c.Dir, "crictl.yaml")}, args...)
	return runIn(c.NS, "", argv...)
}

// Ctr runs ctr against this containerd in its k8s.io namespace (the CRI's).
func (c *Containerd) Ctr(args ...string) (string, error) {
	return runOut("", append([]string{c.ctr, "--address", c.Socket, "--namespace", "k8s.io"}, args...)...)
}

// runIn runs argv to completion inside ns (forked from a thread that has
// joined it and is then thrown away) and returns its combined output; the
// error names the command and carries the output.
func runIn(ns *NetNS, stdin string, argv ...string) (string, error) {
	var out string
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if e := netns.Set(ns.Handle()); e != nil {
			err = fmt.Errorf("enter netns %s: %w", ns.Name, e)
			return
		}
		out, err = runOut(stdin, argv...)
	}()
	<-done
	return out, err
}

// CRIPod is a pod sandbox made by RunPod through the CRI, as the kubelet
// would make one, without a Pod object.
type CRIPod struct {
	ID, Name, Namespace string
	// IP is the address the CNI plugin gave the pod's eth0.
	IP string
	// NetNS is the path of the pod's network namespace (/run/netns/cni-*).
	NetNS string

	c         *Containerd
	spec      string // pod config JSON file
	container string // the sleeping container, once Exec made it
	mu        sync.Mutex
}

// RunPod makes a pod sandbox (`crictl runp`) named name in namespace and
// reads its address and network namespace (`crictl inspectp`). When the
// network setup fails the error carries crictl's message (the CNI
// plugin's), and the NotReady sandbox is removed again, which needs the
// plugin's DEL to work; if it does not, the sandbox and its network
// namespace stay until the Containerd stops, whose cleanup removes them.
// The pod is removed when the Containerd stops, if not before by Remove.
func (c *Containerd) RunPod(name, namespace string) (*CRIPod, error) {
	n := c.seq.next()
	uid := fmt.Sprintf("drv-%d-%d-%s", os.Getpid(), n, randomToken()[:8])
	spec := map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": namespace, "uid": uid, "attempt": 0},
		"log_directory": filepath.Join(c.Dir, "pods", uid),
		// Without a parent, runc puts the pod under /k8s.io in every
		// cgroup hierarchy, and that stays.
		"linux": map[string]any{"cgroup_parent": c.cgroupParent()},
	}
	b, _ := json.Marshal(spec)
	p := &CRIPod{Name: name, Namespace: namespace, c: c, spec: filepath.Join(c.Dir, "pod-"+uid+".json")}
	if err := os.WriteFile(p.spec, b, 0o644); err != nil {
		return nil, err
	}
	out, err := c.Crictl("runp", p.spec)
	if err != nil {
		// A failed runp leaves a NotReady sandbox (and its netns) behind.
		if ids, e := c.Crictl("pods", "--name", "^"+name+"$", "--namespace", namespace, "-q"); e == nil {
			for _, id := range strings.Fields(ids) {
				_, _ = c.Crictl("rmp", "--force", id)
			}
		}
		return nil, fmt.Errorf("run pod %s/%s: %w", namespace, name, err)
	}
	p.ID = strings.TrimSpace(out)
	if err := p.inspect(); err != nil {
		return p, errors.Join(err, p.Remove())
	}
	return p, nil
}

// inspect fills in IP and NetNS from `crictl inspectp`.
func (p *CRIPod) inspect() error {
	out, err := p.c.Crictl("inspectp", "--output", "json", p.ID)
	if err != nil {
		return err
	}
	var st struct {
		Status struct {
			State   string `json:"state"`
			Network struct {
				IP string `json:"ip"`
			} `json:"network"`
		} `json:"status"`
		Info struct {
			RuntimeSpec struct {
				Linux struct {
					Namespaces []struct {
						Type string `json:"type"`
						Path string `json:"path"`
					} `json:"namespaces"`
				} `json:"linux"`
			} `json:"runtimeSpec"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return fmt.Errorf("pod %s: inspectp: %w", p.Name, err)
	}
	p.IP = st.Status.Network.IP
	for _, n := range st.Info.RuntimeSpec.Linux.Namespaces {
		if n.Type == "network" {
			p.NetNS = n.Path
		}
	}
	if st.Status.State != "SANDBOX_READY" || p.IP == "" || p.NetNS == "" {
		return fmt.Errorf("pod %s: state %s, ip %q, netns %q", p.Name, st.Status.State, p.IP, p.NetNS)
	}
	return nil
}

// Exec runs a command in the pod, in a busybox container (BusyboxImage
// running sleep) that the first Exec creates and starts, and returns its
// output. For example p.Exec("ping", "-c1", "-W1", other.IP).
func (p *CRIPod) Exec(args ...string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.container == "" {
		id, err := p.startSleeper()
		if err != nil {
			return "", err
		}
		p.container = id
	}
	return p.c.Crictl(append([]string{"exec", "--sync", p.container}, args...)...)
}

// startSleeper creates and starts the busybox container Exec uses.
func (p *CRIPod) startSleeper() (string, error) {
	spec := map[string]any{
		"metadata": map[string]any{"name": "sleep"},
		"image":    map[string]any{"image": BusyboxImage},
		"command":  []string{"sleep", "86400"},
		"log_path": "sleep.log",
		"linux":    map[string]any{},
	}
	b, _ := json.Marshal(spec)
	path := strings.TrimSuffix(p.spec, ".json") + "-sleep.json"
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return "", err
	}
	out, err := p.c.Crictl("create", "--no-pull", p.ID, path, p.spec)
	if err != nil {
		return "", fmt.Errorf("pod %s: create container: %w", p.Name, err)
	}
	id := strings.TrimSpace(out)
	if _, err := p.c.Crictl("start", id); err != nil {
		return "", fmt.Errorf("pod %s: start container: %w", p.Name, err)
	}
	return id, nil
}

// Remove stops and removes the pod (`crictl stopp`, `rmp`): its containers
// end, the CNI plugin's DEL runs and its network namespace is deleted.
func (p *CRIPod) Remove() error {
	if _, err := p.c.Crictl("stopp", p.ID); err != nil {
		return fmt.Errorf("stop pod %s: %w", p.Name, err)
	}
	if _, err := p.c.Crictl("rmp", p.ID); err != nil {
		return fmt.Errorf("remove pod %s: %w", p.Name, err)
	}
	return nil
}

var refCNI struct {
	once sync.Once
	dir  string
	err  error
}

// refCNIPlugins are the reference plugins ReferenceCNIPlugins provides
// (the versions .ci/run installs).
var refCNIPlugins = []string{
	"github.com/containernetworking/plugins/plugins/main/bridge@v1.9.1",
	"github.com/containernetworking/plugins/plugins/main/loopback@v1.9.1",
	"github.com/containernetworking/plugins/plugins/ipam/host-local@v1.9.1",
	// what examples/drover.conflist chains (the runtime tests)
	"github.com/containernetworking/plugins/plugins/meta/portmap@v1.9.1",
	"github.com/containernetworking/plugins/plugins/meta/bandwidth@v1.9.1",
	"github.com/containernetworking/plugins/plugins/meta/tuning@v1.9.1",
}

// ReferenceCNIPlugins returns a directory holding the reference CNI
// plugins bridge, loopback, host-local, portmap, bandwidth and tuning: $DROVER_CNI_TOOLS when it has
// them (.ci/run installs them there), else a cache in $TMPDIR that the
// first call fills with `go install` through the module proxy.
func ReferenceCNIPlugins(t testing.TB) string {
	t.Helper()
	refCNI.once.Do(func() {
		dir := filepath.Join(os.TempDir(), "drv-cnibin-ref-v1.9.1")
		if d := os.Getenv("DROVER_CNI_TOOLS"); d != "" {
			dir = d
		}
		missing := false
		for _, n := range []string{"bridge", "loopback", "host-local", "portmap", "bandwidth", "tuning"} {
			if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
				missing = true
			}
		}
		if missing && inCI() && os.Getenv("DROVER_CNI_TOOLS") != "" {
			refCNI.err = fmt.Errorf("a reference plugin (bridge, loopback, host-local, portmap, bandwidth, tuning) is missing in DROVER_CNI_TOOLS=%s (.ci/run CNI_TOOLS)", dir)
			return
		}
		if missing {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			for _, pkg := range refCNIPlugins {
				cmd := exec.CommandContext(ctx, "go", "install", pkg)
				cmd.Dir = os.TempDir() // outside this module: its go.mod does not apply
				cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0")
				if out, err := cmd.CombinedOutput(); err != nil {
					refCNI.err = fmt.Errorf("go install %s: %w\n%s", pkg, err, out)
					return
				}
			}
		}
		refCNI.dir = dir
	})
	if refCNI.err != nil {
		t.Fatal(refCNI.err)
	}
	return refCNI.dir
}

// WriteBridgeConflist writes dir/NAME.conflist and returns its path: the
// reference bridge plugin (bridge device "drv-" + name, cut to 15
// characters, as the pods' gateway; no masquerade) with host-local IPAM
// from subnet (its state in dir/ipam rather than /var/lib/cni), chained
// with loopback (which passes the bridge's result on). Its cniVersion is
// 1.0.0: containerd 1.6 refuses 1.1.0. It lets the infrastructure be tested
// without drover.
func WriteBridgeConflist(dir, name, subnet string) (string, error) {
	br := Prefix + name
	if len(br) > 15 {
		br = br[:15]
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       name,
		"plugins": []any{map[string]any{
			"type":      "bridge",
			"bridge":    br,
			"isGateway": true,
			"ipMasq":    false,
			"ipam": map[string]any{
				"type":    "host-local",
				"dataDir": filepath.Join(dir, "ipam"),
				"ranges":  []any{[]any{map[string]string{"subnet": subnet}}},
				"routes":  []any{map[string]string{"dst": "0.0.0.0/0"}},
			},
		}, map[string]any{"type": "loopback"}},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, name+".conflist")
	// Written whole and renamed: containerd watches dir and must never
	// read half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", err
	}
	return path, nil
}
