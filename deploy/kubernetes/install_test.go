package kubernetes

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/drovernet/drover/testenv"
)

// pod is a fake node and pod filesystem for the init container: each volume
// of the DaemonSet becomes a directory (a hostPath one under host/, the
// ConfigMap's keys written as the kubelet writes them), and the container's
// paths are translated to them.
type pod struct {
	root   string
	mounts map[string]string // container mount path → directory here
}

// newPod lays out the init container's volumes under a temporary root. The
// host's CNI bin dir gets stub executables for chained.
func newPod(t *testing.T, ds *appsv1.DaemonSet, c corev1.Container, cm corev1.ConfigMap, chained ...string) *pod {
	t.Helper()
	p := &pod{root: t.TempDir(), mounts: map[string]string{}}
	for _, m := range c.VolumeMounts {
		i := slices.IndexFunc(ds.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		v := ds.Spec.Template.Spec.Volumes[i]
		var dir string
		switch {
		case v.HostPath != nil:
			dir = filepath.Join(p.root, "host", v.HostPath.Path)
			if err := os.MkdirAll(dir, 0o755); err != nil { // DirectoryOrCreate
				t.Fatal(err)
			}
		case v.ConfigMap != nil:
			dir = filepath.Join(p.root, "volumes", v.Name)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for k, data := range cm.Data {
				if err := os.WriteFile(filepath.Join(dir, k), []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		default:
			t.Fatalf("volume %s: a kind this test does not lay out", v.Name)
		}
		p.mounts[m.MountPath] = dir
	}
	for _, name := range chained {
		if err := os.WriteFile(filepath.Join(p.root, "host/opt/cni/bin", name), []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// path translates a container path to its directory here.
func (p *pod) path(t *testing.T, cpath string) string {
	t.Helper()
	best := ""
	for mp := range p.mounts {
		if (cpath == mp || strings.HasPrefix(cpath, mp+"/")) && len(mp) > len(best) {
			best = mp
		}
	}
	if best == "" {
		t.Fatalf("%s: not on a volume of the container", cpath)
	}
	return filepath.Join(p.mounts[best], strings.TrimPrefix(cpath, best))
}

// args translates every absolute path in the container's arguments
// (--flag=/path) to the pod's directories.
func (p *pod) args(t *testing.T, args []string) []string {
	t.Helper()
	out := make([]string, len(args))
	for i, a := range args {
		if k, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(v, "/") {
			a = k + "=" + p.path(t, v)
		}
		out[i] = a
	}
	return out
}

// runInit runs the init container's command with the built drover as its
// binary and the pod's paths for the container's.
func (p *pod) runInit(t *testing.T, bin string, c corev1.Container) (string, error) {
	t.Helper()
	args := append(slices.Clone(c.Command[1:]), p.args(t, c.Args)...)
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"} // what a scratch image has: nothing of ours
	out, err := cmd.CombinedOutput()
	t.Logf("%s %s:\n%s", c.Command[0], strings.Join(args, " "), out)
	return string(out), err
}

// TestInstallCNIAsInitContainer runs the DaemonSet's init container step
// with the real drover binary, its arguments as written in the manifest and
// the ConfigMap's files as the kubelet lays them out, over a fake node's
// /opt/cni/bin (with portmap) and /etc/cni/net.d. The node must then hold
// the binary and the conflist, and the installed binary must answer CNI
// VERSION as a runtime would call it. A second run changes nothing; a node
// without portmap is refused with status 2 and nothing written.
func TestInstallCNIAsInitContainer(t *testing.T) {
	bin := testenv.DroverBinary(t)
	ds, ic, _ := daemonSet(t)
	cm, _ := configMap(t)
	if ic.Command[0] != "/usr/local/bin/drover" {
		t.Fatalf("init command %q: this test stands the built binary in for /usr/local/bin/drover", ic.Command[0])
	}
	p := newPod(t, ds, ic, cm, "portmap")
	binDir, confDir := filepath.Join(p.root, "host/opt/cni/bin"), filepath.Join(p.root, "host/etc/cni/net.d")
	if _, err := p.runInit(t, bin, ic); err != nil {
		t.Fatalf("install-cni: %v", err)
	}

	installed := filepath.Join(binDir, "drover")
	want, _ := os.ReadFile(bin)
	got, err := os.ReadFile(installed)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("installed binary: %d bytes, %v; want a copy of the %d-byte drover", len(got), err, len(want))
	}
	name := installName(t)
	list, err := os.ReadFile(filepath.Join(confDir, name))
	if err != nil || string(list) != cm.Data[name] {
		t.Fatalf("installed conflist: %v; got\n%s\nwant the ConfigMap's %s", err, list, name)
	}
	for f, mode := range map[string]os.FileMode{installed: 0o755, filepath.Join(confDir, name): 0o644} {
		if fi, _ := os.Stat(f); fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %04o, want %04o", f, fi.Mode().Perm(), mode)
		}
	}
	for _, d := range []string{binDir, confDir} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") {
				t.Errorf("%s: temporary file %s left", d, e.Name())
			}
		}
	}

	// The runtime's call: CNI_COMMAND=VERSION, the config's version on
	// stdin (CNI spec 1.1 §"VERSION").
	cmd := exec.Command(installed)
	cmd.Env = []string{"CNI_COMMAND=VERSION", "CNI_PATH=" + binDir}
	cmd.Stdin = strings.NewReader(`{"cniVersion":"1.0.0"}`)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("installed drover, CNI VERSION: %v\n%s%s", err, stdout.Bytes(), stderr.Bytes())
	}
	var v struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &v); err != nil {
		t.Fatalf("VERSION answer %q: %v", stdout.Bytes(), err)
	}
	t.Logf("VERSION: %s", bytes.TrimSpace(stdout.Bytes()))
	if v.CNIVersion == "" || !slices.Contains(v.SupportedVersions, "1.0.0") || !slices.Contains(v.SupportedVersions, "1.1.0") {
		t.Fatalf("VERSION answer %+v: want supportedVersions with 1.0.0 (the conflist's) and 1.1.0", v)
	}

	// A restarted pod runs the step again: nothing changes.
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	for _, f := range []string{installed, filepath.Join(confDir, name)} {
		if err := os.Chtimes(f, old, old); err != nil {
			t.Fatal(err)
		}
	}
	out, err := p.runInit(t, bin, ic)
	if err != nil {
		t.Fatalf("install-cni again: %v", err)
	}
	if !strings.Contains(out, "binary_changed=false") || !strings.Contains(out, "conflist_changed=false") {
		t.Errorf("second run: want binary_changed=false conflist_changed=false in the log")
	}
	for _, f := range []string{installed, filepath.Join(confDir, name)} {
		if fi, _ := os.Stat(f); !fi.ModTime().Equal(old) {
			t.Errorf("%s: touched by the second run", f)
		}
	}
}

// TestInstallCNIRefusesMissingPlugin: on a node without portmap the step
// fails with status 2 naming the plugin, and writes nothing, so the kubelet
// keeps restarting the init container and the pod shows why.
func TestInstallCNIRefusesMissingPlugin(t *testing.T) {
	bin := testenv.DroverBinary(t)
	ds, ic, _ := daemonSet(t)
	cm, _ := configMap(t)
	p := newPod(t, ds, ic, cm) // no portmap
	out, err := p.runInit(t, bin, ic)
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 2 {
		t.Fatalf("install-cni without portmap: got %v, want exit status 2", err)
	}
	if !strings.Contains(out, `plugins[1].type: "portmap" is chained but not installed`) {
		t.Errorf("message does not name the missing plugin")
	}
	for _, d := range []string{"host/opt/cni/bin", "host/etc/cni/net.d"} {
		if ents, _ := os.ReadDir(filepath.Join(p.root, d)); len(ents) != 0 {
			t.Errorf("%s: %d entries written, want none", d, len(ents))
		}
	}
}
