package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/router"
)

// Router is a `drover run` process inside a namespace.
type Router struct {
	Name   string
	NS     *NetNS
	Config *config.Config
	Dir    string // config, log, control socket, state

	cmd  *exec.Cmd
	done chan struct{}
	err  error // exit status, valid after done is closed
}

// StartRouter writes cfg into dir and starts `bin run` inside ns. Unless set,
// the control socket and state directory are placed in dir. It returns once
// the control socket answers, or with an error carrying the log's tail.
func StartRouter(ctx context.Context, bin string, ns *NetNS, cfg *config.Config, dir string) (*Router, error) {
	return startRouter(ctx, bin, ns, cfg, dir, launchOpts{})
}

func startRouter(ctx context.Context, bin string, ns *NetNS, cfg *config.Config, dir string, how launchOpts) (*Router, error) {
	how.netns = ns
	return startRouterCmd(ctx, ns, cfg, dir, how, func(cfgPath string) []string {
		return []string{bin, "run", "--config", cfgPath}
	})
}

// startGate starts a wave of routers at one instant (StartAtOnce). Each
// process is stopped (SIGSTOP) as soon as it exists, and all continue
// (SIGCONT) once the last one exists. Without it, "at once" meant as fast
// as one process can fork 100 others while the first ones already run:
// on 2 cores, with 50 routers busy joining, the last fork came 12 s after
// the first and its daemon reached its first line 12 s after that, and
// the lab's convergence time measured mostly that.
type startGate struct {
	wg   sync.WaitGroup
	open chan struct{}
	at   time.Time // when the gate opened; written before open is closed
}

// newStartGate returns a gate for n routers and a ticket for each.
func newStartGate(n int) []*gateTicket {
	g := &startGate{open: make(chan struct{})}
	g.wg.Add(n)
	ts := make([]*gateTicket, n)
	for i := range ts {
		ts[i] = &gateTicket{g: g, arrive: sync.OnceFunc(g.wg.Done)}
	}
	go func() {
		g.wg.Wait()
		g.at = time.Now()
		close(g.open)
	}()
	return ts
}

// gateTicket is one router's place at a startGate. arrive says that its
// process exists, stopped (or will not: a failed start); only the first
// call counts.
type gateTicket struct {
	g      *startGate
	arrive func()
}

// pass stops the process, arrives, waits for the gate to open (or ctx to
// end), and continues the process.
func (t *gateTicket) pass(ctx context.Context, p *os.Process) {
	_ = p.Signal(syscall.SIGSTOP)
	t.arrive()
	select {
	case <-t.g.open:
	case <-ctx.Done():
	}
	_ = p.Signal(syscall.SIGCONT)
}

// opened is when the gate opened (zero if it has not).
func (t *gateTicket) opened() time.Time {
	select {
	case <-t.g.open:
		return t.g.at
	default:
		return time.Time{}
	}
}

// launchOpts is how the lab starts one router process.
type launchOpts struct {
	gate *gateTicket // wait at the wave's start gate (nil: start at once)
	env  []string    // added to the lab's environment
	// netns is the namespace to fork the process into (nil: the command
	// enters one itself, as `netns-exec` does). A child inherits the
	// namespaces of the thread that forks it, so the router starts in its
	// namespace with one exec instead of the two of `run --netns`: in a
	// 100-host lab started at once, about 35 ms of CPU less per router.
	netns *NetNS
}

// startRouterCmd writes cfg into dir, runs the command line argv returns
// for the configuration's path, and returns once the control socket
// answers (30 s: a router under qemu-user starts slowly). With a gate, the
// process waits at it before it runs.
func startRouterCmd(ctx context.Context, ns *NetNS, cfg *config.Config, dir string, how launchOpts, argv func(cfgPath string) []string) (*Router, error) {
	name := cfg.Node.Name
	if cfg.ControlSocket == "" || cfg.ControlSocket == config.DefaultControlSocket {
		cfg.ControlSocket = filepath.Join(dir, name+".sock")
	}
	if cfg.StateDir == "" || cfg.StateDir == config.DefaultStateDir {
		cfg.StateDir = filepath.Join(dir, name+"-state")
	}
	y, err := cfg.Marshal()
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(cfgPath, y, 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	args := argv(cfgPath)
	r := &Router{Name: name, NS: ns, Config: cfg, Dir: dir, done: make(chan struct{})}
	r.cmd = exec.Command(args[0], args[1:]...)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	if len(how.env) > 0 {
		r.cmd.Env = append(os.Environ(), how.env...)
	}
	// Pdeathsig kills the router if the test process dies, so no router
	// outlives a crashed test (it is kept across execs, into qemu too). The
	// kernel ties it to the *thread* that forked, so that thread must live
	// as long as the router: start and wait on a goroutine locked to it.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if how.netns != nil {
			// Never unlocked: the thread that joined the namespace
			// exits with this goroutine (labns.Do's rule).
			if err := netns.Set(how.netns.Handle()); err != nil {
				started <- fmt.Errorf("enter netns %s: %w", how.netns.Name, err)
				return
			}
		} else {
			defer runtime.UnlockOSThread()
		}
		if err := r.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		r.err = r.cmd.Wait()
		logf.Close()
		close(r.done)
	}()
	if err := <-started; err != nil {
		logf.Close()
		return nil, fmt.Errorf("start router %s: %w", name, err)
	}
	if how.gate != nil {
		how.gate.pass(ctx, r.cmd.Process)
	}
	err = Poll(ctx, 30*time.Second, 50*time.Millisecond, func() error {
		select {
		case <-r.done:
			return errors.New("exited")
		default:
		}
		_, err := r.Status()
		return err
	})
	if err != nil {
		r.Stop()
		return nil, fmt.Errorf("router %s did not come up: %w (exit: %v)\n%s", name, err, r.err, r.LogTail(30))
	}
	return r, nil
}

// PID is the router's process ID.
func (r *Router) PID() int { return r.cmd.Process.Pid }

// Done is closed when the process has exited.
func (r *Router) Done() <-chan struct{} { return r.done }

// ExitErr is the process's exit status; call after Done is closed.
func (r *Router) ExitErr() error { return r.err }

// Stop sends SIGTERM and waits up to 10 s, then SIGKILLs. It returns the
// exit status (nil for a clean exit on SIGTERM).
func (r *Router) Stop() error {
	select {
	case <-r.done:
		return r.err
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
		return r.err
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
		return fmt.Errorf("router %s ignored SIGTERM for 10 s; killed", r.Name)
	}
}

// Kill sends SIGKILL and waits for the exit.
func (r *Router) Kill() {
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Kill()
	<-r.done
}

// Status queries the control socket.
func (r *Router) Status() (*router.Status, error) {
	var st router.Status
	if err := getJSON(r.Config.ControlSocket, "/v1/status", &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// LogTail returns the last n lines of the router's log.
func (r *Router) LogTail(n int) string {
	b, _ := os.ReadFile(filepath.Join(r.Dir, r.Name+".log"))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Get GETs path from the router's control socket: the body of a 200
// answer, or an error carrying the status and the daemon's message.
func (r *Router) Get(path string) ([]byte, error) { return controlGet(r.Config.ControlSocket, path) }

func getJSON(sock, path string, v any) error {
	b, err := controlGet(sock, path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func controlGet(sock, path string) ([]byte, error) {
	c := http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}},
	}
	resp, err := c.Get("http://drover" + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(b.String()))
	}
	return b.Bytes(), nil
}
