package cni

import (
	"bytes"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/drovernet/drover/testenv"
)

// The reference tools the tests drive the plugin with, pinned to the
// versions in go.mod: a real CNI client and the chained plugins of the
// example conflist.
var cniToolPkgs = []string{
	"github.com/containernetworking/cni/cnitool@v1.3.1",
	"github.com/containernetworking/plugins/plugins/meta/portmap@v1.9.1",
	"github.com/containernetworking/plugins/plugins/meta/bandwidth@v1.9.1",
	"github.com/containernetworking/plugins/plugins/meta/tuning@v1.9.1",
}

var cniTools struct {
	once sync.Once
	dir  string
	err  error
}

// toolDir returns a directory holding cnitool, portmap, bandwidth and
// tuning: $DROVER_CNI_TOOLS when set (.ci/run go-installs them there), else
// a cache the test fills with `go install` (through the module proxy) the
// first time and keeps across runs.
func toolDir(t testing.TB) string {
	t.Helper()
	cniTools.once.Do(func() {
		dir := filepath.Join(os.TempDir(), "drv-cnibin-v1.3.1-v1.9.1")
		if d := os.Getenv("DROVER_CNI_TOOLS"); d != "" {
			dir = d // installed by .ci/run
		}
		missing := false
		for _, n := range []string{"cnitool", "portmap", "bandwidth", "tuning"} {
			if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
				missing = true
			}
		}
		if missing {
			// One module per go install: cnitool and the plugins
			// are different modules.
			for _, pkg := range cniToolPkgs {
				cmd := exec.Command("go", "install", pkg)
				cmd.Dir = os.TempDir() // outside this module: its go.mod does not apply
				cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0")
				if out, err := cmd.CombinedOutput(); err != nil {
					cniTools.err = fmt.Errorf("go install %s: %w\n%s", pkg, err, out)
					return
				}
			}
		}
		cniTools.dir = dir
	})
	if cniTools.err != nil {
		t.Fatal(cniTools.err)
	}
	return cniTools.dir
}

var droverBin struct {
	once sync.Once
	path string
	real bool
	why  string
}

// envPluginBin names a plugin binary to use instead (any build whose main
// calls Main when CNI_COMMAND is set).
const envPluginBin = "DROVER_CNI_TEST_PLUGIN_BIN"

// pluginBinary returns the binary cnitool runs as "drover": the real
// cmd/drover once it dispatches CNI_COMMAND to Main, else this test binary,
// which enters the same Main (see TestMain).
func pluginBinary(t testing.TB) (string, bool) {
	t.Helper()
	droverBin.once.Do(func() {
		droverBin.path = self(t)
		if p := os.Getenv(envPluginBin); p != "" {
			droverBin.path, droverBin.real = p, true
			return
		}
		bin, err := testenv.BuildDrover()
		if err != nil {
			droverBin.why = "cmd/drover does not build: " + strings.SplitN(err.Error(), "\n", 2)[0]
			return
		}
		r := runPlugin(t, bin, nil, map[string]string{"CNI_COMMAND": "VERSION"}, []byte(`{"cniVersion":"1.1.0"}`))
		if r.exit != 0 || !strings.Contains(r.stdout, "supportedVersions") {
			droverBin.why = "cmd/drover does not dispatch CNI_COMMAND yet"
			return
		}
		droverBin.path, droverBin.real = bin, true
	})
	if !droverBin.real {
		t.Logf("%s: the test binary plays the plugin through the same cni.Main", droverBin.why)
	}
	return droverBin.path, droverBin.real
}

// cniEnv is a CNI_PATH with drover and the reference plugins, and a
// NETCONFPATH with one conflist, used through cnitool from inside a host
// namespace.
type cniEnv struct {
	host    *testenv.NetNS
	cnitool string
	path    string
	confDir string
	network string
	capArgs string
	args    string // CNI_ARGS
}

func newCNIEnv(t *testing.T, host *testenv.NetNS, conflist map[string]any) *cniEnv {
	t.Helper()
	tools := toolDir(t)
	plugin, _ := pluginBinary(t)
	e := &cniEnv{host: host, cnitool: filepath.Join(tools, "cnitool"), path: t.TempDir(), confDir: t.TempDir(), network: conflist["name"].(string)}
	if err := os.Symlink(plugin, filepath.Join(e.path, "drover")); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"portmap", "bandwidth", "tuning"} {
		if err := os.Symlink(filepath.Join(tools, n), filepath.Join(e.path, n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(e.confDir, "10-drover.conflist"), mustJSON(t, conflist), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// run executes `cnitool CMD NETWORK NETNS`; the error carries cnitool's
// output.
func (e *cniEnv) run(cmd string, ctr *testenv.NetNS) (string, error) {
	c := exec.Command(e.cnitool, cmd, e.network, ctr.Path())
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CNI_") && !strings.HasPrefix(kv, "NETCONFPATH=") && !strings.HasPrefix(kv, "CAP_ARGS=") {
			c.Env = append(c.Env, kv)
		}
	}
	c.Env = append(c.Env, "CNI_PATH="+e.path, "NETCONFPATH="+e.confDir, envPlugin+"=1")
	if e.capArgs != "" {
		c.Env = append(c.Env, "CAP_ARGS="+e.capArgs)
	}
	if e.args != "" {
		c.Env = append(c.Env, "CNI_ARGS="+e.args)
	}
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := e.host.Do(c.Run) // fork from a thread inside the host namespace
	if err != nil {
		return out.String(), fmt.Errorf("cnitool %s: %w\nstdout: %s\nstderr: %s", cmd, err, out.String(), errb.String())
	}
	return out.String(), nil
}

// exampleConflist reads examples/drover.conflist (or another example) and
// points its drover entry at the test's daemon, state and bridge.
func exampleConflist(t *testing.T, file, name string, set map[string]any) map[string]any {
	t.Helper()
	_, src, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(src)), "examples", file))
	if err != nil {
		t.Fatal(err)
	}
	var list map[string]any
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	list["name"] = name
	for _, p := range list["plugins"].([]any) {
		pm := p.(map[string]any)
		if pm["type"] == "drover" {
			for k, v := range set {
				pm[k] = v
			}
		}
	}
	return list
}

func hasPacketFilter() bool {
	for _, tool := range []string{"nft", "iptables"} {
		if _, err := exec.LookPath(tool); err == nil {
			return true
		}
	}
	return false
}

// withoutPlugin drops a chained plugin from a conflist.
func withoutPlugin(list map[string]any, typ string) {
	var keep []any
	for _, p := range list["plugins"].([]any) {
		if p.(map[string]any)["type"] != typ {
			keep = append(keep, p)
		}
	}
	list["plugins"] = keep
}

// The example conflist through a real CNI client: drover chained with
// portmap, bandwidth and tuning. ADD gives an address of the block and the
// chained plugins do their part (host port from the underlay, a shaper on
// the host end, a sysctl in the container); CHECK passes and fails once
// the container is tampered with; DEL cleans up and can be repeated;
// STATUS and GC work.
func TestCNIToolChain(t *testing.T) {
	testenv.NeedRoot(t)
	h := newTestHost(t)
	out := testenv.NewNetNS(t, "cnio")
	joinNS(t, h.ns, "drv-up", netip.MustParsePrefix("192.0.2.1/24"), out, "drv-o", netip.MustParsePrefix("192.0.2.2/24"), netip.Addr{})
	list := exampleConflist(t, "drover.conflist", "drvtest", map[string]any{
		"bridge": "drv-br0", "daemonSocket": h.daemon.sock, "ipam": map[string]any{"type": "drover", "dataDir": h.dataDir},
	})
	portmap := hasPacketFilter()
	if !portmap {
		withoutPlugin(list, "portmap")
		t.Log("neither nft(8) nor iptables(8) is installed (apt-get install nftables): portmap left out of the chain")
	}
	e := newCNIEnv(t, h.ns, list)
	e.capArgs = `{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],"bandwidth":{"ingressRate":80000000,"ingressBurst":1000000}}`
	ctr := testenv.NewNetNS(t, "cnic")

	stdout, err := e.run("add", ctr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.run("del", ctr) })
	var res types100.Result
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("ADD result %q: %v", stdout, err)
	}
	addr := resultAddr(t, &res)
	if !netip.MustParsePrefix(testBlock).Contains(addr.Addr()) {
		t.Fatalf("address %v outside the block %s", addr, testBlock)
	}
	if err := ping(t, ctr, netip.MustParseAddr("10.42.3.1")); err != nil {
		t.Fatalf("ping gateway: %v", err)
	}
	if _, err := e.run("check", ctr); err != nil {
		t.Fatalf("CHECK after ADD: %v", err)
	}

	t.Run("tuning", func(t *testing.T) {
		var v []byte
		ctr.Do(func() (err error) { v, err = os.ReadFile("/proc/sys/net/core/somaxconn"); return err })
		if got := strings.TrimSpace(string(v)); got != "1024" {
			t.Fatalf("net.core.somaxconn in the container: got %q, want 1024 (tuning)", got)
		}
	})
	t.Run("bandwidth", func(t *testing.T) {
		nl, err := h.ns.Netlink()
		if err != nil {
			t.Fatal(err)
		}
		defer nl.Close()
		l, err := nl.LinkByName(vethName("drvtest", cnitoolID(ctr), "eth0"))
		if err != nil {
			t.Fatalf("host end: %v", err)
		}
		qs, err := nl.QdiscList(l)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, q := range qs {
			found = found || q.Type() == "tbf"
		}
		if !found {
			t.Fatalf("qdiscs on the host end: %v, want a tbf (bandwidth)", qs)
		}
	})
	t.Run("portmap", func(t *testing.T) {
		if !portmap {
			t.Skip("needs nft(8) or iptables(8) for portmap (apt-get install nftables)")
		}
		ln := listenIn(t, ctr, "0.0.0.0:80")
		got := make(chan netip.Addr, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				got <- netip.Addr{}
				return
			}
			got <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
			c.Close()
		}()
		err := out.Do(func() error {
			c, err := net.DialTimeout("tcp4", "192.0.2.1:8080", 3*time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err != nil {
			t.Fatalf("underlay → host port 8080: %v", err)
		}
		if src := <-got; src != netip.MustParseAddr("192.0.2.2") {
			t.Fatalf("container saw %v, want the underlay client 192.0.2.2", src)
		}
	})

	if _, err := e.run("status", ctr); err != nil {
		t.Fatalf("STATUS: %v", err)
	}
	withNL(t, ctr, func(nl *netlink.Handle) error {
		l, err := nl.LinkByName("eth0")
		if err != nil {
			return err
		}
		return nl.AddrDel(l, &netlink.Addr{IPNet: prefixIPNet(addr)})
	})
	if _, err := e.run("check", ctr); err == nil || !strings.Contains(err.Error(), "lacks address "+addr.String()) {
		t.Fatalf("CHECK after removing the address: got %v, want a failure naming it", err)
	}
	if _, err := e.run("del", ctr); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if v := h.hostVeths(t); len(v) != 0 {
		t.Fatalf("veths after DEL: %v", v)
	}
	if rs, _ := h.store(t).List(); len(rs) != 0 {
		t.Fatalf("reservations after DEL: %v", rs)
	}
	if ips := h.natIPs(t); len(ips) != 0 {
		t.Fatalf("NAT rules after DEL: %v", ips)
	}
	if _, err := e.run("del", ctr); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
	// cnitool gc lists no valid attachment: everything of the network goes.
	ctr2 := testenv.NewNetNS(t, "cnic")
	if _, err := e.run("add", ctr2); err != nil {
		t.Fatal(err)
	}
	if _, err := e.run("gc", ctr2); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if rs, _ := h.store(t).List(); len(rs) != 0 {
		t.Fatalf("reservations after GC: %v", rs)
	}
}

// cnitoolID is the container ID cnitool derives from the netns path.
func cnitoolID(ns *testenv.NetNS) string {
	return cnitoolContainerID(ns.Path())
}

// cnitoolContainerID mirrors cnitool: "cnitool-" and the first 10 bytes
// of the SHA-512 of the namespace path, in hex.
func cnitoolContainerID(path string) string {
	s := sha512.Sum512([]byte(path))
	return fmt.Sprintf("cnitool-%x", s[:10])
}
