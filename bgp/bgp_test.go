package bgp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// freePort returns a TCP port free on 127.0.0.1 now.
func freePort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// poll calls f until it returns nil or the deadline passes.
func poll(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		err := f()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("after %v: %v", d, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func status(t *testing.T, sp *Speaker) NeighborStatus {
	t.Helper()
	st, err := sp.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 {
		t.Fatalf("status: got %d neighbours, want 1", len(st))
	}
	return st[0]
}

// pair starts a "router" speaker on 127.0.0.1 (listening, passive, AS
// 65000, expecting AS want from 127.0.0.2) and a "host" speaker on
// 127.0.0.2 with AS as that connects to it.
func pair(t *testing.T, as, want uint32, opts ...func(*Config)) (router, host *Speaker, hostLog *logBuf) {
	t.Helper()
	port := freePort(t)
	hostLog = &logBuf{}
	var err error
	router, err = Start(Config{
		AS: 65000, RouterID: netip.MustParseAddr("127.0.0.1"), Local: netip.MustParseAddr("127.0.0.1"), ListenPort: port,
		Neighbors: []Neighbor{{Address: netip.MustParseAddr("127.0.0.2"), AS: want, Passive: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { router.Close(false) })
	hc := Config{
		AS: as, RouterID: netip.MustParseAddr("192.0.2.1"), Local: netip.MustParseAddr("127.0.0.2"),
		Neighbors:    []Neighbor{{Address: netip.MustParseAddr("127.0.0.1"), AS: 65000, Port: port}},
		ConnectRetry: time.Second, GracefulRestart: true, RestartTime: 30 * time.Second,
		Log: slog.New(slog.NewTextHandler(hostLog, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, o := range opts {
		o(&hc)
	}
	host, err = Start(hc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close(false) })
	return router, host, hostLog
}

// TestAnnounceWithdraw: a host's prefixes reach the neighbour and leave it
// when withdrawn; a prefix of the other family is refused by name.
func TestAnnounceWithdraw(t *testing.T) {
	router, host, _ := pair(t, 65001, 65001)
	poll(t, 15*time.Second, func() error {
		if s := status(t, host); s.State != "established" {
			return fmt.Errorf("host's session %s (%s)", s.State, s.LastError)
		}
		return nil
	})
	a, b := netip.MustParsePrefix("10.42.1.0/24"), netip.MustParsePrefix("10.42.7.0/24")
	if err := host.Announce([]netip.Prefix{a, b}); err != nil {
		t.Fatal(err)
	}
	poll(t, 5*time.Second, func() error {
		if s := status(t, router); s.Received != 2 {
			return fmt.Errorf("router received %d prefixes, want 2", s.Received)
		}
		return nil
	})
	if s := status(t, host); s.Sent != 2 {
		t.Errorf("host sent %d prefixes, want 2", s.Sent)
	}
	start := time.Now()
	if err := host.Announce([]netip.Prefix{a}); err != nil {
		t.Fatal(err)
	}
	poll(t, 5*time.Second, func() error {
		if s := status(t, router); s.Received != 1 {
			return fmt.Errorf("router holds %d prefixes, want 1 after the withdrawal", s.Received)
		}
		return nil
	})
	if took := time.Since(start); took > time.Second {
		t.Errorf("withdrawal took %v, want under a second", took)
	}
	if got := host.Announced(); len(got) != 1 || got[0] != a {
		t.Errorf("announced: got %v, want [%s]", got, a)
	}
	err := host.Announce([]netip.Prefix{a, netip.MustParsePrefix("fd42::/64")})
	if err == nil || !strings.Contains(err.Error(), "fd42::/64: no next hop of its family") {
		t.Errorf("IPv6 prefix with an IPv4 next hop: got %v", err)
	}
}

// TestUnexpectedAS: a speaker whose neighbour shows another AS than
// configured refuses the session with a NOTIFICATION (bad peer AS), logs
// why, shows it as the neighbour's last error and keeps running; the
// refused side records the reset too.
func TestUnexpectedAS(t *testing.T) {
	refuser, host, logs := pair(t, 65001, 65099)
	poll(t, 15*time.Second, func() error {
		if s := status(t, refuser); !strings.Contains(s.LastError, "bad-peer-as (its OPEN does not carry AS 65099") {
			return fmt.Errorf("refusing side's last error %q (state %s)", s.LastError, s.State)
		}
		return nil
	})
	s := status(t, refuser)
	if s.State == "established" || !strings.Contains(s.LastError, "session reset") {
		t.Errorf("refusing side: state %s, last error %q; want not established and the notification it sent", s.State, s.LastError)
	}
	// The refused side learns of it when the NOTIFICATION arrives, which
	// may be after the refusing side has recorded sending it.
	poll(t, 5*time.Second, func() error {
		if h := status(t, host); h.State == "established" || h.LastError == "" {
			return fmt.Errorf("refused side: state %s, last error %q; want not established, with an error", h.State, h.LastError)
		}
		if !strings.Contains(logs.String(), "bgp session reset") || !strings.Contains(logs.String(), "peer=127.0.0.1") {
			return fmt.Errorf("refused side's log does not name the reset and the neighbour:\n%s", logs)
		}
		return nil
	})
	if err := refuser.Announce([]netip.Prefix{netip.MustParsePrefix("10.42.1.0/24")}); err != nil {
		t.Errorf("announce after a refused session: %v", err)
	}
	t.Logf("refusing side: %s; refused side: %s", s.LastError, status(t, host).LastError)
}

// TestImport: with Import the host learns what the neighbour announces,
// by next hop, and forgets a withdrawn prefix; its own announcements are
// not learned.
func TestImport(t *testing.T) {
	router, host, _ := pair(t, 65001, 65001, func(c *Config) { c.Import = true })
	poll(t, 15*time.Second, func() error {
		if s := status(t, host); s.State != "established" {
			return fmt.Errorf("host's session %s (%s)", s.State, s.LastError)
		}
		return nil
	})
	theirs, ours := netip.MustParsePrefix("10.42.5.0/24"), netip.MustParsePrefix("10.42.1.0/24")
	if err := host.Announce([]netip.Prefix{ours}); err != nil {
		t.Fatal(err)
	}
	if err := router.Announce([]netip.Prefix{theirs}); err != nil {
		t.Fatal(err)
	}
	poll(t, 5*time.Second, func() error {
		got := host.Learned()
		if len(got) != 1 || got[theirs] != netip.MustParseAddr("127.0.0.1") {
			return fmt.Errorf("learned %v, want %s via 127.0.0.1 only", got, theirs)
		}
		return nil
	})
	select {
	case <-host.Changes():
	default:
		t.Error("no change signalled")
	}
	if err := router.Announce(nil); err != nil {
		t.Fatal(err)
	}
	poll(t, 5*time.Second, func() error {
		if got := host.Learned(); len(got) != 0 {
			return fmt.Errorf("learned %v after the withdrawal, want nothing", got)
		}
		return nil
	})
}

func TestConfigValidate(t *testing.T) {
	ok := Config{AS: 65001, RouterID: netip.MustParseAddr("192.0.2.1"), Local: netip.MustParseAddr("192.0.2.1"),
		Neighbors: []Neighbor{{Address: netip.MustParseAddr("192.0.2.254"), AS: 65000}}}
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"ok", func(*Config) {}, ""},
		{"AS 0", func(c *Config) { c.AS = 0 }, "AS 0 is reserved"},
		{"IPv6 router ID", func(c *Config) { c.RouterID = netip.MustParseAddr("2001:db8::1") }, "router ID"},
		{"no neighbours", func(c *Config) { c.Neighbors = nil }, "no neighbour"},
		{"twice", func(c *Config) { c.Neighbors = append(c.Neighbors, c.Neighbors[0]) }, "listed twice"},
		{"neighbour AS 0", func(c *Config) { c.Neighbors[0].AS = 0 }, "AS 0 is reserved"},
		{"long password", func(c *Config) { c.Neighbors[0].Password = strings.Repeat("k", 81) }, "80 bytes"},
		{"restart time", func(c *Config) { c.GracefulRestart, c.RestartTime = true, time.Hour*2 }, "restart time"},
		{"hold time", func(c *Config) { c.HoldTime = time.Second }, "hold time"},
	}
	for _, tc := range tests {
		c := ok
		c.Neighbors = append([]Neighbor(nil), ok.Neighbors...)
		tc.mod(&c)
		err := c.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestGarbageNeighbor: a neighbour that answers with a BGP header of a
// message type that does not exist gets a NOTIFICATION (header error,
// bad message type) and the speaker keeps running. GoBGP v3 dereferenced
// a nil message on exactly this input and took the whole process down;
// v4 resets the session.
func TestGarbageNeighbor(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			hdr := append([]byte{}, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x00\x13\x09"...)
			_, _ = c.Write(hdr)
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	sp, err := Start(Config{
		AS: 65001, RouterID: netip.MustParseAddr("192.0.2.1"), Local: netip.MustParseAddr("127.0.0.1"),
		Neighbors:    []Neighbor{{Address: netip.MustParseAddr("127.0.0.1"), AS: 65000, Port: uint16(ln.Addr().(*net.TCPAddr).Port)}},
		ConnectRetry: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close(false)
	poll(t, 15*time.Second, func() error {
		if s := status(t, sp); !strings.Contains(s.LastError, "bad message type") {
			return fmt.Errorf("last error %q (state %s)", s.LastError, s.State)
		}
		return nil
	})
	if err := sp.Announce([]netip.Prefix{netip.MustParsePrefix("10.42.1.0/24")}); err != nil {
		t.Errorf("announce after garbage: %v", err)
	}
}

// TestStrangerRefused: with a listener, a connection from an address that
// is no configured neighbour is closed, and the speaker's sessions and
// announcements stay as they were.
func TestStrangerRefused(t *testing.T) {
	port := freePort(t)
	sp, err := Start(Config{
		AS: 65000, RouterID: netip.MustParseAddr("127.0.0.1"), Local: netip.MustParseAddr("127.0.0.1"), ListenPort: port,
		Neighbors: []Neighbor{{Address: netip.MustParseAddr("127.0.0.2"), AS: 65001, Passive: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close(false)
	if err := sp.Announce([]netip.Prefix{netip.MustParsePrefix("10.42.1.0/24")}); err != nil {
		t.Fatal(err)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}, Timeout: 5 * time.Second}
	var c net.Conn
	poll(t, 5*time.Second, func() error {
		var err error
		c, err = d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		return err
	})
	defer c.Close()
	// An OPEN would follow here; the speaker must not wait for it.
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 64)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("connection from a stranger: read %d bytes, %v; want it closed", n, err)
	}
	st := status(t, sp)
	if st.Address != "127.0.0.2" || st.State == "established" {
		t.Errorf("neighbours after a stranger's connection: %+v, want only 127.0.0.2, not established", st)
	}
	if got := sp.Announced(); len(got) != 1 {
		t.Errorf("announced after a stranger's connection: %v", got)
	}
}

// TestNoTransit: a host announces its own prefixes only. A route one
// neighbour announces to it never reaches another neighbour through it:
// passed on, it would make the host a transit router for someone else's
// prefix, with its own address as the next hop.
func TestNoTransit(t *testing.T) {
	host := netip.MustParseAddr("127.0.0.2")
	router := func(addr string, as uint32) (*Speaker, uint16) {
		port := freePort(t)
		sp, err := Start(Config{
			AS: as, RouterID: netip.MustParseAddr(addr), Local: netip.MustParseAddr(addr), ListenPort: port,
			Neighbors: []Neighbor{{Address: host, AS: 65001, Passive: true}},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sp.Close(false) })
		return sp, port
	}
	r1, p1 := router("127.0.0.1", 65000)
	r2, p2 := router("127.0.0.3", 65002)
	h, err := Start(Config{
		AS: 65001, RouterID: netip.MustParseAddr("192.0.2.1"), Local: host, ConnectRetry: time.Second,
		Neighbors: []Neighbor{
			{Address: netip.MustParseAddr("127.0.0.1"), AS: 65000, Port: p1},
			{Address: netip.MustParseAddr("127.0.0.3"), AS: 65002, Port: p2},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(false) })
	theirs, ours := netip.MustParsePrefix("10.99.0.0/24"), netip.MustParsePrefix("10.42.1.0/24")
	if err := r1.Announce([]netip.Prefix{theirs}); err != nil {
		t.Fatal(err)
	}
	if err := h.Announce([]netip.Prefix{ours}); err != nil {
		t.Fatal(err)
	}
	poll(t, 15*time.Second, func() error {
		st, err := h.Status()
		if err != nil {
			return err
		}
		for _, n := range st {
			if n.State != "established" {
				return fmt.Errorf("host's session with %s %s (%s)", n.Address, n.State, n.LastError)
			}
			if n.Address == "127.0.0.1" && n.Received != 1 {
				return fmt.Errorf("host received %d prefixes from 127.0.0.1, want 1", n.Received)
			}
		}
		if s := status(t, r2); s.Received != 1 {
			return fmt.Errorf("127.0.0.3 received %d prefixes, want 1 (the host's own)", s.Received)
		}
		return nil
	})
	// GoBGP passes a route on as soon as it is best: a second later it
	// would have been sent.
	time.Sleep(time.Second)
	if s := status(t, r2); s.Received != 1 {
		t.Errorf("127.0.0.3 received %d prefixes, want 1: the host passed on what 127.0.0.1 announced", s.Received)
	}
	if s := status(t, r1); s.Received != 1 {
		t.Errorf("127.0.0.1 received %d prefixes, want 1 (the host's own)", s.Received)
	}
}
