package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/drovernet/drover/agent"
	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/crypto/pairkey"
	"github.com/drovernet/drover/gossip"
	"github.com/drovernet/drover/gossip/blocks"
	"github.com/drovernet/drover/internal/durable"
	"github.com/drovernet/drover/internal/ratelog"
	"github.com/drovernet/drover/lanpool"
	"github.com/drovernet/drover/router"
	"github.com/drovernet/drover/tun"
)

// cluster wires the agent (package agent: the control plane's logic) to
// gossip, the router and the kernel's routes through the TUN.
type cluster struct {
	ag   *agent.Agent
	cl   *gossip.Cluster // nil with the kubernetes datastore
	kube *kubeStore      // nil with gossip
	pins *agent.Pins
	book *gossip.AddrBook // members seen alive, to rejoin through after a restart
	// routes is the agent's netlink socket for routes; closed after the
	// agent's Stop has removed them.
	routes *tun.Routes
	log    *slog.Logger
}

// tunKernel is agent.Kernel over the TUN device; routes with a next hop
// (direct ones) go out of the underlay interface.
type tunKernel struct {
	name, underlay string
	routes         *tun.Routes
}

func (k tunKernel) dev(r tun.Route) string {
	if r.Via.IsValid() {
		return k.underlay
	}
	return k.name
}

func (k tunKernel) AddRoute(r tun.Route) error    { return k.routes.Add(k.dev(r), r) }
func (k tunKernel) DelRoute(r tun.Route) error    { return k.routes.Del(k.dev(r), r) }
func (k tunKernel) SetAddrs(a []netip.Addr) error { return tun.SetAddrs(k.name, a) }

// startCluster loads the cluster key, the identity key, the persisted block
// and the identity pins, starts gossip and joins the cluster.
// With the kubernetes datastore it waits (until ctx is done) for the API
// server's list of Nodes instead, and, with pod_cidr node, for this host's
// Node to have a podCIDR.
func startCluster(ctx context.Context, cfg *config.Config, log *slog.Logger, rt *router.Router, tunnelMTU int, static []*router.Peer, ul tun.UnderlayLink, fwd *forwardFilter, bs *bgpSpeaker) (*cluster, error) {
	var r agent.Router = rt
	if bs != nil {
		r = announcingRouter{Router: rt, b: bs}
	}
	cc := cfg.Cluster
	key, err := gossip.LoadKey(cc.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("cluster.key_file: %w", err)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state_dir %s: %w", cfg.StateDir, err)
	}
	id, err := loadIdentity(filepath.Join(cfg.StateDir, "identity.key"))
	if err != nil {
		return nil, err
	}
	pins, err := agent.OpenPins(filepath.Join(cfg.StateDir, "identities.json"))
	if err != nil {
		return nil, err
	}
	n := &cfg.Node
	encap := agent.EncapESP
	if cfg.Encapsulation == config.EncapVXLAN {
		encap = agent.EncapVXLAN
	}
	gc := gossip.Config{
		Name:     n.Name,
		BindAddr: n.UnderlayAddr,
		BindPort: int(cc.Port),
		Key:      key,
		Log:      log.With("component", "gossip"),
	}
	gc, err = gossip.WithTiming(gc, cc.Timing)
	if err != nil {
		return nil, err
	}
	acfg := agent.Config{
		Name: n.Name, Version: version,
		Underlay:     netip.AddrPortFrom(n.UnderlayAddr, n.Port),
		UnderlayNets: ul.Subnets,
		Direct:       cc.Direct, DirectMAC: ul.MAC, DirectFilter: fwd.direct(), Fabric: bs.fabric(ul.Name),
		Prefixes: n.PrefixList, Addrs: n.AddressList, MAC: n.MACAddr,
		CIDR: cc.CIDRPrefix, BlockBits: cc.BlockBits, MayClaimAlone: cc.MayClaimAlone(),
		ClaimSettle: claimSettle(gc),
		Encap:       encap, Cipher: cfg.CipherID, CipherName: cfg.Cipher,
		ClusterKey: key, Identity: id, TunnelMTU: tunnelMTU, ReplayWindow: config.DefaultReplayWindow, Static: static,
		RotationInterval: cc.RotationInterval, SwitchDelay: cc.SwitchDelay, Grace: cc.Grace,
		Blocks: blocks.Open(filepath.Join(cfg.StateDir, "block.json")), Pins: pins,
		Chunks: lanpool.OpenStore(filepath.Join(cfg.StateDir, "chunks.json")),
		Log:    log,
	}
	routes, err := tun.NewRoutes()
	if err != nil {
		return nil, err
	}
	k := tunKernel{name: n.TUN, underlay: ul.Name, routes: routes}
	if cc.IsKubernetes() {
		c, err := startKube(ctx, cfg, acfg, r, k, pins, bs, log)
		if err != nil {
			routes.Close()
			return nil, err
		}
		c.routes = routes
		return c, nil
	}
	if cc.Direct {
		log.Info("direct routing on: members on the underlay's subnets that route directly are reached without encapsulation",
			"underlay", ul.Name, "subnets", ul.Subnets, "trusted", cc.DirectTrusted)
		if acfg.DirectFilter == nil {
			log.Warn("direct routing with the forward filter off: the host forwards whatever arrives on the underlay for containers")
		}
	}
	ag, err := agent.New(acfg, r, k)
	if err != nil {
		routes.Close()
		return nil, err
	}
	ag.Start()
	bs.follow(ctx, ag)
	cl, err := gossip.Start(gc, ag.Info())
	if err != nil {
		ag.Stop()
		routes.Close()
		return nil, err
	}
	ag.Attach(cl)
	c := &cluster{ag: ag, cl: cl, routes: routes, pins: pins, log: ratelog.New(log.With("component", "cluster"), 0, 0),
		book: gossip.OpenAddrBook(filepath.Join(cfg.StateDir, "members.json"))}
	// Members seen alive by an earlier run are tried while alone, after
	// the seeds: a restarted host finds its cluster even if every seed is
	// gone. Not joined now (an unreachable one would hold the start).
	if known, err := c.book.Load(); err != nil {
		c.log.Warn("remembered members not used", "err", err)
	} else if len(known) > 0 {
		cl.AddSeeds(known)
		c.log.Info("remembered members", "count", len(known))
	}
	if len(cc.Join) > 0 {
		n, err := cl.Join(cc.Join)
		if err != nil && n == 0 {
			// Not fatal: the seeds may come up later. While alone, gossip
			// tries them again from every second up to every 4 s.
			c.log.Warn("join failed; retrying while alone", "seeds", strings.Join(cc.Join, ","), "err", err)
		} else {
			c.log.Info("joined", "contacted", n)
		}
	}
	return c, nil
}

// claimSettle is how long a fresh block claim waits before it is handed
// out: ten gossip rounds (2 s with memberlist's LAN timing, 0.5 s with
// fast), in which a claim made at the same moment elsewhere reaches us in
// a cluster of thousands (gossip reaches everyone in O(log n) rounds).
func claimSettle(gc gossip.Config) time.Duration {
	return 10 * cmp.Or(gc.GossipInterval, 200*time.Millisecond) // zero: memberlist's LAN default
}

// health is what the readiness probe reads: the agent's last step, and
// whether it knows the cluster's claims (joined in gossip; in kubernetes,
// the Nodes listed and our info published on ours).
func (c *cluster) health() (last time.Time, joined bool) {
	last, joined = c.ag.Health()
	if c.kube != nil {
		joined = c.kube.ready()
	}
	return last, joined
}

// view is the agent's view, with whether this host is alone.
func (c *cluster) view() gossip.View {
	v := c.ag.Snapshot()
	if c.cl == nil {
		return v
	}
	if since, alone := c.cl.Alone(); alone {
		v.AloneSince = since.UTC().Format(time.RFC3339)
	}
	return v
}

// run is the agent's loop, and the address book's upkeep, until ctx is
// done.
func (c *cluster) run(ctx context.Context) {
	done := make(chan struct{})
	if c.kube != nil {
		go func() { defer close(done); c.kube.keepNetworkAvailable(ctx, c.ag) }()
	} else {
		go func() { defer close(done); c.keepBook(ctx) }()
	}
	c.ag.Run(ctx)
	<-done
}

// bookEvery is how often the members seen alive are written down (when
// they changed): a restart loses at most this much of the membership's
// history.
const bookEvery = 10 * time.Second

// keepBook writes the addresses of the members alive now to the address
// book whenever they changed, until ctx is done. While alone it writes
// nothing: the last members known are the ones worth trying.
func (c *cluster) keepBook(ctx context.Context) {
	tick := time.NewTicker(bookEvery)
	defer tick.Stop()
	var last []string
	for {
		if cur := c.cl.AliveAddrs(); len(cur) > 0 && !slices.Equal(cur, last) {
			if err := c.book.Save(cur); err != nil {
				c.log.Warn("remember members", "err", err)
			} else {
				last = cur
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// stop leaves the cluster (announced, so peers withdraw our routes at once)
// and removes our routes.
func (c *cluster) stop() {
	if c.kube != nil {
		// Our Node keeps our info: a restarting daemon (a DaemonSet
		// update) must not withdraw this node's pods everywhere; deleting
		// the Node does.
		c.kube.stop()
		c.ag.Stop()
		c.routes.Close()
		return
	}
	if err := c.cl.Leave(2 * time.Second); err != nil {
		c.log.Warn("leave", "err", err)
	}
	_ = c.cl.Shutdown()
	c.ag.Stop()
	c.routes.Close()
}

// register adds the control API's identity endpoint:
//
//	POST /v1/identities/forget?name=NAME   unpin NAME's identity key
//
// chunkRequest is the body of POST /v1/chunk (cni/daemon.go sends it):
// a network's LAN range, as its CNI config gives it.
type chunkRequest struct {
	Network   string `json:"network"`
	Start     string `json:"start"`
	End       string `json:"end"`
	ChunkSize int    `json:"chunk_size"`
}

func (c *cluster) register(mux *http.ServeMux) {
	// The uplink model's plugin asks for this host's chunk of its LAN
	// range: 200 with the chunk when it may be handed out, 503 with the
	// reason while it is claimed or cannot be (the plugin waits).
	mux.HandleFunc("POST /v1/chunk", func(w http.ResponseWriter, req *http.Request) {
		var cr chunkRequest
		dec := json.NewDecoder(io.LimitReader(req.Body, 4<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cr); err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		start, err1 := netip.ParseAddr(cr.Start)
		end, err2 := netip.ParseAddr(cr.End)
		p := lanpool.Pool{Network: cr.Network, Start: start, End: end, Size: cr.ChunkSize}
		if err := errors.Join(err1, err2); err != nil {
			http.Error(w, "start, end: "+err.Error(), http.StatusBadRequest)
			return
		}
		v, err := c.ag.WantChunk(p)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if !v.Ready {
			http.Error(w, v.Note, http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	})
	mux.HandleFunc("GET /v1/chunks", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(c.ag.ChunkViews())
	})
	mux.HandleFunc("POST /v1/identities/forget", func(w http.ResponseWriter, req *http.Request) {
		name := req.URL.Query().Get("name")
		if name == "" || len(name) > 128 {
			http.Error(w, "name: want a node name", http.StatusBadRequest)
			return
		}
		ok, err := c.pins.Forget(name)
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		case !ok:
			http.Error(w, fmt.Sprintf("%s: no identity key pinned", name), http.StatusNotFound)
		default:
			c.log.Warn("identity key forgotten; the next one seen is pinned", "node", name)
			w.WriteHeader(http.StatusNoContent)
		}
	})
}

// loadIdentity reads the X25519 identity private key, creating it (0600) on
// first start.
func loadIdentity(path string) (pairkey.KeyPair, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		kp, err := pairkey.NewKeyPair(rand.Reader)
		if err != nil {
			return kp, err
		}
		if err := durable.WriteFile(path, []byte(hex.EncodeToString(kp.Private[:])+"\n")); err != nil {
			return kp, fmt.Errorf("identity key %s: %w", path, err)
		}
		return kp, nil
	}
	if err != nil {
		return pairkey.KeyPair{}, fmt.Errorf("identity key %s: %w", path, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return pairkey.KeyPair{}, fmt.Errorf("identity key %s: mode %o lets others read it; chmod 600", path, fi.Mode().Perm())
	}
	raw, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) != 32 {
		return pairkey.KeyPair{}, fmt.Errorf("identity key %s: not 32 hex-encoded bytes", path)
	}
	var priv [32]byte
	copy(priv[:], raw)
	return pairkey.KeyPairFromPrivate(priv)
}
