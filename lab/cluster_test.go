package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/gossip/blocks"
	"github.com/drovernet/drover/testenv"
)

// Cluster-mode integration tests (issue 3, "Done when"). Each prints the
// figures the issue asks for with t.Logf; the lab is torn down and checked
// for leftovers (namespaces, links, router processes) by t.Cleanup.

// newClusterLab is newTestLab in cluster mode, plus a check that no router
// process outlives the lab.
func newClusterLab(t *testing.T, opts Options) *Lab {
	t.Helper()
	testenv.NeedRoot(t)
	opts.Cluster = true
	opts.Dir = t.TempDir()
	dir := opts.Dir
	t.Cleanup(func() {
		// Registered first, so it runs after the lab's own Close.
		if pids := processesWith(t, dir); len(pids) > 0 {
			t.Errorf("router processes still running after Close: %v", pids)
		}
	})
	lab := newTestLab(t, opts)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster views:\n%s", lab.ClusterViews())
			for _, h := range lab.Hosts {
				t.Logf("router %s membership and peer events:\n%s", h.Name, logEvents(lab, h, 40))
			}
		}
	})
	if !lab.ConvergedAt.IsZero() {
		t.Logf("cluster converged %v after the last router started:\n%s",
			lab.ConvergedAt.Sub(lab.lastStart()).Round(time.Millisecond), lab.ClusterViews())
	}
	return lab
}

// logEvents returns the last n lines of h's router logs (all runs) about
// members, peers, routes, blocks and keys.
func logEvents(lab *Lab, h *Host, n int) string {
	files, _ := filepath.Glob(filepath.Join(lab.Dir, h.Name+"-*.log"))
	files = append(files, filepath.Join(lab.Dir, h.Name+".log"))
	var lines []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			for _, k := range []string{"member", "peer", "route", "block", "rotated", "Refuting", "joined", "left"} {
				if strings.Contains(l, k) {
					lines = append(lines, l)
					break
				}
			}
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitMatrix polls the reachability matrix of ctrs (nil: every container)
// until it is complete, and returns when that was first seen.
func waitMatrix(t *testing.T, lab *Lab, timeout time.Duration) time.Time {
	t.Helper()
	var last Matrix
	err := Poll(t.Context(), timeout, 100*time.Millisecond, func() error {
		m, err := lab.Reachability(t.Context())
		if err != nil {
			return err
		}
		last = m
		if !m.OK() {
			ok, total := m.Count()
			return fmt.Errorf("%d/%d pairs reachable", ok, total)
		}
		return nil
	})
	at := time.Now()
	if err != nil {
		t.Fatalf("full reachability: %v\n%s\nviews:\n%s", err, last, lab.ClusterViews())
	}
	t.Logf("reachability:\n%s", last)
	return at
}

// waitPing polls until from reaches to (a 1 s echo timeout per try) and
// returns when it did.
func waitPing(t *testing.T, from, to *Container, timeout time.Duration) time.Time {
	t.Helper()
	err := Poll(t.Context(), timeout, 10*time.Millisecond, func() error {
		_, err := from.Ping(t.Context(), to.Addr, time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("%s → %s (%s): %v", from.Ref, to.Ref, to.Addr, err)
	}
	return time.Now()
}

// TestCluster5Join: five hosts given nothing but the cluster key and host
// 1's address reach full container-to-container reachability.
func TestCluster5Join(t *testing.T) {
	lab := newClusterLab(t, Options{Hosts: 5, Containers: 2})
	last := lab.lastStart()
	at := waitMatrix(t, lab, 30*time.Second)
	for _, h := range lab.Hosts {
		if got := h.cfg.Cluster.Join; h.Index > 1 && (len(got) != 1 || got[0] != "192.0.2.1") {
			t.Errorf("host %s joined through %v, want [192.0.2.1]", h.Name, got)
		}
		if len(h.cfg.Node.Prefixes) != 0 || len(h.cfg.Peers) != 0 {
			t.Errorf("host %s has prefixes %v and %d peers configured, want none", h.Name, h.cfg.Node.Prefixes, len(h.cfg.Peers))
		}
	}
	// The router's own status names the block and the TUN address.
	for _, h := range lab.Hosts {
		st, err := h.Router.Status()
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{h.Prefix.String()}; fmt.Sprint(st.Prefixes) != fmt.Sprint(want) {
			t.Errorf("%s: /v1/status prefixes %v, want %v (the claimed block)", h.Name, st.Prefixes, want)
		}
		if want := []string{h.Gateway.String()}; fmt.Sprint(st.Addresses) != fmt.Sprint(want) {
			t.Errorf("%s: /v1/status addresses %v, want %v (the block's first address)", h.Name, st.Addresses, want)
		}
	}
	t.Logf("RESULT 5-host join: cluster converged %v and full reachability (%d containers, %d pairs) %v after the last router start",
		lab.ConvergedAt.Sub(last).Round(time.Millisecond), len(lab.Containers()), len(lab.Containers())*(len(lab.Containers())-1),
		at.Sub(last).Round(time.Millisecond))
	checkTransfer(t, lab, ContainerRef{1, 1}, ContainerRef{5, 2})
	checkDrops(t, lab)
}

// blocksOf reads every running host's block.
func blocksOf(t *testing.T, hosts []*Host) map[string]netip.Prefix {
	t.Helper()
	out := map[string]netip.Prefix{}
	for _, h := range hosts {
		b, err := h.Block()
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = b
	}
	return out
}

// checkViewsAgree checks that every host's /v1/cluster lists every host
// with the block that host routes as its own, and that no two hosts share
// a block.
func checkViewsAgree(t *testing.T, lab *Lab, blocks map[string]netip.Prefix) {
	t.Helper()
	seen := map[netip.Prefix]string{}
	for name, b := range blocks {
		if o, dup := seen[b]; dup {
			t.Errorf("hosts %s and %s both have block %s", o, name, b)
		}
		seen[b] = name
	}
	for _, h := range lab.Running() {
		v, err := h.Router.Cluster()
		if err != nil {
			t.Fatal(err)
		}
		if v.Block != blocks[h.Name].String() {
			t.Errorf("%s: own block %q in its view, %s in its status", h.Name, v.Block, blocks[h.Name])
		}
		for name, b := range blocks {
			m := v.Member(name)
			if m == nil {
				t.Errorf("%s does not list %s", h.Name, name)
				continue
			}
			if m.Block != b.String() || m.State != memberAlive {
				t.Errorf("%s lists %s as %s with block %q, want alive with %s", h.Name, name, m.State, m.Block, b)
			}
		}
	}
}

// TestCluster10Blocks: ten hosts started at the same moment end with ten
// distinct blocks on which every view agrees, and each keeps its block
// across a restart. In "spread" every host starts afresh: the first
// choices, hashed from the names, do not collide in 10.42.0.0/16. In
// "contested" each even host restarts from a saved claim (older) on the
// block its odd neighbour chooses first, so five pairs claim the same block
// at the same moment and every host must resolve each pair alike.
func TestCluster10Blocks(t *testing.T) {
	t.Run("spread", func(t *testing.T) { testCluster10Blocks(t, false) })
	t.Run("contested", func(t *testing.T) { testCluster10Blocks(t, true) })
}

func testCluster10Blocks(t *testing.T, contested bool) {
	opts := Options{Hosts: 10, Containers: 1}
	for range opts.Hosts {
		opts.HostOptions = append(opts.HostOptions, HostOptions{Manual: true})
	}
	lab := newClusterLab(t, opts)
	cidr := netip.MustParsePrefix(config.DefaultClusterCIDR)
	want := map[string]netip.Prefix{} // contested: the older claims must win
	if contested {
		for i := 1; i < len(lab.Hosts); i += 2 {
			odd, even := lab.Hosts[i-1], lab.Hosts[i]
			b, ok := blocks.Choose(cidr, config.DefaultBlockBits, odd.Name, nil)
			if !ok {
				t.Fatal("no block to choose")
			}
			if err := os.MkdirAll(even.StateDir(), 0o700); err != nil {
				t.Fatal(err)
			}
			c := blocks.Claim{Node: even.Name, Block: b, Since: time.Now().Add(-time.Hour).UnixNano()}
			if err := blocks.Open(filepath.Join(even.StateDir(), "block.json")).Save(c); err != nil {
				t.Fatal(err)
			}
			want[even.Name] = b
			t.Logf("%s starts with a saved claim on %s, the first choice of %s", even.Name, b, odd.Name)
		}
	}
	if err := lab.StartRouters(t.Context(), lab.Hosts); err != nil {
		t.Fatal(err)
	}
	converged := lab.ConvergedAt
	var first, last time.Time
	for _, h := range lab.Hosts {
		if first.IsZero() || h.Started.Before(first) {
			first = h.Started
		}
		if h.Started.After(last) {
			last = h.Started
		}
	}
	blocks := blocksOf(t, lab.Hosts)
	moved := 0
	for _, h := range lab.Hosts {
		b, err := os.ReadFile(filepath.Join(lab.Dir, h.Name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		moved += strings.Count(string(b), "block lost to an earlier claim")
	}
	t.Logf("RESULT 10 hosts started within %v (contested %v): converged %v after the last start; %d claims lost a conflict and moved; blocks %v",
		last.Sub(first).Round(time.Millisecond), contested, converged.Sub(last).Round(time.Millisecond), moved, blocks)
	checkViewsAgree(t, lab, blocks)
	for name, b := range want {
		if blocks[name] != b {
			t.Errorf("%s: block %s, want %s (its saved, older claim)", name, blocks[name], b)
		}
	}
	for name, b := range blocks {
		if !cidr.Contains(b.Addr()) || b.Bits() != config.DefaultBlockBits {
			t.Errorf("%s: block %s is not a /%d of %s", name, b, config.DefaultBlockBits, cidr)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Restart every router, half at a time, so each wave rejoins through
	// the hosts of the other.
	for _, wave := range [][]*Host{
		{lab.Hosts[0], lab.Hosts[2], lab.Hosts[4], lab.Hosts[6], lab.Hosts[8]},
		{lab.Hosts[1], lab.Hosts[3], lab.Hosts[5], lab.Hosts[7], lab.Hosts[9]},
	} {
		start := time.Now()
		if err := lab.RestartAll(t.Context(), wave); err != nil {
			t.Fatalf("restart: %v", err) // ErrBlockChanged when a host came back with another block
		}
		if err := lab.WaitConverged(t.Context(), lab.Hosts, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, h := range wave {
			names = append(names, h.Name)
		}
		t.Logf("RESULT restarted %s at once: each kept its block, converged again %v after the stop", strings.Join(names, " "), time.Since(start).Round(time.Millisecond))
	}
	after := blocksOf(t, lab.Hosts)
	for name, b := range blocks {
		if after[name] != b {
			t.Errorf("%s: block %s before the restarts, %s after", name, b, after[name])
		}
	}
	checkViewsAgree(t, lab, after)
	waitMatrix(t, lab, 20*time.Second)
}

// routesWithout polls every host in hosts until none routes prefix, and
// returns how long after since each took.
func waitWithdrawn(t *testing.T, hosts []*Host, prefix netip.Prefix, since time.Time, timeout time.Duration) map[string]time.Duration {
	t.Helper()
	took := map[string]time.Duration{}
	err := Poll(t.Context(), timeout, 20*time.Millisecond, func() error {
		var pending []string
		for _, h := range hosts {
			if _, done := took[h.Name]; done {
				continue
			}
			v, err := h.Router.Cluster()
			if err != nil {
				return err
			}
			st, err := h.Router.Status()
			if err != nil {
				return err
			}
			peer := false
			for _, p := range st.Peers {
				for _, q := range p.Prefixes {
					peer = peer || q == prefix.String()
				}
			}
			if v.RouteTo(prefix) == nil && !peer {
				took[h.Name] = time.Since(since)
				continue
			}
			pending = append(pending, h.Name)
		}
		if len(pending) > 0 {
			return fmt.Errorf("%v still route %s", pending, prefix)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return took
}

func maxDuration(m map[string]time.Duration) time.Duration {
	var d time.Duration
	for _, v := range m {
		d = max(d, v)
	}
	return d
}

// kernelRoutes lists the IPv4 routes through the TUN device in h's
// namespace, as "prefix" strings.
func kernelRoutes(t *testing.T, h *Host) []string {
	t.Helper()
	var out []string
	err := withNetlink(h.NS, func(nl *netlink.Handle) error {
		link, err := nl.LinkByName(h.cfg.Node.TUN)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				return nil
			}
			return err
		}
		rs, err := nl.RouteList(link, unix.AF_INET)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Dst != nil {
				out = append(out, r.Dst.String())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestClusterKillAndReturn: a SIGKILLed router's routes are withdrawn on
// every other host and come back with it; a host cut off the underlay long
// enough to be declared dead heals when the link returns.
func TestClusterKillAndReturn(t *testing.T) {
	lab := newClusterLab(t, Options{Hosts: 4, Containers: 1})
	capture := startCapture(t, lab)
	waitMatrix(t, lab, 20*time.Second)
	victim := lab.Hosts[2]
	others := []*Host{lab.Hosts[0], lab.Hosts[1], lab.Hosts[3]}
	block := victim.Prefix

	killed := time.Now()
	if err := lab.KillRouter(victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: SIGKILL to %s", killed.Format("15:04:05.000"), victim.Name)
	took := waitWithdrawn(t, others, block, killed, 20*time.Second)
	t.Logf("RESULT SIGKILL of %s: its block %s withdrawn on every other host within %v (%v)", victim.Name, block, maxDuration(took).Round(time.Millisecond), took)
	for _, h := range others {
		for _, r := range kernelRoutes(t, h) {
			if r == block.String() {
				t.Errorf("%s: kernel route to %s through the TUN still present", h.Name, block)
			}
		}
	}
	// The survivors still reach each other.
	waitPing(t, lab.Hosts[0].Containers[0], lab.Hosts[3].Containers[0], 5*time.Second)

	started := time.Now()
	t.Logf("%s: starting %s again", started.Format("15:04:05.000"), victim.Name)
	if err := lab.StartRouter(t.Context(), victim); err != nil {
		t.Fatal(err) // ErrBlockChanged if it came back with another block
	}
	back := waitPing(t, lab.Hosts[0].Containers[0], victim.Containers[0], 20*time.Second)
	if err := lab.WaitConverged(t.Context(), nil, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	full := waitMatrix(t, lab, 20*time.Second)
	t.Logf("RESULT %s restarted after SIGKILL with its block %s: h1c1 reached it %v after the start, full reachability after %v",
		victim.Name, block, back.Sub(started).Round(time.Millisecond), full.Sub(started).Round(time.Millisecond))

	// Cut the victim off the underlay.
	cut := time.Now()
	if err := lab.SetUplink(victim, false); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %s's underlay link cut", cut.Format("15:04:05.000"), victim.Name)
	restored := false
	t.Cleanup(func() {
		if !restored {
			lab.SetUplink(victim, true)
		}
	})
	took = waitWithdrawn(t, others, block, cut, 30*time.Second)
	t.Logf("RESULT underlay link of %s cut: its block withdrawn on every other host within %v (%v)", victim.Name, maxDuration(took).Round(time.Millisecond), took)
	if err := lab.Converged(others); err != nil {
		t.Errorf("the others after the cut: %v", err)
	}
	if _, err := lab.Hosts[0].Containers[0].Ping(t.Context(), victim.Containers[0].Addr, 500*time.Millisecond); err == nil {
		t.Errorf("h1c1 reached %s across a cut link", victim.Containers[0].Ref)
	}
	// Stay cut a little longer than the withdrawal took, so the victim
	// too has declared the others dead.
	err := Poll(t.Context(), 30*time.Second, 50*time.Millisecond, func() error {
		v, err := victim.Router.Cluster()
		if err != nil {
			return err
		}
		if len(v.Routes) > 0 {
			return fmt.Errorf("%s still routes %v", victim.Name, v.Routes)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("RESULT %s withdrew every route %v after the cut", victim.Name, time.Since(cut).Round(time.Millisecond))

	healStart := time.Now()
	if err := lab.SetUplink(victim, true); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %s's underlay link restored", healStart.Format("15:04:05.000"), victim.Name)
	restored = true
	if err := lab.WaitConverged(t.Context(), nil, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	converged := time.Now()
	full = waitMatrix(t, lab, 20*time.Second)
	t.Logf("RESULT link of %s restored after %v cut: converged %v later, full reachability %v later",
		victim.Name, healStart.Sub(cut).Round(time.Millisecond), converged.Sub(healStart).Round(time.Millisecond), full.Sub(healStart).Round(time.Millisecond))
	checkCapture(t, capture)
	checkDropsExcept(t, lab)
}

// startCapture captures the lab's ESP packets until checkCapture (or the
// end of the test).
func startCapture(t *testing.T, lab *Lab) *ESPCapture {
	t.Helper()
	c, err := lab.CaptureESP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop() })
	return c
}

// checkCapture stops the capture and fails on any (SA, seq) pair seen
// twice: a sender that reused a sequence number under the same key (for
// AES-GCM, a reused nonce).
func checkCapture(t *testing.T, c *ESPCapture) CaptureResult {
	t.Helper()
	res, err := c.Stop()
	if err != nil {
		t.Fatalf("capture: %v", err)
	}
	t.Logf("RESULT capture: %s", res)
	if len(res.Duplicates) != 0 {
		t.Errorf("%d (SA, seq) pairs seen more than once on the wire:\n%s", len(res.Duplicates), strings.Join(res.DuplicateList(20), "\n"))
	}
	if res.KernelDrops != 0 {
		t.Errorf("the capture lost %d packets: the duplicate check is incomplete", res.KernelDrops)
	}
	return res
}

// checkDropsExcept is checkDrops for labs whose routers restarted or lost
// peers: packets in flight then meet no SA (unknown_spi) or no route, and
// those are not errors; authentication failures, replays and spoofed
// sources still are.
func checkDropsExcept(t *testing.T, lab *Lab) {
	t.Helper()
	for _, h := range lab.Running() {
		st, err := h.Router.Status()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range []string{"malformed", "truncated", "auth", "replay", "next_header", "spoofed_source", "bad_vxlan", "too_big"} {
			if n := st.Drops[r]; n != 0 {
				t.Errorf("router %s: got %d %s drops, want 0", h.Name, n, r)
			}
		}
	}
	t.Logf("router counters:\n%s", lab.Counters())
}

// TestClusterRotation: continuous traffic both ways between two containers
// across at least three key rotations and across a restart of one router;
// a capture of the underlay checks that no (SA, sequence number) pair is
// ever used twice.
func TestClusterRotation(t *testing.T) {
	const (
		rotation = 3 * time.Second
		rate     = 250 // datagrams per second, each way
	)
	lab := newClusterLab(t, Options{Hosts: 2, Containers: 1, ClusterOptions: ClusterOptions{
		RotationInterval: rotation, SwitchDelay: 750 * time.Millisecond, Grace: 3 * time.Second,
	}})
	h1, h2 := lab.Hosts[0], lab.Hosts[1]
	capture := startCapture(t, lab)
	epochs := func() (uint32, uint32) {
		t.Helper()
		v1, err := h1.Router.Cluster()
		if err != nil {
			t.Fatal(err)
		}
		v2, err := h2.Router.Cluster()
		if err != nil {
			t.Fatal(err)
		}
		return v1.Epoch, v2.Epoch
	}
	e1, e2 := epochs()
	fwd, err := lab.StartStream(t.Context(), ContainerRef{1, 1}, ContainerRef{2, 1}, rate)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := lab.StartStream(t.Context(), ContainerRef{2, 1}, ContainerRef{1, 1}, rate)
	if err != nil {
		fwd.Stop(0)
		t.Fatal(err)
	}
	streams := []*Stream{fwd, rev}
	stopped := false
	stopAll := func() {
		if !stopped {
			stopped = true
			for _, s := range streams {
				s.Stop(time.Second)
			}
		}
	}
	t.Cleanup(stopAll)
	begin := time.Now()

	// Phase 1: rotations only, until both hosts rotated three times, plus
	// a margin for the last switch and grace period to pass.
	err = Poll(t.Context(), 6*rotation, 100*time.Millisecond, func() error {
		a, b := epochs()
		if a < e1+3 || b < e2+3 {
			return fmt.Errorf("epochs h1 %d→%d, h2 %d→%d", e1, a, e2, b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	a1, a2 := epochs()
	rotated := time.Now()
	// Traffic keeps flowing past the last switch (switch_delay), so the
	// window holds whole rotations.
	trafficFor(t, rotated.Add(800*time.Millisecond))
	phase1End := time.Now()
	t.Logf("phase 1: %v, epochs h1 %d→%d, h2 %d→%d", phase1End.Sub(begin).Round(time.Millisecond), e1, a1, e2, a2)
	// The routers' drops of the rotation phase, before h2's restart resets
	// its counters: where a datagram lost during rotations went.
	var phase1Drops strings.Builder
	for _, h := range lab.Hosts {
		if st, err := h.Router.Status(); err == nil {
			fmt.Fprintf(&phase1Drops, "  %s drops %v, rx %d, tx %d\n", h.Name, st.Drops, st.RxPackets, st.TxPackets)
		}
	}

	// Phase 2: restart h2's router.
	restart := time.Now()
	if err := lab.RestartRouter(t.Context(), h2); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	err = Poll(t.Context(), 20*time.Second, 10*time.Millisecond, func() error {
		for _, s := range streams {
			if !s.ArrivedSince(up) {
				return fmt.Errorf("%s → %s: nothing sent since the restart arrived", s.From, s.To)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("traffic did not resume after the restart: %v\nviews:\n%s", err, lab.ClusterViews())
	}
	resumed := time.Now()
	// Phase 3: steady again, then one more rotation with the restarted router.
	_, b0 := epochs()
	err = Poll(t.Context(), 3*rotation, 100*time.Millisecond, func() error {
		if _, b := epochs(); b < b0+1 {
			return fmt.Errorf("h2 epoch %d, want > %d", b, b0)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	trafficFor(t, resumed.Add(time.Second))
	end := time.Now()
	stopAll()
	res := checkCapture(t, capture)

	t.Logf("RESULT restart of h2: router back %v after the stop, traffic both ways again %v after the stop",
		up.Sub(restart).Round(time.Millisecond), resumed.Sub(restart).Round(time.Millisecond))
	for _, s := range streams {
		rot := s.Window(begin, phase1End)
		rst := s.Window(phase1End, end)
		all := s.Window(time.Time{}, time.Time{})
		t.Logf("RESULT %s → %s at %d/s: during %d+%d rotations (%v): %s", s.From, s.To, rate, a1-e1, a2-e2, phase1End.Sub(begin).Round(time.Millisecond), rot)
		t.Logf("RESULT %s → %s across the restart of h2 and one more rotation: %s", s.From, s.To, rst)
		t.Logf("RESULT %s → %s whole run: %s", s.From, s.To, all)
		// Rotation must lose nothing: the receiver installs the new
		// inbound SA as soon as it learns the key, the sender switches a
		// switch_delay later, and the old SA stays for the grace period.
		if rot.Lost != 0 {
			t.Errorf("%s → %s: %d datagrams lost during rotations (longest gap %v at %s), want 0; router counters after the rotations:\n%skernel drop counters:\n%s",
				s.From, s.To, rot.Lost, rot.LongestGap, rot.GapStart.Format("15:04:05.000"), phase1Drops.String(), lab.KernelDrops())
		}
		if all.Duplicates != 0 {
			t.Errorf("%s → %s: %d datagrams delivered twice", s.From, s.To, all.Duplicates)
		}
	}

	// Every datagram of both streams crossed the underlay once as ESP.
	var sent int
	for _, s := range streams {
		sent += s.Window(time.Time{}, time.Time{}).Received
	}
	if res.Packets < sent {
		t.Errorf("captured %d ESP packets, but %d datagrams were delivered across hosts", res.Packets, sent)
	}
	// Each rotation (by either end) gives each direction a new SA.
	for _, d := range [][2]*Host{{h1, h2}, {h2, h1}} {
		spis := res.SPIs(d[0].Underlay, d[1].Underlay)
		if want := 4; len(spis) < want {
			t.Errorf("%s → %s used %d SAs, want >= %d (3 rotations and a restart)", d[0].Name, d[1].Name, len(spis), want)
		}
	}
	checkDropsExcept(t, lab)
}

// trafficFor lets the streams run until t: the measurement is of traffic
// over a span of time, so this wait is the test, not a guess at a state.
func trafficFor(t *testing.T, until time.Time) {
	t.Helper()
	select {
	case <-t.Context().Done():
		t.Fatal(t.Context().Err())
	case <-time.After(time.Until(until)):
	}
}

// TestClusterWrongKey: a host with another cluster key is never admitted,
// changes no route anywhere, and its containers are unreachable.
func TestClusterWrongKey(t *testing.T) {
	wrong := make([]byte, 32)
	for i := range wrong {
		wrong[i] = byte(i + 1)
	}
	lab := newClusterLab(t, Options{Hosts: 3, Containers: 1, HostOptions: []HostOptions{{}, {}, {Manual: true, ClusterKey: wrong}}})
	good := []*Host{lab.Hosts[0], lab.Hosts[1]}
	intruder := lab.Hosts[2]
	type snapshot struct {
		routes []ClusterRoute
		kernel []string
		peers  int
	}
	snap := func() map[string]snapshot {
		out := map[string]snapshot{}
		for _, h := range good {
			v, err := h.Router.Cluster()
			if err != nil {
				t.Fatal(err)
			}
			st, err := h.Router.Status()
			if err != nil {
				t.Fatal(err)
			}
			out[h.Name] = snapshot{v.Routes, kernelRoutes(t, h), len(st.Peers)}
		}
		return out
	}
	before := snap()

	sink, err := intruder.Containers[0].ListenUDP(40500)
	if err == nil {
		// The container has no address yet: bound to any, it will
		// receive whatever reaches it once it has one.
		t.Cleanup(sink.Close)
	} else {
		t.Fatal(err)
	}
	start := time.Now()
	// An intruder that claims a block alone (cluster.bootstrap), so that
	// its container has an address to be reached at.
	intruder.cfg.Cluster.Bootstrap = true
	if err := lab.StartRouter(t.Context(), intruder); err != nil {
		t.Fatal(err)
	}
	t.Logf("intruder %s claimed %s on its own", intruder.Name, intruder.Prefix)

	// For a while, gossip has every chance to act: the intruder keeps
	// trying its seed (h1) and reconnecting. Nothing may change.
	// 5 s: memberlist (fast timing) retries the seed every second and
	// gossips every 50 ms, so the intruder has had dozens of chances.
	const watch = 5 * time.Second
	payload := []byte("drv-wrong-key-probe")
	var sent int
	err = Poll(t.Context(), watch+time.Second, 200*time.Millisecond, func() error {
		for _, h := range good {
			v, err := h.Router.Cluster()
			if err != nil {
				t.Fatal(err)
			}
			if m := v.Member(intruder.Name); m != nil {
				t.Fatalf("%s lists the intruder: %+v", h.Name, *m)
			}
			if len(v.Members) != len(good) {
				t.Fatalf("%s lists %d members, want %d: %s", h.Name, len(v.Members), len(good), v)
			}
		}
		now := snap()
		for name, s := range now {
			b := before[name]
			if fmt.Sprint(s.routes) != fmt.Sprint(b.routes) || fmt.Sprint(s.kernel) != fmt.Sprint(b.kernel) || s.peers != b.peers {
				t.Fatalf("%s changed: routes %v → %v, kernel %v → %v, peers %d → %d", name, b.routes, s.routes, b.kernel, s.kernel, b.peers, s.peers)
			}
		}
		v, err := intruder.Router.Cluster()
		if err != nil {
			t.Fatal(err)
		}
		if len(v.Members) != 1 || len(v.Routes) != 0 {
			t.Fatalf("intruder sees %s, want only itself and no routes", v)
		}
		// Traffic towards the intruder's block from a good container.
		dst := netip.AddrPortFrom(intruder.Containers[0].Addr, 40500)
		if err := sendUDP(lab.Hosts[0].Containers[0], dst, payload); err == nil {
			sent++
		}
		if time.Since(start) < watch {
			return errors.New("still watching")
		}
		return nil
	})
	if err != nil && !strings.Contains(err.Error(), "still watching") {
		t.Fatal(err)
	}
	if _, err := lab.Hosts[0].Containers[0].Ping(t.Context(), intruder.Containers[0].Addr, time.Second); err == nil && !lab.Hosts[0].Prefix.Contains(intruder.Containers[0].Addr) && !lab.Hosts[1].Prefix.Contains(intruder.Containers[0].Addr) {
		t.Errorf("h1c1 reached the intruder's container %s", intruder.Containers[0].Addr)
	}
	if _, err := intruder.Containers[0].Ping(t.Context(), lab.Hosts[0].Containers[0].Addr, time.Second); err == nil {
		t.Errorf("the intruder's container reached h1c1")
	}
	if n := sink.Count(payload); n != 0 {
		t.Errorf("the intruder's container received %d of %d datagrams from h1c1, want 0", n, sent)
	}
	st, err := intruder.Router.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Peers) != 0 || st.RxPackets != 0 {
		t.Errorf("intruder: %d peers, %d packets received, want none", len(st.Peers), st.RxPackets)
	}
	t.Logf("RESULT wrong key: %s watched for %v: never a member on %s or %s, routes unchanged (%v), %d datagrams to its container, none arrived",
		intruder.Name, time.Since(start).Round(time.Millisecond), good[0].Name, good[1].Name, before[good[0].Name].routes, sent)
	// The good hosts are unharmed.
	waitPing(t, good[0].Containers[0], good[1].Containers[0], 5*time.Second)
	checkDropsExcept(t, lab)
}

// sendUDP sends one datagram from a container.
func sendUDP(c *Container, dst netip.AddrPort, payload []byte) error {
	return c.NS.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, payload, 0, &unix.SockaddrInet4{Addr: dst.Addr().As4(), Port: int(dst.Port())})
	})
}

// TestClusterSpoofedSource: a member that seals packets whose inner source
// is outside its own block has them dropped by the receiver and counted as
// spoofed_source; they never reach the container.
func TestClusterSpoofedSource(t *testing.T) {
	lab := newClusterLab(t, Options{Hosts: 3, Containers: 1})
	h1, h2, h3 := lab.Hosts[0], lab.Hosts[1], lab.Hosts[2]
	target := h2.Containers[0]
	const port = 40600
	sink, err := target.ListenUDP(port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sink.Close)
	dst := netip.AddrPortFrom(target.Addr, port)
	waitPing(t, h1.Containers[0], target, 10*time.Second)

	spoofed := func() uint64 {
		t.Helper()
		st, err := h2.Router.Status()
		if err != nil {
			t.Fatal(err)
		}
		return st.Drops["spoofed_source"]
	}
	rx := func() uint64 {
		t.Helper()
		st, err := h2.Router.Status()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range st.Peers {
			if p.Name == h1.Name {
				return p.RxPackets
			}
		}
		t.Fatalf("h2 has no peer h1")
		return 0
	}

	// Positive control: the same raw send with h1's own container's
	// address arrives, so the forged ones below fail only for their source.
	legit := []byte("drv-legit-source")
	if err := SendRawUDP(h1.NS, netip.AddrPortFrom(h1.Containers[0].Addr, 5555), dst, legit); err != nil {
		t.Fatal(err)
	}
	err = Poll(t.Context(), 5*time.Second, 10*time.Millisecond, func() error {
		if sink.Count(legit) == 0 {
			return errors.New("legitimate raw datagram not received")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	const n = 5
	for _, tc := range []struct {
		name string
		src  netip.Addr
	}{
		{"another member's block", h3.Containers[0].Addr},
		{"the receiver's own block", h2.Gateway.Next().Next().Next()},
		{"outside the cluster", netip.MustParseAddr("198.51.100.7")},
	} {
		before, rxBefore := spoofed(), rx()
		payload := []byte("drv-spoofed " + tc.name)
		for range n {
			if err := SendRawUDP(h1.NS, netip.AddrPortFrom(tc.src, 5555), dst, payload); err != nil {
				t.Fatal(err)
			}
		}
		// The router counts the drop after authenticating the packet:
		// wait for the counter, then for anything that would have
		// arrived with it.
		var got uint64
		err := Poll(t.Context(), 5*time.Second, 10*time.Millisecond, func() error {
			got = spoofed() - before
			if got < n {
				return fmt.Errorf("spoofed_source +%d, want +%d", got, n)
			}
			return nil
		})
		if err != nil {
			t.Errorf("source %s (%s): %v (h2 received %d packets from h1 meanwhile)", tc.src, tc.name, err, rx()-rxBefore)
		}
		if got != n {
			t.Errorf("source %s (%s): spoofed_source +%d, want +%d", tc.src, tc.name, got, n)
		}
		// A legitimate datagram sent after the forged ones arriving
		// means the forged ones had their chance too.
		marker := []byte("drv-after " + tc.name)
		if err := SendRawUDP(h1.NS, netip.AddrPortFrom(h1.Containers[0].Addr, 5555), dst, marker); err != nil {
			t.Fatal(err)
		}
		_ = Poll(t.Context(), 5*time.Second, 10*time.Millisecond, func() error {
			if sink.Count(marker) == 0 {
				return errors.New("marker not received")
			}
			return nil
		})
		if c := sink.Count(payload); c != 0 {
			t.Errorf("source %s (%s): %d forged datagrams reached %s", tc.src, tc.name, c, target.Ref)
		}
		t.Logf("RESULT forged source %s (%s), sealed by h1: h2 dropped %d/%d as spoofed_source, %d reached the container", tc.src, tc.name, got, n, sink.Count(payload))
	}
	var others []string
	for _, d := range sink.Datagrams() {
		if d.From.Addr() != h1.Containers[0].Addr {
			others = append(others, d.From.String())
		}
	}
	if len(others) > 0 {
		t.Errorf("datagrams from forged sources reached %s: %v", target.Ref, others)
	}
	t.Logf("router counters:\n%s", lab.Counters())
}

// TestClusterMixedArch: one host runs the arm64 build under qemu-user, the
// others this machine's; ESP reachability is complete.
func TestClusterMixedArch(t *testing.T) {
	testenv.NeedRoot(t)
	if _, err := QEMU("arm64"); err != nil {
		t.Skipf("%v (Debian/Ubuntu: apt-get install qemu-user-static; CI installs it)", err)
	}
	start := time.Now()
	arm, err := testenv.BuildDroverArch("arm64")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("arm64 build in %v: %s", time.Since(start).Round(time.Millisecond), arm)
	lab := newClusterLab(t, Options{Hosts: 3, Containers: 1, Encapsulation: "esp", HostOptions: []HostOptions{{}, {}, {Arch: "arm64", Bin: arm}}})
	h3 := lab.Hosts[2]
	exe, err := os.Readlink(filepath.Join("/proc", fmt.Sprint(h3.Router.PID()), "exe"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(filepath.Base(exe), "qemu-aarch64") {
		t.Errorf("h3's router runs %s, want qemu-aarch64", exe)
	}
	last := lab.lastStart()
	at := waitMatrix(t, lab, 30*time.Second)
	t.Logf("RESULT mixed arch (h3 arm64 under %s): full reachability %v after the last router start", filepath.Base(exe), at.Sub(last).Round(time.Millisecond))
	for _, pair := range [][2]ContainerRef{{{1, 1}, {3, 1}}, {{3, 1}, {2, 1}}} {
		res, err := lab.Transfer(t.Context(), pair[0], pair[1], 2<<20)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("RESULT transfer %s (SHA-256 %x)", res, res.Digest[:8])
	}
	checkDrops(t, lab)
}

// TestLabRunCluster is `drover lab --cluster` on a small lab.
func TestLabRunCluster(t *testing.T) {
	testenv.NeedRoot(t)
	tag := testTag()
	leak := goroutineCheck(t)
	var out strings.Builder
	err := Run(t.Context(), Options{Hosts: 3, Containers: 1, Tag: tag, Bin: testenv.DroverBinary(t), Cluster: true}, &out)
	t.Logf("Run:\n%s", out.String())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, want := range []string{"cluster mode", "cluster converged", "h1: block 10.42.", "6/6 reachable", "lab removed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("Run output lacks %q", want)
		}
	}
	checkGone(t, tag)
	leak()
}

// The tests below need no root.

func TestClusterConfigs(t *testing.T) {
	own := make([]byte, 32)
	opts := Options{Hosts: 3, Cluster: true, ClusterOptions: ClusterOptions{RotationInterval: 3 * time.Second, SwitchDelay: time.Second, Grace: 3 * time.Second},
		HostOptions: []HostOptions{{}, {}, {ClusterKey: own}}}
	opts.Default()
	if err := opts.Validate(); err != nil {
		t.Fatal(err)
	}
	l := &Lab{opts: opts, Dir: t.TempDir()}
	cfgs, err := l.clusterConfigs()
	if err != nil {
		t.Fatal(err) // includes config.Validate
	}
	fi, err := os.Stat(l.ClusterKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("cluster key mode %o, want 600", fi.Mode().Perm())
	}
	key, err := os.ReadFile(l.ClusterKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if k := strings.TrimSpace(string(key)); len(k) != 64 || k == strings.Repeat("0", 64) {
		t.Errorf("cluster key %q: want 32 random bytes in hex", k)
	}
	for i, c := range cfgs {
		h := i + 1
		if len(c.Node.Prefixes) != 0 || len(c.Peers) != 0 {
			t.Errorf("h%d: prefixes %v, %d peers; want none", h, c.Node.Prefixes, len(c.Peers))
		}
		cl := c.Cluster
		if cl == nil {
			t.Fatalf("h%d: no cluster section", h)
		}
		if cl.Timing != "fast" || cl.RotationInterval != 3*time.Second || cl.SwitchDelay != time.Second || cl.Grace != 3*time.Second {
			t.Errorf("h%d: cluster %+v, want fast timing, 3s/1s/3s", h, *cl)
		}
		wantKey := l.ClusterKeyFile
		if h == 3 {
			wantKey = filepath.Join(l.Dir, "h3-cluster.key")
		}
		if cl.KeyFile != wantKey {
			t.Errorf("h%d: key file %s, want %s", h, cl.KeyFile, wantKey)
		}
		if c.StateDir != filepath.Join(l.Dir, fmt.Sprintf("h%d-state", h)) {
			t.Errorf("h%d: state dir %s", h, c.StateDir)
		}
	}
	if b, err := os.ReadFile(filepath.Join(l.Dir, "h3-cluster.key")); err != nil || strings.TrimSpace(string(b)) != strings.Repeat("00", 32) {
		t.Errorf("h3's own key file: %q, %v", b, err)
	}

	// Seeds: first starts join through host 1 (host 1 founds the
	// cluster); a restart joins through whoever runs.
	for i, c := range cfgs {
		l.Hosts = append(l.Hosts, &Host{Index: i + 1, Name: c.Node.Name, Underlay: underlayAddr(false, i+1), cfg: c})
	}
	for _, tc := range []struct {
		name    string
		host    int
		runs    int
		running []int
		want    []string
	}{
		{"h1 first start", 1, 0, nil, nil},
		{"h2 first start", 2, 0, nil, []string{"192.0.2.1"}},
		{"h3 first start, h1 down", 3, 0, []int{2}, []string{"192.0.2.1"}},
		{"h1 restart", 1, 1, []int{2, 3}, []string{"192.0.2.2", "192.0.2.3"}},
		{"h2 restart, h1 down", 2, 1, []int{3}, []string{"192.0.2.3"}},
		{"h2 restart, all down", 2, 1, nil, []string{"192.0.2.1"}},
		{"h1 restart, all down", 1, 1, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, h := range l.Hosts {
				h.Router, h.runs = nil, 0
			}
			for _, r := range tc.running {
				l.Hosts[r-1].Router = &Router{}
			}
			h := l.Hosts[tc.host-1]
			h.runs = tc.runs
			if got := l.seedsFor(h); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestClusterOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		ok   bool
	}{
		{"cluster", Options{Cluster: true}, true},
		{"timing", Options{Cluster: true, ClusterOptions: ClusterOptions{Timing: "slow"}}, false},
		{"edge timing", Options{Cluster: true, ClusterOptions: ClusterOptions{Timing: "edge"}}, true},
		{"arch", Options{HostOptions: []HostOptions{{Arch: "arm64"}}}, true},
		{"unknown arch", Options{HostOptions: []HostOptions{{Arch: "mips"}}}, false},
		{"key without cluster", Options{HostOptions: []HostOptions{{ClusterKey: []byte{1}}}}, false},
		{"too many host options", Options{Hosts: 1, HostOptions: []HostOptions{{}, {}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Default()
			err := tc.opts.Validate()
			if (err == nil) != tc.ok {
				t.Errorf("Validate: got %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
