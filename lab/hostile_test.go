package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
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
	"golang.org/x/sys/unix"
)

// Members with the cluster key and a bad or hostile configuration (issue 9):
// every claim that is not theirs to make is refused by every honest host,
// which keeps its block, its routes and its connected routes, and whose
// containers keep reaching each other; `drover peers` says what was refused
// and why. The hostile members run the real gossip package
// (lab/internal/hostile) in host 4's namespace on the underlay.

// mainRoutes lists h's IPv4 main-table routes as "dst dev proto".
func mainRoutes(t *testing.T, h *Host) []string {
	t.Helper()
	var out []string
	err := withNetlink(h.NS, func(nl *netlink.Handle) error {
		rs, err := nl.RouteList(nil, unix.AF_INET)
		if err != nil {
			return err
		}
		for _, r := range rs {
			dev := fmt.Sprint(r.LinkIndex)
			if l, err := nl.LinkByIndex(r.LinkIndex); err == nil {
				dev = l.Attrs().Name
			}
			dst := "default"
			if r.Dst != nil {
				dst = r.Dst.String()
			}
			out = append(out, fmt.Sprintf("%s dev %s proto %d", dst, dev, r.Protocol))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

var hostileBuild struct {
	path string
	err  error
}

// buildHostile builds lab/internal/hostile once per process.
func buildHostile(t *testing.T) string {
	t.Helper()
	if hostileBuild.path != "" || hostileBuild.err != nil {
		if hostileBuild.err != nil {
			t.Fatal(hostileBuild.err)
		}
		return hostileBuild.path
	}
	_, file, _, _ := runtime.Caller(0)
	out := filepath.Join(t.TempDir(), "hostile")
	cmd := exec.Command("go", "build", "-o", out, "./internal/hostile")
	cmd.Dir = filepath.Dir(file)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		hostileBuild.err = fmt.Errorf("go build hostile: %w\n%s", err, b)
		t.Fatal(hostileBuild.err)
	}
	return out
}

type hostileMember struct {
	Name     string   `json:"name"`
	Port     int      `json:"port"`
	Block    string   `json:"block,omitempty"`
	Since    int64    `json:"since,omitempty"`
	Prefixes []string `json:"prefixes,omitempty"`
}

// startHostile runs the members in ns (bound to addr) until the test ends
// or the returned stop is called (they leave the cluster).
func startHostile(t *testing.T, lab *Lab, ns *NetNS, addr netip.Addr, members []hostileMember) (stop func()) {
	t.Helper()
	bin := buildHostile(t)
	spec := map[string]any{
		"key_file": lab.ClusterKeyFile, "join": []string{netip.AddrPortFrom(lab.Hosts[0].Underlay, lab.Hosts[0].cfg.Cluster.Port).String()},
		"bind": addr.String(), "underlay": netip.AddrPortFrom(addr, 4500).String(),
		"fast": lab.opts.ClusterOptions.Timing == "fast", "members": members,
	}
	b, _ := json.Marshal(spec)
	path := filepath.Join(t.TempDir(), "hostile.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns.Name, bin, "-spec", path)
	cmd.Cancel = func() error { return cmd.Process.Signal(unix.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	var logs strings.Builder
	cmd.Stderr = &logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		<-done
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		ok := false
		for sc.Scan() {
			if sc.Text() == "ready" && !ok {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(stop)
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("hostile members did not start:\n%s", logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("hostile members not ready after 30 s:\n%s", logs.String())
	}
	return stop
}

// peersTable runs `drover peers` against h's daemon.
func peersTable(t *testing.T, lab *Lab, h *Host) string {
	t.Helper()
	out, err := exec.Command(lab.opts.Bin, "peers", "--socket", h.Router.Config.ControlSocket).CombinedOutput()
	if err != nil {
		t.Fatalf("drover peers on %s: %v\n%s", h.Name, err, out)
	}
	return string(out)
}

func TestClusterHostileClaims(t *testing.T) {
	lab := newClusterLab(t, Options{Hosts: 4, Containers: 1, HostOptions: []HostOptions{{}, {}, {}, {Manual: true}}})
	honest := lab.Hosts[:3]
	evilHost := lab.Hosts[3]
	blocks := blocksOf(t, honest)
	before := map[string][]string{}
	for _, h := range honest {
		before[h.Name] = mainRoutes(t, h)
	}
	h1, h2 := honest[0], honest[1]
	c1 := h1.Containers[0].Addr
	now := time.Now()
	members := []hostileMember{
		// The careless fourth host of the issue (its own daemon would
		// refuse this config with exit 2; a member that publishes it
		// anyway is refused by everyone else). 100.64.0.0/24 is fine.
		{Name: "careless", Port: 7950, Prefixes: []string{"100.64.0.0/24", "192.0.2.128/25", "0.0.0.0/1", netip.PrefixFrom(c1, 32).String()}},
		{Name: "outside", Port: 7951, Block: "10.43.7.0/24", Since: now.UnixNano()},
		{Name: "wrongsize", Port: 7952, Block: "10.42.128.0/20", Since: now.UnixNano()},
		{Name: "default", Port: 7953, Prefixes: []string{"0.0.0.0/0"}},
		{Name: "underlay", Port: 7954, Prefixes: []string{underlayNet.String()}},
		{Name: "thief", Port: 7955, Block: blocks[h1.Name].String(), Since: 1},
		{Name: "ownblock", Port: 7956, Prefixes: []string{blocks[h2.Name].String()}},
	}
	want := map[string][]string{ // member → substrings of its refusals
		"careless":  {"192.0.2.128/25: overlaps the underlay subnet", "0.0.0.0/1: broader than /8", netip.PrefixFrom(c1, 32).String() + ": overlaps"},
		"outside":   {"outside cluster.cidr"},
		"wrongsize": {"not a /24 block"},
		"default":   {"0.0.0.0/0: broader than /8"},
		"underlay":  {"overlaps the underlay subnet"},
		"thief":     {"implausible block_since"},
		"ownblock":  {blocks[h2.Name].String() + ": overlaps"},
	}
	stop := startHostile(t, lab, evilHost.NS, evilHost.Underlay, members)

	// Every honest host lists every hostile member with its refusals.
	err := Poll(t.Context(), 30*time.Second, 200*time.Millisecond, func() error {
		for _, h := range honest {
			v, err := h.Router.Cluster()
			if err != nil {
				return err
			}
			for name, subs := range want {
				m := v.Member(name)
				if m == nil {
					return fmt.Errorf("%s does not list %s yet", h.Name, name)
				}
				all := strings.Join(m.Refused, "\n")
				for _, s := range subs {
					if !strings.Contains(all, s) {
						return fmt.Errorf("%s: %s's refusals %q lack %q", h.Name, name, m.Refused, s)
					}
				}
			}
			if r := v.RouteTo(netip.MustParsePrefix("100.64.0.0/24")); r == nil || r.Peer != "careless" {
				return fmt.Errorf("%s: no route for careless's legitimate 100.64.0.0/24", h.Name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("refusals: %v\n%s", err, lab.ClusterViews())
	}
	t.Logf("drover peers on h1 with hostile members present:\n%s", peersTable(t, lab, h1))

	// Routes: exactly one more on each host, the legitimate 100.64.0.0/24
	// through the TUN; every connected route where it was.
	for _, h := range honest {
		got := mainRoutes(t, h)
		wantRoutes := append(slices.Clone(before[h.Name]), fmt.Sprintf("100.64.0.0/24 dev %s proto 68", h.cfg.Node.TUN))
		slices.Sort(wantRoutes)
		if !slices.Equal(got, wantRoutes) {
			t.Errorf("%s routes with hostile members:\ngot  %q\nwant %q", h.Name, got, wantRoutes)
		}
	}
	if got := blocksOf(t, honest); !maps.Equal(got, blocks) {
		t.Errorf("blocks with hostile members: got %v, want %v (kept)", got, blocks)
	}
	for _, a := range honest {
		for _, b := range honest {
			if a != b {
				waitPing(t, a.Containers[0], b.Containers[0], 10*time.Second)
			}
		}
	}

	// They leave: still every route as before, connected ones included.
	stop()
	err = Poll(t.Context(), 30*time.Second, 200*time.Millisecond, func() error {
		for _, h := range honest {
			if got := mainRoutes(t, h); !slices.Equal(got, before[h.Name]) {
				return fmt.Errorf("%s routes after the hostile members left:\ngot  %q\nwant %q", h.Name, got, before[h.Name])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range honest {
		for _, b := range honest {
			if a != b {
				waitPing(t, a.Containers[0], b.Containers[0], 10*time.Second)
			}
		}
	}
}

// A host that returns under a known name with a different identity key
// (its state_dir wiped, or an impostor with the cluster key) is refused by
// every other host, and shown; `drover forget` on them lets it in again.
func TestClusterIdentityChanged(t *testing.T) {
	lab := newClusterLab(t, Options{Hosts: 3, Containers: 1})
	h1, h2, h3 := lab.Hosts[0], lab.Hosts[1], lab.Hosts[2]
	blk := blocksOf(t, lab.Hosts)[h3.Name]
	if err := lab.StopRouter(h3); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(h3.StateDir(), "identity.key")); err != nil {
		t.Fatal(err)
	}
	if err := lab.startRouter(t.Context(), h3, lab.seedsFor(h3), false); err != nil {
		t.Fatal(err)
	}
	err := Poll(t.Context(), 30*time.Second, 200*time.Millisecond, func() error {
		for _, h := range []*Host{h1, h2} {
			v, err := h.Router.Cluster()
			if err != nil {
				return err
			}
			m := v.Member(h3.Name)
			if m == nil || m.State != "alive" || !strings.Contains(m.Note, "differs from the one pinned") {
				return fmt.Errorf("%s's view of h3: %+v, want alive and refused for its identity key", h.Name, m)
			}
			if v.RouteTo(blk) != nil {
				return fmt.Errorf("%s routes h3's block %v", h.Name, blk)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, lab.ClusterViews())
	}
	for _, h := range []*Host{h1, h2} {
		if slices.Contains(kernelRoutes(t, h), blk.String()) {
			t.Errorf("%s has a kernel route for h3's block %v", h.Name, blk)
		}
	}
	t.Logf("drover peers on h1 after h3 returned with another identity key:\n%s", peersTable(t, lab, h1))

	for _, h := range []*Host{h1, h2} {
		out, err := exec.Command(lab.opts.Bin, "forget", "--socket", h.Router.Config.ControlSocket, h3.Name).CombinedOutput()
		if err != nil {
			t.Fatalf("drover forget h3 on %s: %v\n%s", h.Name, err, out)
		}
	}
	if err := lab.WaitConverged(t.Context(), lab.Hosts, 30*time.Second); err != nil {
		t.Fatalf("after forget: %v\n%s", err, lab.ClusterViews())
	}
	waitMatrix(t, lab, 20*time.Second)
}
