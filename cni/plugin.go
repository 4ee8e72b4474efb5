package cni

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"slices"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/drovernet/drover/cni/ipam"
)

// Main runs the plugin: cmd/drover calls it when CNI_COMMAND is set. It
// reads the environment and stdin as the CNI spec says, writes the result or
// a CNI error object to stdout, and exits the process (0 or 1); it never
// returns.
func Main(ver string) {
	p, err := newPlugin(os.Stderr)
	if err != nil {
		e := types.NewError(types.ErrInternal, "drover: cannot open this host's network namespace", err.Error())
		_ = e.Print()
		os.Exit(1)
	}
	skel.PluginMainFuncs(p.funcs(), version.All, "CNI plugin drover "+ver)
	os.Exit(0)
}

// plugin carries what every command needs. Tests build one whose hostNS is
// a namespace of their own, so nothing touches the real host.
type plugin struct {
	// hostNS is where the bridge, the host ends of the veths and the NAT
	// rules live: the process's own namespace, unless a test says otherwise.
	hostNS netns.NsHandle
	log    *slog.Logger
	// hook, when set (tests only), runs after each step of ADD; an error
	// fails the ADD there, so tests can prove the undo.
	hook func(step string) error
}

// stepHook is the hook newPlugin installs: tests set it before Main runs
// in a re-executed test binary, to kill or fail the plugin mid-ADD.
var stepHook func(step string) error

func newPlugin(stderr io.Writer) (*plugin, error) {
	h, err := netns.Get()
	if err != nil {
		return nil, err
	}
	return &plugin{
		hostNS: h,
		log:    slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("component", "cni"),
		hook:   stepHook,
	}, nil
}

func (p *plugin) funcs() skel.CNIFuncs {
	return skel.CNIFuncs{
		Add:    guard(p.cmdAdd),
		Del:    guard(p.cmdDel),
		Check:  guard(p.cmdCheck),
		GC:     guard(p.cmdGC),
		Status: guard(p.cmdStatus),
	}
}

// guard turns a panic into a CNI error object: a runtime must always get a
// parseable answer, and the stack goes to stderr for the operator.
func guard(fn func(*skel.CmdArgs) error) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) (err error) {
		defer func() {
			if r := recover(); r != nil {
				fmt.Fprintf(os.Stderr, "drover: panic: %v\n%s", r, debug.Stack())
				err = types.NewError(types.ErrInternal, fmt.Sprintf("drover: internal error (panic: %v)", r), "")
			}
		}()
		return fn(args)
	}
}

func (p *plugin) step(name string) error {
	if p.hook == nil {
		return nil
	}
	if err := p.hook(name); err != nil {
		return fmt.Errorf("step %s: %w", name, err)
	}
	return nil
}

// cniErr wraps err as a CNI error with code, unless it already is one.
func cniErr(code uint, msg string, err error) *types.Error {
	var e *types.Error
	if errors.As(err, &e) {
		return e
	}
	if err == nil {
		return types.NewError(code, msg, "")
	}
	return types.NewError(code, msg+": "+err.Error(), "")
}

// openNetNS opens the container's namespace: code 3 if it does not exist
// (the container is gone), 4 if CNI_NETNS names something else.
func openNetNS(path string) (netns.NsHandle, *types.Error) {
	if path == "" {
		return netns.None(), types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is empty", "")
	}
	h, err := netns.GetFromPath(path)
	if errors.Is(err, unix.ENOENT) {
		return netns.None(), types.NewError(types.ErrUnknownContainer, fmt.Sprintf("container network namespace %s does not exist", path), "")
	}
	if err != nil {
		return netns.None(), types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_NETNS=%s: %v", path, err), "")
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(h), &fs); err != nil || (fs.Type != unix.NSFS_MAGIC && fs.Type != unix.PROC_SUPER_MAGIC) {
		h.Close()
		return netns.None(), types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_NETNS=%s is not a network namespace", path), "")
	}
	return h, nil
}

// inNS runs fn on a throwaway OS thread that has joined ns (for /proc/sys,
// which resolves against the calling thread's namespace). The thread is
// never unlocked, so it dies with the goroutine and no other code ever runs
// in ns by accident.
func inNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// undoList collects what a failing ADD must take back, run in reverse.
type undoList struct {
	steps []undoStep
	log   *slog.Logger
}

type undoStep struct {
	what string
	fn   func() error
}

func (u *undoList) push(what string, fn func() error) { u.steps = append(u.steps, undoStep{what, fn}) }

func (u *undoList) run() {
	for i := len(u.steps) - 1; i >= 0; i-- {
		if err := u.steps[i].fn(); err != nil {
			u.log.Warn("undo failed", "step", u.steps[i].what, "err", err)
		}
	}
	u.steps = nil
}

// plan is what ADD configures, resolved from the config and the daemon.
type plan struct {
	mtu          int
	bridgeSubnet netip.Prefix
	gateway      netip.Addr
	pool         ipam.Pool
	prefixLen    int           // of the container's address
	daemon       *daemonStatus // nil: not reachable (and not needed)
	daemonErr    error
}

// resolve completes the config with what the daemon knows. The daemon is
// needed when mtu or the subnet is not configured; then an unreachable
// daemon is code 11 (try again later: it is starting, or restarting).
func (c *config) resolve(ctx context.Context, d *daemonClient) (*plan, *types.Error) {
	needMTU := c.MTU == 0
	needBlock := !c.bridgeSubnet.IsValid() && !c.ipamSubnet.IsValid()
	st, err := d.status(ctx)
	pl := &plan{daemon: st, daemonErr: err}
	if err != nil && (needMTU || needBlock) {
		var missing string
		switch {
		case needMTU && needBlock:
			missing = "mtu and bridgeSubnet are"
		case needMTU:
			missing = "mtu is"
		default:
			missing = "bridgeSubnet is"
		}
		return nil, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("%v; %s not configured, so the plugin needs the daemon: start drover (or set them in the network config)", err, missing), "")
	}
	pl.mtu = c.MTU
	if needMTU {
		if st.TUNMTU <= 0 {
			return nil, types.NewError(types.ErrTryAgainLater, fmt.Sprintf("drover daemon at %s reports no tun_mtu yet", c.DaemonSocket), "")
		}
		pl.mtu = st.TUNMTU
	}
	var block netip.Prefix
	if needBlock {
		var ok bool
		if block, ok = st.block(); !ok {
			if st.BlockNote != "" {
				return nil, types.NewError(types.ErrTryAgainLater, fmt.Sprintf("drover daemon at %s: %s", c.DaemonSocket, st.BlockNote), "")
			}
			return nil, types.NewError(types.ErrTryAgainLater, fmt.Sprintf("drover daemon at %s has no IPv4 block yet (prefixes %v)", c.DaemonSocket, st.Prefixes), "")
		}
		if block.Bits() > ipam.MaxBits {
			return nil, invalid("bridgeSubnet", "this node's block %s is too small: /%d at most; set bridgeSubnet", block, ipam.MaxBits)
		}
		if c.Flat && !within(block, c.cluster) {
			return nil, invalid("clusterCIDR", "this node's block %s is outside clusterCIDR %s", block, c.cluster)
		}
	}
	alloc := c.allocSubnet(block)
	if st != nil && !needBlock {
		// A configured subnet must be this node's: a Rancher-style
		// bridgeSubnet of the whole /16 would hand the same addresses
		// out on every host.
		if blocks := st.blocks(); len(blocks) > 0 && !slices.ContainsFunc(blocks, func(b netip.Prefix) bool { return within(alloc, b) }) {
			key := "bridgeSubnet"
			if c.ipamSubnet.IsValid() {
				key = "ipam.subnet"
			}
			return nil, invalid(key, "%s is not inside this node's block(s) %v: containers on two hosts could get the same address", alloc, blocks)
		}
	}
	if e := c.checkPool(alloc); e != nil {
		return nil, e
	}
	pl.bridgeSubnet = c.bridgeNet(block)
	pl.gateway, _ = ipam.FirstHost(pl.bridgeSubnet)
	pl.pool = ipam.Pool{Subnet: alloc, Start: c.rangeStart, End: c.rangeEnd, Exclude: []netip.Addr{pl.gateway}}
	if st != nil {
		pl.pool.Exclude = append(pl.pool.Exclude, st.addrs()...)
	}
	pl.prefixLen = pl.bridgeSubnet.Bits()
	if c.Flat {
		pl.prefixLen = c.cluster.Bits()
	}
	return pl, nil
}
