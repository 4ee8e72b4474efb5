package gossip

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

var (
	testKey  = bytes.Repeat([]byte{0x42}, 32)
	loopback = netip.MustParseAddr("127.0.0.1")
)

// testWriter forwards to t.Output until the test's cleanup closes it:
// memberlist goroutines may still log while the test ends.
type testWriter struct {
	mu     sync.Mutex
	w      io.Writer
	closed bool
	seen   strings.Builder // every line, for tests that look for one
}

func (tw *testWriter) Write(p []byte) (int, error) {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	tw.seen.Write(p)
	if tw.closed {
		return len(p), nil
	}
	return tw.w.Write(p)
}

func (tw *testWriter) contains(s string) int {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	return strings.Count(tw.seen.String(), s)
}

func newTestWriter(t testing.TB) *testWriter {
	tw := &testWriter{w: t.Output()}
	t.Cleanup(func() {
		tw.mu.Lock()
		tw.closed = true
		tw.mu.Unlock()
	})
	return tw
}

func testLog(t testing.TB, level slog.Level) (*slog.Logger, *testWriter) {
	tw := newTestWriter(t)
	return slog.New(slog.NewTextHandler(tw, &slog.HandlerOptions{Level: level})), tw
}

// leakCheck fails the test if goroutines started after it are still running
// once everything is shut down. Register it first: cleanups run last first.
func leakCheck(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		err := poll(10*time.Second, func() error {
			if n := runtime.NumGoroutine(); n > before {
				return fmt.Errorf("goroutines: got %d after shutdown, want <= %d", n, before)
			}
			return nil
		})
		if err != nil {
			buf := make([]byte, 1<<20)
			t.Errorf("%v\n%s", err, buf[:runtime.Stack(buf, true)])
		}
	})
}

// poll calls check every 5ms until it returns nil or timeout passes.
func poll(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		<-tick.C
	}
}

func testInfo(name string, i int) NodeInfo {
	n := goldenInfo
	n.Version = "test-" + name
	n.Underlay = netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 4500)
	n.Block = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 42, byte(i), 0}), 24)
	n.Identity[0], n.Ephemeral[0] = byte(i), byte(i)
	return n
}

type nodeOpt func(*Config)

func withAddr(a string) nodeOpt { return func(c *Config) { c.BindAddr = netip.MustParseAddr(a) } }
func withKey(k []byte) nodeOpt  { return func(c *Config) { c.Key = k } }
func withPort(p uint16) nodeOpt { return func(c *Config) { c.BindPort = int(p) } }

// startNode starts a member on loopback with fast timings; it is shut down
// when the test ends.
func startNode(t testing.TB, name string, info NodeInfo, opts ...nodeOpt) *Cluster {
	t.Helper()
	l, _ := testLog(t, slog.LevelInfo)
	cfg := FastTiming(Config{Name: name, BindAddr: loopback, Key: testKey, Log: l.With("node", name)})
	for _, o := range opts {
		o(&cfg)
	}
	c, err := Start(cfg, info)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { _ = c.Shutdown() })
	return c
}

func member(c *Cluster, name string) (Member, bool) {
	for _, m := range c.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// expectState checks that c lists name in state st, with info when given.
func expectState(c *Cluster, name string, st State, info *NodeInfo) error {
	m, ok := member(c, name)
	switch {
	case !ok:
		return fmt.Errorf("%s does not list %s", c.LocalName(), name)
	case m.State != st:
		return fmt.Errorf("%s lists %s as %v, want %v", c.LocalName(), name, m.State, st)
	case m.InfoErr != nil:
		return fmt.Errorf("%s: info of %s: %v", c.LocalName(), name, m.InfoErr)
	case info != nil && !m.Info.Equal(info):
		return fmt.Errorf("%s: info of %s: got %+v, want %+v", c.LocalName(), name, m.Info, *info)
	}
	return nil
}

func TestMembership(t *testing.T) {
	leakCheck(t)
	names := []string{"a", "b", "c"}
	infos := map[string]NodeInfo{}
	var cs []*Cluster
	for i, n := range names {
		infos[n] = testInfo(n, i+1)
		cs = append(cs, startNode(t, n, infos[n]))
	}
	seed := cs[0].LocalAddr().String()
	start := time.Now()
	for _, c := range cs[1:] {
		if n, err := c.Join([]string{seed}); n != 1 || err != nil {
			t.Fatalf("%s: Join(%s): got %d, %v; want 1, nil", c.LocalName(), seed, n, err)
		}
	}
	allAlive := func() error {
		for _, c := range cs {
			if got := len(c.Members()); got != len(names) {
				return fmt.Errorf("%s lists %d members, want %d", c.LocalName(), got, len(names))
			}
			for _, n := range names {
				info := infos[n]
				if err := expectState(c, n, Alive, &info); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := poll(10*time.Second, allAlive); err != nil {
		t.Fatal(err)
	}
	t.Logf("3 members all alive with their info %v after the joins", time.Since(start).Round(time.Millisecond))
	for _, c := range cs {
		m, _ := member(c, "a")
		if m.Addr != cs[0].LocalAddr() {
			t.Errorf("%s: address of a: got %v, want %v", c.LocalName(), m.Addr, cs[0].LocalAddr())
		}
	}

	// Update propagates, and Changes says so.
	drain(cs[0].Changes())
	nb := infos["b"]
	nb.Epoch++
	nb.Ephemeral = fill32(0x99)
	nb.Prefixes = append(nb.Prefixes, netip.MustParsePrefix("172.16.0.0/12"))
	start = time.Now()
	if err := cs[1].Update(nb); err != nil {
		t.Fatal(err)
	}
	if err := poll(10*time.Second, func() error {
		for _, c := range cs {
			if err := expectState(c, "b", Alive, &nb); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("update seen by all in %v", time.Since(start).Round(time.Millisecond))
	select {
	case <-cs[0].Changes():
	default:
		t.Error("a: no Changes notification after b's update")
	}
	bad := nb
	bad.Version = strings.Repeat("x", 40)
	if err := cs[1].Update(bad); err == nil {
		t.Error("Update with a 40-byte version: got nil, want an error")
	}

	// Leave is seen as Left, by the others and by the leaver.
	start = time.Now()
	if err := cs[2].Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := expectState(cs[2], "c", Left, nil); err != nil {
		t.Error(err)
	}
	if err := poll(10*time.Second, func() error {
		for _, c := range cs[:2] {
			if err := expectState(c, "c", Left, nil); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("leave seen as left by all in %v", time.Since(start).Round(time.Millisecond))
	if err := cs[2].Update(infos["c"]); err == nil {
		t.Error("Update after Leave: got nil, want an error")
	}
	if err := cs[2].Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := cs[2].Leave(time.Second); err == nil {
		t.Error("Leave after Shutdown: got nil, want an error")
	}
	// The leaver's last info is kept.
	c, _ := member(cs[0], "c")
	if want := infos["c"]; !c.Info.Equal(&want) {
		t.Errorf("info of c after it left: got %+v, want %+v", c.Info, want)
	}
}

func drain(ch <-chan struct{}) {
	select {
	case <-ch:
	default:
	}
}

// TestFailure kills a member (Shutdown without Leave) and brings it back on
// a new address: the others list it Suspect, then Dead, then Alive again at
// its new address.
func TestFailure(t *testing.T) {
	leakCheck(t)
	a := startNode(t, "a", testInfo("a", 1))
	b := startNode(t, "b", testInfo("b", 2))
	v := startNode(t, "victim", testInfo("victim", 3))
	for _, c := range []*Cluster{b, v} {
		if _, err := c.Join([]string{a.LocalAddr().String()}); err != nil {
			t.Fatal(err)
		}
	}
	if err := poll(10*time.Second, func() error {
		for _, c := range []*Cluster{a, b} {
			if err := expectState(c, "victim", Alive, nil); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Let probing settle: no suspicions while everyone is up.
	if err := poll(10*time.Second, func() error {
		for _, c := range []*Cluster{a, b, v} {
			for _, m := range c.Members() {
				if m.State != Alive {
					return fmt.Errorf("%s lists %s as %v", c.LocalName(), m.Name, m.State)
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// A quick restart in place (same address and port, new keys) is
	// followed without the member ever being declared dead.
	restarted := time.Now()
	if err := v.Shutdown(); err != nil {
		t.Fatal(err)
	}
	info1 := testInfo("victim", 3)
	info1.Ephemeral, info1.Epoch = fill32(0x77), 1
	v = startNode(t, "victim", info1, withPort(v.LocalAddr().Port()))
	if _, err := v.Join([]string{a.LocalAddr().String()}); err != nil {
		t.Fatal(err)
	}
	if err := poll(10*time.Second, func() error {
		for _, c := range []*Cluster{a, b} {
			if err := expectState(c, "victim", Alive, &info1); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("restart in place: new info seen by all after %v", time.Since(restarted).Round(time.Millisecond))

	killed := time.Now()
	if err := v.Shutdown(); err != nil {
		t.Fatal(err)
	}
	// Record, for each survivor, when it first listed the victim Suspect and Dead.
	type seen struct{ suspect, dead time.Duration }
	obs := map[string]*seen{"a": {}, "b": {}}
	const bound = 10 * time.Second
	err := poll(bound, func() error {
		done := true
		for _, c := range []*Cluster{a, b} {
			s := obs[c.LocalName()]
			m, _ := member(c, "victim")
			switch m.State {
			case Suspect:
				if s.suspect == 0 {
					s.suspect = time.Since(killed)
				}
			case Dead:
				if s.dead == 0 {
					s.dead = time.Since(killed)
				}
			case Left:
				return fmt.Errorf("%s lists the killed member as left", c.LocalName())
			}
			if s.dead == 0 {
				done = false
			}
		}
		if !done {
			return fmt.Errorf("not dead everywhere: a %+v, b %+v", *obs["a"], *obs["b"])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sawSuspect := false
	for name, s := range obs {
		t.Logf("%s: killed member suspect after %v, dead after %v", name, s.suspect.Round(time.Millisecond), s.dead.Round(time.Millisecond))
		if s.suspect != 0 && s.suspect < s.dead {
			sawSuspect = true
		}
	}
	if !sawSuspect {
		t.Errorf("no survivor listed the killed member as suspect before dead: a %+v, b %+v", *obs["a"], *obs["b"])
	}

	// It comes back on another address and port, and is alive there.
	back := time.Now()
	info := testInfo("victim", 3)
	info.Underlay = netip.MustParseAddrPort("192.0.2.33:4500")
	v2 := startNode(t, "victim", info, withAddr("127.0.0.2"))
	if v2.LocalAddr().Addr() != netip.MustParseAddr("127.0.0.2") {
		t.Fatalf("restarted member's address: got %v, want 127.0.0.2:*", v2.LocalAddr())
	}
	if _, err := v2.Join([]string{b.LocalAddr().String()}); err != nil {
		t.Fatal(err)
	}
	if err := poll(10*time.Second, func() error {
		for _, c := range []*Cluster{a, b} {
			if err := expectState(c, "victim", Alive, &info); err != nil {
				return err
			}
			if m, _ := member(c, "victim"); m.Addr != v2.LocalAddr() {
				return fmt.Errorf("%s: victim's address: got %v, want %v", c.LocalName(), m.Addr, v2.LocalAddr())
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted member alive at its new address %v after %v", v2.LocalAddr(), time.Since(back).Round(time.Millisecond))
}

// rawMemberlist starts a memberlist that is not a Cluster: without
// encryption when key is nil.
func rawMemberlist(t *testing.T, name string, key []byte) *memberlist.Memberlist {
	tw := newTestWriter(t)
	mc := memberlist.DefaultLocalConfig()
	mc.Name, mc.BindAddr, mc.BindPort, mc.AdvertisePort = name, "127.0.0.1", 0, 0
	mc.SecretKey = key
	mc.Logger = log.New(tw, name+" ", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ml.Shutdown() })
	return ml
}

// TestOutsiders: hosts with another key, or none, cannot join, and are never
// listed.
func TestOutsiders(t *testing.T) {
	leakCheck(t)
	la, aw := testLog(t, slog.LevelDebug)
	cfg := FastTiming(Config{Name: "a", BindAddr: loopback, Key: testKey, Log: la})
	a, err := Start(cfg, testInfo("a", 1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Shutdown() })
	b := startNode(t, "b", testInfo("b", 2))
	if _, err := b.Join([]string{a.LocalAddr().String()}); err != nil {
		t.Fatal(err)
	}
	seed := []string{a.LocalAddr().String()}

	otherKey := bytes.Repeat([]byte{0x43}, 32)
	x := startNode(t, "x-wrong-key", testInfo("x", 9), withKey(otherKey))
	if n, err := x.Join(seed); n != 0 || err == nil {
		t.Errorf("join with the wrong key: got %d, %v; want 0 and an error", n, err)
	} else {
		t.Logf("join with the wrong key: %v", err)
	}
	plain := rawMemberlist(t, "y-no-key", nil)
	if n, err := plain.Join(seed); n != 0 || err == nil {
		t.Errorf("join without encryption: got %d, %v; want 0 and an error", n, err)
	}
	wrong := rawMemberlist(t, "z-raw-wrong-key", otherKey)
	if n, err := wrong.Join(seed); n != 0 || err == nil {
		t.Errorf("raw memberlist join with the wrong key: got %d, %v; want 0 and an error", n, err)
	}

	// x retries its seed every reconnect interval: wait until a has turned
	// away several of its attempts, then look.
	if err := poll(20*time.Second, func() error {
		if n := aw.contains("failed to receive"); n < 5 {
			return fmt.Errorf("a turned away %d streams, want >= 5", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Cluster{a, b} {
		ms := c.Members()
		if len(ms) != 2 || ms[0].Name != "a" || ms[1].Name != "b" {
			t.Errorf("%s lists %v, want only a and b", c.LocalName(), names(ms))
		}
	}
	if ms := x.Members(); len(ms) != 1 {
		t.Errorf("x lists %v, want only itself", names(ms))
	}
	if n := plain.NumMembers(); n != 1 {
		t.Errorf("the unencrypted node knows %d members, want 1", n)
	}
	if err := poll(5*time.Second, func() error { return expectState(a, "b", Alive, nil) }); err != nil {
		t.Error(err)
	}
}

func names(ms []Member) []string {
	var s []string
	for _, m := range ms {
		s = append(s, m.Name+"="+m.State.String())
	}
	return s
}

func TestStartErrors(t *testing.T) {
	info := testInfo("a", 1)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no name", Config{Key: testKey}, "name is required"},
		{"no key", Config{Name: "a"}, "cluster key: key is 0 bytes"},
		{"short key", Config{Name: "a", Key: testKey[:10]}, "key is 10 bytes"},
		{"v6 any without advertise", Config{Name: "a", Key: testKey, BindAddr: netip.IPv6Unspecified()}, "advertise address is required"},
		{"probe timeout", Config{Name: "a", Key: testKey, ProbeTimeout: 2 * time.Second}, "probe timeout 2s is longer than the probe interval 1s"},
		{"bind", Config{Name: "a", Key: testKey, BindAddr: netip.MustParseAddr("192.0.2.123")}, "listen on 192.0.2.123:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Start(tc.cfg, info)
			if err == nil {
				_ = c.Shutdown()
				t.Fatalf("got nil, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %q, want it to contain %q", err, tc.want)
			}
		})
	}
	t.Run("port taken", func(t *testing.T) {
		a := startNode(t, "a", info)
		port := a.LocalAddr().Port()
		_, err := Start(Config{Name: "b", Key: testKey, BindAddr: loopback, BindPort: int(port)}, info)
		if want := fmt.Sprintf("gossip: listen on 127.0.0.1:%d: ", port); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Fatalf("got %v, want an error starting %q", err, want)
		}
	})
	t.Run("info too big", func(t *testing.T) {
		_, err := Start(Config{Name: "a", Key: testKey, BindAddr: loopback}, maxOthers(nPrefixes(90, v4s24)))
		if err == nil || !strings.Contains(err.Error(), "prefixes fit") {
			t.Fatalf("got %v, want the too-many-prefixes error", err)
		}
	})
}

// TestPublishSurvivesDroppedUpdate: memberlist drops an update without an
// error when a refutation overtook its number (Cluster.publish). Update
// sees that memberlist's record of this node lacks the new info, publishes
// again, and the other member gets it; an update memberlist never takes
// fails, saying so.
func TestPublishSurvivesDroppedUpdate(t *testing.T) {
	leakCheck(t)
	a := startNode(t, "a", testInfo("a", 1))
	b := startNode(t, "b", testInfo("b", 2))
	if _, err := b.Join([]string{a.LocalAddr().String()}); err != nil {
		t.Fatal(err)
	}
	real := a.updateNode
	calls, drops := 0, 2
	a.updateNode = func(d time.Duration) error {
		calls++
		if drops > 0 {
			drops--
			return nil // dropped: nothing in memberlist changes
		}
		return real(d)
	}
	info := testInfo("a", 1)
	info.Block = netip.MustParsePrefix("10.42.77.0/24")
	if err := a.Update(info); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if calls != 3 {
		t.Errorf("UpdateNode calls: got %d, want 3 (two dropped, then taken)", calls)
	}
	if err := poll(5*time.Second, func() error { return expectState(b, "a", Alive, &info) }); err != nil {
		t.Fatal(err)
	}

	a.updateNode = func(time.Duration) error { calls++; return nil }
	calls = 0
	info.Block = netip.MustParsePrefix("10.42.78.0/24")
	err := a.Update(info)
	if err == nil || !strings.Contains(err.Error(), "dropped") {
		t.Errorf("Update memberlist never takes: got %v, want an error saying it was dropped", err)
	}
	if calls != publishTries {
		t.Errorf("UpdateNode calls: got %d, want %d", calls, publishTries)
	}
}
