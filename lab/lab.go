package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/crypto/esp"
)

// Options shape a lab. The zero value is the default lab: 3 hosts with 2
// containers each, ESP with AES-128-GCM, a 1500-byte underlay.
type Options struct {
	// Hosts is the number of hosts, 1..250. Default 3.
	Hosts int
	// Containers is the number of containers per host, 1..253. Default 2.
	Containers int
	// Encapsulation is "esp" (default) or "vxlan".
	Encapsulation string
	// Cipher is the ESP AEAD (esp only). Default aes-128-gcm.
	Cipher string
	// VNI is the VXLAN network identifier (vxlan only). 0: the router's default.
	VNI uint32
	// UnderlayMTU is the MTU of the underlay links. Default 1500.
	UnderlayMTU int
	// ContainerMTU is the MTU of the containers' interfaces (and so of the
	// hosts' bridges). 0: the tunnel MTU, as the CNI plugin sets it, so
	// nothing depends on path MTU discovery.
	ContainerMTU int
	// Tag names everything the lab creates (Prefix+Tag+"-..."): 1-4
	// characters, a-z and 0-9. Two labs with different tags never collide.
	// Default "lab".
	Tag string
	// Bin is the drover binary the routers run (required): `drover lab`
	// passes its own executable, tests testenv.BuildDrover's.
	Bin string
	// Dir holds the routers' configs, logs, control sockets and state.
	// Empty: a temporary directory, removed by Close.
	Dir string
	// Log receives the lab's progress. Nil: discarded.
	Log *slog.Logger
	// UnderlayIPv6 puts the hosts on an IPv6 underlay (2001:db8:42::<h>/64)
	// instead of 192.0.2.<h>/24; containers stay IPv4.
	UnderlayIPv6 bool
	// Flat gives containers the flat model of docs/cni.md: their address
	// carries the cluster CIDR's length (10.42.<h>.<c+1>/16), so they ARP
	// for containers on other hosts and the routers answer. Default: the
	// routed model, the host's /24 and a default route via the bridge.
	Flat bool

	// Cluster runs the routers in cluster mode: no prefixes and no peers in
	// their configurations, only the lab's cluster key and host 1 as the
	// seed. Each host claims its own block of 10.42.0.0/16; its bridge and
	// containers are addressed from that block once it is known, and the
	// lab is up when every router sees every other one (ClusterOptions).
	Cluster bool
	// ClusterOptions tune cluster mode.
	ClusterOptions ClusterOptions
	// PolicyFile, when set, is every router's policy.file (network
	// policy, docs/policy.md). The routers know only the containers the
	// CNI plugin attaches: the lab's own containers are not pods.
	PolicyFile string
	// PolicyProjectLabel is every router's policy.project_label.
	PolicyProjectLabel string
	// HostOptions are per host: HostOptions[i] is host i+1; hosts beyond
	// the slice get the zero value.
	HostOptions []HostOptions

	// Sample (Run only) makes the reachability check probe, from every
	// container, the next container and Sample others at random
	// (ReachabilitySample) instead of every pair. 0: every pair up to
	// FullMatrixContainers containers, DefaultSample others above.
	Sample int
	// Idle (Run only, cluster mode) measures the cluster this long
	// after the checks, while nothing else happens (MeasureIdle), and
	// fails the lab on any "member dead" in that time. 0: no measurement.
	Idle time.Duration
}

// Reachability sampling in Run.
const (
	// FullMatrixContainers is the largest lab whose every pair Run
	// probes by default: 40 containers are 1560 pairs, a few seconds.
	FullMatrixContainers = 40
	// DefaultSample is how many random others each container probes in a
	// larger lab: 100 containers give 1100 pairs (with the ring).
	DefaultSample = 10
)

// HostOptions set one host apart from the others.
type HostOptions struct {
	// Arch is the GOARCH of the router binary the host runs: "" (or
	// runtime.GOARCH) for the lab's own binary, "arm64" for a cross build
	// run under qemu-user (qemu-aarch64-static must be installed).
	Arch string
	// Bin is the binary for Arch (required when Arch is foreign: the lab
	// never builds one; tests use testenv.BuildDroverArch).
	Bin string
	// Manual leaves the router stopped: NewLab does not start it, and in
	// cluster mode does not wait for it; Lab.StartRouter does.
	Manual bool
	// ClusterKey (cluster mode) replaces the lab's cluster key for this host:
	// a host that must not be admitted.
	ClusterKey []byte
	// Configure, when set, edits the host's router configuration before
	// it is validated (cluster mode): a bgp section, firewall.allow_from.
	Configure func(*config.Config)
	// Command, when set, is the command line that runs this host's router
	// instead of the lab's binary: given the host's namespace name and the
	// path of the configuration the lab wrote, it returns argv, which runs
	// in the lab's own namespace and must enter the host's itself (for
	// example through "drover netns-exec NS --"). It is how a container
	// runtime runs the drover image as a lab host (docs/install.md); the
	// lab's directory, which holds the configuration, the cluster key, the
	// state directory and the control socket, must be visible to the
	// router at the same path. SIGTERM to the command must stop the router.
	Command func(ns, cfgPath string) []string
	// Remote puts the host on a second underlay subnet, 198.51.100.0/24
	// (RFC 5737), behind a router namespace that joins it to the lab's
	// underlay (IPv4 underlay only): a member one routed hop away.
	Remote bool
}

// Default fills in every unset option.
func (o *Options) Default() {
	if o.Hosts == 0 {
		o.Hosts = 3
	}
	if o.Containers == 0 {
		o.Containers = 2
	}
	if o.Encapsulation == "" {
		o.Encapsulation = config.EncapESP
	}
	if o.Cipher == "" {
		o.Cipher = config.DefaultCipher
	}
	if o.UnderlayMTU == 0 {
		o.UnderlayMTU = config.DefaultUnderlayMTU
	}
	if o.Tag == "" {
		o.Tag = "lab"
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Cluster {
		if o.ClusterOptions.Timing == "" {
			o.ClusterOptions.Timing = "fast"
			if o.Hosts > FastTimingHosts {
				o.ClusterOptions.Timing = "edge"
			}
		}
		o.ClusterOptions.defaults()
	}
}

// launchOpts is how h's router is started: at its wave's gate, and in an
// oversubscribed lab with GOMAXPROCS=1 unless the lab's own environment
// sets it.
func (l *Lab) launchOpts(h *Host) launchOpts {
	how := launchOpts{gate: h.gate}
	if l.oversubscribed() && os.Getenv("GOMAXPROCS") == "" {
		how.env = []string{"GOMAXPROCS=1"}
	}
	return how
}

// oversubscribed reports whether the lab has more than FastTimingHosts
// routers: they share this machine's cores as single-core hosts that each
// get a few percent of one.
func (l *Lab) oversubscribed() bool { return len(l.Hosts) > FastTimingHosts }

// FastTimingHosts is the largest lab whose routers are treated as hosts of
// their own. Above it they share the machine's cores as small starved
// hosts would, and the lab gives them what such hosts get, measured in a
// 100-host lab on 2 cores started at once (2026-12-07):
//   - "edge" timing in cluster mode, not "fast" or "lan". Fast timing's
//     100 ms probe timeout and 2 s push/pulls kept every core busy and
//     hosts declared each other dead by the thousand; lan timing's 500 ms
//     timeout still gave 172 to 388 false "member dead" in the start-up
//     storm in half the runs, each withdrawing and restoring 99 routes
//     (converged in 22.7 to 34.9 s), edge timing none (17.1 to 24.6 s).
//   - GOMAXPROCS=1: a hundred Go runtimes that each believe they own
//     every core cost more than the routers' own work (sysmon retaking
//     Ps and idle Ps spinning for work were a quarter of all CPU in a
//     profile); with one P each a router spent 0.40 s of CPU until the
//     lab converged instead of 0.70 s.
const FastTimingHosts = 30

// hostOptions returns host h's options (h from 1).
func (o *Options) hostOptions(h int) HostOptions {
	if h-1 < len(o.HostOptions) {
		return o.HostOptions[h-1]
	}
	return HostOptions{}
}

var tagRE = regexp.MustCompile(`^[a-z0-9]{1,4}$`)

// Validate checks the options; call after Default.
func (o *Options) Validate() error {
	var errs []error
	if o.Hosts < 1 || o.Hosts > maxHosts {
		errs = append(errs, fmt.Errorf("hosts: %d is outside 1..%d", o.Hosts, maxHosts))
	}
	if o.Containers < 1 || o.Containers > maxContainers {
		errs = append(errs, fmt.Errorf("containers: %d is outside 1..%d", o.Containers, maxContainers))
	}
	switch o.Encapsulation {
	case config.EncapESP, config.EncapVXLAN:
	default:
		errs = append(errs, fmt.Errorf("encapsulation: %q is not one of esp, vxlan", o.Encapsulation))
	}
	if _, err := esp.ParseCipher(o.Cipher); err != nil {
		errs = append(errs, fmt.Errorf("cipher: %w", err))
	}
	if o.UnderlayMTU < 576 || o.UnderlayMTU > 65535 {
		errs = append(errs, fmt.Errorf("underlay MTU: %d is outside 576..65535", o.UnderlayMTU))
	}
	if o.ContainerMTU != 0 && (o.ContainerMTU < 576 || o.ContainerMTU > 65535) {
		errs = append(errs, fmt.Errorf("container MTU: %d is outside 576..65535", o.ContainerMTU))
	}
	if !tagRE.MatchString(o.Tag) {
		errs = append(errs, fmt.Errorf("tag: %q must be 1-%d characters a-z, 0-9 (it goes into interface names)", o.Tag, maxTagLen))
	}
	if len(o.HostOptions) > o.Hosts {
		errs = append(errs, fmt.Errorf("host options: %d entries for %d hosts", len(o.HostOptions), o.Hosts))
	}
	for i, ho := range o.HostOptions {
		if _, err := qemuName(ho.Arch); err != nil {
			errs = append(errs, fmt.Errorf("host %d: %w", i+1, err))
		}
		if ho.Remote && o.UnderlayIPv6 {
			errs = append(errs, fmt.Errorf("host %d: a remote host needs the IPv4 underlay", i+1))
		}
		if len(ho.ClusterKey) != 0 && !o.Cluster {
			errs = append(errs, fmt.Errorf("host %d: a cluster key needs cluster mode", i+1))
		}
	}
	if o.Cluster {
		errs = append(errs, o.ClusterOptions.validate())
	}
	if o.Sample < 0 {
		errs = append(errs, fmt.Errorf("sample: %d is negative", o.Sample))
	}
	if o.Idle < 0 || (o.Idle > 0 && !o.Cluster) {
		errs = append(errs, fmt.Errorf("idle: %v needs cluster mode and a positive duration", o.Idle))
	}
	return errors.Join(errs...)
}

// Lab is a running lab: an underlay namespace with a bridge, hosts each with
// an uplink, a bridge, containers and a drover router.
type Lab struct {
	// Underlay is the namespace holding the underlay bridge.
	Underlay *NetNS
	// Remote is the router namespace between the underlay and the second
	// subnet (HostOptions.Remote); nil without remote hosts.
	Remote *NetNS
	// Hosts are in order: Hosts[i].Index == i+1.
	Hosts []*Host
	// Dir holds the routers' configs, logs and control sockets.
	Dir string
	// ContainerMTU is the MTU of every container interface.
	ContainerMTU int
	// ClusterKeyFile is the lab's cluster key (cluster mode; 0600, in Dir).
	ClusterKeyFile string
	// ConvergedAt is when NewLab (or the last StartRouters that started a
	// host for the first time) saw every router of a cluster-mode lab list
	// every other one with its block and a route to it.
	ConvergedAt time.Time

	opts Options
	tag  string
	log  *slog.Logger

	undo      undoList
	closeOnce sync.Once
	closeErr  error
}

// Host is one lab host.
type Host struct {
	Index    int    // from 1
	Name     string // "h1": the router's node name
	NS       *NetNS
	Underlay netip.Addr   // 192.0.2.<Index> on Uplink
	Prefix   netip.Prefix // 10.42.<Index>.0/24, behind Bridge (cluster mode: the block the router claimed; invalid until then)
	Gateway  netip.Addr   // 10.42.<Index>.1, the bridge's address (cluster mode: the block's first address)
	Uplink   string       // interface into the underlay bridge
	Bridge   string       // the containers' bridge
	// Containers are in order: Containers[i].Ref.Container == i+1.
	Containers []*Container
	// Router is the host's `drover run` process; nil until started, and
	// again after Lab.StopRouter or Lab.KillRouter.
	Router *Router
	// Started is when the current (or last) router process was launched;
	// for a wave started at once, when the wave's gate opened.
	Started time.Time
	// gate holds the router at its wave's start gate while the wave is
	// being launched (startWave); nil otherwise.
	gate *gateTicket

	cfg       *config.Config
	opts      HostOptions
	runs      int  // router processes launched so far
	addressed bool // bridge and containers have their addresses (cluster mode: once the block is known)
}

// ControlGet GETs path from h's router's control socket (Router.Get),
// naming the host in errors.
func (h *Host) ControlGet(path string) ([]byte, error) {
	if h.Router == nil {
		return nil, errors.New(h.Name + ": router not running")
	}
	b, err := h.Router.Get(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", h.Name, err)
	}
	return b, nil
}

// Container is one container: a namespace with eth0 on its host's bridge.
type Container struct {
	Ref  ContainerRef
	Host *Host
	NS   *NetNS
	Addr netip.Addr // 10.42.<host>.<container+1> (cluster mode: in the host's block; invalid until it is known)
}

// ContainerRef names a container by host and container index, both from 1.
type ContainerRef struct{ Host, Container int }

// String is "h<host>c<container>", as in the lab's names and tables.
func (r ContainerRef) String() string { return fmt.Sprintf("h%dc%d", r.Host, r.Container) }

// NewLab builds a lab and starts its routers. On failure, and when ctx ends
// during the build, it removes everything it had made before returning the
// error; on success the caller must Close the lab.
func NewLab(ctx context.Context, opts Options) (lab *Lab, err error) {
	opts.Default()
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("lab options: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("lab: needs root to create network namespaces")
	}
	opts.HostOptions = slices.Clone(opts.HostOptions) // build fills in Bin
	l := &Lab{opts: opts, tag: opts.Tag, log: opts.Log.With("component", "lab", "tag", opts.Tag)}
	l.ContainerMTU = opts.ContainerMTU
	if l.ContainerMTU == 0 {
		l.ContainerMTU = config.TunnelMTU(opts.Encapsulation, opts.UnderlayMTU, opts.UnderlayIPv6)
	}
	defer func() {
		if r := recover(); r != nil {
			l.Close() // a bug must not leave namespaces and routers behind
			panic(r)
		}
		if err != nil {
			if cerr := l.Close(); cerr != nil {
				err = fmt.Errorf("%w (and removing the partial lab: %v)", err, cerr)
			}
			lab = nil
		}
	}()
	if err := l.build(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Lab) build(ctx context.Context) error {
	start := time.Now()
	var cfgs []*config.Config
	var err error
	if !l.opts.Cluster {
		if cfgs, err = labConfigs(l.opts); err != nil {
			return err
		}
	}
	if l.opts.Bin == "" {
		return errors.New("lab: no drover binary to run (Options.Bin)")
	}
	for h := 1; h <= l.opts.Hosts; h++ {
		ho := l.opts.hostOptions(h)
		if isNative(ho.Arch) {
			continue
		}
		if _, err := QEMU(ho.Arch); err != nil {
			return fmt.Errorf("host %d: %w", h, err)
		}
		if ho.Bin == "" {
			return fmt.Errorf("host %d: no %s build of drover to run (HostOptions.Bin)", h, ho.Arch)
		}
	}
	l.Dir = l.opts.Dir
	if l.Dir == "" {
		if l.Dir, err = os.MkdirTemp("", Prefix+l.tag+"-"); err != nil {
			return err
		}
		dir := l.Dir
		l.undo.push("remove "+dir, func() error { return os.RemoveAll(dir) })
	}
	if l.opts.Cluster {
		if cfgs, err = l.clusterConfigs(); err != nil {
			return err
		}
	}

	for _, c := range cfgs {
		c.Policy.File = l.opts.PolicyFile
		c.Policy.ProjectLabel = l.opts.PolicyProjectLabel
	}
	if err := l.buildUnderlay(); err != nil {
		return err
	}
	if slices.ContainsFunc(l.opts.HostOptions, func(ho HostOptions) bool { return ho.Remote }) {
		if err := l.buildRemoteSegment(); err != nil {
			return err
		}
	}
	for h := 1; h <= l.opts.Hosts; h++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("lab setup: %w", err)
		}
		host, err := l.buildHost(h)
		if err != nil {
			return err
		}
		host.cfg = cfgs[h-1]
		host.opts = l.opts.hostOptions(h)
		l.Hosts = append(l.Hosts, host)
		for c := 1; c <= l.opts.Containers; c++ {
			ctr, err := l.buildContainer(host, c)
			if err != nil {
				return err
			}
			host.Containers = append(host.Containers, ctr)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("lab setup: %w", err)
	}
	if l.Remote != nil {
		if err := l.routeSegments(); err != nil {
			return fmt.Errorf("lab setup: %w", err)
		}
	}
	if len(l.Hosts) >= staticNeighborHosts {
		if err := l.staticNeighbors(); err != nil {
			return fmt.Errorf("lab setup: %w", err)
		}
	}
	l.log.Info("namespaces ready", "hosts", len(l.Hosts), "containers", l.opts.Containers, "took", time.Since(start).Round(time.Millisecond))

	// Routers start in parallel: each waits for its control socket, and
	// that wait dominates the setup time. In cluster mode host 1, the seed
	// every other host joins through, starts first unless StartAtOnce.
	l.undo.push("stop routers", l.stopRouters)
	var waves [][]*Host
	var all []*Host
	for _, host := range l.Hosts {
		if !host.opts.Manual {
			all = append(all, host)
		}
	}
	if l.opts.Cluster && !l.opts.ClusterOptions.StartAtOnce && len(all) > 1 && all[0].Index == 1 {
		waves = [][]*Host{all[:1], all[1:]}
	} else {
		waves = [][]*Host{all}
	}
	for _, wave := range waves {
		if err := l.startWave(ctx, wave); err != nil {
			return err
		}
	}
	if l.opts.Cluster {
		if err := l.clusterUp(ctx, all); err != nil {
			return err
		}
	}
	l.log.Info("lab up", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// startWave starts the hosts' routers at once and waits for their control
// sockets.
func (l *Lab) startWave(ctx context.Context, hosts []*Host) error {
	errs := make([]error, len(hosts))
	seeds := make([][]string, len(hosts))
	for i, host := range hosts {
		seeds[i] = l.seedsFor(host)
	}
	// In cluster mode with StartAtOnce, the routers start at one instant
	// (startGate); otherwise each as soon as it is launched.
	var tickets []*gateTicket
	if l.opts.Cluster && l.opts.ClusterOptions.StartAtOnce && len(hosts) > 1 {
		tickets = newStartGate(len(hosts))
	}
	var wg sync.WaitGroup
	for i, host := range hosts {
		if tickets != nil {
			host.gate = tickets[i]
		}
		wg.Go(func() {
			if tickets != nil {
				defer tickets[i].arrive() // a launch that failed before its process existed
			}
			if err := l.launch(ctx, host, seeds[i]); err != nil {
				errs[i] = fmt.Errorf("host %s: %w", host.Name, err)
			}
		})
	}
	wg.Wait()
	for _, host := range hosts {
		host.gate = nil
	}
	// A router that gave up because ctx ended reports its last probe
	// error; the cause is the context.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("lab setup: %w", err)
	}
	return errors.Join(errs...)
}

// stopRouters stops every started router at once (SIGTERM, then SIGKILL
// after 10 s) and reports the ones that did not exit cleanly.
func (l *Lab) stopRouters() error {
	errs := make([]error, len(l.Hosts))
	var wg sync.WaitGroup
	for i, host := range l.Hosts {
		if host.Router == nil {
			continue
		}
		wg.Go(func() {
			if err := host.Router.Stop(); err != nil {
				errs[i] = fmt.Errorf("router %s: %w\n%s", host.Name, err, host.Router.LogTail(10))
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Close stops the routers and removes every namespace, link and file the lab
// made, in the reverse order of creation. It is safe to call more than once
// and after a failed NewLab; it returns the problems it met (a router that
// did not exit cleanly, a namespace that could not be removed) but always
// goes through the whole list.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() {
		start := time.Now()
		l.closeErr = l.undo.run()
		l.log.Info("lab removed", "took", time.Since(start).Round(time.Millisecond), "err", l.closeErr)
	})
	return l.closeErr
}

// Containers lists every container, host by host.
func (l *Lab) Containers() []*Container {
	var out []*Container
	for _, h := range l.Hosts {
		out = append(out, h.Containers...)
	}
	return out
}

// Container returns the container ref names.
func (l *Lab) Container(ref ContainerRef) (*Container, error) {
	if ref.Host < 1 || ref.Host > len(l.Hosts) || ref.Container < 1 || ref.Container > len(l.Hosts[ref.Host-1].Containers) {
		return nil, fmt.Errorf("lab has no container %s", ref)
	}
	return l.Hosts[ref.Host-1].Containers[ref.Container-1], nil
}

// Options returns the lab's options with defaults filled in.
func (l *Lab) Options() Options { return l.opts }

// labConfigs builds each host's router configuration: a full mesh of static
// peers. For esp every ordered pair of hosts gets fresh random key material
// and an SPI that is unique at the receiver (0x1000 + 0x100*dst + src); the
// sender's outbound SA is the receiver's inbound SA, as with manual keying
// through `ip xfrm state`.
func labConfigs(opts Options) ([]*config.Config, error) {
	n := opts.Hosts
	var keys [][]string // keys[src][dst], hex
	if opts.Encapsulation == config.EncapESP {
		cipher, err := esp.ParseCipher(opts.Cipher)
		if err != nil {
			return nil, fmt.Errorf("cipher: %w", err)
		}
		keys = make([][]string, n+1)
		for src := 1; src <= n; src++ {
			keys[src] = make([]string, n+1)
			for dst := 1; dst <= n; dst++ {
				if src == dst {
					continue
				}
				k := make([]byte, cipher.KeyLen())
				if _, err := rand.Read(k); err != nil {
					return nil, err
				}
				keys[src][dst] = hex.EncodeToString(k)
			}
		}
	}
	spi := func(src, dst int) uint32 { return uint32(0x1000 + 0x100*dst + src) }

	cfgs := make([]*config.Config, n)
	for h := 1; h <= n; h++ {
		c := &config.Config{
			Node: config.Node{
				Name:     fmt.Sprintf("h%d", h),
				Underlay: underlayAddr(opts.UnderlayIPv6, h).String(),
				TUN:      config.DefaultTUN,
				Bridge:   Prefix + opts.Tag + "-br", // the host bridge: ARP for remote addresses (flat model)
				Prefixes: []string{hostPrefix(h).String()},
			},
			Encapsulation: opts.Encapsulation,
			Cipher:        opts.Cipher,
			VNI:           opts.VNI,
			Log:           config.Log{Level: "info", Format: "text"},
		}
		for p := 1; p <= n; p++ {
			if p == h {
				continue
			}
			peer := config.Peer{
				Name:     fmt.Sprintf("h%d", p),
				Underlay: underlayAddr(opts.UnderlayIPv6, p).String(),
				Prefixes: []string{hostPrefix(p).String()},
			}
			if keys != nil {
				peer.SA = &config.SAPair{
					Out: config.SA{SPI: spi(h, p), Key: keys[h][p]},
					In:  config.SA{SPI: spi(p, h), Key: keys[p][h]},
				}
			}
			c.Peers = append(c.Peers, peer)
		}
		c.Default()
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("router config h%d: %w", h, err)
		}
		cfgs[h-1] = c
	}
	return cfgs, nil
}

// undoList is what Close runs: every step of the build pushes its inverse.
type undoList struct {
	mu    sync.Mutex
	steps []undoStep
}

type undoStep struct {
	what string
	fn   func() error
}

func (u *undoList) push(what string, fn func() error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.steps = append(u.steps, undoStep{what, fn})
}

// run pops and runs every step, newest first, and joins their errors.
func (u *undoList) run() error {
	u.mu.Lock()
	steps := u.steps
	u.steps = nil
	u.mu.Unlock()
	var errs []error
	for i := len(steps) - 1; i >= 0; i-- {
		if err := steps[i].fn(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", steps[i].what, err))
		}
	}
	return errors.Join(errs...)
}
