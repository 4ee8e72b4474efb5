package lab

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/drovernet/drover/testenv"
)

// shippedConflist is examples/drover.conflist as shipped — its cniVersion
// and cniVersions, its chain (portmap, bandwidth, tuning) — with only what
// a lab host differs in from a real one: the daemon's socket (the lab's
// are not at /run/drover), the bridge the lab's own containers are on, a
// reservation directory of the test's, and a range start that keeps clear
// of the lab containers' addresses.
func shippedConflist(t *testing.T, h *Host) []byte {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(file)), "examples", "drover.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	var list map[string]any
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	start := h.Prefix.Addr().As4()
	start[3] = 100
	for _, p := range list["plugins"].([]any) {
		pm := p.(map[string]any)
		if pm["type"] != "drover" {
			continue
		}
		pm["bridge"] = h.Bridge
		pm["daemonSocket"] = h.cfg.ControlSocket
		pm["ipam"] = map[string]any{"type": "drover", "dataDir": filepath.Join(t.TempDir(), "ipam"), "rangeStart": netip.AddrFrom4(start).String()}
	}
	out, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// cniDirs is a host's CNI bin and conf directories for a runtime: drover
// (the lab's binary) and the reference plugins the shipped list chains,
// and the list itself as 10-drover.conflist.
func cniDirs(t *testing.T, l *Lab, h *Host) (bin, conf string) {
	t.Helper()
	bin, conf = t.TempDir(), t.TempDir()
	if err := os.Symlink(l.opts.Bin, filepath.Join(bin, "drover")); err != nil {
		t.Fatal(err)
	}
	ref := ReferenceCNIPlugins(t)
	for _, p := range []string{"loopback", "portmap", "bandwidth", "tuning"} {
		if err := os.Symlink(filepath.Join(ref, p), filepath.Join(bin, p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(conf, "10-drover.conflist"), shippedConflist(t, h), 0o644); err != nil {
		t.Fatal(err)
	}
	return bin, conf
}

// hostState is what a container's attachment adds to its host and DEL
// must take away again: ports on the bridge, reservations the daemon
// lists, and nftables rules.
type hostState struct {
	ports   []string
	local   string
	ruleset string
}

func snapshotHost(t *testing.T, h *Host) hostState {
	t.Helper()
	var s hostState
	err := withNetlink(h.NS, func(nl *netlink.Handle) error {
		br, err := nl.LinkByName(h.Bridge)
		if err != nil {
			return err
		}
		links, err := nl.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if l.Attrs().MasterIndex == br.Attrs().Index {
				s.ports = append(s.ports, l.Attrs().Name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(s.ports)
	b, err := h.ControlGet("/v1/local")
	if err != nil {
		t.Fatal(err)
	}
	s.local = string(b)
	out, err := exec.Command("ip", "netns", "exec", h.NS.Name, "nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset in %s: %v\n%s", h.NS.Name, err, out)
	}
	s.ruleset = string(out)
	return s
}

// checkAttached is checkClean's other half, so that it cannot pass for
// looking at the wrong thing: while the container lives, its host has one
// more bridge port and the daemon lists its address.
func checkAttached(t *testing.T, h *Host, before hostState, addr string) {
	t.Helper()
	during := snapshotHost(t, h)
	if len(during.ports) != len(before.ports)+1 {
		t.Errorf("%s: bridge %s ports %q with the container, %q before: want one more", h.Name, h.Bridge, during.ports, before.ports)
	}
	if !strings.Contains(during.local, `"`+addr+`"`) {
		t.Errorf("%s: the daemon does not list %s as reserved: %s", h.Name, addr, during.local)
	}
}

// checkClean compares a host after the runtime removed its containers
// with before they were made: no port left on the bridge, no reservation
// and no nftables rule naming a removed container's address.
func checkClean(t *testing.T, h *Host, before hostState, addrs []string) {
	t.Helper()
	after := snapshotHost(t, h)
	if !slices.Equal(after.ports, before.ports) {
		t.Errorf("%s: bridge %s ports %q after removal, %q before: a veth left behind", h.Name, h.Bridge, after.ports, before.ports)
	}
	for _, a := range addrs {
		if strings.Contains(after.local, `"`+a+`"`) {
			t.Errorf("%s: the daemon still lists %s as reserved after removal: %s", h.Name, a, after.local)
		}
		if strings.Contains(after.ruleset, a+" ") || strings.Contains(after.ruleset, a+"\n") {
			t.Errorf("%s: an nftables rule still names %s after removal", h.Name, a)
		}
	}
}

// Debian's podman (4.3, CNI backend) attaches containers with the shipped
// conflist on two lab hosts of a cluster; they reach each other across
// hosts, and podman rm leaves no veth, reservation or rule behind.
func TestRuntimePodman(t *testing.T) {
	testenv.NeedRoot(t)
	l := newClusterLab(t, Options{Hosts: 2, Containers: 1, Encapsulation: "esp"})
	imgs, err := BuildImages()
	if err != nil {
		t.Fatal(err)
	}
	type ctr struct {
		pm         *podman
		h          *Host
		name, addr string
	}
	var ctrs []*ctr
	before := map[*Host]hostState{}
	for _, h := range l.Hosts {
		pm := newPodman(t)
		bin, conf := cniDirs(t, l, h)
		// This podman's CNI directories are the host's: containers.conf
		// names them.
		if err := os.Remove(filepath.Join(pm.dir, "cni-bin")); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(pm.dir, "cni-conf")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(bin, filepath.Join(pm.dir, "cni-bin")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(conf, filepath.Join(pm.dir, "cni-conf")); err != nil {
			t.Fatal(err)
		}
		pm.run(t, "load", "--input", filepath.Join(imgs, "busybox.tar"))
		if out := pm.run(t, "network", "ls", "--format", "{{.Name}} {{.Driver}}"); !strings.Contains(out, "drover") {
			t.Fatalf("podman network ls on %s: %q, want the drover network", h.Name, out)
		}
		before[h] = snapshotHost(t, h)
		c := &ctr{pm: pm, h: h, name: "drv-pc-" + h.Name}
		args := pm.args("run", "--detach", "--name", c.name, "--network", "drover", "--cap-add", "NET_RAW", BusyboxImage, "sleep", "3600")
		out, err := exec.Command(l.opts.Bin, append([]string{"netns-exec", h.NS.Name, "--"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("podman run on %s: %v\n%s", h.Name, err, out)
		}
		c.addr = strings.TrimSpace(pm.run(t, "inspect", "--format", `{{(index .NetworkSettings.Networks "drover").IPAddress}}`, c.name))
		a, err := netip.ParseAddr(c.addr)
		if err != nil || !h.Prefix.Contains(a) {
			t.Fatalf("podman container on %s: address %q, want one in the host's block %s", h.Name, c.addr, h.Prefix)
		}
		t.Logf("podman container %s on %s: %s", c.name, h.Name, c.addr)
		checkAttached(t, h, before[h], c.addr)
		ctrs = append(ctrs, c)
	}
	for _, from := range ctrs {
		for _, to := range ctrs {
			if from == to {
				continue
			}
			if out, err := from.pm.cmd("exec", from.name, "ping", "-c", "3", "-W", "2", to.addr).CombinedOutput(); err != nil {
				t.Errorf("podman %s (%s) → %s (%s): %v\n%s", from.name, from.h.Name, to.name, to.addr, err, out)
			}
		}
		// And a lab container on the other host reaches it.
		other := l.Hosts[0]
		if other == from.h {
			other = l.Hosts[1]
		}
		if err := pingFrom(t.Context(), other.Containers[0], from.addr); err != nil {
			t.Errorf("%s → podman %s %s: %v", other.Containers[0].Ref, from.name, from.addr, err)
		}
	}
	t.Logf("RESULT podman 4.3 (CNI, shipped conflist): 2 containers on 2 hosts reach each other")
	for _, c := range ctrs {
		args := c.pm.args("rm", "--force", "--time", "1", c.name)
		if out, err := exec.Command(l.opts.Bin, append([]string{"netns-exec", c.h.NS.Name, "--"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("podman rm on %s: %v\n%s", c.h.Name, err, out)
		}
		checkClean(t, c.h, before[c.h], []string{c.addr})
	}
}

// containerd's CRI, driven by crictl as the kubelet drives it, attaches
// pod sandboxes with the shipped conflist on two lab hosts: Debian's 1.6
// (libcni 1.1: runs the list as 1.0.0) and a 2.x from the module proxy
// (reads cniVersions: 1.1.0, with STATUS and GC). The pods reach each
// other across hosts; crictl stopp/rmp leaves nothing behind.
func TestRuntimeContainerd(t *testing.T) {
	testenv.NeedRoot(t)
	for _, tc := range []struct {
		name, version string
		v2            bool
	}{{"containerd-1.6", "1.0.0", false}, {"containerd-2", "1.1.0", true}} {
		t.Run(tc.name, func(t *testing.T) {
			var v2bin string
			if tc.v2 {
				var err error
				v2bin, err = Containerd2Bin()
				needTool(t, err, "containerd 2.x")
			}
			l := newClusterLab(t, Options{Hosts: 2, Containers: 1, Encapsulation: "esp"})
			var pods []*CRIPod
			var hosts []*Host
			before := map[*Host]hostState{}
			for _, h := range l.Hosts {
				bin, conf := cniDirs(t, l, h)
				ctd := StartContainerd(t, h.NS, ContainerdOptions{CNIBinDir: bin, CNIConfDir: conf, V2Bin: v2bin})
				if got := criCNIVersion(t, ctd); got != tc.version {
					t.Errorf("%s on %s runs the conflist as cniVersion %q, want %q", tc.name, h.Name, got, tc.version)
				}
				before[h] = snapshotHost(t, h)
				p, err := ctd.RunPod("crip-"+h.Name, "x")
				if err != nil {
					t.Fatal(err)
				}
				a, err := netip.ParseAddr(p.IP)
				if err != nil || !h.Prefix.Contains(a) {
					t.Fatalf("pod on %s: address %q, want one in the host's block %s", h.Name, p.IP, h.Prefix)
				}
				t.Logf("%s pod on %s: %s", tc.name, h.Name, p.IP)
				checkAttached(t, h, before[h], p.IP)
				pods, hosts = append(pods, p), append(hosts, h)
			}
			for i, p := range pods {
				q := pods[1-i]
				if out, err := p.Exec("ping", "-c", "3", "-W", "2", q.IP); err != nil {
					t.Errorf("pod on %s → pod on %s %s: %v\n%s", hosts[i].Name, hosts[1-i].Name, q.IP, err, out)
				}
			}
			t.Logf("RESULT %s (CRI via crictl, shipped conflist as %s): pods on 2 hosts reach each other", tc.name, tc.version)
			for i, p := range pods {
				if err := p.Remove(); err != nil {
					t.Fatal(err)
				}
				checkClean(t, hosts[i], before[hosts[i]], []string{p.IP})
			}
		})
	}
}

// criCNI is the CNI part of crictl info: the networks as the CNI library
// parsed them.
type criCNI struct {
	Networks []struct {
		Config struct {
			Name       string `json:"Name"`
			CNIVersion string `json:"CNIVersion"`
		} `json:"Config"`
	} `json:"Networks"`
}

// criCNIVersion is the cniVersion containerd's CRI runs its network with,
// from crictl info (the CNI library's parsed list), once the CRI has
// loaded the conflist.
func criCNIVersion(t *testing.T, ctd *Containerd) string {
	t.Helper()
	var version string
	err := Poll(t.Context(), 20*time.Second, 200*time.Millisecond, func() error {
		out, err := ctd.Crictl("info")
		if err != nil {
			return err
		}
		// containerd 1.6 puts the CNI status at the top, 2.x under config.
		var info struct {
			CNI    criCNI `json:"cniconfig"`
			Config struct {
				CNI criCNI `json:"cniconfig"`
			} `json:"config"`
		}
		if err := json.Unmarshal([]byte(out), &info); err != nil {
			return fmt.Errorf("crictl info: %w", err)
		}
		nets := info.CNI.Networks
		if len(nets) == 0 {
			nets = info.Config.CNI.Networks
		}
		for _, n := range nets {
			if n.Config.Name == "drover" {
				version = n.Config.CNIVersion
				return nil
			}
		}
		return fmt.Errorf("crictl info lists no drover network yet: %.400s", out)
	})
	if err != nil {
		t.Fatal(err)
	}
	return version
}
