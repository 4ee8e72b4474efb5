package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/testenv"
)

// curlIn runs curl inside ns (GET unless method says otherwise) and
// returns the HTTP status and body. A status of 0 means curl got no answer
// (err says why).
func curlIn(ctx context.Context, ns *NetNS, method, u string) (int, string, error) {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns.Name,
		"curl", "-sS", "--max-time", "3", "-X", method, "-w", "\n%{http_code}", u)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return 0, "", fmt.Errorf("curl %s %s: %v: %s", method, u, err, strings.TrimSpace(string(ee.Stderr)))
		}
		return 0, "", err
	}
	s := string(out)
	i := strings.LastIndexByte(s, '\n')
	code, err := strconv.Atoi(s[i+1:])
	if err != nil {
		return 0, "", fmt.Errorf("curl %s: no status in %q", u, s)
	}
	return code, s[:i], nil
}

// waitCurl polls curlIn until the answer has status want, and returns its
// body.
func waitCurl(t *testing.T, ns *NetNS, u string, want int, timeout time.Duration) string {
	t.Helper()
	var code int
	var body string
	err := Poll(t.Context(), timeout, 100*time.Millisecond, func() error {
		var err error
		code, body, err = curlIn(t.Context(), ns, "GET", u)
		if err != nil {
			return err
		}
		if code != want {
			return fmt.Errorf("GET %s: got %d %q, want %d", u, code, body, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("curl %s (in %s): %d %q", u, ns.Name, code, truncate(body, 200))
	return body
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// prometheus is a Prometheus server run by a test inside a namespace.
type prometheus struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// startPrometheus starts Debian's prometheus inside ns, listening on
// 127.0.0.1:9090 there, scraping targets every second, with its storage in
// dir. It is stopped (by PID) when the test ends.
func startPrometheus(t *testing.T, ns *NetNS, targets []string, dir string) *prometheus {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if inCI() {
			t.Fatalf("prometheus not installed; .ci/run installs it (APT_PKGS): %v", err)
		}
		t.Skip("needs Debian's prometheus: apt-get install --no-install-recommends prometheus (.ci/run installs it)")
	}
	quoted := make([]string, len(targets))
	for i, a := range targets {
		quoted[i] = strconv.Quote(a)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: drover
    static_configs:
      - targets: [%s]
`, strings.Join(quoted, ", "))
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &prometheus{done: make(chan struct{}), log: filepath.Join(dir, "prometheus.log")}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	// ip netns exec execs prometheus in its own process: the PID is
	// prometheus's.
	p.cmd = exec.Command("ip", "netns", "exec", ns.Name, bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address=127.0.0.1:9090")
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	// As for routers (startRouterCmd): killed if the test process dies,
	// which the kernel ties to the thread that forked.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := p.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	if err := <-started; err != nil {
		logf.Close()
		t.Fatalf("start prometheus: %v", err)
	}
	t.Logf("prometheus started, pid %d, in %s", p.cmd.Process.Pid, ns.Name)
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			t.Errorf("prometheus (pid %d) ignored SIGTERM for 10 s; killed", p.cmd.Process.Pid)
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("prometheus log:\n%s", truncate(string(b), 4000))
		}
	})
	return p
}

// promSample is one element of a Prometheus instant query's result.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"` // [unix time, "value"]
}

// query runs an instant query against the Prometheus inside ns.
func (p *prometheus) query(ctx context.Context, ns *NetNS, q string) ([]promSample, error) {
	code, body, err := curlIn(ctx, ns, "GET", "http://127.0.0.1:9090/api/v1/query?query="+url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("query %s: HTTP %d: %s", q, code, body)
	}
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Result []promSample `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		return nil, fmt.Errorf("query %s: %v: %s", q, err, body)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %s: status %s: %s", q, r.Status, body)
	}
	return r.Data.Result, nil
}

// The TCP listener of issue 11: on two cluster hosts, h1 with the default
// (loopback) and h2 on its underlay address, /healthz, /readyz and
// /metrics answer with curl; h2 is alive but not ready while it cannot
// reach its seed and says why, and ready once it joined; nothing of the
// control API answers on TCP; and a real Prometheus in h1's namespace,
// scraping both every second, returns drover's counters.
func TestHTTPProbesPrometheus(t *testing.T) {
	testenv.NeedRoot(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatalf("curl not installed (.ci/run installs it): %v", err)
	}
	lab := newTestLab(t, Options{Hosts: 2, Containers: 1, Cluster: true,
		HostOptions: []HostOptions{{}, {Manual: true}}})
	h1, h2 := lab.Hosts[0], lab.Hosts[1]
	if got := *h1.cfg.HTTP.Listen; got != config.DefaultHTTPListen {
		t.Fatalf("h1's http.listen: got %q, want the default %q", got, config.DefaultHTTPListen)
	}
	h1URL := "http://" + config.DefaultHTTPListen
	h2Addr := netip.AddrPortFrom(h2.Underlay, 9743).String()
	h2URL := "http://" + h2Addr

	// h1 founded the cluster: alive and ready alone.
	waitCurl(t, h1.NS, h1URL+"/healthz", 200, 10*time.Second)
	waitCurl(t, h1.NS, h1URL+"/readyz", 200, 10*time.Second)

	// h2 starts with its uplink cut: alive, not ready, and says why.
	h2.cfg.HTTP.Listen = &h2Addr
	if err := lab.SetUplink(h2, false); err != nil {
		t.Fatal(err)
	}
	if err := lab.launch(t.Context(), h2, lab.seedsFor(h2)); err != nil {
		t.Fatal(err)
	}
	waitCurl(t, h2.NS, h2URL+"/healthz", 200, 10*time.Second)
	body := waitCurl(t, h2.NS, h2URL+"/readyz", 503, 10*time.Second)
	if !strings.Contains(body, "not joined") {
		t.Errorf("h2 /readyz while cut off: got %q, want the reason (not joined)", body)
	}
	if err := lab.SetUplink(h2, true); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitCurl(t, h2.NS, h2URL+"/readyz", 200, 30*time.Second)
	t.Logf("h2 ready %v after its uplink came back", time.Since(start).Round(time.Millisecond))
	if err := lab.WaitConverged(t.Context(), lab.Hosts, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := lab.checkBlock(h2); err != nil { // addresses h2's container
		t.Fatal(err)
	}

	// The default listener is loopback only: h2 cannot reach h1's over
	// the underlay, h1 reaches h2's configured one.
	if code, _, err := curlIn(t.Context(), h2.NS, "GET", "http://"+netip.AddrPortFrom(h1.Underlay, 9743).String()+"/metrics"); err == nil {
		t.Errorf("h1's default listener answered %d on its underlay address, want no answer (loopback only)", code)
	}
	waitCurl(t, h1.NS, h2URL+"/healthz", 200, 5*time.Second)

	// Nothing of the control API, least of all what changes state.
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/status"}, {"GET", "/v1/cluster"}, {"POST", "/v1/local"},
		{"DELETE", "/v1/local"}, {"POST", "/v1/identities/forget?name=h2"},
		{"POST", "/metrics"},
	} {
		code, _, err := curlIn(t.Context(), h1.NS, c.method, h1URL+c.path)
		if err != nil {
			t.Fatal(err)
		}
		if code != 404 && code != 405 {
			t.Errorf("%s %s on TCP: got %d, want 404 or 405", c.method, c.path, code)
		}
	}

	// Traffic for the counters, then the metrics as curl sees them.
	m, err := lab.Reachability(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !m.OK() {
		t.Fatalf("containers do not reach each other:\n%s", m)
	}
	metrics := waitCurl(t, h1.NS, h1URL+"/metrics", 200, 5*time.Second)
	for _, want := range []string{"# TYPE drover_tx_packets_total counter\n", `drover_peer_packets_total{peer="h2",direction="tx"} `} {
		if !strings.Contains(metrics, want) {
			t.Errorf("h1 /metrics lacks %q:\n%s", want, metrics)
		}
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		// Prometheus' own linter, on what the daemon serves.
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(metrics)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}

	// A real Prometheus scrapes both and returns the counters.
	p := startPrometheus(t, h1.NS, []string{config.DefaultHTTPListen, h2Addr}, t.TempDir())
	start = time.Now()
	var got []promSample
	err = Poll(t.Context(), 60*time.Second, 500*time.Millisecond, func() error {
		var err error
		got, err = p.query(t.Context(), h1.NS, "drover_tx_packets_total")
		if err != nil {
			return err
		}
		seen := map[string]float64{}
		for _, s := range got {
			v, _ := s.Value[1].(string)
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return fmt.Errorf("sample %v: value %q", s.Metric, v)
			}
			seen[s.Metric["instance"]] = f
		}
		for _, inst := range []string{config.DefaultHTTPListen, h2Addr} {
			if seen[inst] <= 0 {
				return fmt.Errorf("drover_tx_packets_total: got %v, want a value > 0 for instance %s", seen, inst)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Prometheus returned drover's counters %v after it started:", time.Since(start).Round(time.Millisecond))
	for _, s := range got {
		t.Logf("  drover_tx_packets_total%v = %v", s.Metric, s.Value[1])
	}
	peers, err := p.query(t.Context(), h1.NS, `drover_peer_packets_total{direction="rx"}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range peers {
		t.Logf("  drover_peer_packets_total%v = %v", s.Metric, s.Value[1])
	}
	if len(peers) != 2 {
		t.Errorf("drover_peer_packets_total{direction=\"rx\"}: got %d series, want 2 (h1's peer h2, h2's peer h1)", len(peers))
	}
}
