package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/drovernet/drover/internal/labns"
	"github.com/drovernet/drover/testenv"
)

// copyExamples copies examples/containerlab to a temporary directory and
// writes the cluster key its README tells a user to make, so the test
// neither writes into the repository nor ships a key.
func copyExamples(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(filepath.Dir(file)), "examples", "containerlab")
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() || e.Name() == "cluster.key" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dst, "cluster.key"), []byte(strings.Repeat("c1", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dst
}

// topoNamespaces lists this process's topology namespaces (drv-t<pid>…).
func topoNamespaces() []string {
	ents, _ := os.ReadDir("/run/netns")
	var out []string
	prefix := fmt.Sprintf("%st%d-", labns.Prefix, os.Getpid()%100000)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// Every shipped containerlab topology runs under drover lab --topology to
// full reachability between its probe nodes, and leaves nothing behind.
func TestTopologyExamples(t *testing.T) {
	testenv.NeedRoot(t)
	dir := copyExamples(t)
	bin := testenv.DroverBinary(t)
	files, err := filepath.Glob(filepath.Join(dir, "*.clab.yml"))
	if err != nil || len(files) < 3 {
		t.Fatalf("topologies: %v, %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			opts := TopologyOptions{File: f, Bin: bin, ArchBin: map[string]string{}, Timeout: 60 * time.Second}
			if strings.Contains(f, "mixed-arch") {
				if _, err := QEMU("arm64"); err != nil {
					t.Skipf("%v (Debian: apt-get install qemu-user-static; CI installs it)", err)
				}
				arm, err := testenv.BuildDroverArch("arm64")
				if err != nil {
					t.Fatal(err)
				}
				opts.ArchBin["arm64"] = arm
			}
			var out strings.Builder
			start := time.Now()
			err := RunTopology(t.Context(), opts, &out)
			t.Logf("drover lab --topology %s (%v):\n%s", filepath.Base(f), time.Since(start).Round(time.Millisecond), out.String())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), " reachable after ") || !strings.Contains(out.String(), "lab removed") {
				t.Errorf("output lacks full reachability or removal")
			}
			if left := topoNamespaces(); len(left) > 0 {
				t.Errorf("namespaces left behind: %v", left)
			}
		})
	}
}

// A topology that cannot run stops before anything is built, with the
// node named; one whose drover fails to start is torn down completely.
func TestTopologyErrors(t *testing.T) {
	testenv.NeedRoot(t)
	dir := t.TempDir()
	bin := testenv.DroverBinary(t)
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("bad.yaml", "node: {name: a, underlay: 192.0.2.300}\n")
	for _, tc := range []struct{ name, topo, want string }{
		{"unknown kind", "name: t\ntopology:\n  nodes:\n    r1: {kind: vr-sros, image: x}\n", `node r1: kind "vr-sros"`},
		{"no arm64 binary", "name: t\ntopology:\n  nodes:\n    h1: {kind: linux, image: drover:x, labels: {drover.lab/arch: arm64}}\n", "node h1: label drover.lab/arch=arm64: no drover binary"},
		{"config not bound", "name: t\ntopology:\n  nodes:\n    h1: {kind: linux, image: drover:x}\n", "node h1: config /etc/drover/drover.yaml: no bind"},
		{"bad config", "name: t\ntopology:\n  nodes:\n    h1: {kind: linux, image: drover:x, binds: [bad.yaml:/etc/drover/drover.yaml]}\n", "node h1: config /etc/drover/drover.yaml"},
		{"exec fails", "name: t\ntopology:\n  nodes:\n    c1: {kind: linux, image: busybox, exec: [ip link set nosuchdev up]}\n", `node c1: exec[0] "ip link set nosuchdev up"`},
		{"unsupported cmd", "name: t\ntopology:\n  nodes:\n    h1: {kind: linux, image: drover:x, cmd: status}\n", "node h1: cmd \"status\": drover lab runs `run --config FILE` only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := write("t.clab.yml", tc.topo)
			var out strings.Builder
			err := RunTopology(t.Context(), TopologyOptions{File: f, Bin: bin}, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q\n%s", err, tc.want, out.String())
			}
			if left := topoNamespaces(); len(left) > 0 {
				t.Errorf("namespaces left behind: %v", left)
			}
		})
	}
}
