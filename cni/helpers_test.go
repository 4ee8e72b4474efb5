package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/drovernet/drover/cni/ipam"
	"github.com/drovernet/drover/testenv"
)

// The test binary doubles as the plugin: run with CNI_COMMAND and
// envPlugin=1 it enters Main, exactly as cmd/drover does, so the entry
// point, skel's dispatch, stdout and the exit status are all real.
const (
	envPlugin = "DROVER_CNI_TEST_PLUGIN"
	// envKillAt makes the plugin SIGKILL itself after the named ADD step
	// (bridge, reserved, veth, configured, nat, done).
	envKillAt = "DROVER_CNI_TEST_KILL_AT"
)

func TestMain(m *testing.M) {
	if os.Getenv("CNI_COMMAND") != "" && os.Getenv(envPlugin) == "1" {
		if at := os.Getenv(envKillAt); at != "" {
			stepHook = func(step string) error {
				if step == at {
					syscall.Kill(os.Getpid(), syscall.SIGKILL)
					select {}
				}
				return nil
			}
		}
		Main("test")
	}
	os.Exit(m.Run())
}

// fakeDaemon serves the daemon's control API on a unix socket: the status
// the plugin reads and the /v1/local notices it sends.
type fakeDaemon struct {
	sock string

	mu      sync.Mutex
	status  map[string]any
	added   []Local
	deleted []string
	local   int // status code for /v1/local; 0: 204
	// chunk answers POST /v1/chunk: "" is 404 (a daemon that does not
	// split LAN ranges), else "first-last".
	chunk    string
	chunkReq []string // network start end size of each request
}

func newFakeDaemon(t testing.TB, block string, mtu int) *fakeDaemon {
	t.Helper()
	gw, _ := ipam.FirstHost(netip.MustParsePrefix(block))
	d := &fakeDaemon{
		sock: filepath.Join(t.TempDir(), "d.sock"),
		status: map[string]any{
			"node": "h1", "encapsulation": "esp", "tun": "drover0", "tun_mtu": mtu, "underlay_mtu": 1500,
			"prefixes": []string{block}, "addresses": []string{gw.String()}, "peers": []any{}, "drops": map[string]int{},
		},
	}
	ln, err := net.Listen("unix", d.sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		d.mu.Lock()
		defer d.mu.Unlock()
		json.NewEncoder(w).Encode(d.status)
	})
	mux.HandleFunc("POST /v1/local", func(w http.ResponseWriter, r *http.Request) {
		var l Local
		if err := json.NewDecoder(r.Body).Decode(&l); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.local != 0 {
			http.Error(w, "refused by test", d.local)
			return
		}
		d.added = append(d.added, l)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /v1/chunk", func(w http.ResponseWriter, r *http.Request) {
		var cr chunkRequest
		if err := json.NewDecoder(r.Body).Decode(&cr); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		d.chunkReq = append(d.chunkReq, fmt.Sprintf("%s %s %s %d", cr.Network, cr.Start, cr.End, cr.ChunkSize))
		first, last, ok := strings.Cut(d.chunk, "-")
		if !ok {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"first": first, "last": last})
	})
	mux.HandleFunc("DELETE /v1/local/{ip}", func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.deleted = append(d.deleted, r.PathValue("ip"))
		w.WriteHeader(http.StatusNoContent)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return d
}

// chunkRequests returns the POST /v1/chunk requests so far.
func (d *fakeDaemon) chunkRequests() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.chunkReq...)
}

func (d *fakeDaemon) notices() (added []Local, deleted []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Local(nil), d.added...), append([]string(nil), d.deleted...)
}

// testHost is a host namespace with a plugin whose host side lives in it.
type testHost struct {
	ns      *testenv.NetNS
	p       *plugin
	daemon  *fakeDaemon
	dataDir string
	base    map[string]any
}

const testBlock = "10.42.3.0/24"

func newTestHost(t *testing.T) *testHost {
	t.Helper()
	ns := testenv.NewNetNS(t, "cnih")
	h := &testHost{
		ns:      ns,
		p:       &plugin{hostNS: ns.Handle(), log: slog.New(slog.NewTextHandler(t.Output(), nil))},
		daemon:  newFakeDaemon(t, testBlock, 1438),
		dataDir: t.TempDir(),
	}
	h.base = map[string]any{
		"cniVersion": "1.1.0", "name": "drvtest", "type": "drover",
		"bridge": "drv-br0", "daemonSocket": h.daemon.sock,
		"ipam": map[string]any{"type": "drover", "dataDir": h.dataDir},
	}
	return h
}

// conf returns the base config with over applied (a nil value deletes).
func (h *testHost) conf(over map[string]any) map[string]any {
	c := maps.Clone(h.base)
	for k, v := range over {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func args(cid string, ctr *testenv.NetNS, conf []byte) *skel.CmdArgs {
	a := &skel.CmdArgs{ContainerID: cid, IfName: "eth0", StdinData: conf}
	if ctr != nil {
		a.Netns = ctr.Path()
	}
	return a
}

func parse(t testing.TB, conf []byte) *config {
	t.Helper()
	c, e := parseConfig(conf)
	if e != nil {
		t.Fatalf("config %s: %v", conf, e)
	}
	return c
}

func (h *testHost) add(t testing.TB, cid string, ctr *testenv.NetNS, conf map[string]any) (*types100.Result, error) {
	t.Helper()
	b := mustJSON(t, conf)
	res, err := h.p.add(context.Background(), parse(t, b), args(cid, ctr, b))
	if err != nil {
		return nil, err
	}
	return res, nil
}

func (h *testHost) mustAdd(t testing.TB, cid string, ctr *testenv.NetNS, conf map[string]any) *types100.Result {
	t.Helper()
	res, err := h.add(t, cid, ctr, conf)
	if err != nil {
		t.Fatalf("ADD %s: %v", cid, err)
	}
	return res
}

// withPrev returns conf with the result as prevResult, as a runtime sends
// it to CHECK and DEL.
func withPrev(t testing.TB, conf map[string]any, res *types100.Result) map[string]any {
	t.Helper()
	var prev map[string]any
	if err := json.Unmarshal(mustJSON(t, res), &prev); err != nil {
		t.Fatal(err)
	}
	c := maps.Clone(conf)
	c["prevResult"] = prev
	return c
}

func (h *testHost) check(t testing.TB, cid string, ctr *testenv.NetNS, conf map[string]any, res *types100.Result) error {
	t.Helper()
	b := mustJSON(t, withPrev(t, conf, res))
	return h.p.check(parse(t, b), args(cid, ctr, b))
}

func (h *testHost) del(t testing.TB, cid string, ctr *testenv.NetNS, conf map[string]any) error {
	t.Helper()
	b := mustJSON(t, conf)
	return h.p.del(context.Background(), parse(t, b), args(cid, ctr, b))
}

func (h *testHost) gc(t testing.TB, conf map[string]any, valid ...string) error {
	t.Helper()
	c := maps.Clone(conf)
	att := []map[string]string{}
	for _, v := range valid {
		att = append(att, map[string]string{"containerID": v, "ifname": "eth0"})
	}
	c["cni.dev/valid-attachments"] = att
	return h.p.gc(context.Background(), parse(t, mustJSON(t, c)))
}

func (h *testHost) store(t testing.TB) *ipam.Store {
	t.Helper()
	s, err := ipam.Open(filepath.Join(h.dataDir, "drvtest"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// links lists the host namespace's link names that start with prefix.
func linksIn(t testing.TB, ns *testenv.NetNS, prefix string) []string {
	t.Helper()
	nl, err := ns.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	ls, err := nl.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range ls {
		if strings.HasPrefix(l.Attrs().Name, prefix) {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

// hostVeths lists the veth host ends ("drv" + hex) in the host namespace.
func (h *testHost) hostVeths(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, n := range linksIn(t, h.ns, "drv") {
		if !strings.HasPrefix(n, "drv-") {
			out = append(out, n)
		}
	}
	return out
}

// natIPs lists the addresses with a masquerade rule in the host namespace.
func (h *testHost) natIPs(t testing.TB) []netip.Addr {
	t.Helper()
	nat, err := openNAT(h.ns.Handle())
	if err != nil {
		t.Fatal(err)
	}
	_, ips, err := nat.rules("")
	if err != nil {
		t.Fatal(err)
	}
	return ips
}

func resultAddr(t testing.TB, res *types100.Result) netip.Prefix {
	t.Helper()
	if len(res.IPs) != 1 {
		t.Fatalf("result has %d IPs, want 1: %+v", len(res.IPs), res)
	}
	p, ok := ipNetPrefix(res.IPs[0].Address)
	if !ok {
		t.Fatalf("bad address %v", res.IPs[0].Address)
	}
	return p
}

func ctrLink(t testing.TB, ctr *testenv.NetNS, name string) netlink.Link {
	t.Helper()
	nl, err := ctr.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	l, err := nl.LinkByName(name)
	if err != nil {
		t.Fatalf("%s in %s: %v", name, ctr.Name, err)
	}
	return l
}

// wantCNIError checks that err is a CNI error with code whose message
// contains want.
func wantCNIError(t testing.TB, err error, code uint, want string) {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("got %v (%T), want a CNI error %d containing %q", err, err, code, want)
	}
	if e.Code != code || !strings.Contains(e.Error(), want) {
		t.Fatalf("got error %d %q, want %d containing %q", e.Code, e.Error(), code, want)
	}
}

// pluginRun is the outcome of one exec of the plugin.
type pluginRun struct {
	stdout, stderr string
	exit           int
	err            *types.Error // decoded from stdout when exit != 0
}

// runPlugin executes bin as a CNI plugin with env (CNI_* variables) and
// stdin, from inside ns when ns is not nil (the plugin's host namespace).
// The caller's own CNI_* variables are not passed on.
func runPlugin(t testing.TB, bin string, ns *testenv.NetNS, env map[string]string, stdin []byte) pluginRun {
	t.Helper()
	cmd := exec.Command(bin)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CNI_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, envPlugin+"=1")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	run := cmd.Run
	if ns != nil {
		run = func() error { return ns.Do(cmd.Run) } // fork from a thread inside ns
	}
	err := run()
	r := pluginRun{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.exit = ee.ExitCode()
		if ee.ExitCode() < 0 {
			r.exit = -int(ee.Sys().(syscall.WaitStatus).Signal())
		}
	default:
		t.Fatalf("run plugin: %v", err)
	}
	if r.exit != 0 && r.exit > 0 {
		var e types.Error
		if json.Unmarshal(stdout.Bytes(), &e) == nil && e.Msg != "" {
			r.err = &e
		}
	}
	return r
}

func (r pluginRun) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.exit, r.stdout, r.stderr)
}

// self is the test binary, which is also a plugin (see TestMain).
func self(t testing.TB) string {
	t.Helper()
	p, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func parseResult(t testing.TB, stdout string) *types100.Result {
	t.Helper()
	var res types100.Result
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("result %q: %v", stdout, err)
	}
	return &res
}
