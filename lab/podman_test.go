package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/testenv"
	"github.com/drovernet/drover/tools/release/build"
)

// podman is Debian's podman with its own storage, run directory and
// configuration under a test directory, so it never touches a system
// podman's images or containers. Settings from ../shared/kubernetes/
// README.md: cgroupfs (no systemd here), a file events log, CNI when
// networks are used, explicit ulimits (else runc "error setting rlimit").
type podman struct {
	dir string
}

func newPodman(t *testing.T) *podman {
	t.Helper()
	if _, err := exec.LookPath("podman"); err != nil {
		t.Fatalf("podman (Debian package podman; .ci/run installs it) is needed: %v", err)
	}
	// Not t.TempDir: podman's run directory holds sockets (107-byte limit).
	dir, err := os.MkdirTemp("", "drv-podman-")
	if err != nil {
		t.Fatal(err)
	}
	p := &podman{dir: dir}
	for _, d := range []string{"cni-conf", "cni-bin"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := fmt.Sprintf(`[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "%[1]s/events.log"
[network]
network_backend = "cni"
cni_plugin_dirs = ["%[1]s/cni-bin"]
network_config_dir = "%[1]s/cni-conf"
`, dir)
	if err := os.WriteFile(filepath.Join(dir, "containers.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Containers first (a crashed test may leave them running under
		// conmon), then the storage: vfs needs no unmounting.
		if out, err := p.cmd("rm", "--all", "--force", "--time", "5").CombinedOutput(); err != nil {
			t.Logf("podman rm --all: %v\n%s", err, out)
		}
		os.RemoveAll(dir)
	})
	return p
}

// args is podman's command line for subcommand args, its configuration
// in the environment (env(1): the line may run where p.env is not set,
// such as a lab host's router command).
func (p *podman) args(args ...string) []string {
	return append([]string{"env", "CONTAINERS_CONF=" + filepath.Join(p.dir, "containers.conf"), "podman", "--root", filepath.Join(p.dir, "root"), "--runroot", filepath.Join(p.dir, "run"),
		"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"}, args...)
}

func (p *podman) cmd(args ...string) *exec.Cmd {
	a := p.args(args...)
	return exec.Command(a[0], a[1:]...)
}

func (p *podman) run(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	c := p.cmd(args...)
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		t.Fatalf("podman %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// routerCommand is a lab host's router as docs/install.md runs the image:
// podman run in the host's namespace (entered through the lab's binary)
// with NET_ADMIN, the TUN device and the host's network, the lab's
// directory bound at its own path; opts go before the image (--arch).
func (p *podman) routerCommand(lab, name, ref string, opts ...string) func(ns, cfgPath string) []string {
	return func(ns, cfgPath string) []string {
		dir := filepath.Dir(cfgPath)
		args := append([]string{"run", "--rm", "--name", name}, opts...)
		args = append(args, "--cap-add", "NET_ADMIN", "--device", "/dev/net/tun", "--network", "host",
			"--volume", dir+":"+dir, ref, "run", "--config", cfgPath)
		return append([]string{lab, "netns-exec", ns, "--"}, p.args(args...)...)
	}
}

// releaseImage builds the edge release binaries for platforms and the
// multi-platform image archive from them, as tools/release does.
func releaseImage(t *testing.T, platforms ...string) (archive, ref string) {
	t.Helper()
	root, err := build.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	start := time.Now()
	var arts []build.Artifact
	for _, p := range platforms {
		plat, err := build.ParsePlatform(p)
		if err != nil {
			t.Fatal(err)
		}
		a, err := build.Build(root, dir, build.Target{Platform: plat, Flavour: build.Edge, Version: "v0.0.0-labtest"})
		if err != nil {
			t.Fatal(err)
		}
		arts = append(arts, a)
	}
	ref = build.ImageRef(build.Edge, "v0.0.0-labtest")
	archive = filepath.Join(dir, build.ImageArchiveName(build.Edge))
	if err := build.WriteImage(archive, ref, root, arts); err != nil {
		t.Fatal(err)
	}
	t.Logf("release build and image %s in %v", ref, time.Since(start).Round(time.Millisecond))
	return archive, ref
}

// The release image, loaded with podman load and run as docs/install.md
// says (--cap-add NET_ADMIN --device /dev/net/tun --network host, in a lab
// host's namespace), is the seed of a 3-host ESP cluster whose other two
// hosts are plain drover processes: the cluster forms and every container
// reaches every other one through it; podman stops it with SIGTERM.
func TestClusterPodmanImage(t *testing.T) {
	testenv.NeedRoot(t)
	pm := newPodman(t)
	archive, ref := releaseImage(t, "linux/"+runtime.GOARCH, "linux/arm64")
	pm.run(t, "load", "--input", archive)
	if got := pm.run(t, "image", "inspect", "--format", "{{.Os}}/{{.Architecture}}", ref); strings.TrimSpace(got) != "linux/"+runtime.GOARCH {
		t.Fatalf("podman loaded %s for %q, want linux/%s (the index's entry for this machine)", ref, strings.TrimSpace(got), runtime.GOARCH)
	}
	lab := testenv.DroverBinary(t)
	name := "drv-pm-" + testTag()
	command := pm.routerCommand(lab, name, ref)
	l := newClusterLab(t, Options{Hosts: 3, Containers: 1, Encapsulation: "esp",
		HostOptions: []HostOptions{{Command: command}}})
	// The seed is podman's: its router process is drover inside the
	// container, a child of conmon, not of the lab.
	ps := pm.run(t, "ps", "--filter", "name="+name, "--format", "{{.Names}} {{.Image}} {{.Status}}")
	if !strings.Contains(ps, name+" localhost/"+ref) {
		t.Fatalf("podman ps: got %q, want %s running localhost/%s", ps, name, ref)
	}
	last := l.lastStart()
	at := waitMatrix(t, l, 30*time.Second)
	t.Logf("RESULT podman image %s as h1 of 3: full reachability %v after the last router start", ref, at.Sub(last).Round(time.Millisecond))
	res, err := l.Transfer(t.Context(), ContainerRef{Host: 2, Container: 1}, ContainerRef{Host: 1, Container: 1}, 2<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("RESULT transfer %s", res)
	checkDrops(t, l)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := l.StopRouter(l.Hosts[0]); err != nil {
		t.Errorf("stopping the podman-run router: %v", err)
	}
	if err := Poll(ctx, 20*time.Second, 100*time.Millisecond, func() error {
		if out := pm.run(t, "ps", "--all", "--filter", "name="+name, "--format", "{{.Names}}"); strings.TrimSpace(out) != "" {
			return fmt.Errorf("container %s still listed", out)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// binfmtQEMU makes the kernel run arm64 ELF binaries through
// qemu-aarch64-static (binfmt_misc, flag F: the interpreter is opened now,
// so it works inside a container's file system), as qemu-user-static's
// package does at boot under systemd. An entry that already handles arm64
// is used as it is; otherwise one named drv-qemu-aarch64 is registered and
// removed at the end, and binfmt_misc unmounted if the test mounted it.
func binfmtQEMU(t *testing.T) {
	t.Helper()
	qemu, err := QEMU("arm64")
	if err != nil {
		t.Skipf("%v (Debian: apt-get install qemu-user-static; CI installs it)", err)
	}
	const dir = "/proc/sys/fs/binfmt_misc"
	if _, err := os.Stat(dir + "/register"); err != nil {
		if out, err := exec.Command("mount", "-t", "binfmt_misc", "drv-binfmt", dir).CombinedOutput(); err != nil {
			t.Fatalf("mount binfmt_misc: %v: %s", err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
				t.Errorf("umount binfmt_misc: %v: %s", err, out)
			}
		})
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		if strings.Contains(string(b), "enabled") && strings.Contains(string(b), "magic 7f454c460201010000000000000000000200b700") {
			t.Logf("binfmt_misc: %s handles arm64 already", e.Name())
			return
		}
	}
	// ELF64, little endian, e_machine 183 (EM_AARCH64); the mask ignores
	// the ABI version and lets e_type be EXEC or DYN.
	reg := `:drv-qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:` + qemu + `:F`
	if err := os.WriteFile(dir+"/register", []byte(reg), 0); err != nil {
		t.Fatalf("binfmt_misc register: %v", err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(dir+"/drv-qemu-aarch64", []byte("-1"), 0); err != nil {
			t.Errorf("binfmt_misc: remove drv-qemu-aarch64: %v", err)
		}
	})
}

// The arm64 image of the same index, pulled with --arch arm64 from the
// archive and run under qemu-user through binfmt_misc, is h3 of a cluster
// whose seed is a plain process: it joins and carries traffic. Its forward
// filter is off, as for every emulated router (qemu-user has no
// NETLINK_NETFILTER; real arm64 hardware has).
func TestClusterPodmanImageARM64(t *testing.T) {
	testenv.NeedRoot(t)
	binfmtQEMU(t)
	pm := newPodman(t)
	archive, ref := releaseImage(t, "linux/"+runtime.GOARCH, "linux/arm64")
	armRef := "drover:labtest-arm64"
	id := strings.TrimSpace(pm.run(t, "pull", "--quiet", "--arch", "arm64", "oci-archive:"+archive))
	pm.run(t, "tag", id, armRef)
	if got := pm.run(t, "image", "inspect", "--format", "{{.Architecture}}", armRef); strings.TrimSpace(got) != "arm64" {
		t.Fatalf("%s (from %s): architecture %q, want arm64", armRef, ref, strings.TrimSpace(got))
	}
	if out := pm.run(t, "run", "--rm", "--network", "none", "--arch", "arm64", armRef, "version"); !strings.Contains(out, "linux/arm64") {
		t.Fatalf("drover version in the arm64 image: %q, want linux/arm64", out)
	}
	lab := testenv.DroverBinary(t)
	name := "drv-pma-" + testTag()
	command := pm.routerCommand(lab, name, armRef, "--arch", "arm64")
	noFilter := func(c *config.Config) { off := false; c.Firewall.Forward = &off }
	l := newClusterLab(t, Options{Hosts: 3, Containers: 1, Encapsulation: "esp",
		HostOptions: []HostOptions{{}, {}, {Command: command, Configure: noFilter}}})
	last := l.lastStart()
	at := waitMatrix(t, l, 60*time.Second)
	t.Logf("RESULT podman arm64 image %s as h3 of 3 (qemu-user): full reachability %v after the last router start", armRef, at.Sub(last).Round(time.Millisecond))
	res, err := l.Transfer(t.Context(), ContainerRef{Host: 1, Container: 1}, ContainerRef{Host: 3, Container: 1}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("RESULT transfer %s", res)
}
