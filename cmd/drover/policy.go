package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/gossip"
	"github.com/drovernet/drover/internal/ratelog"
	"github.com/drovernet/drover/policy"
	"github.com/drovernet/drover/policy/enforce"
	"github.com/drovernet/drover/policy/engine"
	"github.com/drovernet/drover/policy/share"
	"github.com/drovernet/drover/router"
)

// policyEngine is the daemon's network policy (package policy/engine);
// nil when policy.file is empty.
type policyEngine struct {
	e     *engine.Engine
	stop  func()
	share *share.Server // gossip mode: this host's pods for the others
}

// startPolicy installs table inet drover_policy and keeps it following
// the policy source - the policy file (one that does not parse stops the
// start, naming every error) or, in Kubernetes mode, the API server's
// NetworkPolicies, Namespaces and Pods - and this host's pods.
func startPolicy(ctx context.Context, cfg *config.Config, cl *cluster, log *slog.Logger) (*policyEngine, error) {
	pc := cfg.Policy
	if !cfg.PolicyOn() {
		return nil, nil
	}
	var (
		set *policy.Set
		b   []byte
		err error
	)
	if pc.File != "" {
		if b, err = os.ReadFile(pc.File); err != nil {
			return nil, fmt.Errorf("policy.file: %w", err)
		}
		if set, err = policy.Parse(b, pc.DefaultNamespace); err != nil {
			return nil, &exitError{code: 2, err: fmt.Errorf("policy.file %s:\n%w", pc.File, err)}
		}
	}
	enf, err := enforce.New()
	if err != nil {
		return nil, err
	}
	e := engine.New(cfg.Node.Name, enf, log)
	if pc.ProjectLabel != "" {
		e.SetProjectLabel(pc.ProjectLabel)
	}
	ctx, cancel := context.WithCancel(ctx)
	var stops []func()
	run := func(f func()) {
		done := make(chan struct{})
		go func() { f(); close(done) }()
		stops = append(stops, func() { <-done })
	}
	if set != nil {
		e.SetPolicies(set)
		run(func() { e.WatchFile(ctx, pc.File, pc.DefaultNamespace, b, pc.ReloadInterval) })
		log.Info("network policy on", "file", pc.File, "policies", len(set.Policies), "table", "inet "+enforce.Table)
	} else {
		e.HoldForPods()
		src, err := startKubePolicy(cfg, e, log)
		if err != nil {
			cancel()
			return nil, err
		}
		run(func() { src(ctx) })
		log.Info("network policy on", "source", "kubernetes", "table", "inet "+enforce.Table)
	}
	pe := &policyEngine{e: e}
	if set != nil && cl != nil && cl.kube == nil {
		// Gossip mode: selectors need the other hosts' pods.
		srv, stopShare, err := startShare(ctx, cfg, cl, e, log)
		if err != nil {
			cancel()
			for _, s := range stops {
				s()
			}
			return nil, err
		}
		pe.share = srv
		stops = append(stops, stopShare)
	}
	run(func() { _ = e.Run(ctx) })
	pe.stop = func() {
		cancel()
		for _, s := range stops {
			s()
		}
	}
	return pe, nil
}

// routerAddr is the overlay address of the router owning block: its
// first host address, as every cluster-mode host gives its TUN.
func routerAddr(block netip.Prefix) netip.Addr { return block.Masked().Addr().Next() }

// sharePeers are the members whose pods this host fetches: alive, with a
// block, and the prefixes routed to them.
func sharePeers(v gossip.View, self string) []share.Peer {
	var out []share.Peer
	for _, m := range v.Members {
		if m.Name == self || m.State != "alive" || m.Block == "" {
			continue
		}
		b, err := netip.ParsePrefix(m.Block)
		if err != nil {
			continue
		}
		p := share.Peer{Name: m.Name, Addr: routerAddr(b)}
		for _, r := range v.Routes {
			if r.Peer == m.Name && r.Note == "" {
				if rp, err := netip.ParsePrefix(r.Prefix); err == nil {
					p.Blocks = append(p.Blocks, rp)
				}
			}
		}
		if len(p.Blocks) > 0 {
			slices.SortFunc(p.Blocks, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
			out = append(out, p)
		}
	}
	return out
}

// startShare serves this host's pods on the overlay (policy.share_port,
// bound to the TUN) to the members' routers only, and keeps a long poll
// open to every member's, feeding the engine.
func startShare(ctx context.Context, cfg *config.Config, cl *cluster, e *engine.Engine, log *slog.Logger) (*share.Server, func(), error) {
	ln, err := share.Listen(ctx, cfg.Node.TUN, cfg.Policy.SharePort)
	if err != nil {
		return nil, nil, err
	}
	srv := share.NewServer(func(a netip.Addr) bool {
		for _, p := range sharePeers(cl.view(), cfg.Node.Name) {
			if p.Addr == a {
				return true
			}
		}
		return false
	})
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute}
	go func() { _ = hs.Serve(ln) }()
	f := &share.Fetcher{Port: cfg.Policy.SharePort, Sink: e.SetRemote, Log: ratelog.New(log.With("component", "policy"), 0, 0),
		Client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute, ResponseHeaderTimeout: 40 * time.Second}}}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			f.SetPeers(ctx, sharePeers(cl.view(), cfg.Node.Name))
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return srv, func() {
		cancel()
		<-done
		f.Stop()
		_ = hs.Close()
	}, nil
}

// follow makes the engine enforce for the pods locals lists.
func (p *policyEngine) follow(locals *localSet, defaultNS string) {
	update := func() {
		var pods []policy.Pod
		for _, l := range locals.list() {
			a, err := netip.ParseAddr(l.IP)
			if err != nil || l.Uplink != "" {
				// Uplink containers are bridged onto the LAN, never
				// forwarded: policy does not see their traffic.
				continue
			}
			pod := policy.Pod{Namespace: l.PodNamespace, Name: l.PodName, Labels: l.Labels, Addrs: []netip.Addr{a}}
			for _, np := range l.Ports {
				pod.Ports = append(pod.Ports, policy.ContainerPort{Name: np.Name, Port: np.Port, Protocol: policy.Protocol(np.Protocol)})
			}
			if pod.Namespace == "" {
				// A container outside Kubernetes: named by its
				// attachment, in the default namespace.
				pod.Namespace, pod.Name = defaultNS, containerName(l.ContainerID, l.IfName)
			}
			pods = append(pods, pod)
		}
		p.e.SetLocal(pods)
		if p.share != nil {
			p.share.Set(share.FromPods(pods))
		}
	}
	locals.onChange = update
	update()
}

// containerName names a container without a pod: its ID's first 12
// characters (as docker and podman show it) and the interface.
func containerName(id, ifname string) string {
	if len(id) > 12 {
		id = id[:12]
	}
	return strings.ToLower(id) + "." + ifname
}

// register serves GET /v1/policy (what is enforced here) and GET
// /v1/policy/explain?from=&to=&port=&protocol=.
func (p *policyEngine) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/policy", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		st := p.e.Status()
		if r.URL.Query().Get("brief") != "" {
			st = p.e.Brief() // no pods: cheap to poll
		}
		_ = json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("GET /v1/policy/explain", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		proto, err := policy.ParseProtocol(q.Get("protocol"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		port, err := strconv.ParseUint(q.Get("port"), 10, 16)
		if err != nil {
			http.Error(w, fmt.Sprintf("port %q: want 0-65535", q.Get("port")), http.StatusBadRequest)
			return
		}
		x, err := p.e.Explain(q.Get("from"), q.Get("to"), proto, uint16(port))
		if err != nil {
			code := http.StatusBadRequest
			if errors.Is(err, engine.ErrNoEndpoint) {
				code = http.StatusNotFound
			}
			http.Error(w, err.Error(), code)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(x)
	})
}

// fill adds the policy drop counters to a status (for /metrics).
func (p *policyEngine) fill(st *router.Status) {
	for _, ps := range p.e.Status().Policies {
		for _, d := range []struct {
			dir string
			n   uint64
			on  bool
		}{{"ingress", ps.DroppedIngress, ps.Ingress}, {"egress", ps.DroppedEgress, ps.Egress}} {
			if d.on {
				st.PolicyDrops = append(st.PolicyDrops, router.PolicyDrop{Namespace: ps.Namespace, Policy: ps.Name, Direction: d.dir, Packets: d.n})
			}
		}
	}
}

const policyUsage = `usage:
  drover policy list [-o table|json] [--socket PATH]
      the policies this host enforces, its pods and what isolates them
  drover policy explain [-o table|json] [--socket PATH] FROM TO [PORT[/PROTO]]
      would a new flow FROM -> TO be allowed, and by which policy and rule;
      FROM and TO are namespace/pod or an address; PORT defaults to 80,
      PROTO to tcp (tcp, udp, sctp)
`

func cmdPolicy(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageErr("policy: want list or explain\n\n%s", policyUsage)
	}
	fs := flag.NewFlagSet("policy "+args[0], flag.ContinueOnError)
	o := fs.String("o", "table", "output: table or json")
	sock := fs.String("socket", config.DefaultControlSocket, "the daemon's control socket")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &exitError{code: 2, err: err}
	}
	if *o != "table" && *o != "json" {
		return usageErr("policy: -o %q: want table or json", *o)
	}
	switch args[0] {
	case "list":
		if fs.NArg() > 0 {
			return usageErr("policy list: unexpected argument %q", fs.Arg(0))
		}
		var st engine.Status
		if err := fetch(*sock, "/v1/policy", &st); err != nil {
			return err
		}
		if *o == "json" {
			return writeJSON(stdout, st)
		}
		return writePolicyList(stdout, st)
	case "explain":
		if fs.NArg() < 2 || fs.NArg() > 3 {
			return usageErr("policy explain: want FROM TO [PORT[/PROTO]]\n\n%s", policyUsage)
		}
		port, proto := "80", "tcp"
		if fs.NArg() == 3 {
			port, proto, _ = strings.Cut(fs.Arg(2), "/")
			if proto == "" {
				proto = "tcp"
			}
		}
		if _, err := policy.ParseProtocol(proto); err != nil {
			return usageErr("policy explain: %v", err)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return usageErr("policy explain: port %q: want 0-65535", port)
		}
		q := url.Values{"from": {fs.Arg(0)}, "to": {fs.Arg(1)}, "port": {port}, "protocol": {proto}}
		var x engine.Explanation
		if err := fetch(*sock, "/v1/policy/explain?"+q.Encode(), &x); err != nil {
			return err
		}
		if *o == "json" {
			return writeJSON(stdout, x)
		}
		verdict := "ALLOWED"
		if !x.Allowed {
			verdict = "DENIED"
		}
		_, err := fmt.Fprintf(stdout, "%s -> %s %d/%s: %s\n  egress at the source:       %s\n  ingress at the destination: %s\n",
			x.From, x.To, x.Port, x.Protocol, verdict, x.Egress.Why, x.Ingress.Why)
		return err
	}
	return usageErr("policy: unknown command %q\n\n%s", args[0], policyUsage)
}

func writePolicyList(w io.Writer, st engine.Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "node %s, applied %s", st.Node, st.AppliedAt.Format("15:04:05.000"))
	if st.Pending {
		fmt.Fprint(tw, " (changes pending)")
	}
	fmt.Fprintln(tw)
	if st.Error != "" {
		fmt.Fprintf(tw, "error: %s\n", st.Error)
	}
	if st.Source != "" {
		fmt.Fprintf(tw, "policy source: %s\n", st.Source)
	}
	fmt.Fprintln(tw, "\nPOLICY\tISOLATES\tLOCAL PODS\tDROPPED IN\tDROPPED OUT")
	for _, p := range st.Policies {
		var iso []string
		if p.Ingress {
			iso = append(iso, "ingress")
		}
		if p.Egress {
			iso = append(iso, "egress")
		}
		fmt.Fprintf(tw, "%s/%s\t%s\t%d\t%d\t%d\n", p.Namespace, p.Name, strings.Join(iso, ","), len(p.Local), p.DroppedIngress, p.DroppedEgress)
	}
	fmt.Fprintln(tw, "\nPOD\tADDRESS\tINGRESS ISOLATED BY\tEGRESS ISOLATED BY")
	for _, p := range st.Pods {
		in, out := strings.Join(p.Ingress, ","), strings.Join(p.Egress, ",")
		if in == "" {
			in = "-"
		}
		if out == "" {
			out = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Pod, p.Addr, in, out)
	}
	return tw.Flush()
}
