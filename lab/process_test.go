package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// process is a long-running child of the test process (etcd, kube-apiserver,
// containerd, kubelet): its output goes to a log file, it is killed if the
// test process dies (Pdeathsig), and it can be started inside a network
// namespace. Only this process is ever signalled, by its PID.
type process struct {
	name string
	log  string // path of the log file
	cmd  *exec.Cmd
	done chan struct{}
	err  error // exit status, valid after done is closed
}

// startProcess starts argv with its output appended to logPath. With ns
// non-nil the process starts inside that network namespace: it is forked
// from a thread that has joined the namespace, a thread that is never
// returned to the Go scheduler, so nothing else of the test process ever
// runs there. env, when non-nil, is the whole environment.
func startProcess(name string, ns *NetNS, logPath string, argv []string, env []string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: log: %w", name, err)
	}
	p := &process{name: name, log: logPath, done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.Env = env
	// Pdeathsig is tied to the thread that forks: that thread waits for the
	// process, so it lives exactly as long as the child may.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked when ns is set: the thread exits with the goroutine
		if ns == nil {
			defer runtime.UnlockOSThread()
		} else if err := netns.Set(ns.Handle()); err != nil {
			started <- fmt.Errorf("enter netns %s: %w", ns.Name, err)
			return
		}
		if err := p.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	if err := <-started; err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, argv[0], err)
	}
	return p, nil
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM (to the process only, never its group) and waits up to
// grace, then SIGKILLs and waits. It returns an error only when the process
// had to be killed.
func (p *process) stop(grace time.Duration) error { return p.stopAfter(0, grace) }

// stopAfter is stop that sends a second SIGTERM after first if the process
// is still there: kube-apiserver's graceful shutdown waits for its open
// watches (drover's informers hold some), and a second SIGTERM ends it at
// once (../shared/kubernetes/README.md).
func (p *process) stopAfter(first, grace time.Duration) error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if first > 0 {
		select {
		case <-p.done:
			return nil
		case <-time.After(first):
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("%s (pid %d) ignored SIGTERM for %v; killed", p.name, p.cmd.Process.Pid, grace)
}

// tail returns the last n lines of the process's log, for error messages.
func (p *process) tail(n int) string {
	return logTail(p.log, n)
}

// logTail returns the last n lines of the file at path.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// exitedErr describes a process that ended while it was waited for.
func (p *process) exitedErr() error {
	return fmt.Errorf("%s exited (%v); log %s:\n%s", p.name, p.err, p.log, p.tail(30))
}

// inCI reports whether the tests run in CI (.ci/run exports DROVER_CI=1;
// most CI systems set CI): there a missing tool fails a test instead of
// skipping it.
func inCI() bool {
	return os.Getenv("DROVER_CI") != "" || os.Getenv("CI") != ""
}

// needTool skips (or, in CI, fails) the test with why when err is not nil.
func needTool(t testing.TB, err error, why string) {
	t.Helper()
	if err == nil {
		return
	}
	if inCI() {
		t.Fatalf("%v: %s (in CI a missing tool is a failure)", err, why)
	}
	t.Skipf("%v: %s", err, why)
}

// runOut runs argv to completion and returns its standard output; the
// error names the command and carries its standard error.
func runOut(stdin string, argv ...string) (string, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(argv[0]), strings.Join(argv[1:], " "), err,
			bytes.TrimSpace(append(stderr.Bytes(), stdout.Bytes()...)))
	}
	return stdout.String(), nil
}

var errNotFound = errors.New("not found")
