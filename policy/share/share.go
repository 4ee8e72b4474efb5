// Package share gives every host of a gossip cluster the pods of every
// other host, for network policy off Kubernetes: a policy on one host
// selects pods on another by namespace and labels, and only the pod's own
// host knows them (from the CNI call).
//
// Each host serves its own pods over HTTP on the overlay - its router's
// address, a TCP socket bound to the TUN device - and every host keeps a
// long poll open to every other host's, so a change arrives in one round
// trip. Over the overlay, the exchange is sealed by the pair's ESP keys:
// no gossip message carries pod records, so no member can speak for
// another host's pods, and nothing listens on the underlay.
//
// Threat model.
//
//   - An attacker on the underlay without the key: the socket takes only
//     connections that arrive through the TUN (SO_BINDTODEVICE), i.e. that
//     the router decapsulated after ESP authentication; with VXLAN the
//     overlay is as trusted as the underlay (docs/security.md).
//   - A member with the key but a hostile config: it can serve lies about
//     its own pods only. A fetcher accepts a host's records only for
//     addresses inside that host's blocks, and whole snapshots only (size,
//     count and label syntax checked), so it cannot relabel another host's
//     pods, nor its own beyond what it could do by labelling them at CNI
//     time anyway.
//   - A pod (or local user) connecting to the service: the server answers
//     only peers' router addresses, which a pod cannot hold (a spoofed
//     source cannot complete the TCP handshake, whose replies go to the
//     real holder).
package share

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/drovernet/drover/policy"
)

// Port is the default TCP port of the service, on the overlay.
const Port = 7947

// Limits on what a host may serve.
const (
	MaxPods   = 4096
	MaxBytes  = 4 << 20
	pollWait  = 25 * time.Second
	retryMin  = 200 * time.Millisecond
	retryMax  = 10 * time.Second
	pathPods  = "/v1/pods"
	queryWait = "after"
)

// Record is one pod as its host shares it.
type Record struct {
	Namespace string                 `json:"namespace"`
	Name      string                 `json:"name"`
	Labels    map[string]string      `json:"labels,omitempty"`
	Addrs     []netip.Addr           `json:"addrs"`
	Ports     []policy.ContainerPort `json:"ports,omitempty"`
}

// Snapshot is a host's pods at one version. Version changes whenever the
// pods do, and with every restart of the host's daemon.
type Snapshot struct {
	Version string   `json:"version"`
	Pods    []Record `json:"pods"`
}

// Server serves this host's pods.
type Server struct {
	// Allowed says whether a remote address may ask (a peer's router
	// address).
	Allowed func(netip.Addr) bool

	mu      sync.Mutex
	boot    string
	n       uint64
	pods    []Record
	changed chan struct{} // closed and replaced on every change
}

// NewServer returns a server with no pods.
func NewServer(allowed func(netip.Addr) bool) *Server {
	return &Server{Allowed: allowed, boot: strconv.FormatUint(rand.Uint64(), 36), changed: make(chan struct{})}
}

// Set replaces the pods served.
func (s *Server) Set(pods []Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pods = pods
	s.n++
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Server) snapshot() (Snapshot, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pods := s.pods
	if pods == nil {
		pods = []Record{}
	}
	return Snapshot{Version: s.boot + "." + strconv.FormatUint(s.n, 10), Pods: pods}, s.changed
}

// ServeHTTP answers GET /v1/pods: the snapshot, at once, or with
// ?after=VERSION when it differs from VERSION (a long poll of up to 25 s;
// unchanged then, it answers the same version again).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil || !s.Allowed(ap.Addr().Unmap()) {
		http.Error(w, "not a peer", http.StatusForbidden)
		return
	}
	if r.Method != http.MethodGet || r.URL.Path != pathPods {
		http.NotFound(w, r)
		return
	}
	snap, changed := s.snapshot()
	if after := r.URL.Query().Get(queryWait); after != "" && after == snap.Version {
		t := time.NewTimer(pollWait)
		defer t.Stop()
		select {
		case <-changed:
			snap, _ = s.snapshot()
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(snap)
}

// Peer is another host whose pods this host fetches.
type Peer struct {
	Name string
	// Addr is its router's overlay address, where it serves.
	Addr netip.Addr
	// Blocks are the prefixes it owns: its records must lie inside.
	Blocks []netip.Prefix
}

// Fetcher keeps a long poll open to every peer and hands each peer's
// valid snapshots to Sink; a peer that leaves gets Sink(name, nil).
type Fetcher struct {
	Port uint16
	Sink func(node string, pods []policy.Pod)
	Log  *slog.Logger // rate-limited by the caller
	// Client is the HTTP client; nil: one with a dialer bound to no device
	// (the route to a peer's overlay address is via the TUN anyway).
	Client *http.Client

	mu    sync.Mutex
	polls map[string]*poll
}

type poll struct {
	peer   Peer
	cancel context.CancelFunc
	done   chan struct{}
}

// SetPeers starts polling new peers, stops polling those gone (their pods
// are forgotten) and restarts those whose address or blocks changed.
func (f *Fetcher) SetPeers(ctx context.Context, peers []Peer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.polls == nil {
		f.polls = map[string]*poll{}
	}
	want := map[string]Peer{}
	for _, p := range peers {
		want[p.Name] = p
	}
	for name, p := range f.polls {
		np, ok := want[name]
		if ok && np.Addr == p.peer.Addr && slices.Equal(np.Blocks, p.peer.Blocks) {
			continue
		}
		p.cancel()
		<-p.done
		delete(f.polls, name)
		if !ok {
			f.Sink(name, nil)
		}
	}
	for name, p := range want {
		if _, ok := f.polls[name]; ok {
			continue
		}
		pctx, cancel := context.WithCancel(ctx)
		pl := &poll{peer: p, cancel: cancel, done: make(chan struct{})}
		f.polls[name] = pl
		go func() { defer close(pl.done); f.run(pctx, p) }()
	}
}

// Stop ends every poll.
func (f *Fetcher) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for name, p := range f.polls {
		p.cancel()
		<-p.done
		delete(f.polls, name)
	}
}

func (f *Fetcher) client() *http.Client {
	if f.Client != nil {
		return f.Client
	}
	return http.DefaultClient
}

// run polls one peer until ctx ends, with backoff on errors.
func (f *Fetcher) run(ctx context.Context, p Peer) {
	version := ""
	retry := time.Duration(0)
	for ctx.Err() == nil {
		snap, err := f.fetch(ctx, p, version)
		if err == nil {
			err = Validate(p, &snap)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			retry = min(max(2*retry, retryMin), retryMax)
			f.Log.Warn("fetching a peer's pods for network policy", "peer", p.Name, "err", err, "retry_in", retry)
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry + rand.N(retry/4+1)):
			}
			continue
		}
		retry = 0
		if snap.Version != version {
			version = snap.Version
			f.Sink(p.Name, ToPods(snap.Pods))
		}
	}
}

func (f *Fetcher) fetch(ctx context.Context, p Peer, after string) (Snapshot, error) {
	u := "http://" + netip.AddrPortFrom(p.Addr, f.Port).String() + pathPods
	if after != "" {
		u += "?" + queryWait + "=" + after
	}
	rctx, cancel := context.WithTimeout(ctx, pollWait+10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
	if err != nil {
		return Snapshot{}, err
	}
	resp, err := f.client().Do(req)
	if err != nil {
		return Snapshot{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Snapshot{}, fmt.Errorf("%s: %s", u, resp.Status)
	}
	var snap Snapshot
	dec := json.NewDecoder(io.LimitReader(resp.Body, MaxBytes+1))
	if err := dec.Decode(&snap); err != nil {
		return Snapshot{}, fmt.Errorf("%s: %w", u, err)
	}
	return snap, nil
}

// ErrInvalid: a snapshot refused whole.
var ErrInvalid = errors.New("invalid pod snapshot")

// Validate checks a peer's snapshot: a version, at most MaxPods pods,
// names and labels as the API server would take them, and every address
// inside the peer's blocks.
func Validate(p Peer, s *Snapshot) error {
	if s.Version == "" || len(s.Version) > 64 {
		return fmt.Errorf("%w: version %q", ErrInvalid, s.Version)
	}
	if len(s.Pods) > MaxPods {
		return fmt.Errorf("%w: %d pods, at most %d", ErrInvalid, len(s.Pods), MaxPods)
	}
	for i, r := range s.Pods {
		if err := policy.ValidNamespace(r.Namespace); err != nil {
			return fmt.Errorf("%w: pods[%d]: %v", ErrInvalid, i, err)
		}
		if r.Name == "" || len(r.Name) > 253 {
			return fmt.Errorf("%w: pods[%d]: name %q", ErrInvalid, i, r.Name)
		}
		if len(r.Labels) > 64 {
			return fmt.Errorf("%w: pods[%d]: %d labels", ErrInvalid, i, len(r.Labels))
		}
		for k, v := range r.Labels {
			if err := policy.ValidLabelKey(k); err != nil {
				return fmt.Errorf("%w: pods[%d]: %v", ErrInvalid, i, err)
			}
			if err := policy.ValidLabelValue(v); err != nil {
				return fmt.Errorf("%w: pods[%d]: %v", ErrInvalid, i, err)
			}
		}
		if len(r.Ports) > 64 {
			return fmt.Errorf("%w: pods[%d]: %d ports", ErrInvalid, i, len(r.Ports))
		}
		for _, p := range r.Ports {
			if err := policy.ValidPortName(p.Name); err != nil || p.Protocol.Number() == 0 || p.Port == 0 {
				return fmt.Errorf("%w: pods[%d]: port %+v", ErrInvalid, i, p)
			}
		}
		if len(r.Addrs) == 0 || len(r.Addrs) > 4 {
			return fmt.Errorf("%w: pods[%d]: %d addresses", ErrInvalid, i, len(r.Addrs))
		}
		for _, a := range r.Addrs {
			if !slices.ContainsFunc(p.Blocks, func(b netip.Prefix) bool { return b.Contains(a) }) {
				return fmt.Errorf("%w: pods[%d] (%s/%s): %v is not in %s's blocks %v", ErrInvalid, i, r.Namespace, r.Name, a, p.Name, p.Blocks)
			}
		}
	}
	return nil
}

// ToPods converts records to policy pods (Node is set by the engine).
func ToPods(rs []Record) []policy.Pod {
	out := make([]policy.Pod, 0, len(rs))
	for _, r := range rs {
		out = append(out, policy.Pod{Namespace: r.Namespace, Name: r.Name, Labels: r.Labels, Addrs: r.Addrs, Ports: r.Ports})
	}
	return out
}

// FromPods converts this host's pods to records.
func FromPods(ps []policy.Pod) []Record {
	out := make([]Record, 0, len(ps))
	for _, p := range ps {
		out = append(out, Record{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels, Addrs: p.Addrs, Ports: p.Ports})
	}
	return out
}

// Listen opens the service's socket on port, bound to the TUN device dev:
// only connections the router decapsulated reach it (see the package
// doc).
func Listen(ctx context.Context, dev string, port uint16) (net.Listener, error) {
	lc := net.ListenConfig{Control: bindToDevice(dev)}
	ln, err := lc.Listen(ctx, "tcp", ":"+strconv.Itoa(int(port)))
	if err != nil {
		return nil, fmt.Errorf("policy pod sharing: listen on %s port %d: %w", dev, port, err)
	}
	return ln, nil
}
