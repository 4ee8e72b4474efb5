package health

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeDaemon stands in for the daemon: a State to return and a metrics
// text, with a count of how often either was read.
type fakeDaemon struct {
	mu    sync.Mutex
	st    State
	reads atomic.Int64
}

const fakeMetrics = "# HELP drover_tx_packets_total x\n# TYPE drover_tx_packets_total counter\ndrover_tx_packets_total 42\n"

func (d *fakeDaemon) set(st State) { d.mu.Lock(); d.st = st; d.mu.Unlock() }

func (d *fakeDaemon) config() Config {
	return Config{
		State: func() State {
			d.reads.Add(1)
			d.mu.Lock()
			defer d.mu.Unlock()
			return d.st
		},
		Metrics: func(w io.Writer) error {
			d.reads.Add(1)
			_, err := io.WriteString(w, fakeMetrics)
			return err
		},
		ContentType: "text/plain; version=0.0.4; charset=utf-8",
		Now:         func() time.Time { return t0 },
	}
}

var (
	ready   = State{RouterRunning: true, Prefixes: []string{"10.42.1.0/24"}, Cluster: &Cluster{LastStep: t0, Joined: true}}
	settled = "claiming 10.42.1.0/24: not handed out before 2026-12-06T12:00:02Z"
	unready = State{RouterRunning: true, Cluster: &Cluster{LastStep: t0, Joined: true, BlockNote: settled}}
	dead    = State{Prefixes: []string{"10.42.1.0/24"}}
)

func do(t *testing.T, method, url string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func TestHandler(t *testing.T) {
	d := &fakeDaemon{}
	srv := httptest.NewServer(Handler(d.config()))
	defer srv.Close()
	for _, c := range []struct {
		name, method, path string
		st                 State
		code               int
		ctype              string
		body               string // exact
	}{
		{"healthz ok", "GET", "/healthz", ready, 200, "text/plain; charset=utf-8", "ok\n"},
		{"healthz HEAD", "HEAD", "/healthz", ready, 200, "text/plain; charset=utf-8", ""},
		{"healthz while a block settles", "GET", "/healthz", unready, 200, "text/plain; charset=utf-8", "ok\n"},
		{"healthz router stopped", "GET", "/healthz", dead, 503, "text/plain; charset=utf-8", "router: not running (its pipelines have not started, or one has stopped)\n"},
		{"readyz ok", "GET", "/readyz", ready, 200, "text/plain; charset=utf-8", "ok\n"},
		{"readyz block settling", "GET", "/readyz", unready, 503, "text/plain; charset=utf-8", settled + "\n"},
		{"readyz router stopped", "GET", "/readyz", dead, 503, "text/plain; charset=utf-8", "not alive: router: not running (its pipelines have not started, or one has stopped)\n"},
		{"metrics", "GET", "/metrics", unready, 200, "text/plain; version=0.0.4; charset=utf-8", fakeMetrics},
		{"metrics HEAD", "HEAD", "/metrics", ready, 200, "text/plain; version=0.0.4; charset=utf-8", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			d.set(c.st)
			code, h, body := do(t, c.method, srv.URL+c.path)
			if code != c.code || h.Get("Content-Type") != c.ctype || body != c.body {
				t.Fatalf("%s %s: got %d %q %q, want %d %q %q", c.method, c.path, code, h.Get("Content-Type"), body, c.code, c.ctype, c.body)
			}
			if h.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control: got %q, want no-store (a cached probe answer is a stale one)", h.Get("Cache-Control"))
			}
		})
	}
}

// Nothing of the control API is on TCP, least of all what changes state:
// the CNI plugin's POST and DELETE /v1/local and identity forget answer 404
// or 405 and never reach the daemon; the probes take no other method.
func TestNoControlAPIOnTCP(t *testing.T) {
	d := &fakeDaemon{st: ready}
	srv := httptest.NewServer(Handler(d.config()))
	defer srv.Close()
	for _, c := range []struct{ method, path string }{
		{"POST", "/v1/local"},
		{"DELETE", "/v1/local"},
		{"GET", "/v1/local"},
		{"POST", "/v1/identities/forget?name=h2"},
		{"GET", "/v1/status"},
		{"GET", "/v1/cluster"},
		{"GET", "/"},
		{"GET", "/debug/pprof/"},
		{"POST", "/healthz"},
		{"PUT", "/readyz"},
		{"DELETE", "/metrics"},
		{"POST", "/metrics"},
	} {
		code, h, _ := do(t, c.method, srv.URL+c.path)
		if code != http.StatusNotFound && code != http.StatusMethodNotAllowed {
			t.Errorf("%s %s: got %d, want 404 or 405", c.method, c.path, code)
		}
		if code == http.StatusMethodNotAllowed && h.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s %s: Allow: got %q, want \"GET, HEAD\"", c.method, c.path, h.Get("Allow"))
		}
	}
	if n := d.reads.Load(); n != 0 {
		t.Fatalf("the daemon was read %d times by requests that should not reach it, want 0", n)
	}
}

// Listen serves on a real socket; Close stops it, the port refuses
// connections afterwards and no goroutine stays behind.
func TestListenClose(t *testing.T) {
	before := runtime.NumGoroutine()
	d := &fakeDaemon{st: ready}
	c := d.config()
	c.Addr = "127.0.0.1:0"
	s, err := Listen(c)
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + s.Addr().String()
	if code, _, body := do(t, "GET", url+"/readyz"); code != 200 || body != "ok\n" {
		t.Fatalf("GET /readyz: got %d %q, want 200 \"ok\\n\"", code, body)
	}
	http.DefaultClient.CloseIdleConnections()
	s.Close()
	if c, err := net.DialTimeout("tcp", s.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatal("after Close: a connection was accepted, want refused")
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // goroutine-leak check: poll to a deadline
	}
	if g := runtime.NumGoroutine(); g > before {
		t.Errorf("goroutines: got %d after Close, want <= %d", g, before)
	}
}

// A client that opens a connection and never finishes its request header
// is cut off after readHeaderTimeout.
func TestSlowHeaderCutOff(t *testing.T) {
	old := readHeaderTimeout
	readHeaderTimeout = 200 * time.Millisecond
	t.Cleanup(func() { readHeaderTimeout = old })
	d := &fakeDaemon{st: ready}
	c := d.config()
	c.Addr = "127.0.0.1:0"
	s, err := Listen(c)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conn, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n"); err != nil { // no blank line
		t.Fatal(err)
	}
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server kept a half-sent request open for 5 s, want it closed after %v", readHeaderTimeout)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("closed after %v, want about %v", took, readHeaderTimeout)
	}
}
