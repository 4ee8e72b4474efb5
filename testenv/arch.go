package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/drovernet/drover/cmd/drover/config"
)

// Foreign-architecture routers: a cross build of cmd/drover run under
// qemu-user inside the host's namespace. The lab's own binary enters the
// namespace (`drover netns-exec NS -- qemu-ARCH-static BIN run ...`), so
// the foreign binary never needs its own --netns re-exec.

// qemuArch maps GOARCH to qemu-user's name for it.
var qemuArch = map[string]string{
	"arm64":   "aarch64",
	"riscv64": "riscv64",
	"ppc64le": "ppc64le",
	"s390x":   "s390x",
}

// ErrNoQEMU means the qemu-user emulator for an architecture is not
// installed (Debian: qemu-user-static).
var ErrNoQEMU = errors.New("testenv: qemu-user emulator not installed")

// isNative reports whether arch is this process's architecture.
func isNative(arch string) bool { return arch == "" || arch == runtime.GOARCH }

// qemuName is the emulator's command name for arch ("" when native).
func qemuName(arch string) (string, error) {
	if isNative(arch) {
		return "", nil
	}
	q, ok := qemuArch[arch]
	if !ok {
		return "", fmt.Errorf("arch %q: not one of arm64, riscv64, ppc64le, s390x", arch)
	}
	return "qemu-" + q + "-static", nil
}

// QEMU returns the path of the qemu-user emulator for arch, or an error
// wrapping ErrNoQEMU.
func QEMU(arch string) (string, error) {
	name, err := qemuName(arch)
	if err != nil {
		return "", err
	}
	if name == "" {
		return "", fmt.Errorf("arch %q is native: no emulator needed", arch)
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrNoQEMU, name, err)
	}
	return p, nil
}

var archBuilds struct {
	mu    sync.Mutex
	paths map[string]string
}

// BuildDroverArch cross-builds ./cmd/drover for goarch (CGO off) once per
// process, next to BuildDrover's binary, as drover-PID-GOARCH (removed
// with the others once this process is gone).
func BuildDroverArch(goarch string) (string, error) {
	if isNative(goarch) {
		return BuildDrover()
	}
	if _, err := qemuName(goarch); err != nil {
		return "", err
	}
	archBuilds.mu.Lock()
	defer archBuilds.mu.Unlock()
	if p, ok := archBuilds.paths[goarch]; ok {
		return p, nil
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("testenv: cannot locate the module")
	}
	root := filepath.Dir(filepath.Dir(file))
	dir := filepath.Join(os.TempDir(), "drv-bin")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	out := filepath.Join(dir, fmt.Sprintf("drover-%d-%s", os.Getpid(), goarch))
	cmd := exec.Command("go", "build", "-o", out, "./cmd/drover")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("GOARCH=%s go build ./cmd/drover: %w\n%s", goarch, err, b)
	}
	if archBuilds.paths == nil {
		archBuilds.paths = map[string]string{}
	}
	archBuilds.paths[goarch] = out
	return out, nil
}

// startForeign starts h's router from its foreign-architecture binary
// under qemu-user, entering the namespace through the lab's own binary.
func (l *Lab) startForeign(ctx context.Context, h *Host) (*Router, error) {
	qemu, err := QEMU(h.opts.Arch)
	if err != nil {
		return nil, err
	}
	bin := h.opts.Bin
	if bin == "" {
		return nil, fmt.Errorf("host %s: no %s binary", h.Name, h.opts.Arch)
	}
	return startRouterCmd(ctx, h.NS, h.cfg, l.Dir, func(cfgPath string) []string {
		return []string{l.opts.Bin, "netns-exec", h.NS.Name, "--", qemu, bin, "run", "--config", cfgPath}
	})
}

// startRouterCmd is StartRouter with the command line given by argv (from
// the path of the written configuration): the router writes cfg into dir,
// runs argv, and returns once the control socket answers.
func startRouterCmd(ctx context.Context, ns *NetNS, cfg *config.Config, dir string, argv func(cfgPath string) []string) (*Router, error) {
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
	// As StartRouter: Pdeathsig (kept across the execs into qemu) ties the
	// router to the forking thread, which therefore lives until it exits.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
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
