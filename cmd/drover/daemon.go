package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"

	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/cni/ipam"
	"github.com/drovernet/drover/crypto/aesgcm"
	"github.com/drovernet/drover/crypto/esp"
	"github.com/drovernet/drover/gossip"
	"github.com/drovernet/drover/internal/sdnotify"
	"github.com/drovernet/drover/internal/statedir"
	"github.com/drovernet/drover/router"
	"github.com/drovernet/drover/router/udp"
	"github.com/drovernet/drover/tun"
)

func cmdRun(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (YAML, see docs/config.md)")
	nsName := fs.String("netns", "", "run inside this named network namespace (/run/netns/NAME)")
	check := fs.Bool("check", false, "only check the configuration (and --join) and exit: 0 valid, 2 not, the field named")
	var join multiFlag
	fs.Var(&join, "join", "seed address of a cluster member (host or host:port); repeatable; adds to cluster.join")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &exitError{code: 2, err: err}
	}
	if fs.NArg() > 0 {
		return usageErr("run: unexpected argument %q", fs.Arg(0))
	}
	if *cfgPath == "" {
		return usageErr("run: --config FILE is required")
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return fmt.Errorf("%s:\n%w", *cfgPath, err)
	}
	if len(join) > 0 {
		if cfg.Cluster == nil {
			return usageErr("run: --join needs a cluster section in %s (cluster.key_file)", *cfgPath)
		}
		cfg.Cluster.Join = append(cfg.Cluster.Join, join...)
	}
	if *check {
		// What config.Load checks needs no privilege and touches nothing:
		// systemd's ExecStartPre runs it so that a bad file stops the unit
		// with status 2 (RestartPreventExitStatus) instead of a restart loop.
		// The cluster key is read as the daemon will read it (mode, length).
		if cfg.Cluster != nil && cfg.Cluster.KeyFile != "" {
			if _, err := gossip.LoadKey(cfg.Cluster.KeyFile); err != nil {
				return &exitError{code: 2, err: fmt.Errorf("%s: cluster.key_file: %w", *cfgPath, err)}
			}
		}
		fmt.Fprintf(stderr, "drover: %s: configuration is valid\n", *cfgPath)
		return nil
	}
	if *nsName != "" {
		// Re-exec without --netns, inside the namespace. Only returns on error.
		rest := []string{"run", "--config", *cfgPath}
		for _, j := range join {
			rest = append(rest, "--join", j)
		}
		return reexecInNetns(*nsName, rest)
	}
	ctx, stop := signalContext()
	defer stop()
	log := newLogger(cfg.Log, stderr)
	return runDaemon(ctx, cfg, log)
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level)) // validated by config
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// daemon holds what runDaemon set up, so that teardown undoes exactly that.
type daemon struct {
	cfg    *config.Config
	log    *slog.Logger
	undo   []func()
	routes []tun.Route
}

func (d *daemon) teardown() {
	for i := len(d.undo) - 1; i >= 0; i-- {
		d.undo[i]()
	}
	d.undo = nil
}

// runDaemon sets up the socket, the TUN device, its addresses and routes, and
// runs the router until ctx is done. Anything it set up is removed before it
// returns, on success and on failure.
func runDaemon(ctx context.Context, cfg *config.Config, log *slog.Logger) (err error) {
	d := &daemon{cfg: cfg, log: log}
	defer d.teardown()

	// One daemon per state_dir, before anything else is set up.
	lock, err := statedir.Acquire(cfg.StateDir)
	if err != nil {
		return err
	}
	d.undo = append(d.undo, func() { _ = lock.Release() }) // undone last
	n := &cfg.Node
	// Everything below binds to the underlay address or reads its
	// interface, so it must be there first (node.underlay_wait).
	ul, err := waitUnderlay(ctx, n.UnderlayAddr, tun.UnderlayLinkOf, n.UnderlayWait, underlayPoll, log)
	if err != nil {
		if ctx.Err() != nil {
			// SIGTERM while waiting: a stop, not a failure.
			log.Info("stopped while waiting for the underlay address", "address", n.UnderlayAddr)
			return nil
		}
		return err
	}
	// Prefixes that would replace the underlay's connected route: refused
	// as configuration errors (exit 2), like Validate's. The agent refuses
	// the same from every member.
	underlayNets := ul.Subnets
	// Members reached without encapsulation (cluster.direct, bgp.import)
	// come in and go out through the underlay interface.
	direct := cfg.Cluster != nil && cfg.Cluster.Direct
	fabric := cfg.Cluster != nil && cfg.BGP != nil && cfg.BGP.Import
	if direct || fabric {
		what := "cluster.direct"
		if !direct {
			what = "bgp.import"
		}
		if direct && ul.MAC == ([6]byte{}) {
			return fmt.Errorf("cluster.direct: the underlay interface %s has no MAC address; direct routing needs an Ethernet segment", ul.Name)
		}
		// Ours from a daemon that was killed: routes through the TUN
		// went with it, these did not.
		if n, err := tun.FlushRoutes(ul.Name); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		} else if n > 0 {
			log.Info("stale routes of an earlier run removed from the underlay interface", "underlay", ul.Name, "count", n)
		}
	} else {
		ul.Name = "" // no sources are admitted from it
	}
	if err := cfg.CheckUnderlaySubnets(underlayNets); err != nil {
		return err
	}
	underlayMTU := cfg.MTU
	if underlayMTU == 0 {
		m, err := tun.UnderlayMTU(n.UnderlayAddr)
		if err != nil {
			return err
		}
		if m == 0 {
			log.Warn("no interface holds the underlay address; assuming the default MTU", "underlay", n.UnderlayAddr, "mtu", config.DefaultUnderlayMTU)
			m = config.DefaultUnderlayMTU
		}
		underlayMTU = m
	}
	tunnelMTU := config.TunnelMTU(cfg.Encapsulation, underlayMTU, n.UnderlayAddr.Is6())
	tunMTU := tunnelMTU
	if cfg.TUNMTU != 0 {
		tunMTU = cfg.TUNMTU
	}

	peers, err := buildPeers(cfg, tunnelMTU)
	if err != nil {
		return err
	}
	var seqs *seqStore
	if cfg.Encapsulation == config.EncapESP && len(peers) > 0 {
		if seqs, err = newSeqStore(cfg.StateDir, log); err != nil {
			return err
		}
		for i, p := range peers {
			if err := seqs.add(p.Out, cfg.Peers[i].SA.Out.KeyBytes); err != nil {
				return fmt.Errorf("peer %s: %w", p.Name, err)
			}
		}
	}

	local := netip.AddrPortFrom(n.UnderlayAddr, n.Port)
	// 16 MiB socket buffers: with UDP GRO one queued message can hold 64 KiB
	// of coalesced datagrams, and 4 MiB overflowed under load.
	// A batch of 256: the router sends up to four 64 KiB TUN frames (188
	// full-size datagrams) with one WriteBatch.
	conn, err := udp.Listen(udp.Config{Local: local, RecvBuffer: 16 << 20, SendBuffer: 16 << 20, BatchSize: 256})
	if err != nil {
		return fmt.Errorf("underlay socket: %w", err)
	}
	dev, err := tun.Open(n.TUN)
	if err != nil {
		conn.Close()
		return err
	}
	// The router owns dev and conn from here; Run closes them. Until Run
	// starts, close them here on failure.
	started := false
	d.undo = append(d.undo, func() {
		if !started {
			dev.Close()
			conn.Close()
		}
	})
	if err := tun.Configure(n.TUN, tunMTU, n.AddressList); err != nil {
		return err
	}
	fwd, err := startForwardFilter(cfg, ul.Name, log) // before anything is routed into the TUN
	if err != nil {
		return err
	}
	d.undo = append(d.undo, fwd.stop)
	encap := router.EncapESP
	if cfg.Encapsulation == config.EncapVXLAN {
		encap = router.EncapVXLAN
	}
	r, err := router.New(router.Config{
		Name:        n.Name,
		Encap:       encap,
		Cipher:      cfg.Cipher,
		VNI:         cfg.VNI,
		MAC:         n.MACAddr,
		Prefixes:    n.PrefixList,
		Addrs:       n.AddressList,
		MTU:         tunMTU,
		UnderlayMTU: underlayMTU,
		TUN:         n.TUN,
		Log:         log,
	}, dev, conn)
	if err != nil {
		return err
	}
	if err := r.SetPeers(peers); err != nil {
		return err
	}
	// BGP before the agent: it announces the block the agent sets.
	bs, err := startBGP(cfg, log)
	if err != nil {
		return err
	}
	stopBGP := sync.OnceFunc(bs.stop)
	d.undo = append(d.undo, stopBGP)
	var cl *cluster
	if cfg.Cluster != nil {
		// The agent owns peers and routes from here (static peers included).
		if cl, err = startCluster(ctx, cfg, log, r, tunnelMTU, peers, ul, fwd, bs); err != nil {
			return err
		}
		agCtx, stopAgent := context.WithCancel(ctx)
		agDone := make(chan struct{})
		go func() { cl.run(agCtx); close(agDone) }()
		d.undo = append(d.undo, func() {
			stopAgent()
			<-agDone
			cl.stop()
			log.Info("left the cluster; routes removed")
		})
		peers = nil // routes below: none, the agent installs them
		// On the way out the speaker stops first: without graceful
		// restart its Cease withdraws this host's routes from the
		// fabric before leaving the cluster takes its time.
		d.undo = append(d.undo, stopBGP)
	} else {
		bs.announce(n.PrefixList)
	}
	for _, p := range peers {
		for _, pfx := range p.Prefixes {
			rt := tun.Route{Prefix: pfx, Src: sourceFor(n.AddressList, pfx.Addr().Is4())}
			if err := tun.AddRoute(n.TUN, rt); err != nil {
				return fmt.Errorf("peer %s: %w", p.Name, err)
			}
			d.routes = append(d.routes, rt)
			log.Debug("route added", "peer", p.Name, "prefix", pfx)
		}
	}
	d.undo = append(d.undo, func() {
		for _, rt := range d.routes {
			if err := tun.DelRoute(n.TUN, rt); err != nil {
				log.Warn("remove route", "prefix", rt.Prefix, "err", err)
			}
		}
		log.Info("routes removed", "count", len(d.routes))
	})

	// Network policy, before containers are attached: with policy on, no
	// pod is reachable before its policies are enforced.
	pol, err := startPolicy(ctx, cfg, cl, log)
	if err != nil {
		return err
	}
	if pol != nil {
		d.undo = append(d.undo, pol.stop)
	}

	// fill adds to the router's status what it does not know, for the
	// control socket and the metrics on TCP alike.
	fill := func(st *router.Status) { fwd.fill(st); guardFill(st, log); bs.fill(st) }
	if pol != nil {
		fill = func(st *router.Status) { fwd.fill(st); guardFill(st, log); bs.fill(st); pol.fill(st) }
	}
	if cfg.ControlSocket != "none" {
		views := func() gossip.View {
			if cl != nil {
				return cl.view()
			}
			var v gossip.View
			for _, rt := range d.routes {
				v.Routes = append(v.Routes, gossip.RouteView{Prefix: rt.Prefix.String(), Src: rt.Src.String(), Peer: staticOwner(cfg, rt.Prefix), Path: cfg.Encapsulation})
			}
			return v
		}
		locals := newLocalSet(routerPrefixes(r), cfg.StateDir, ipam.DefaultDataDir, log)
		if cfg.Firewall.ForwardOn() && n.Bridge != "none" {
			locals.trustedBridge = n.Bridge
		}
		if cfg.Cluster != nil {
			locals.cluster = cfg.Cluster.CIDRPrefix
			// Stranded containers appear when a block is lost, which
			// no notice tells: the directories are rescanned.
			stop := locals.rescanEvery(localRescan)
			d.undo = append(d.undo, stop)
		}
		register := locals.register
		if cl != nil {
			register = func(mux *http.ServeMux) { locals.register(mux); cl.register(mux) }
		}
		if pol != nil {
			pol.follow(locals, cfg.Policy.DefaultNamespace)
			inner := register
			register = func(mux *http.ServeMux) { inner(mux); pol.register(mux) }
		}
		if cl != nil {
			base := fill
			fill = func(st *router.Status) {
				base(st)
				st.BlockNote = cl.ag.Snapshot().BlockNote
				st.Stranded = locals.strandedList()
			}
		}
		stopCtl, err := serveControl(cfg.ControlSocket, r, views, register, fill, log)
		if err != nil {
			return err
		}
		d.undo = append(d.undo, stopCtl)
		if addr := cfg.Metadata.ListenAddr; addr.IsValid() {
			stopMeta, err := serveMetadata(ctx, addr, n.Name, locals, log)
			if err != nil {
				return err
			}
			d.undo = append(d.undo, stopMeta)
		}
	}
	if addr := cfg.HTTP.ListenAddr; addr != "" {
		founder := cfg.Cluster != nil && cfg.Cluster.MayClaimAlone() && !cfg.Cluster.IsKubernetes()
		stopHTTP, err := serveHTTP(addr, r, cl, founder, fill, log)
		if err != nil {
			return err
		}
		d.undo = append(d.undo, stopHTTP)
	}

	attrs := []any{"node", n.Name, "underlay", local, "tun", n.TUN, "tun_mtu", tunMTU,
		"underlay_mtu", underlayMTU, "encapsulation", cfg.Encapsulation, "peers", len(peers)}
	if cfg.Encapsulation == config.EncapESP {
		attrs = append(attrs, "cipher", cfg.CipherID)
		if cfg.CipherID != esp.ChaCha20Poly1305 {
			// Which AES-GCM this CPU gets: a slow host is easier to
			// explain when the log says so.
			attrs = append(attrs, "aes_gcm", aesgcm.Implementation())
		}
	}
	log.Info("drover running", attrs...)
	started = true
	// Type=notify (deploy/systemd/drover.service): units ordered after
	// drover start once it routes and its control socket answers.
	if _, err := sdnotify.Notify("READY=1\nSTATUS=routing"); err != nil {
		log.Warn("could not tell systemd the daemon is ready", "err", err)
	}
	if n.Bridge != "none" {
		arpCtx, stopARP := context.WithCancel(ctx)
		arpDone := make(chan struct{})
		go func() { _ = r.AnswerARP(arpCtx, n.Bridge); close(arpDone) }()
		defer func() { stopARP(); <-arpDone }()
	}
	if seqs != nil {
		seqCtx, stopSeq := context.WithCancel(ctx)
		seqDone := make(chan struct{})
		go func() { seqs.run(seqCtx); close(seqDone) }()
		defer func() { stopSeq(); <-seqDone }()
	}
	runErr := r.Run(ctx)
	if _, err := sdnotify.Notify("STOPPING=1"); err != nil {
		log.Warn("could not tell systemd the daemon is stopping", "err", err)
	}
	if runErr != nil {
		return fmt.Errorf("router: %w", runErr)
	}
	return nil
}

// staticOwner names the configured peer a prefix belongs to.
func staticOwner(cfg *config.Config, pfx netip.Prefix) string {
	for _, p := range cfg.Peers {
		for _, q := range p.PrefixList {
			if q == pfx {
				return p.Name
			}
		}
	}
	return ""
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint([]string(*m)) }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func sourceFor(addrs []netip.Addr, v4 bool) netip.Addr {
	for _, a := range addrs {
		if a.Is4() == v4 {
			return a
		}
	}
	return netip.Addr{}
}

func buildPeers(cfg *config.Config, tunnelMTU int) ([]*router.Peer, error) {
	peers := make([]*router.Peer, 0, len(cfg.Peers))
	for i := range cfg.Peers {
		pc := &cfg.Peers[i]
		p := &router.Peer{
			Name:      pc.Name,
			Underlay:  netip.AddrPortFrom(pc.UnderlayAddr, pc.Port),
			MAC:       pc.MACAddr,
			Prefixes:  pc.PrefixList,
			TunnelMTU: tunnelMTU,
		}
		if cfg.Encapsulation == config.EncapESP {
			sa := pc.SA
			var err error
			p.Out, err = esp.NewOutSA(cfg.CipherID, sa.Out.SPI, sa.Out.KeyBytes, sa.ESN)
			if err != nil {
				return nil, fmt.Errorf("peers[%d] (%s): outbound SA: %w", i, pc.Name, err)
			}
			in, err := esp.NewInSA(cfg.CipherID, sa.In.SPI, sa.In.KeyBytes, sa.ESN, sa.ReplayWindow)
			if err != nil {
				return nil, fmt.Errorf("peers[%d] (%s): inbound SA: %w", i, pc.Name, err)
			}
			p.In = []*esp.InSA{in}
		}
		peers = append(peers, p)
	}
	return peers, nil
}
