package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/drovernet/drover/internal/netnstest"
	"github.com/drovernet/drover/lab"
	"github.com/drovernet/drover/testenv"
)

// underlayHost is a namespace whose underlay interface (drv-uw0, a veth
// to drv-uw1: no dummy module on every kernel) has no address yet, as a
// containerlab node's has none when its process starts, and a drover
// configuration for 192.0.2.1 under a short directory.
type underlayHost struct {
	ns, cfg, sock string
}

func newUnderlayHost(t *testing.T, wait string) *underlayHost {
	t.Helper()
	h := &underlayHost{ns: netnstest.New(t, "uw").Name}
	h.ip(t, "link", "add", "drv-uw0", "type", "veth", "peer", "name", "drv-uw1")
	h.ip(t, "link", "set", "drv-uw1", "up")
	// Not t.TempDir: its path is long, and a unix socket path is at most
	// 107 bytes.
	dir, err := os.MkdirTemp("", "drv-uw-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	key := filepath.Join(dir, "cluster.key")
	if err := os.WriteFile(key, []byte(strings.Repeat("5a", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.cfg, h.sock = filepath.Join(dir, "drover.yaml"), filepath.Join(dir, "drover.sock")
	node := "name: uw1, underlay: 192.0.2.1"
	if wait != "" {
		node += ", underlay_wait: " + wait
	}
	y := fmt.Sprintf("node: {%s}\ncluster: {key_file: %s, bootstrap: true}\nstate_dir: %s\ncontrol_socket: %s\n",
		node, key, filepath.Join(dir, "state"), h.sock)
	if err := os.WriteFile(h.cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *underlayHost) ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", h.ns}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s %s: %v: %s", h.ns, strings.Join(args, " "), err, out)
	}
}

// droverRun is `drover run` started in the namespace.
type droverRun struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{} // closed when the process has exited
}

// run starts the daemon; it is killed when the test ends if still running,
// before the namespace goes (cleanups run last first).
func (h *underlayHost) run(t *testing.T, bin string) *droverRun {
	t.Helper()
	d := &droverRun{cmd: exec.Command("ip", "netns", "exec", h.ns, bin, "run", "--config", h.cfg), out: &syncBuffer{}, done: make(chan struct{})}
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		if !d.exited() {
			_ = d.cmd.Process.Kill()
			<-d.done
		}
	})
	return d
}

func (d *droverRun) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// waitLog waits until the daemon has logged msg, and fails the test if it
// exits first.
func (d *droverRun) waitLog(t *testing.T, msg string) {
	t.Helper()
	if err := lab.Poll(t.Context(), 10*time.Second, 50*time.Millisecond, func() error {
		if d.exited() {
			return errors.New("drover exited")
		}
		if !strings.Contains(d.out.String(), msg) {
			return errors.New("not logged yet")
		}
		return nil
	}); err != nil {
		t.Fatalf("waiting for the log line %q: %v\n%s", msg, err, d.out.String())
	}
}

// line returns the first line of the daemon's output that contains s.
func (d *droverRun) line(s string) string {
	for _, l := range strings.Split(d.out.String(), "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// exit waits up to within for the daemon to exit and returns its status.
func (d *droverRun) exit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-d.done:
		return d.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("drover still running after %v\n%s", within, d.out.String())
		return -1
	}
}

func (h *underlayHost) status(bin string) error {
	if out, err := exec.Command(bin, "status", "--socket", h.sock).CombinedOutput(); err != nil {
		return fmt.Errorf("drover status: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// A containerlab node's daemon: started before its underlay address
// exists, with node.underlay_wait it waits having set nothing up (no
// control socket, no TUN), starts once the address comes, and stops on
// SIGTERM with status 0.
func TestRunWaitsForUnderlay(t *testing.T) {
	netnstest.NeedRoot(t)
	bin := testenv.DroverBinary(t)
	h := newUnderlayHost(t, "20s")
	d := h.run(t, bin)
	d.waitLog(t, "waiting for the underlay address")
	if want := `address=192.0.2.1 timeout=20s`; !strings.Contains(d.out.String(), want) {
		t.Errorf("log %q does not contain %q", d.out.String(), want)
	}
	if err := h.status(bin); err == nil {
		t.Errorf("drover status answered while the daemon waits for its underlay; want no control socket yet")
	}
	if linkExists(h.ns, "drover0") {
		t.Errorf("drover0 exists while the daemon waits for its underlay; want nothing set up")
	}
	h.ip(t, "addr", "add", "192.0.2.1/24", "dev", "drv-uw0")
	h.ip(t, "link", "set", "drv-uw0", "up")
	if err := lab.Poll(t.Context(), 20*time.Second, 50*time.Millisecond, func() error { return h.status(bin) }); err != nil {
		t.Fatalf("after the underlay address came: %v\n%s", err, d.out.String())
	}
	if want := `msg="underlay address up" address=192.0.2.1 interface=drv-uw0 waited=`; !strings.Contains(d.out.String(), want) {
		t.Errorf("log %q does not contain %q", d.out.String(), want)
	}
	t.Logf("%s", d.line("underlay address up"))
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.exit(t, 20*time.Second); code != 0 {
		t.Fatalf("exit status after SIGTERM: got %d, want 0\n%s", code, d.out.String())
	}
}

// systemctl stop while the daemon waits: a stop, not a failure (status 0).
func TestRunStopsWhileWaitingForUnderlay(t *testing.T) {
	netnstest.NeedRoot(t)
	bin := testenv.DroverBinary(t)
	h := newUnderlayHost(t, "20s")
	d := h.run(t, bin)
	d.waitLog(t, "waiting for the underlay address")
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.exit(t, 5*time.Second); code != 0 {
		t.Fatalf("exit status after SIGTERM while waiting: got %d, want 0\n%s", code, d.out.String())
	}
	if want := "stopped while waiting for the underlay address"; !strings.Contains(d.out.String(), want) {
		t.Errorf("log %q does not contain %q", d.out.String(), want)
	}
}

// Without the address: with no node.underlay_wait at once, and when the
// address does not come in time: a runtime failure (status 1, so systemd
// restarts the daemon; the message names the key to set). Neither sets
// anything up.
func TestRunWithoutUnderlay(t *testing.T) {
	netnstest.NeedRoot(t)
	bin := testenv.DroverBinary(t)
	for _, tc := range []struct {
		name, wait string
		code       int
		want       string
	}{
		{"no wait", "", 1, "drover: node.underlay: 192.0.2.1 is on no interface of this host (set node.underlay_wait to wait for it)"},
		{"wait runs out", "1s", 1, "drover: node.underlay: 192.0.2.1 appeared on no interface within 1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newUnderlayHost(t, tc.wait)
			start := time.Now()
			d := h.run(t, bin)
			if code := d.exit(t, 10*time.Second); code != tc.code {
				t.Fatalf("exit status: got %d, want %d\n%s", code, tc.code, d.out.String())
			}
			t.Logf("exit %d after %v", tc.code, time.Since(start).Round(time.Millisecond))
			if !strings.Contains(d.out.String(), tc.want) {
				t.Errorf("output %q does not contain %q", d.out.String(), tc.want)
			}
			if linkExists(h.ns, "drover0") {
				t.Errorf("drover0 exists; want nothing set up")
			}
		})
	}
}

func linkExists(ns, name string) bool {
	return exec.Command("ip", "-n", ns, "link", "show", name).Run() == nil
}

// syncBuffer is a bytes.Buffer the process's output goroutine writes
// while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
