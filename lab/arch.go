package lab

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"runtime"
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
var ErrNoQEMU = errors.New("lab: qemu-user emulator not installed")

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
	return startRouterCmd(ctx, h.NS, h.cfg, l.Dir, l.launchOpts(h), func(cfgPath string) []string {
		return []string{l.opts.Bin, "netns-exec", h.NS.Name, "--", qemu, bin, "run", "--config", cfgPath}
	})
}
