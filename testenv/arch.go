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
	// qemu-user translates rtnetlink but not NETLINK_NETFILTER ("socket:
	// protocol not supported"), so the forward filter cannot be installed by
	// an emulated binary; on real ARM hardware it is. The emulated host runs
	// without it: this lab tests the data plane across architectures, and
	// the filter is tested natively (TestForwardFilterLab).
	off := false
	h.cfg.Firewall.Forward = &off
	return startRouterCmd(ctx, h.NS, h.cfg, l.Dir, func(cfgPath string) []string {
		return []string{l.opts.Bin, "netns-exec", h.NS.Name, "--", qemu, bin, "run", "--config", cfgPath}
	})
}
