package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/drovernet/drover/gossip"

	"github.com/vishvananda/netlink"

	"github.com/drovernet/drover/cmd/drover/config"
)

// ClusterOptions tune a cluster-mode lab (Options.Cluster). Zero values
// take the daemon's defaults, except Timing.
type ClusterOptions struct {
	// Timing is the cluster.timing profile (gossip.TimingNames): "fast"
	// (failure detection in about a second), "lan" or "edge". Default:
	// fast up to FastTimingHosts hosts, edge above.
	Timing string
	// RotationInterval, SwitchDelay and Grace are cluster.rotation_interval,
	// cluster.switch_delay and cluster.grace (0: the daemon's defaults).
	RotationInterval time.Duration
	SwitchDelay      time.Duration
	Grace            time.Duration
	// CIDR and BlockBits are cluster.cidr and cluster.block_bits ("" and
	// 0: the daemon's defaults, 10.42.0.0/16 in /24 blocks). A small CIDR
	// crowds the hosts, so that their first claims collide.
	CIDR      string
	BlockBits int
	// StartAtOnce starts every router at the same moment. By default host
	// 1, the seed, starts first and the others once it answers.
	StartAtOnce bool
	// ConvergeTimeout bounds NewLab's wait for every router to see every
	// other one. Default 30 s.
	ConvergeTimeout time.Duration
	// Kubeconfig, when set, runs the routers with the kubernetes datastore
	// (cluster.datastore kubernetes) against the API server it names, as
	// seen from inside each host's namespace (Kube.ServeIn): hosts join no
	// one, and each is the Node named as the host (h1, h2, …), which the
	// test creates.
	Kubeconfig string
	// Direct is cluster.direct on every host (with ESP, the lab's underlay
	// is declared trusted: cluster.direct_trusted).
	Direct bool
	// PodCIDR is cluster.kubernetes.pod_cidr with Kubeconfig: "node"
	// (default: the Nodes' spec.podCIDR) or "claim".
	PodCIDR string
}

func (o *ClusterOptions) defaults() {
	if o.Timing == "" {
		o.Timing = "fast" // Options.Default picks by size
	}
	if o.ConvergeTimeout == 0 {
		o.ConvergeTimeout = 30 * time.Second
	}
}

func (o *ClusterOptions) validate() error {
	if !slices.Contains(gossip.TimingNames(), o.Timing) {
		return fmt.Errorf("cluster timing: %q is not one of %s", o.Timing, strings.Join(gossip.TimingNames(), ", "))
	}
	return nil
}

// ErrBlockChanged means a restarted router claimed another block than the
// one it had: the host's containers keep addresses it no longer routes.
var ErrBlockChanged = errors.New("lab: router came back with another block")

// Cluster-mode waits.
const (
	// blockTimeout bounds the wait for a started router to claim a block.
	blockTimeout = 15 * time.Second
	// clusterPoll is how often cluster state is polled.
	clusterPoll = 50 * time.Millisecond
	// maxSeeds bounds the seeds a restarted router is given.
	maxSeeds = 3
)

// newClusterKey writes a fresh 32-byte cluster key, hex, mode 0600.
func newClusterKey(path string, key []byte) error {
	if key == nil {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return err
		}
	}
	return os.WriteFile(path, []byte(hex.EncodeToString(key)+"\n"), 0o600)
}

// clusterConfigs writes the lab's cluster key (and any host's own key) into
// the lab directory and builds each host's configuration: no prefixes, no
// peers, only the cluster section. Seeds are set at each start (seedsFor).
func (l *Lab) clusterConfigs() ([]*config.Config, error) {
	o := l.opts
	l.ClusterKeyFile = filepath.Join(l.Dir, "cluster.key")
	if err := newClusterKey(l.ClusterKeyFile, nil); err != nil {
		return nil, fmt.Errorf("cluster key: %w", err)
	}
	cfgs := make([]*config.Config, o.Hosts)
	for h := 1; h <= o.Hosts; h++ {
		keyFile := l.ClusterKeyFile
		if k := o.hostOptions(h).ClusterKey; len(k) > 0 {
			keyFile = filepath.Join(l.Dir, fmt.Sprintf("h%d-cluster.key", h))
			if err := newClusterKey(keyFile, k); err != nil {
				return nil, fmt.Errorf("h%d cluster key: %w", h, err)
			}
		}
		c := &config.Config{
			Node: config.Node{
				Name:     fmt.Sprintf("h%d", h),
				Underlay: l.hostUnderlay(h).String(),
				TUN:      config.DefaultTUN,
				// The host bridge: trusted by the forward filter (with
				// br_netfilter even bridged traffic passes it) and where
				// the router answers ARP.
				Bridge: l.ifName("br"),
			},
			Encapsulation: o.Encapsulation,
			Cipher:        o.Cipher,
			VNI:           o.VNI,
			Log:           config.Log{Level: "info", Format: "text"},
			Cluster: &config.Cluster{
				KeyFile:          keyFile,
				CIDR:             o.ClusterOptions.CIDR,
				BlockBits:        o.ClusterOptions.BlockBits,
				RotationInterval: o.ClusterOptions.RotationInterval,
				SwitchDelay:      o.ClusterOptions.SwitchDelay,
				Grace:            o.ClusterOptions.Grace,
				Timing:           o.ClusterOptions.Timing,
				Direct:           o.ClusterOptions.Direct,
				DirectTrusted:    o.ClusterOptions.Direct && o.Encapsulation == config.EncapESP,
			},
		}
		if k := o.ClusterOptions.Kubeconfig; k != "" {
			c.Cluster.Datastore = config.DatastoreKubernetes
			c.Cluster.Kubernetes = config.Kubernetes{Kubeconfig: k, PodCIDR: o.ClusterOptions.PodCIDR}
		}
		// Where StartRouter would put them, but known before the first
		// start (StateDir), so a test can prepare a host's state.
		c.ControlSocket = filepath.Join(l.Dir, c.Node.Name+".sock")
		c.StateDir = filepath.Join(l.Dir, c.Node.Name+"-state")
		if f := o.hostOptions(h).Configure; f != nil {
			f(c)
		}
		c.Default()
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("router config h%d: %w", h, err)
		}
		cfgs[h-1] = c
	}
	return cfgs, nil
}

// StateDir is the router's state directory (identity key, block claim,
// sequence number reservations); it is kept across restarts.
func (h *Host) StateDir() string { return h.cfg.StateDir }

// seedAddr is how a host's underlay address is given as a seed.
func (l *Lab) seedAddr(h *Host) string {
	if h.Underlay.Is6() {
		return netip.AddrPortFrom(h.Underlay, h.cfg.Cluster.Port).String()
	}
	return h.Underlay.String()
}

// seedsFor is the cluster.join list for a start of h. The first start of
// host 1 has none (it founds the cluster) and every other first start has
// host 1, as an operator would give them. A later start (a restart) gets
// the first hosts whose routers run, host 1 included when it runs, so that
// host 1 too finds its way back.
func (l *Lab) seedsFor(h *Host) []string {
	if !l.opts.Cluster || l.opts.ClusterOptions.Kubeconfig != "" {
		return nil // the kubernetes datastore joins no one
	}
	if h.runs == 0 {
		if h.Index == 1 {
			return nil
		}
		return []string{l.seedAddr(l.Hosts[0])}
	}
	var seeds []string
	for _, g := range l.Hosts {
		if g != h && g.Router != nil && len(seeds) < maxSeeds {
			seeds = append(seeds, l.seedAddr(g))
		}
	}
	if len(seeds) == 0 && h.Index != 1 {
		seeds = []string{l.seedAddr(l.Hosts[0])}
	}
	return seeds
}

// launch starts h's router process, with seeds in cluster mode, and waits
// for its control socket. The previous run's log is kept as NAME-RUN.log.
// Hosts launched in parallel must have their seeds computed beforehand: a
// launch sets only its own host's Router.
func (l *Lab) launch(ctx context.Context, h *Host, seeds []string) error {
	if h.Router != nil {
		return fmt.Errorf("host %s: router already running (pid %d)", h.Name, h.Router.PID())
	}
	if h.cfg.Cluster != nil {
		h.cfg.Cluster.Join = seeds
	}
	if h.runs > 0 {
		logPath := filepath.Join(l.Dir, h.cfg.Node.Name+".log")
		_ = os.Rename(logPath, filepath.Join(l.Dir, fmt.Sprintf("%s-%d.log", h.cfg.Node.Name, h.runs)))
	}
	h.runs++
	h.Started = time.Now()
	var r *Router
	var err error
	switch {
	case h.opts.Command != nil:
		r, err = startRouterCmd(ctx, h.NS, h.cfg, l.Dir, l.launchOpts(h), func(cfgPath string) []string {
			return h.opts.Command(h.NS.Name, cfgPath)
		})
	case isNative(h.opts.Arch):
		r, err = startRouter(ctx, l.opts.Bin, h.NS, h.cfg, l.Dir, l.launchOpts(h))
	default:
		r, err = l.startForeign(ctx, h)
	}
	if err != nil {
		return err
	}
	if h.gate != nil {
		// Started at the gate, with the rest of its wave.
		h.Started = h.gate.opened()
	}
	h.Router = r
	return nil
}

// clusterUp waits until the routers of hosts see each other, then gives
// each host's bridge and containers addresses from its block.
func (l *Lab) clusterUp(ctx context.Context, hosts []*Host) error {
	if len(hosts) == 0 {
		return nil
	}
	start := time.Now()
	if err := l.WaitConverged(ctx, hosts, l.opts.ClusterOptions.ConvergeTimeout); err != nil {
		if ctx.Err() != nil {
			return err
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%v\nviews:\n%s", err, l.ClusterViews())
		for _, h := range l.Running() {
			fmt.Fprintf(&b, "--- %s log tail:\n%s\n", h.Name, h.Router.LogTail(15))
		}
		return errors.New(b.String())
	}
	l.ConvergedAt = time.Now()
	l.log.Info("cluster converged", "hosts", len(hosts), "took", time.Since(start).Round(time.Millisecond))
	for _, h := range hosts {
		if err := l.checkBlock(h); err != nil {
			return err
		}
	}
	return nil
}

// Block returns the block h's router claimed and hands out (the block of
// its /v1/cluster view, once no note says it is still settling;
// Status().Prefixes should say the same, which TestCluster5Join checks).
func (h *Host) Block() (netip.Prefix, error) {
	if h.Router == nil {
		return netip.Prefix{}, fmt.Errorf("host %s: router not running", h.Name)
	}
	v, err := h.Router.Cluster()
	if err != nil {
		return netip.Prefix{}, err
	}
	if v.Block == "" {
		return netip.Prefix{}, fmt.Errorf("host %s: no block claimed yet", h.Name)
	}
	if v.BlockNote != "" {
		return netip.Prefix{}, fmt.Errorf("host %s: %s", h.Name, v.BlockNote)
	}
	return netip.ParsePrefix(v.Block)
}

// checkBlock reads h's block and, the first time, addresses the host's
// bridge and containers from it; later it checks the block is the same
// (ErrBlockChanged otherwise).
func (l *Lab) checkBlock(h *Host) error {
	b, err := h.Block()
	if err != nil {
		return err
	}
	if h.addressed {
		if b != h.Prefix {
			return fmt.Errorf("%w: host %s had %s, now %s", ErrBlockChanged, h.Name, h.Prefix, b)
		}
		return nil
	}
	if b.Addr().Is6() || b.Bits() > 30 || 1<<(32-b.Bits())-2 < len(h.Containers)+1 {
		return fmt.Errorf("host %s: block %s has no room for a gateway and %d containers", h.Name, b, len(h.Containers))
	}
	h.Prefix, h.Gateway = b, b.Addr().Next()
	if err := addressBridge(h); err != nil {
		return err
	}
	a := h.Gateway
	for _, c := range h.Containers {
		a = a.Next()
		c.Addr = a
		if err := addressContainer(c, l.containerBits(h)); err != nil {
			return err
		}
	}
	h.addressed = true
	l.log.Info("host addressed", "host", h.Name, "block", b)
	return nil
}

// StartRouter starts the router of a host whose router is not running
// (never started: HostOptions.Manual; or stopped or killed) with the same
// configuration and state directory. In cluster mode it then waits for the
// router to claim its block and addresses the host's containers the first
// time; after that the block must be the one the host had
// (ErrBlockChanged). It does not wait for the other routers to see it
// (WaitConverged).
func (l *Lab) StartRouter(ctx context.Context, h *Host) error {
	return l.startRouter(ctx, h, l.seedsFor(h), true)
}

// startRouter launches h's router and, in cluster mode, waits for its
// block; with check, it then addresses the host or checks the block
// (checkBlock).
func (l *Lab) startRouter(ctx context.Context, h *Host, seeds []string, check bool) error {
	if err := l.launch(ctx, h, seeds); err != nil {
		return err
	}
	if !l.opts.Cluster {
		return nil
	}
	var berr error
	err := Poll(ctx, blockTimeout, clusterPoll, func() error {
		select {
		case <-h.Router.Done():
			return fmt.Errorf("router exited: %v", h.Router.ExitErr())
		default:
		}
		_, berr = h.Block()
		return berr
	})
	if err != nil {
		return fmt.Errorf("host %s: %w\n%s", h.Name, ctxOr(ctx, err), h.Router.LogTail(20))
	}
	if !check {
		return nil
	}
	return l.checkBlock(h)
}

// StopRouter stops h's router with SIGTERM (in cluster mode it announces
// its leave) and returns its exit status; h.Router is nil afterwards.
func (l *Lab) StopRouter(h *Host) error {
	r := h.Router
	if r == nil {
		return fmt.Errorf("host %s: router not running", h.Name)
	}
	err := r.Stop()
	h.Router = nil
	return err
}

// KillRouter kills h's router with SIGKILL: no leave, no cleanup; the
// others must notice. h.Router is nil afterwards.
func (l *Lab) KillRouter(h *Host) error {
	r := h.Router
	if r == nil {
		return fmt.Errorf("host %s: router not running", h.Name)
	}
	r.Kill()
	h.Router = nil
	return nil
}

// RestartRouter is StopRouter then StartRouter: in cluster mode the router
// must come back with the same block.
func (l *Lab) RestartRouter(ctx context.Context, h *Host) error {
	if err := l.StopRouter(h); err != nil {
		return fmt.Errorf("host %s: stop: %w", h.Name, err)
	}
	return l.StartRouter(ctx, h)
}

// SetUplink cuts (up=false) or restores host h's underlay link. The cut is
// made at the underlay bridge's port, as a pulled cable would: the host
// keeps its address and routes and its datagrams vanish silently.
func (l *Lab) SetUplink(h *Host, up bool) error {
	return withNetlink(l.Underlay, func(nl *netlink.Handle) error {
		link, err := nl.LinkByName(l.underlayPort(h.Index))
		if err != nil {
			return err
		}
		if up {
			return nl.LinkSetUp(link)
		}
		return nl.LinkSetDown(link)
	})
}

// ClusterView, ClusterMember and ClusterRoute are the daemon's GET
// /v1/cluster, as the daemon defines it.
type (
	ClusterView   = gossip.View
	ClusterMember = gossip.MemberView
	ClusterRoute  = gossip.RouteView
)

// Cluster queries the control socket's cluster view.
func (r *Router) Cluster() (*ClusterView, error) {
	var v ClusterView
	if err := getJSON(r.Config.ControlSocket, "/v1/cluster", &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// memberAlive is the state name of a live member in /v1/cluster.
const memberAlive = "alive"

// Converged checks that the routers of hosts agree: each hands out one block, no
// two the same, and each lists every other one as an alive member with
// that block and has a route to exactly the others' blocks, each through
// its owner.
func (l *Lab) Converged(hosts []*Host) error {
	blocks := map[*Host]netip.Prefix{}
	views := map[*Host]*ClusterView{}
	owner := map[netip.Prefix]*Host{}
	for _, h := range hosts {
		// One view per host and poll: a 100-host lab asks 100 sockets.
		v, err := h.Router.Cluster()
		if err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
		if v.Block == "" {
			return fmt.Errorf("host %s: no block claimed yet", h.Name)
		}
		// A fresh claim settles before it is handed out (agent.settling):
		// converged means every host can attach containers.
		if v.BlockNote != "" {
			return fmt.Errorf("host %s: %s", h.Name, v.BlockNote)
		}
		b, err := netip.ParsePrefix(v.Block)
		if err != nil {
			return fmt.Errorf("host %s: block %q: %w", h.Name, v.Block, err)
		}
		if o, dup := owner[b]; dup {
			return fmt.Errorf("hosts %s and %s both route %s", o.Name, h.Name, b)
		}
		blocks[h], owner[b], views[h] = b, h, v
	}
	for _, h := range hosts {
		v := views[h]
		want := map[string]string{}
		for _, g := range hosts {
			if g == h {
				continue
			}
			m := v.Member(g.Name)
			switch {
			case m == nil:
				return fmt.Errorf("host %s does not list %s: %s", h.Name, g.Name, v)
			case m.State != memberAlive:
				return fmt.Errorf("host %s lists %s as %s: %s", h.Name, g.Name, m.State, v)
			case m.Block != blocks[g].String():
				return fmt.Errorf("host %s lists %s with block %q, it routes %s: %s", h.Name, g.Name, m.Block, blocks[g], v)
			}
			want[blocks[g].String()] = g.Name
		}
		got := map[string]string{}
		for _, r := range v.Routes {
			got[r.Prefix] = r.Peer
		}
		if !mapsEqual(got, want) {
			return fmt.Errorf("host %s: routes %v, want %v", h.Name, got, want)
		}
	}
	return nil
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// WaitConverged polls Converged until it holds, timeout passes or ctx ends.
// Nil hosts means every host whose router runs.
func (l *Lab) WaitConverged(ctx context.Context, hosts []*Host, timeout time.Duration) error {
	if hosts == nil {
		hosts = l.Running()
	}
	// Each poll asks every router for its view, which lists every member:
	// poll a large lab less often, so the lab does not load its routers.
	every := max(clusterPoll, time.Duration(len(hosts))*5*time.Millisecond)
	err := Poll(ctx, timeout, every, func() error {
		for _, h := range hosts {
			if h.Router == nil {
				return fmt.Errorf("host %s: router not running", h.Name)
			}
			select {
			case <-h.Router.Done():
				return fmt.Errorf("host %s: router exited: %v\n%s", h.Name, h.Router.ExitErr(), h.Router.LogTail(15))
			default:
			}
		}
		return l.Converged(hosts)
	})
	if err != nil {
		return fmt.Errorf("cluster did not converge: %w", ctxOr(ctx, err))
	}
	return nil
}

// Running lists the hosts whose router runs.
func (l *Lab) Running() []*Host {
	var out []*Host
	for _, h := range l.Hosts {
		if h.Router != nil {
			out = append(out, h)
		}
	}
	return out
}

// ClusterViews renders every running router's cluster view, a line each.
func (l *Lab) ClusterViews() string {
	var b strings.Builder
	for _, h := range l.Running() {
		v, err := h.Router.Cluster()
		if err != nil {
			fmt.Fprintf(&b, "  %s: %v\n", h.Name, err)
			continue
		}
		fmt.Fprintf(&b, "  %s: %s\n", h.Name, v)
	}
	return b.String()
}

// StartRouters starts the routers of hosts at the same moment and reports
// every failure. In cluster mode, hosts that come back keep their block
// (ErrBlockChanged otherwise); hosts started for the first time are
// addressed once every running router with the lab's key sees every other
// one: claims made at the same moment may collide, and the losers move.
func (l *Lab) StartRouters(ctx context.Context, hosts []*Host) error {
	errs := make([]error, len(hosts))
	seeds := make([][]string, len(hosts))
	for i, h := range hosts {
		seeds[i] = l.seedsFor(h)
	}
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Go(func() { errs[i] = l.startRouter(ctx, h, seeds[i], h.addressed) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil || !l.opts.Cluster {
		return err
	}
	var fresh []*Host
	for _, h := range hosts {
		if !h.addressed {
			fresh = append(fresh, h)
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	if err := l.WaitConverged(ctx, l.admitted(), l.opts.ClusterOptions.ConvergeTimeout); err != nil {
		return err
	}
	l.ConvergedAt = time.Now()
	for _, h := range fresh {
		if err := l.checkBlock(h); err != nil {
			return err
		}
	}
	return nil
}

// admitted lists the running hosts that have the lab's cluster key.
func (l *Lab) admitted() []*Host {
	var out []*Host
	for _, h := range l.Running() {
		if len(h.opts.ClusterKey) == 0 {
			out = append(out, h)
		}
	}
	return out
}

// RestartAll stops the routers of hosts at once (SIGTERM), then starts
// them at once (StartRouters).
func (l *Lab) RestartAll(ctx context.Context, hosts []*Host) error {
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Go(func() {
			if err := l.StopRouter(h); err != nil {
				errs[i] = fmt.Errorf("host %s: stop: %w", h.Name, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return l.StartRouters(ctx, hosts)
}

// firstStart is when the first router of the current runs was launched.
func (l *Lab) firstStart() time.Time {
	var t time.Time
	for _, h := range l.Hosts {
		if !h.Started.IsZero() && (t.IsZero() || h.Started.Before(t)) {
			t = h.Started
		}
	}
	return t
}

// lastStart is when the last router was launched.
func (l *Lab) lastStart() time.Time {
	var t time.Time
	for _, h := range l.Hosts {
		if h.Started.After(t) {
			t = h.Started
		}
	}
	return t
}
