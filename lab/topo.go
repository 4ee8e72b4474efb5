package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/internal/labns"
	"github.com/drovernet/drover/lab/topology"
)

// TopologyOptions is `drover lab --topology FILE`.
type TopologyOptions struct {
	// File is the containerlab topology.
	File string
	// Bin is the drover binary that runs in place of the drover image (the
	// lab's own executable); ArchBin maps a node's drover.lab/arch label
	// to the binary for that architecture, run under qemu-user.
	Bin     string
	ArchBin map[string]string
	// Dir keeps the routers' configurations, logs and state; default a
	// temporary directory, removed.
	Dir string
	// Timeout bounds the wait for full reachability (default 60 s).
	Timeout time.Duration
	Log     *slog.Logger
}

// topoLab is a realized topology.
type topoLab struct {
	t       *topology.Topology
	opts    TopologyOptions
	dir     string
	ns      map[string]*NetNS
	routers map[string]*Router
	log     *slog.Logger
	out     io.Writer
}

// RunTopology realizes a containerlab topology in network namespaces, runs
// drover where the topology runs the drover image, checks that every node
// labelled drover.lab/probe reaches every other one, prints the matrix and
// removes everything (also when ctx ends). What it honours and ignores:
// docs/lab.md.
func RunTopology(ctx context.Context, opts TopologyOptions, w io.Writer) (err error) {
	t, err := topology.Load(opts.File)
	if err != nil {
		return err
	}
	if opts.Bin == "" {
		return errors.New("lab: no drover binary to run (TopologyOptions.Bin)")
	}
	if opts.Timeout == 0 {
		opts.Timeout = 60 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	l := &topoLab{t: t, opts: opts, ns: map[string]*NetNS{}, routers: map[string]*Router{}, log: opts.Log, out: w}
	drovers := 0
	for _, n := range t.Nodes {
		if n.IsDrover() {
			drovers++
			if n.Arch != "" && !isNative(n.Arch) && opts.ArchBin[n.Arch] == "" {
				return fmt.Errorf("node %s: label %s=%s: no drover binary for %s given (drover lab --bin-%s PATH)", n.Name, topology.LabelArch, n.Arch, n.Arch, n.Arch)
			}
		}
	}
	fmt.Fprintf(w, "topology %s: %d nodes (%d drover), %d links\n", t.Name, len(t.Nodes), drovers, len(t.Links))
	if len(t.Ignored) > 0 {
		fmt.Fprintf(w, "not realized by drover lab (see docs/lab.md): %s\n", strings.Join(t.Ignored, ", "))
	}
	l.dir = opts.Dir
	if l.dir == "" {
		if l.dir, err = os.MkdirTemp("", "drv-topo-"); err != nil {
			return err
		}
		defer os.RemoveAll(l.dir)
	}
	defer func() {
		if cerr := l.close(); cerr != nil {
			err = errors.Join(err, cerr)
		} else {
			fmt.Fprintln(w, "lab removed")
		}
	}()
	if err := l.build(ctx); err != nil {
		return err
	}
	m, err := l.reach(ctx)
	m.write(w)
	return err
}

func (l *topoLab) build(ctx context.Context) error {
	tag := labns.UniqueName("t")
	for _, n := range l.t.Nodes {
		ns, err := labns.Create(tag + "-" + n.Name)
		if err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		l.ns[n.Name] = ns
		if n.Kind == topology.KindBridge {
			if err := withNetlink(ns, func(h *netlink.Handle) error {
				_, err := addBridge(h, bridgeName(n.Name))
				return err
			}); err != nil {
				return fmt.Errorf("node %s: %w", n.Name, err)
			}
		}
	}
	for i, lk := range l.t.Links {
		if err := l.link(lk); err != nil {
			return fmt.Errorf("links[%d] %s:%s - %s:%s: %w", i, lk.A.Node, lk.A.Iface, lk.B.Node, lk.B.Iface, err)
		}
	}
	for _, n := range l.t.Nodes {
		if err := setSysctls(l.ns[n.Name], nodeSysctls(n.Sysctls)...); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		for i, line := range n.Exec {
			l.log.Info("exec", "node", n.Name, "line", line)
			if err := l.exec(ctx, n, line); err != nil {
				return fmt.Errorf("node %s: exec[%d] %q: %w", n.Name, i, line, err)
			}
		}
	}
	for _, n := range l.t.Nodes {
		if !n.IsDrover() {
			continue
		}
		r, err := l.startDrover(ctx, n)
		if err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		l.routers[n.Name] = r
		how := "drover"
		if n.Arch != "" && !isNative(n.Arch) {
			how = fmt.Sprintf("drover for %s under qemu-user (%s, no forward filter)", n.Arch, l.opts.ArchBin[n.Arch])
		}
		fmt.Fprintf(l.out, "%s: %s, pid %d, %s\n", n.Name, how, r.PID(), l.ns[n.Name].Name)
	}
	return nil
}

// bridgeName is a bridge node's device: its name, cut to an interface
// name's 15 bytes.
func bridgeName(node string) string {
	if len(node) > 15 {
		return node[:15]
	}
	return node
}

// link creates the veth pair with each end in its node's namespace (a
// bridge node's end becomes a port of its bridge), then MAC, MTU,
// address, up.
func (l *topoLab) link(lk topology.Link) error {
	a, b := lk.A, lk.B
	nsA, nsB := l.ns[a.Node], l.ns[b.Node]
	if err := withNetlink(nsA, func(h *netlink.Handle) error {
		return h.LinkAdd(&netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: a.Iface, MTU: lk.MTU},
			PeerName:      b.Iface,
			PeerNamespace: netlink.NsFd(int(nsB.Handle())),
		})
	}); err != nil {
		return fmt.Errorf("add veth: %w", err)
	}
	for _, e := range []topology.Endpoint{a, b} {
		n := l.t.Node(e.Node)
		err := withNetlink(l.ns[e.Node], func(h *netlink.Handle) error {
			link, err := h.LinkByName(e.Iface)
			if err != nil {
				return err
			}
			if e.MAC != "" {
				mac, err := net.ParseMAC(e.MAC)
				if err != nil {
					return fmt.Errorf("%s:%s: mac %q: %w", e.Node, e.Iface, e.MAC, err)
				}
				if err := h.LinkSetHardwareAddr(link, mac); err != nil {
					return err
				}
			}
			if n.Kind == topology.KindBridge {
				br, err := h.LinkByName(bridgeName(n.Name))
				if err != nil {
					return err
				}
				if err := h.LinkSetMaster(link, br); err != nil {
					return err
				}
			}
			if e.IPv4.IsValid() {
				addr := &netlink.Addr{IPNet: &net.IPNet{IP: e.IPv4.Addr().AsSlice(), Mask: net.CIDRMask(e.IPv4.Bits(), 32)}}
				if err := h.AddrAdd(link, addr); err != nil {
					return fmt.Errorf("%s:%s: address %s: %w", e.Node, e.Iface, e.IPv4, err)
				}
			}
			return h.LinkSetUp(link)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// nodeSysctls are a node's net.* sysctls in key order, as setSysctls
// writes them.
func nodeSysctls(m map[string]string) []sysctl {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]sysctl, 0, len(keys))
	for _, k := range keys {
		out = append(out, sysctl{key: strings.ReplaceAll(k, ".", "/"), val: m[k]})
	}
	return out
}

// exec runs an exec line in the node's namespace with this machine's
// programs (containerlab runs it in the container, with the image's),
// split into words as a shell would, without a shell, as containerlab does.
func (l *topoLab) exec(ctx context.Context, n *topology.Node, line string) error {
	words, err := topology.SplitCommand(line)
	if err != nil {
		return err
	}
	if len(words) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, l.opts.Bin, append([]string{"netns-exec", l.ns[n.Name].Name, "--"}, words...)...)
	cmd.Env = os.Environ()
	for k, v := range n.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// startDrover runs drover where the topology runs the drover image: the
// image's entrypoint is drover and the node's cmd its arguments (default
// the image's, run --config /etc/drover/drover.yaml). The configuration
// and the files it names are found through the node's binds; the state
// directory and control socket, private to the container under
// containerlab, go to the lab's directory.
func (l *topoLab) startDrover(ctx context.Context, n *topology.Node) (*Router, error) {
	args := n.Cmd
	if len(args) == 0 {
		args = []string{"run", "--config", "/etc/drover/drover.yaml"}
	}
	cfgIn := ""
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "--config" && i+1 < len(args):
			cfgIn = args[i+1]
			i++
		case strings.HasPrefix(args[i], "--config="):
			cfgIn = strings.TrimPrefix(args[i], "--config=")
		case i == 0 && args[i] == "run":
		default:
			return nil, fmt.Errorf("cmd %q: drover lab runs `run --config FILE` only (argument %q)", strings.Join(args, " "), args[i])
		}
	}
	if cfgIn == "" {
		return nil, fmt.Errorf("cmd %q: no --config", strings.Join(args, " "))
	}
	host := n.HostPath(l.t.Dir, cfgIn)
	if host == "" {
		return nil, fmt.Errorf("config %s: no bind gives the container this path", cfgIn)
	}
	cfg, err := config.Load(host)
	if err != nil {
		return nil, fmt.Errorf("config %s (%s): %w", cfgIn, host, err)
	}
	mapPath := func(field string, p *string) error {
		if *p == "" {
			return nil
		}
		h := n.HostPath(l.t.Dir, *p)
		if h == "" {
			return fmt.Errorf("config %s: %s %s: no bind gives the container this path", cfgIn, field, *p)
		}
		*p = h
		return nil
	}
	if cfg.Cluster != nil {
		if err := mapPath("cluster.key_file", &cfg.Cluster.KeyFile); err != nil {
			return nil, err
		}
		if err := mapPath("cluster.kubernetes.kubeconfig", &cfg.Cluster.Kubernetes.Kubeconfig); err != nil {
			return nil, err
		}
	}
	if err := mapPath("policy.file", &cfg.Policy.File); err != nil {
		return nil, err
	}
	if cfg.BGP != nil {
		for i := range cfg.BGP.Neighbors {
			if err := mapPath(fmt.Sprintf("bgp.neighbors[%d].password_file", i), &cfg.BGP.Neighbors[i].PasswordFile); err != nil {
				return nil, err
			}
		}
	}
	dir := filepath.Join(l.dir, n.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.ControlSocket = filepath.Join(dir, "drover.sock")
	ns := l.ns[n.Name]
	if n.Arch == "" || isNative(n.Arch) {
		return StartRouter(ctx, l.opts.Bin, ns, cfg, dir)
	}
	qemu, err := QEMU(n.Arch)
	if err != nil {
		return nil, err
	}
	// qemu-user has no NETLINK_NETFILTER: the emulated router runs without
	// its forward filter (as in Lab.startForeign).
	off := false
	cfg.Firewall.Forward = &off
	bin := l.opts.ArchBin[n.Arch]
	return startRouterCmd(ctx, ns, cfg, dir, launchOpts{}, func(cfgPath string) []string {
		return []string{l.opts.Bin, "netns-exec", ns.Name, "--", qemu, bin, "run", "--config", cfgPath}
	})
}

// topoMatrix is the reachability among probe nodes.
type topoMatrix struct {
	names []string
	err   [][]error
	at    time.Duration
}

func (m topoMatrix) missing() int {
	n := 0
	for i := range m.err {
		for j := range m.err[i] {
			if i != j && m.err[i][j] != nil {
				n++
			}
		}
	}
	return n
}

func (m topoMatrix) write(w io.Writer) {
	if len(m.names) == 0 {
		return
	}
	fmt.Fprintf(w, "%-12s", "from \\ to")
	for _, n := range m.names {
		fmt.Fprintf(w, " %-8s", n)
	}
	fmt.Fprintln(w)
	for i, from := range m.names {
		fmt.Fprintf(w, "%-12s", from)
		for j := range m.names {
			c := "ok"
			switch {
			case i == j:
				c = "-"
			case m.err[i][j] != nil:
				c = "FAIL"
			}
			fmt.Fprintf(w, " %-8s", c)
		}
		fmt.Fprintln(w)
	}
	pairs := len(m.names) * (len(m.names) - 1)
	fmt.Fprintf(w, "%d/%d reachable", pairs-m.missing(), pairs)
	if m.missing() == 0 {
		fmt.Fprintf(w, " after %v", m.at.Round(time.Millisecond))
	}
	fmt.Fprintln(w)
	for i := range m.err {
		for j := range m.err[i] {
			if i != j && m.err[i][j] != nil {
				fmt.Fprintf(w, "  %s -> %s: %v\n", m.names[i], m.names[j], m.err[i][j])
			}
		}
	}
}

// reach pings, from every probe node, every other one's probe address
// until all pairs answer or the timeout passes; pairs that answered are
// not probed again.
func (l *topoLab) reach(ctx context.Context) (topoMatrix, error) {
	var probes []*topology.Node
	for _, n := range l.t.Nodes {
		if n.Probe.IsValid() {
			probes = append(probes, n)
		}
	}
	m := topoMatrix{err: make([][]error, len(probes))}
	for i, p := range probes {
		m.names = append(m.names, p.Name)
		m.err[i] = make([]error, len(probes))
		for j := range probes {
			if i != j {
				m.err[i][j] = errNotProbed
			}
		}
	}
	if len(probes) < 2 {
		return m, fmt.Errorf("topology %s: fewer than two nodes labelled %s: nothing to check", l.t.Name, topology.LabelProbe)
	}
	start := time.Now()
	deadline := start.Add(l.opts.Timeout)
	for {
		var wg sync.WaitGroup
		sem := make(chan struct{}, pingParallel)
		for i := range probes {
			for j := range probes {
				if i == j || m.err[i][j] == nil {
					continue
				}
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					c := &Container{NS: l.ns[probes[i].Name]}
					_, m.err[i][j] = c.Ping(ctx, probes[j].Probe, 2*time.Second)
				}()
			}
		}
		wg.Wait()
		m.at = time.Since(start)
		if m.missing() == 0 {
			return m, nil
		}
		for name, r := range l.routers {
			select {
			case <-r.Done():
				return m, fmt.Errorf("drover on %s exited: %v\n%s", name, r.ExitErr(), r.LogTail(20))
			default:
			}
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return m, fmt.Errorf("topology %s: %d of %d pairs unreachable after %v", l.t.Name, m.missing(), len(probes)*(len(probes)-1), l.opts.Timeout)
		}
	}
}

// close stops the routers (SIGTERM: they remove what they added) and
// deletes the namespaces, with the links in them.
func (l *topoLab) close() error {
	var errs []error
	for name, r := range l.routers {
		if err := r.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("drover on %s: %w\n%s", name, err, r.LogTail(10)))
		}
	}
	for _, ns := range l.ns {
		if err := ns.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
