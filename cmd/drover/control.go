package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netns"

	"github.com/drovernet/drover/gossip"
	"github.com/drovernet/drover/internal/health"
	"github.com/drovernet/drover/internal/metrics"
	"github.com/drovernet/drover/l2guard"
	"github.com/drovernet/drover/metadata"
	"github.com/drovernet/drover/router"
)

// serveControl serves the router's status on a unix socket (mode 0600: the
// counters and peer list are for the host's administrator only):
//
//	GET /v1/status  router.Status as JSON
//	GET /v1/cluster members (gossip), this host's block, the routes it installed
//	GET /metrics    the same counters in the Prometheus text format
//
// and whatever register adds (the CNI plugin's /v1/local, local.go). fill,
// if not nil, adds what the router does not know to each status (the
// forward filter, forward.go). It returns a function that stops the server
// and removes the socket.
func serveControl(path string, r *router.Router, views func() gossip.View, register func(*http.ServeMux), fill func(*router.Status), log *slog.Logger) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	// A socket file left by a daemon that died is removed; one that answers
	// belongs to a running daemon, and two daemons must not share it.
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another drover is running", path)
	}
	_ = os.Remove(path)
	ln, err := listenPrivate(path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	status := func() router.Status {
		st := r.Status()
		if fill != nil {
			fill(&st)
		}
		return st
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(status())
	})
	mux.HandleFunc("GET /v1/cluster", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(views())
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", metrics.ContentType)
		_ = metrics.Write(w, status())
	})
	if register != nil {
		register(mux)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("control socket", "err", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = os.Remove(path)
	}, nil
}

// serveHTTP serves /healthz, /readyz and /metrics on the TCP address addr
// (http.listen; package health says what each means) and nothing else:
// the control API stays on the unix socket. cl is nil in static mode;
// founder says the host may start a cluster alone. It returns a function
// that stops the server.
func serveHTTP(addr string, r *router.Router, cl *cluster, founder bool, fill func(*router.Status), log *slog.Logger) (func(), error) {
	state := func() health.State {
		st := health.State{RouterRunning: r.Running(), Prefixes: r.Status().Prefixes}
		if cl != nil {
			last, joined := cl.health()
			st.Cluster = &health.Cluster{LastStep: last, Joined: joined, Founder: founder, BlockNote: cl.ag.Snapshot().BlockNote}
		}
		return st
	}
	write := func(w io.Writer) error {
		st := r.Status()
		if fill != nil {
			fill(&st)
		}
		return metrics.Write(w, st)
	}
	hlog := log.With("component", "http")
	srv, err := health.Listen(health.Config{Addr: addr, State: state, Metrics: write, ContentType: metrics.ContentType, Log: hlog})
	if err != nil {
		return nil, fmt.Errorf("http.listen %s: %w (another port, or none, in the configuration)", addr, err)
	}
	hlog.Info("serving /healthz, /readyz, /metrics", "listen", srv.Addr().String())
	return srv.Close, nil
}

// guardFill adds the layer-2 guard's drop counters (package l2guard; the
// CNI plugin installs the table) to a status, when the table exists.
func guardFill(st *router.Status, log *slog.Logger) {
	g, err := l2guard.Open(netns.None())
	if err == nil {
		st.GuardDrops, err = g.Drops()
	}
	if err != nil {
		log.Debug("layer-2 guard counters", "err", err)
	}
}

// serveMetadata serves the metadata service on addr (package metadata):
// each local container reads its own record from locals.
func serveMetadata(ctx context.Context, addr netip.AddrPort, node string, locals *localSet, log *slog.Logger) (func(), error) {
	ln, err := metadata.Listen(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("metadata.listen: %w (another port, or none, in the configuration)", err)
	}
	mlog := log.With("component", "metadata")
	srv := metadata.Server(metadata.Handler(func(ip netip.Addr) (metadata.Record, bool) { return locals.record(node, ip) }, mlog))
	go func() { _ = srv.Serve(ln) }()
	mlog.Info("serving container metadata", "listen", addr)
	return func() { _ = srv.Close() }, nil
}

// listenPrivate listens on a unix socket at path that is mode 0600 from
// the moment it can be reached there. net.Listen creates the socket with
// the process umask (often 0755 for a socket file) and a chmod after it
// leaves a window; setting the umask around Listen would change it for
// every goroutine of the process (the state directory, sequence records,
// CNI files are written concurrently). So the socket is made in a fresh
// directory of mode 0700 beside path, where no one else can reach it,
// chmodded there, and renamed into place: connect(2) finds a socket by its
// inode, so the rename keeps it working, and the path shows up with its
// final mode. The directory serveControl creates for path is 0700 as well.
func listenPrivate(path string) (net.Listener, error) {
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".drover-sock-") // mode 0700
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	ln, err := net.Listen("unix", filepath.Join(tmp, "s"))
	if err != nil {
		return nil, err
	}
	// The kernel keeps the name it was bound to; Close must not unlink
	// anything (the caller removes path).
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(filepath.Join(tmp, "s"), 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	if err := os.Rename(filepath.Join(tmp, "s"), path); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// printStatus renders a Status for humans.
func printStatus(w io.Writer, st router.Status) {
	fmt.Fprintf(w, "node %s  %s", st.Node, st.Encapsulation)
	if st.Cipher != "" {
		fmt.Fprintf(w, " %s", st.Cipher)
	}
	fmt.Fprintf(w, "  listen %s  tun %s mtu %d (underlay %d)\n", st.Listen, st.TUN, st.TUNMTU, st.UnderlayMTU)
	if st.BlockNote != "" {
		fmt.Fprintf(w, "%s\n", st.BlockNote)
	}
	if len(st.Stranded) > 0 {
		fmt.Fprintf(w, "stranded: %d containers hold addresses of a block this host lost to another host, which hands them out; recreate them:\n", len(st.Stranded))
		for _, a := range st.Stranded {
			fmt.Fprintf(w, "  %s  container %s %s (network %s)\n", a.IP, a.ContainerID, a.IfName, a.Network)
		}
	}
	fmt.Fprintf(w, "tx %d packets %d bytes  rx %d packets %d bytes  icmp %d\n", st.TxPackets, st.TxBytes, st.RxPackets, st.RxBytes, st.ICMPSent)
	switch ff := st.ForwardFilter; {
	case ff == nil:
		fmt.Fprintf(w, "forward filter: off\n\n")
	case ff.Error != "":
		fmt.Fprintf(w, "forward filter: table %s, counter unreadable: %s\n\n", ff.Table, ff.Error)
	default:
		fmt.Fprintf(w, "forward filter: table %s, dropped %d packets (%d bytes) to containers\n\n", ff.Table, ff.DropPackets, ff.DropBytes)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tUNDERLAY\tPREFIXES\tMTU\tTX PKTS\tRX PKTS\tSPI OUT\tSPI IN")
	for _, p := range st.Peers {
		spiOut, spiIn := "-", "-"
		if p.SAOut != nil {
			spiOut = fmt.Sprintf("%#08x", p.SAOut.SPI)
		}
		if p.SAIn != nil {
			spiIn = fmt.Sprintf("%#08x", p.SAIn.SPI)
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%d\t%d\t%d\t%s\t%s\n", p.Name, p.Underlay, p.Prefixes, p.TunnelMTU, p.TxPackets, p.RxPackets, spiOut, spiIn)
	}
	tw.Flush()
	fmt.Fprintln(w, "\ndrops:")
	reasons := make([]string, 0, len(st.Drops))
	for k := range st.Drops {
		reasons = append(reasons, k)
	}
	sort.Strings(reasons)
	for _, k := range reasons {
		fmt.Fprintf(w, "  %-16s %d\n", k, st.Drops[k])
	}
	if len(st.GuardDrops) > 0 {
		// The layer-2 guard's counters (package l2guard): frames
		// containers sent that their ports do not allow.
		fmt.Fprintln(w, "\nlayer-2 guard drops (container ports):")
		reasons = reasons[:0]
		for k := range st.GuardDrops {
			reasons = append(reasons, k)
		}
		sort.Strings(reasons)
		for _, k := range reasons {
			fmt.Fprintf(w, "  %-16s %d\n", strings.TrimPrefix(k, "drop_"), st.GuardDrops[k])
		}
	}
}
