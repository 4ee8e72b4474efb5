package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/router"
	"github.com/drovernet/drover/testenv"
)

// transferSize is the "TCP transfer of >= 10 MB with a checked digest".
const transferSize = 10 << 20

var tagSeq atomic.Uint32

// testTag is a lab tag unique to this test process: a letter per lab, then
// the PID in base 36, so concurrent `go test` runs do not collide either.
func testTag() string {
	pid := strconv.FormatInt(int64(os.Getpid()%(36*36*36)), 36)
	return fmt.Sprintf("%c%s", 'a'+rune(tagSeq.Add(1)%26), pid)
}

// labNamespaces lists the namespaces named for tag.
func labNamespaces(t testing.TB, tag string) []string {
	t.Helper()
	ns, err := listNamespaces(tag)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

func listNamespaces(tag string) ([]string, error) {
	ents, err := os.ReadDir("/run/netns")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), Prefix+tag+"-") {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// rootLinks lists the root namespace's links whose name starts with prefix.
func rootLinks(t testing.TB, prefix string) []string {
	t.Helper()
	var links []netlink.Link
	err := Poll(t.Context(), 5*time.Second, 10*time.Millisecond, func() error {
		var err error
		links, err = netlink.LinkList() // the test's own (root) namespace
		return err                      // ErrDumpInterrupted: retry
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, prefix) {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

// checkGone fails the test if anything named for tag survived.
func checkGone(t testing.TB, tag string) {
	t.Helper()
	if left := labNamespaces(t, tag); len(left) > 0 {
		t.Errorf("namespaces left after Close: %v", left)
	}
	if left := rootLinks(t, Prefix+tag); len(left) > 0 {
		t.Errorf("links left in the root namespace after Close: %v", left)
	}
}

// goroutineCheck fails the test if, once the lab is gone, more goroutines
// run than before it was built. Loose: it polls, since exiting routers
// close their control connections asynchronously.
func goroutineCheck(t testing.TB) func() {
	before := runtime.NumGoroutine()
	return func() {
		err := Poll(context.Background(), 5*time.Second, 20*time.Millisecond, func() error {
			if n := runtime.NumGoroutine(); n > before {
				return fmt.Errorf("%d goroutines, %d before the lab", n, before)
			}
			return nil
		})
		if err != nil {
			buf := make([]byte, 1<<20)
			t.Errorf("goroutine leak: %v\n%s", err, buf[:runtime.Stack(buf, true)])
		}
	}
}

// newTestLab builds a lab for the test, waits for its routers and removes it
// when the test ends, checking that nothing is left. On failure it logs every
// router's counters and log tail.
func newTestLab(t *testing.T, opts Options) *Lab {
	t.Helper()
	testenv.NeedRoot(t)
	opts.Bin = testenv.DroverBinary(t)
	opts.Dir = t.TempDir()
	if opts.Tag == "" {
		opts.Tag = testTag()
	}
	opts.Log = slog.New(slog.NewTextHandler(t.Output(), nil))
	leak := goroutineCheck(t)
	// A minute for namespaces, processes and containers, plus the lab's
	// own bound on cluster convergence: a test that raises that bound
	// (TestLabScale100) must not be cut off by this one first.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute+opts.ClusterOptions.ConvergeTimeout)
	defer cancel()
	start := time.Now()
	lab, err := NewLab(ctx, opts)
	if err != nil {
		checkGone(t, opts.Tag)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		checkGone(t, opts.Tag)
		leak()
	})
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		t.Logf("router counters:\n%s", lab.Counters())
		for _, h := range lab.Hosts {
			if h.Router != nil {
				t.Logf("router %s log tail:\n%s", h.Name, h.Router.LogTail(25))
			}
		}
	})
	if err := lab.WaitRouters(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("lab %s up in %v:\n%s", opts.Tag, time.Since(start).Round(time.Millisecond), lab.Topology())
	return lab
}

func checkMatrix(t *testing.T, lab *Lab) {
	t.Helper()
	start := time.Now()
	m, err := lab.Reachability(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reachability in %v:\n%s", time.Since(start).Round(time.Millisecond), m)
	ok, total := m.Count()
	if n := len(lab.Containers()); total != n*(n-1) {
		t.Errorf("matrix has %d pairs, want %d", total, n*(n-1))
	}
	if ok != total {
		t.Errorf("got %d/%d pairs reachable, want all", ok, total)
	}
}

// checkTransfer moves transferSize bytes across hosts and checks the digest
// and that the bytes went through the routers' tunnel to that peer.
func checkTransfer(t *testing.T, lab *Lab, from, to ContainerRef) {
	t.Helper()
	src := lab.Hosts[from.Host-1].Router
	before := peerTx(t, src, fmt.Sprintf("h%d", to.Host))
	res, err := lab.Transfer(t.Context(), from, to, transferSize)
	if err != nil {
		t.Fatalf("transfer: %v", err)
	}
	t.Logf("transfer %s (SHA-256 %x)", res, res.Digest[:8])
	if res.Bytes != transferSize {
		t.Errorf("got %d bytes, want %d", res.Bytes, transferSize)
	}
	if sent := peerTx(t, src, fmt.Sprintf("h%d", to.Host)) - before; sent < transferSize {
		t.Errorf("router %s sent %d bytes to h%d during the transfer, want >= %d: the data did not cross the tunnel", src.Name, sent, to.Host, transferSize)
	}
}

func peerTx(t *testing.T, r *Router, peer string) uint64 {
	t.Helper()
	st, err := r.Status()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Peers {
		if p.Name == peer {
			return p.TxBytes
		}
	}
	t.Fatalf("router %s has no peer %s", r.Name, peer)
	return 0
}

// checkDrops fails on drops that a healthy lab never causes: every packet
// in it is well-formed, correctly keyed and from the right peer.
func checkDrops(t *testing.T, lab *Lab) {
	t.Helper()
	never := []router.DropReason{
		router.DropMalformed, router.DropTruncated, router.DropUnknownSPI, router.DropAuth,
		router.DropReplay, router.DropNextHeader, router.DropSpoofed, router.DropUnknownPeer,
		router.DropBadVXLAN, router.DropTooBig,
	}
	for _, h := range lab.Hosts {
		st, err := h.Router.Status()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range never {
			if n := st.Drops[r.String()]; n != 0 {
				t.Errorf("router %s: got %d %s drops, want 0", h.Name, n, r)
			}
		}
	}
	t.Logf("router counters:\n%s", lab.Counters())
}

func TestLabESP(t *testing.T) {
	lab := newTestLab(t, Options{Hosts: 3, Containers: 2, Encapsulation: "esp", Cipher: "aes-128-gcm"})
	checkMatrix(t, lab)
	checkTransfer(t, lab, ContainerRef{1, 1}, ContainerRef{2, 2})
	checkTransfer(t, lab, ContainerRef{3, 2}, ContainerRef{1, 1})
	checkDrops(t, lab)
}

func TestLabESPCiphers(t *testing.T) {
	for _, cipher := range []string{"aes-256-gcm", "chacha20-poly1305"} {
		t.Run(cipher, func(t *testing.T) {
			lab := newTestLab(t, Options{Hosts: 2, Containers: 1, Encapsulation: "esp", Cipher: cipher})
			checkMatrix(t, lab)
			checkTransfer(t, lab, ContainerRef{1, 1}, ContainerRef{2, 1})
			checkDrops(t, lab)
		})
	}
}

func TestLabVXLAN(t *testing.T) {
	lab := newTestLab(t, Options{Hosts: 3, Containers: 2, Encapsulation: "vxlan"})
	checkMatrix(t, lab)
	checkTransfer(t, lab, ContainerRef{2, 1}, ContainerRef{3, 2})
	checkDrops(t, lab)
}

// TestLabIPv6Underlay: both encapsulations over an IPv6 underlay, where
// the tunnel MTU is 20 bytes smaller (1418 for ESP, 1430 for VXLAN).
func TestLabIPv6Underlay(t *testing.T) {
	for _, tc := range []struct {
		encap string
		mtu   int
	}{{"esp", 1418}, {"vxlan", 1430}} {
		t.Run(tc.encap, func(t *testing.T) {
			lab := newTestLab(t, Options{Hosts: 2, Containers: 1, Encapsulation: tc.encap, UnderlayIPv6: true})
			if lab.ContainerMTU != tc.mtu {
				t.Errorf("container MTU %d, want %d", lab.ContainerMTU, tc.mtu)
			}
			st, err := lab.Hosts[0].Router.Status()
			if err != nil {
				t.Fatal(err)
			}
			if st.TUNMTU != tc.mtu {
				t.Errorf("router TUN MTU %d, want %d", st.TUNMTU, tc.mtu)
			}
			checkMatrix(t, lab)
			checkTransfer(t, lab, ContainerRef{1, 1}, ContainerRef{2, 1})
			checkDrops(t, lab)
		})
	}
}

// TestLabOutage cuts one host's uplink: the matrix must report exactly the
// pairs across that host as unreachable and a transfer must fail, and both
// must recover when the link comes back.
func TestLabOutage(t *testing.T) {
	lab := newTestLab(t, Options{Hosts: 3, Containers: 1, Encapsulation: "vxlan"})
	setUplink := func(up bool) {
		t.Helper()
		h := lab.Hosts[1]
		err := withNetlink(h.NS, func(nl *netlink.Handle) error {
			link, err := nl.LinkByName(h.Uplink)
			if err != nil {
				return err
			}
			if up {
				return nl.LinkSetUp(link)
			}
			return nl.LinkSetDown(link)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	setUplink(false)
	m, err := lab.Reachability(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("h2's uplink down:\n%s", m)
	for i, from := range m.Containers {
		for j, to := range m.Containers {
			if i == j {
				continue
			}
			want := from.Host != 2 && to.Host != 2
			if got := m.Reachable(i, j); got != want {
				t.Errorf("%s → %s with h2's uplink down: got reachable=%v, want %v", from, to, got, want)
			}
		}
	}
	if m.OK() {
		t.Error("OK: got true with h2 cut off, want false")
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	_, err = lab.Transfer(ctx, ContainerRef{1, 1}, ContainerRef{2, 1}, transferSize)
	cancel()
	if err == nil {
		t.Error("Transfer to h2 with its uplink down: got nil error")
	}

	setUplink(true)
	err = Poll(t.Context(), 10*time.Second, 100*time.Millisecond, func() error {
		m, err := lab.Reachability(t.Context())
		if err == nil && !m.OK() {
			err = fmt.Errorf("after the uplink came back:\n%s", m)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	checkTransfer(t, lab, ContainerRef{1, 1}, ContainerRef{2, 1})
}

// TestLabPMTU gives the containers a 1500-byte MTU, above the tunnel's: TCP
// across hosts must still work. The host kernel, forwarding from the bridge
// into the smaller TUN device, answers with ICMP "fragmentation needed"
// (RFC 1191) and the containers' path MTU discovery adapts.
func TestLabPMTU(t *testing.T) {
	lab := newTestLab(t, Options{Hosts: 2, Containers: 1, ContainerMTU: 1500})
	checkTransfer(t, lab, ContainerRef{1, 1}, ContainerRef{2, 1})
	checkTransfer(t, lab, ContainerRef{2, 1}, ContainerRef{1, 1})
	checkDrops(t, lab)
}

func TestLabCleanup(t *testing.T) {
	testenv.NeedRoot(t)
	tag := testTag()
	rootBefore := rootLinks(t, Prefix)
	leak := goroutineCheck(t)
	lab, err := NewLab(t.Context(), Options{Hosts: 2, Containers: 2, Tag: tag, Bin: testenv.DroverBinary(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() }) // in case a check below stops the test
	dir := lab.Dir

	// 1 underlay + 2 hosts + 4 containers.
	if got := labNamespaces(t, tag); len(got) != 7 {
		t.Errorf("got namespaces %v, want 7", got)
	}
	var routers []*Router
	for _, h := range lab.Hosts {
		routers = append(routers, h.Router)
	}

	start := time.Now()
	if err := lab.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	t.Logf("Close took %v", time.Since(start).Round(time.Millisecond))
	if err := lab.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	checkGone(t, tag)
	if after := rootLinks(t, Prefix); len(after) != len(rootBefore) {
		t.Errorf("root namespace links with prefix %q: got %v, want %v (as before the lab)", Prefix, after, rootBefore)
	}
	for _, r := range routers {
		select {
		case <-r.Done():
		default:
			t.Errorf("router %s (pid %d) still running after Close", r.Name, r.PID())
		}
		if err := r.ExitErr(); err != nil {
			t.Errorf("router %s: exit on SIGTERM: got %v, want a clean exit", r.Name, err)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lab's temporary directory %s: got %v after Close, want it removed", dir, err)
	}
	leak()
}

// TestLabCancel cancels a lab's context while NewLab builds it, and while
// Run runs it: everything must be gone either way.
func TestLabCancel(t *testing.T) {
	testenv.NeedRoot(t)
	bin := testenv.DroverBinary(t)

	// Cancel as soon as the build has reached a point: the first namespace
	// exists, or the first router has been started (its log file exists).
	for _, tc := range []struct {
		name    string
		reached func(tag, dir string) bool
	}{
		{"namespaces", func(tag, _ string) bool {
			ns, err := listNamespaces(tag)
			return err == nil && len(ns) > 0
		}},
		{"routers", func(_, dir string) bool {
			logs, err := filepath.Glob(filepath.Join(dir, "*.log"))
			return err == nil && len(logs) > 0
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tag, dir := testTag(), t.TempDir()
			leak := goroutineCheck(t)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var wg sync.WaitGroup
			var cancelled time.Time
			wg.Go(func() {
				_ = Poll(ctx, 30*time.Second, time.Millisecond, func() error {
					if !tc.reached(tag, dir) {
						return errors.New("not yet")
					}
					cancelled = time.Now()
					cancel()
					return nil
				})
			})
			start := time.Now()
			lab, err := NewLab(ctx, Options{Hosts: 3, Containers: 2, Tag: tag, Bin: bin, Dir: dir})
			returned := time.Now()
			wg.Wait()
			t.Logf("NewLab returned after %v, %v after the cancel: %v", returned.Sub(start).Round(time.Millisecond), returned.Sub(cancelled).Round(time.Millisecond), err)
			// Ctrl-C must not wait for Router.Stop's 10 s SIGKILL fallback:
			// a router that is told to stop while it starts must stop.
			if d := returned.Sub(cancelled); d > 5*time.Second {
				t.Errorf("NewLab took %v after the cancel to return, want < 5s (did a starting router ignore SIGTERM?)", d.Round(time.Millisecond))
			}
			if err == nil {
				lab.Close()
				t.Fatal("NewLab finished although its context was cancelled during the build")
			}
			if !errors.Is(err, context.Canceled) {
				t.Errorf("NewLab: got %v, want context.Canceled", err)
			}
			checkGone(t, tag)
			if pids := processesWith(t, dir); len(pids) > 0 {
				t.Errorf("router processes still running: %v", pids)
			}
			leak()
		})
	}

	t.Run("running", func(t *testing.T) {
		tag := testTag()
		dir := t.TempDir()
		leak := goroutineCheck(t)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		// Cancel once the lab is up and starts probing, as Ctrl-C would.
		w := &cancelWriter{cancel: cancel, at: "reachability"}
		start := time.Now()
		err := Run(ctx, Options{Hosts: 2, Containers: 2, Tag: tag, Bin: bin, Dir: dir}, w)
		took := time.Since(start)
		t.Logf("Run returned after %v: %v\n%s", took.Round(time.Millisecond), err, w.String())
		if !w.fired.Load() {
			t.Fatalf("Run never printed %q", w.at)
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run: got %v, want context.Canceled", err)
		}
		if !strings.Contains(w.String(), "lab removed") {
			t.Errorf("Run output does not say the lab was removed")
		}
		checkGone(t, tag)
		if pids := processesWith(t, dir); len(pids) > 0 {
			t.Errorf("router processes still running: %v", pids)
		}
		leak()
	})
}

// TestLabRun is `drover lab` on a small lab: the whole report, success.
func TestLabRun(t *testing.T) {
	testenv.NeedRoot(t)
	tag := testTag()
	leak := goroutineCheck(t)
	// A namespace left by a lab that crashed: Run must sweep it, or
	// building h1 would fail on the name.
	left, err := CreateNetNS(Prefix + tag + "-h1")
	if err != nil {
		t.Fatal(err)
	}
	h := left.Handle()
	h.Close() // keep only the name, as a dead process would
	var out bytes.Buffer
	start := time.Now()
	err = Run(t.Context(), Options{Hosts: 2, Containers: 2, Tag: tag, Bin: testenv.DroverBinary(t)}, &out)
	t.Logf("Run took %v:\n%s", time.Since(start).Round(time.Millisecond), out.String())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, want := range []string{"removed 1 namespaces left by an earlier lab: " + Prefix + tag + "-h1", "12/12 reachable", "h1c1 → h2c1: ", "bit/s", "drops: ", "lab removed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("Run output lacks %q", want)
		}
	}
	checkGone(t, tag)
	leak()
}

// cancelWriter collects Run's output and cancels once it contains at.
type cancelWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	at     string
	cancel context.CancelFunc
	fired  atomic.Bool
}

func (w *cancelWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.at) && !w.fired.Swap(true) {
		w.cancel()
	}
	return len(p), nil
}

func (w *cancelWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// processesWith lists the PIDs whose command line mentions s.
func processesWith(t *testing.T, s string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(s)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// The tests below need no root.

func TestLabConfigs(t *testing.T) {
	for _, cipher := range []string{"aes-128-gcm", "aes-256-gcm", "chacha20-poly1305"} {
		t.Run(cipher, func(t *testing.T) {
			opts := Options{Hosts: 4, Cipher: cipher}
			opts.Default()
			cfgs, err := labConfigs(opts)
			if err != nil {
				t.Fatal(err) // includes config.Validate
			}
			want := 20
			if cipher != "aes-128-gcm" {
				want = 36
			}
			keys := map[string]bool{}
			for i, c := range cfgs {
				h := i + 1
				if got, want := c.Node.Name, fmt.Sprintf("h%d", h); got != want {
					t.Errorf("node name: got %q, want %q", got, want)
				}
				if got, want := c.Node.PrefixList, []netip.Prefix{hostPrefix(h)}; len(got) != 1 || got[0] != want[0] {
					t.Errorf("h%d prefixes: got %v, want %v", h, got, want)
				}
				if len(c.Peers) != len(cfgs)-1 {
					t.Fatalf("h%d: got %d peers, want %d", h, len(c.Peers), len(cfgs)-1)
				}
				for _, p := range c.Peers {
					if len(p.SA.Out.KeyBytes) != want || len(p.SA.In.KeyBytes) != want {
						t.Errorf("h%d peer %s: key lengths %d/%d, want %d", h, p.Name, len(p.SA.Out.KeyBytes), len(p.SA.In.KeyBytes), want)
					}
					if keys[p.SA.Out.Key] {
						t.Errorf("h%d peer %s: outbound key reused", h, p.Name)
					}
					keys[p.SA.Out.Key] = true
					// The peer's inbound SA for us must be our outbound SA.
					var back *config.Peer
					for j := range cfgs {
						if cfgs[j].Node.Name == p.Name {
							for k := range cfgs[j].Peers {
								if cfgs[j].Peers[k].Name == c.Node.Name {
									back = &cfgs[j].Peers[k]
								}
							}
						}
					}
					if back == nil {
						t.Fatalf("%s has no peer %s", p.Name, c.Node.Name)
					}
					if back.SA.In.SPI != p.SA.Out.SPI || back.SA.In.Key != p.SA.Out.Key {
						t.Errorf("%s→%s: sender's out SA %#x does not match receiver's in SA %#x", c.Node.Name, p.Name, p.SA.Out.SPI, back.SA.In.SPI)
					}
				}
			}
		})
	}
	t.Run("vxlan", func(t *testing.T) {
		opts := Options{Hosts: 3, Encapsulation: "vxlan", VNI: 77}
		opts.Default()
		cfgs, err := labConfigs(opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cfgs {
			if c.VNI != 77 {
				t.Errorf("%s: got VNI %d, want 77", c.Node.Name, c.VNI)
			}
			for _, p := range c.Peers {
				if p.SA != nil {
					t.Errorf("%s peer %s: got an SA with vxlan", c.Node.Name, p.Name)
				}
			}
		}
	})
}

func TestLabOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		ok   bool
	}{
		{"defaults", Options{}, true},
		{"tag too long", Options{Tag: "abcde"}, false},
		{"tag upper case", Options{Tag: "AB"}, false},
		{"tag with dash", Options{Tag: "a-b"}, false},
		{"hosts", Options{Hosts: 251}, false},
		{"containers", Options{Containers: 254}, false},
		{"encapsulation", Options{Encapsulation: "gre"}, false},
		{"cipher", Options{Cipher: "aes-192-gcm"}, false},
		{"underlay mtu", Options{UnderlayMTU: 500}, false},
		{"max", Options{Hosts: 250, Containers: 253, Tag: "z9z9"}, true},
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

// TestLabNames checks the longest names fit in an interface name.
func TestLabNames(t *testing.T) {
	l := &Lab{tag: "z9z9"}
	for _, role := range []string{"ul", "up", "br", "h250", "c253"} {
		if n := l.ifName(role); len(n) > 15 {
			t.Errorf("interface name %q: %d bytes, want <= 15", n, len(n))
		}
	}
	if got, want := containerAddr(3, 2), netip.MustParseAddr("10.42.3.3"); got != want {
		t.Errorf("containerAddr(3, 2): got %v, want %v", got, want)
	}
}

func TestMatrixString(t *testing.T) {
	h := &Host{Index: 1}
	ctrs := []*Container{
		{Ref: ContainerRef{1, 1}, Host: h, Addr: containerAddr(1, 1)},
		{Ref: ContainerRef{1, 2}, Host: h, Addr: containerAddr(1, 2)},
		{Ref: ContainerRef{2, 1}, Host: h, Addr: containerAddr(2, 1)},
	}
	m := newMatrix(ctrs)
	for i := range ctrs {
		for j := range ctrs {
			if i != j {
				m.Err[i][j] = nil
			}
		}
	}
	m.Err[0][2] = errors.New("no echo reply")
	want := "" +
		"from\\to h1c1 h1c2 h2c1\n" +
		"h1c1       .   ok   --\n" +
		"h1c2      ok    .   ok\n" +
		"h2c1      ok   ok    .\n" +
		"5/6 reachable\n" +
		"  h1c1 → h2c1 (10.42.2.2): no echo reply\n"
	if got := m.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if m.OK() {
		t.Error("OK: got true with a failed pair, want false")
	}
	if ok, total := m.Count(); ok != 5 || total != 6 {
		t.Errorf("Count: got %d/%d, want 5/6", ok, total)
	}
}
