package gossip

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestRetryDelay(t *testing.T) {
	const lo, hi = time.Second, 8 * time.Second
	tests := []struct {
		n    int
		r    float64
		want time.Duration
	}{
		{0, 0.5, time.Second},
		{1, 0.5, 2 * time.Second},
		{2, 0.5, 4 * time.Second},
		{3, 0.5, 8 * time.Second},
		{4, 0.5, 8 * time.Second},
		{1000, 0.5, 8 * time.Second},
		{0, 0, 800 * time.Millisecond},
		{3, 0.75, 8800 * time.Millisecond},
	}
	for _, tc := range tests {
		got := retryDelay(tc.n, lo, hi, tc.r).Round(time.Microsecond)
		if got != tc.want {
			t.Errorf("retryDelay(%d, r=%v): got %v, want %v", tc.n, tc.r, got, tc.want)
		}
	}
}

// freePort returns a loopback port free for TCP and UDP right now.
func freePort(t *testing.T) uint16 {
	t.Helper()
	for range 20 {
		l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		l.Close()
		if err == nil {
			u.Close()
			return uint16(port)
		}
	}
	t.Fatal("no free port")
	return 0
}

// A member whose seed is not up yet keeps trying at JoinRetryMin..Max, not
// at ReconnectInterval: the seed coming up last costs about a retry, and
// Alone says since when it has been alone. A seed given by name is
// resolved again on every try (memberlist resolves the names it is given on
// each Join), so a name that points nowhere yet, or elsewhere, is no
// obstacle once it resolves to the seed.
func TestJoinRetriesWhileAlone(t *testing.T) {
	for _, byName := range []bool{false, true} {
		t.Run(map[bool]string{false: "address", true: "name"}[byName], func(t *testing.T) {
			testJoinRetriesWhileAlone(t, byName)
		})
	}
}

func testJoinRetriesWhileAlone(t *testing.T, byName bool) {
	leakCheck(t)
	port := freePort(t)
	seed := netip.AddrPortFrom(loopback, port).String()
	if byName {
		if ips, err := net.LookupIP("localhost"); err != nil || !slices.ContainsFunc(ips, func(ip net.IP) bool { return ip.Equal(net.IP(loopback.AsSlice())) }) {
			t.Skipf("localhost does not resolve to %v here (%v, %v)", loopback, ips, err)
		}
		seed = net.JoinHostPort("localhost", strconv.Itoa(int(port)))
	}
	b := startNode(t, "b", testInfo("b", 2), func(c *Config) {
		c.ReconnectInterval = time.Minute // not what brings b in
		c.JoinRetryMin, c.JoinRetryMax = 200*time.Millisecond, time.Second
	})
	if n, err := b.Join([]string{seed}); err == nil || n != 0 {
		t.Fatalf("join through a seed that is not up: got %d, %v; want 0 and an error", n, err)
	}
	since, alone := b.Alone()
	if !alone || since.IsZero() {
		t.Fatalf("Alone before the seed is up: got %v, %v; want true and a time", since, alone)
	}
	time.Sleep(3 * time.Second) // several retries fail first: the backoff grows to its cap
	up := time.Now()
	a := startNode(t, "a", testInfo("a", 1), withPort(port))
	err := poll(5*time.Second, func() error {
		for _, c := range []*Cluster{a, b} {
			for _, n := range []string{"a", "b"} {
				if m, ok := member(c, n); !ok || m.State != Alive {
					return fmt.Errorf("%s does not list %s alive", c.LocalName(), n)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(up)
	t.Logf("b joined the seed %v after it came up (retries every 200ms..1s, reconnect interval 1m)", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("join after the seed came up: %v, want within 2s (JoinRetryMax 1s)", took)
	}
	if _, alone := b.Alone(); alone {
		t.Error("Alone after joining: got true, want false")
	}
}

// Shutdown does not wait for a join towards an address that never answers.
func TestShutdownDuringJoin(t *testing.T) {
	leakCheck(t)
	b := startNode(t, "b", testInfo("b", 2), func(c *Config) {
		c.TCPTimeout = 30 * time.Second
		c.JoinRetryMin, c.JoinRetryMax = 50*time.Millisecond, 100*time.Millisecond
	})
	b.mu.Lock()
	b.seeds = append(b.seeds, stuckListener(t))
	b.mu.Unlock()
	if err := poll(2*time.Second, func() error {
		if !b.joining.Load() {
			return fmt.Errorf("no join in progress yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Shutdown with a join in progress took %v, want < 3s", d)
	}
}

// stuckListener returns a loopback address whose TCP handshakes never
// complete: a listener with a backlog of 0 whose accept queue is full, so
// the kernel drops further SYNs and a dial waits for its timeout.
func stuckListener(t *testing.T) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
	// Fill the accept queue; with backlog 0 it holds one connection.
	for range 2 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	if c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond); err == nil {
		c.Close()
		t.Skip("the kernel completed a handshake on a full accept queue: cannot make a dial hang here")
	}
	return addr
}
