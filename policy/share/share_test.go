package share

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drovernet/drover/policy"
)

type sink struct {
	mu  sync.Mutex
	got map[string][]policy.Pod
	n   int
}

func (s *sink) set(node string, pods []policy.Pod) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.got == nil {
		s.got = map[string][]policy.Pod{}
	}
	if pods == nil {
		delete(s.got, node)
	} else {
		s.got[node] = pods
	}
	s.n++
}

func (s *sink) pods(node string) ([]policy.Pod, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.got[node]
	return p, ok
}

func eventually(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	t0 := time.Now()
	for !cond() {
		if time.Since(t0) > 5*time.Second {
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(t0)
}

func serve(t *testing.T, s *Server) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: s}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

func rec(ns, name, addr string, labels map[string]string) Record {
	return Record{Namespace: ns, Name: name, Labels: labels, Addrs: []netip.Addr{netip.MustParseAddr(addr)}}
}

// A peer's pods arrive, a change arrives through the long poll at once,
// and a peer that leaves is forgotten.
func TestFetchFollowsChanges(t *testing.T) {
	srv := NewServer(func(a netip.Addr) bool { return a == netip.MustParseAddr("127.0.0.1") })
	srv.Set([]Record{rec("x", "a", "127.0.0.5", map[string]string{"app": "a"})})
	port := serve(t, srv)
	var s sink
	f := &Fetcher{Port: port, Sink: s.set, Log: slog.New(slog.NewTextHandler(t.Output(), nil))}
	defer f.Stop()
	peer := Peer{Name: "h2", Addr: netip.MustParseAddr("127.0.0.1"), Blocks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	f.SetPeers(context.Background(), []Peer{peer})
	eventually(t, "h2's pods", func() bool { p, ok := s.pods("h2"); return ok && len(p) == 1 })

	srv.Set([]Record{rec("x", "a", "127.0.0.5", map[string]string{"app": "b"})})
	took := eventually(t, "the relabelled pod", func() bool {
		p, _ := s.pods("h2")
		return len(p) == 1 && p[0].Labels["app"] == "b"
	})
	if took > time.Second {
		t.Errorf("a change took %v to arrive through the long poll, want well under 1 s", took)
	}
	f.SetPeers(context.Background(), nil)
	if _, ok := s.pods("h2"); ok {
		t.Error("a peer that left still has pods")
	}
}

// A snapshot with an address outside the peer's blocks is refused whole:
// a host speaks only for its own pods.
func TestFetchRefusesForeignAddresses(t *testing.T) {
	srv := NewServer(func(netip.Addr) bool { return true })
	srv.Set([]Record{rec("x", "a", "127.0.0.5", nil), rec("x", "b", "10.42.1.5", nil)})
	port := serve(t, srv)
	var s sink
	var logs strings.Builder
	var mu sync.Mutex
	f := &Fetcher{Port: port, Sink: s.set, Log: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))}
	defer f.Stop()
	f.SetPeers(context.Background(), []Peer{{Name: "h2", Addr: netip.MustParseAddr("127.0.0.1"), Blocks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}})
	eventually(t, "the refusal logged", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(logs.String(), "10.42.1.5 is not in h2's blocks")
	})
	if _, ok := s.pods("h2"); ok {
		t.Error("a snapshot with a foreign address was accepted")
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestServerRefusesStrangers(t *testing.T) {
	srv := NewServer(func(netip.Addr) bool { return false })
	port := serve(t, srv)
	resp, err := http.Get("http://127.0.0.1:" + itoa(port) + "/v1/pods")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("a stranger got %s, want 403", resp.Status)
	}
}

func itoa(p uint16) string {
	return netip.AddrPortFrom(netip.IPv4Unspecified(), p).String()[len("0.0.0.0:"):]
}

func TestValidate(t *testing.T) {
	p := Peer{Name: "h2", Blocks: []netip.Prefix{netip.MustParsePrefix("10.42.2.0/24")}}
	for _, tc := range []struct {
		name string
		snap Snapshot
		ok   bool
	}{
		{"good", Snapshot{Version: "1", Pods: []Record{rec("x", "a", "10.42.2.5", map[string]string{"app": "a"})}}, true},
		{"no version", Snapshot{Pods: []Record{}}, false},
		{"foreign address", Snapshot{Version: "1", Pods: []Record{rec("x", "a", "10.42.3.5", nil)}}, false},
		{"bad namespace", Snapshot{Version: "1", Pods: []Record{rec("X", "a", "10.42.2.5", nil)}}, false},
		{"bad label", Snapshot{Version: "1", Pods: []Record{rec("x", "a", "10.42.2.5", map[string]string{"a b": "c"})}}, false},
		{"no address", Snapshot{Version: "1", Pods: []Record{{Namespace: "x", Name: "a"}}}, false},
	} {
		err := Validate(p, &tc.snap)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("%s: got %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}
