// Package bgp owns drover's BGP speaker: it announces this host's container
// prefixes (its block, its static prefixes) to configured neighbours — top
// of rack routers or route reflectors — with its underlay address as the
// next hop (next-hop self), so that a routed fabric reaches containers by
// their own addresses without encapsulation (docs/routing.md).
//
// The protocol is GoBGP's (github.com/osrg/gobgp/v4, used as a library):
// sessions (RFC 4271), 4-byte AS numbers (RFC 6793), graceful restart
// (RFC 4724), TCP MD5 (RFC 2385), multiprotocol IPv6 (RFC 4760). This
// package decides what is announced and when, and reports each neighbour's
// state. With Import it also keeps the best route the neighbours announce
// for each prefix (Learned); it never installs them itself: the agent
// decides which members to reach through the fabric (docs/routing.md).
//
// A neighbour that sends garbage, an unexpected AS or anything else the
// protocol refuses gets a NOTIFICATION from GoBGP and its session is
// reset; the speaker logs it (rate-limited) and keeps serving the others.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// Neighbor is one BGP peer.
type Neighbor struct {
	Address netip.Addr
	AS      uint32
	// Port is the neighbour's TCP port; 0 is 179.
	Port uint16
	// Password is the TCP MD5 signature key (RFC 2385); empty for none.
	Password string
	// Passive waits for the neighbour to connect instead of connecting.
	Passive bool
}

// Config is the speaker's configuration.
type Config struct {
	// AS is this host's AS number: one per host (eBGP to the fabric) or
	// the fabric's own (iBGP, usually to route reflectors).
	AS uint32
	// RouterID is the BGP identifier (an IPv4 address, RFC 6286).
	RouterID netip.Addr
	// Local is the address sessions are made from and the next hop of
	// every announcement (next-hop self): the host's underlay address.
	Local netip.Addr
	// ListenPort is the TCP port to accept sessions on; 0: none (the
	// speaker only connects out).
	ListenPort uint16
	Neighbors  []Neighbor
	// GracefulRestart (RFC 4724): neighbours keep this host's routes for
	// RestartTime when its sessions drop without a NOTIFICATION, as when
	// the daemon restarts (Close with graceful true).
	GracefulRestart bool
	RestartTime     time.Duration
	// HoldTime is the session hold time proposed (RFC 4271 §4.2); 0: 90 s.
	HoldTime time.Duration
	// ConnectRetry is the wait between connection attempts; 0: 5 s.
	ConnectRetry time.Duration
	// Import keeps the neighbours' best routes (Learned, Changes).
	Import bool
	Log    *slog.Logger
}

// Validate checks c.
func (c *Config) Validate() error {
	var errs []error
	if c.AS == 0 {
		errs = append(errs, errors.New("bgp: AS 0 is reserved (RFC 7607)"))
	}
	if !c.RouterID.Is4() || c.RouterID.IsUnspecified() {
		errs = append(errs, fmt.Errorf("bgp: router ID %v is not a non-zero IPv4 address", c.RouterID))
	}
	if !c.Local.IsValid() {
		errs = append(errs, errors.New("bgp: no local address"))
	}
	if len(c.Neighbors) == 0 {
		errs = append(errs, errors.New("bgp: no neighbour"))
	}
	seen := map[netip.Addr]bool{}
	for i, n := range c.Neighbors {
		switch {
		case !n.Address.IsValid():
			errs = append(errs, fmt.Errorf("bgp: neighbour %d: no address", i))
		case seen[n.Address]:
			errs = append(errs, fmt.Errorf("bgp: neighbour %s listed twice", n.Address))
		case n.AS == 0:
			errs = append(errs, fmt.Errorf("bgp: neighbour %s: AS 0 is reserved", n.Address))
		case len(n.Password) > 80:
			errs = append(errs, fmt.Errorf("bgp: neighbour %s: a TCP MD5 key holds at most 80 bytes", n.Address))
		}
		seen[n.Address] = true
	}
	if c.GracefulRestart && (c.RestartTime < time.Second || c.RestartTime > 4095*time.Second) {
		errs = append(errs, fmt.Errorf("bgp: restart time %v: want 1s..4095s (12 bits, RFC 4724 §3)", c.RestartTime))
	}
	if c.HoldTime != 0 && (c.HoldTime < 3*time.Second || c.HoldTime > 65535*time.Second) {
		errs = append(errs, fmt.Errorf("bgp: hold time %v: want 0 or 3s..65535s (RFC 4271 §4.2)", c.HoldTime))
	}
	return errors.Join(errs...)
}

// Speaker is a running BGP speaker.
type Speaker struct {
	cfg Config
	s   *server.BgpServer
	log *slog.Logger

	mu        sync.Mutex
	announced map[netip.Prefix]uuid.UUID
	lastErr   map[string]string // neighbour → last error seen (notification, refused)
	stop      context.CancelFunc
	closed    bool

	// learned: with Import, the best route to each prefix a neighbour
	// announced, by its next hop; changes is signalled (without blocking)
	// when it changes.
	learned map[netip.Prefix]netip.Addr
	changes chan struct{}
}

// Start starts the speaker and its sessions; it announces nothing until
// Announce.
func Start(c Config) (*Speaker, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.HoldTime == 0 {
		c.HoldTime = 90 * time.Second
	}
	if c.ConnectRetry == 0 {
		c.ConnectRetry = 5 * time.Second
	}
	sp := &Speaker{cfg: c, log: c.Log, announced: map[netip.Prefix]uuid.UUID{}, lastErr: map[string]string{},
		learned: map[netip.Prefix]netip.Addr{}, changes: make(chan struct{}, 1)}
	level := new(slog.LevelVar) // GoBGP's info is chatty per attempt: kept to warnings
	level.Set(slog.LevelWarn)
	sp.s = server.NewBgpServer(server.LoggerOption(newLogger(c.Log, sp.noteError), level))
	go sp.s.Serve()
	ctx, cancel := context.WithCancel(context.Background())
	sp.stop = cancel
	port := int32(-1)
	if c.ListenPort != 0 {
		port = int32(c.ListenPort)
	}
	g := &api.Global{Asn: c.AS, RouterId: c.RouterID.String(), ListenPort: port}
	if port > 0 {
		g.ListenAddresses = []string{c.Local.String()}
	}
	if err := sp.s.StartBgp(ctx, &api.StartBgpRequest{Global: g}); err != nil {
		cancel()
		sp.s.Stop()
		return nil, fmt.Errorf("bgp: start: %w", err)
	}
	if err := sp.exportOwnOnly(ctx); err != nil {
		sp.Close(false)
		return nil, fmt.Errorf("bgp: export policy: %w", err)
	}
	if err := sp.s.WatchEvent(ctx, server.WatchEventMessageCallbacks{OnPeerUpdate: sp.event}, server.WatchPeer()); err != nil {
		sp.Close(false)
		return nil, fmt.Errorf("bgp: watch: %w", err)
	}
	if c.Import {
		if err := sp.s.WatchEvent(ctx, server.WatchEventMessageCallbacks{OnBestPath: sp.best}, server.WatchBestPath(true)); err != nil {
			sp.Close(false)
			return nil, fmt.Errorf("bgp: watch best paths: %w", err)
		}
	}
	for _, n := range c.Neighbors {
		if err := sp.s.AddPeer(ctx, &api.AddPeerRequest{Peer: sp.peer(n)}); err != nil {
			sp.Close(false)
			return nil, fmt.Errorf("bgp: neighbour %s: %w", n.Address, err)
		}
	}
	return sp, nil
}

// exportOwnOnly makes the speaker announce its own prefixes (those of
// Announce) and nothing it learned. A BGP speaker passes its best routes
// on to its other neighbours (RFC 4271 §9.1.3), and GoBGP does so by
// default, with next-hop self towards external peers: a host peering
// with two routers would offer each the other's routes — other hosts'
// blocks — through itself. The routers might prefer that path when the
// owner's session flaps, and traffic for another host's containers would
// then go through this one; a route withdrawn by its owner would also
// linger while the copy is withdrawn in turn. A host is a leaf, not a
// transit router.
func (sp *Speaker) exportOwnOnly(ctx context.Context) error {
	const name = "drover-own-prefixes-only"
	pol := &api.Policy{Name: name, Statements: []*api.Statement{{
		Name:       name + "-local",
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
	}}}
	if err := sp.s.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol}); err != nil {
		return err
	}
	return sp.s.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_EXPORT,
		Policies: []*api.Policy{{Name: name}}, DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
	}})
}

// peer is n as GoBGP configures it.
func (sp *Speaker) peer(n Neighbor) *api.Peer {
	c := sp.cfg
	p := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: n.Address.String(), PeerAsn: n.AS, AuthPassword: n.Password},
		Transport: &api.Transport{
			LocalAddress: c.Local.String(), PassiveMode: n.Passive, RemotePort: uint32(n.Port),
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry: uint64(c.ConnectRetry / time.Second), HoldTime: uint64(c.HoldTime / time.Second),
			KeepaliveInterval: uint64(c.HoldTime / 3 / time.Second),
		}},
	}
	for _, f := range []*api.Family{familyV4, familyV6} {
		as := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true}}
		if c.GracefulRestart {
			as.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		p.AfiSafis = append(p.AfiSafis, as)
	}
	if c.GracefulRestart {
		p.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: uint32(c.RestartTime / time.Second)}
	}
	return p
}

var (
	familyV4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	familyV6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

// event logs session changes and keeps why a session went down.
func (sp *Speaker) event(pe *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
	if pe == nil || pe.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	st := pe.Peer.State
	addr := st.NeighborAddress.String()
	switch st.SessionState {
	case gobgp.BGP_FSM_ESTABLISHED:
		sp.mu.Lock()
		delete(sp.lastErr, addr)
		sp.mu.Unlock()
		sp.log.Info("bgp session established", "peer", addr, "as", st.PeerASN)
	case gobgp.BGP_FSM_IDLE:
		// GoBGP's reason: "notification-sent <error>",
		// "notification-received <error>", "bad-peer-as",
		// "read-failed", "hold-timer-expired", ...
		why := st.DisconnectMessage
		if st.DisconnectReason == api.PeerState_DISCONNECT_REASON_BAD_PEER_AS {
			why += fmt.Sprintf(" (its OPEN does not carry AS %d, which is configured for it)", sp.expectedAS(st.NeighborAddress))
		}
		if why != "" {
			sp.noteError(addr, resetPrefix+why)
			sp.log.Warn("bgp session reset", "peer", addr, "reason", why)
		}
	}
}

// best records the neighbours' best paths (Import). A path of our own
// (no neighbour) is not learned; a withdrawal forgets the prefix.
func (sp *Speaker) best(paths []*apiutil.Path, _ time.Time) {
	changed := false
	sp.mu.Lock()
	for _, p := range paths {
		pfx, ok := prefixOf(p.Nlri)
		if !ok {
			continue
		}
		nh := nextHop(p)
		if p.Withdrawal || !p.PeerAddress.IsValid() || !nh.IsValid() {
			if _, had := sp.learned[pfx]; had {
				delete(sp.learned, pfx)
				changed = true
			}
			continue
		}
		if sp.learned[pfx] != nh {
			sp.learned[pfx] = nh
			changed = true
		}
	}
	sp.mu.Unlock()
	if changed {
		select {
		case sp.changes <- struct{}{}:
		default:
		}
	}
}

// prefixOf is an IPv4 or IPv6 unicast NLRI's prefix.
func prefixOf(n gobgp.NLRI) (netip.Prefix, bool) {
	if p, ok := n.(*gobgp.IPAddrPrefix); ok && p.Prefix.IsValid() {
		return p.Prefix.Masked(), true
	}
	return netip.Prefix{}, false
}

// nextHop is a path's next hop: NEXT_HOP, or MP_REACH_NLRI's.
func nextHop(p *apiutil.Path) netip.Addr {
	for _, a := range p.Attrs {
		switch a := a.(type) {
		case *gobgp.PathAttributeNextHop:
			return a.Value.Unmap()
		case *gobgp.PathAttributeMpReachNLRI:
			return a.Nexthop.Unmap()
		}
	}
	return netip.Addr{}
}

// Learned returns the neighbours' best route to each prefix, by next hop
// (with Import; empty otherwise).
func (sp *Speaker) Learned() map[netip.Prefix]netip.Addr {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	out := make(map[netip.Prefix]netip.Addr, len(sp.learned))
	for p, nh := range sp.learned {
		out[p] = nh
	}
	return out
}

// Route returns the learned next hop for exactly p.
func (sp *Speaker) Route(p netip.Prefix) (netip.Addr, bool) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	nh, ok := sp.learned[p.Masked()]
	return nh, ok
}

// Changes is signalled when Learned may have changed.
func (sp *Speaker) Changes() <-chan struct{} { return sp.changes }

// expectedAS is the configured AS of the neighbour at a.
func (sp *Speaker) expectedAS(a netip.Addr) uint32 {
	for _, n := range sp.cfg.Neighbors {
		if n.Address == a.Unmap() {
			return n.AS
		}
	}
	return 0
}

// noteError records a neighbour's last error (from GoBGP's log). A reset
// keeps the warning that came just before it (the NOTIFICATION sent or
// received, with its error code): "session reset: invalid-msg" alone does
// not say that the neighbour's AS was wrong.
func (sp *Speaker) noteError(neighbor, msg string) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if prev := sp.lastErr[neighbor]; strings.HasPrefix(msg, resetPrefix) && prev != "" && !strings.HasPrefix(prev, resetPrefix) {
		msg += " (" + prev + ")"
	}
	sp.lastErr[neighbor] = msg
}

// resetPrefix starts the last error of a session that went back to idle.
const resetPrefix = "session reset: "

// Announce makes prefixes the set this host announces: new ones are
// advertised, ones no longer in it withdrawn. A prefix of the other family
// than Local has no next hop to give and is refused.
func (sp *Speaker) Announce(prefixes []netip.Prefix) error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.closed {
		return errors.New("bgp: speaker closed")
	}
	want := map[netip.Prefix]bool{}
	var errs []error
	for _, p := range prefixes {
		p = p.Masked()
		if p.Addr().Is4() != sp.cfg.Local.Is4() {
			errs = append(errs, fmt.Errorf("bgp: %s: no next hop of its family (the local address is %s)", p, sp.cfg.Local))
			continue
		}
		want[p] = true
	}
	for p, id := range sp.announced {
		if want[p] {
			continue
		}
		if err := sp.s.DeletePath(apiutil.DeletePathRequest{UUIDs: []uuid.UUID{id}}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: withdraw %s: %w", p, err))
			continue
		}
		delete(sp.announced, p)
		sp.log.Info("bgp prefix withdrawn", "prefix", p)
	}
	for p := range want {
		if _, ok := sp.announced[p]; ok {
			continue
		}
		path, err := sp.path(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		res, err := sp.s.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{path}})
		if err == nil && len(res) != 1 {
			err = fmt.Errorf("%d results for one path", len(res))
		}
		if err == nil {
			err = res[0].Error
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp: announce %s: %w", p, err))
			continue
		}
		sp.announced[p] = res[0].UUID
		sp.log.Info("bgp prefix announced", "prefix", p, "next_hop", sp.cfg.Local)
	}
	return errors.Join(errs...)
}

// path is p announced with origin IGP and next hop Local; IPv6 travels
// in MP_REACH_NLRI (RFC 4760).
func (sp *Speaker) path(p netip.Prefix) (*apiutil.Path, error) {
	nlri, err := gobgp.NewIPAddrPrefix(p)
	if err != nil {
		return nil, fmt.Errorf("bgp: %s: %w", p, err)
	}
	origin := gobgp.NewPathAttributeOrigin(gobgp.BGP_ORIGIN_ATTR_TYPE_IGP)
	if p.Addr().Is4() {
		nh, err := gobgp.NewPathAttributeNextHop(sp.cfg.Local)
		if err != nil {
			return nil, fmt.Errorf("bgp: next hop %s: %w", sp.cfg.Local, err)
		}
		return &apiutil.Path{Family: gobgp.RF_IPv4_UC, Nlri: nlri, Attrs: []gobgp.PathAttributeInterface{origin, nh}}, nil
	}
	mp, err := gobgp.NewPathAttributeMpReachNLRI(gobgp.RF_IPv6_UC, []gobgp.PathNLRI{{NLRI: nlri}}, sp.cfg.Local)
	if err != nil {
		return nil, fmt.Errorf("bgp: %s: %w", p, err)
	}
	return &apiutil.Path{Family: gobgp.RF_IPv6_UC, Nlri: nlri, Attrs: []gobgp.PathAttributeInterface{origin, mp}}, nil
}

// Announced returns the prefixes announced now, in order.
func (sp *Speaker) Announced() []netip.Prefix {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	out := make([]netip.Prefix, 0, len(sp.announced))
	for p := range sp.announced {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// NeighborStatus is one session as `drover peers` and the metrics show it.
type NeighborStatus struct {
	Address string `json:"address"`
	AS      uint32 `json:"as"`
	// State is the session state (RFC 4271 §8.2.2): idle, connect,
	// active, opensent, openconfirm, established.
	State string `json:"state"`
	// UptimeSeconds is how long the session has been established.
	UptimeSeconds int64 `json:"uptime_seconds,omitempty"`
	// Sent and Received count prefixes (both families) advertised to
	// the neighbour and received from it.
	Sent     uint64 `json:"prefixes_sent"`
	Received uint64 `json:"prefixes_received"`
	// LastError is the last error of the session (a NOTIFICATION sent or
	// received, a refused connection), cleared when it is established.
	LastError string `json:"last_error,omitempty"`
}

// Status lists the neighbours in address order.
func (sp *Speaker) Status() ([]NeighborStatus, error) {
	var out []NeighborStatus
	err := sp.s.ListPeer(context.Background(), &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		st := p.GetState()
		if st == nil {
			return
		}
		ns := NeighborStatus{Address: st.NeighborAddress, AS: st.PeerAsn, State: stateName(st.SessionState)}
		if t := p.GetTimers().GetState().GetUptime(); t != nil && st.SessionState == api.PeerState_SESSION_STATE_ESTABLISHED {
			ns.UptimeSeconds = int64(time.Since(t.AsTime()) / time.Second)
		}
		for _, a := range p.AfiSafis {
			if s := a.GetState(); s != nil {
				ns.Sent += s.Advertised
				ns.Received += s.Received
			}
		}
		out = append(out, ns)
	})
	if err != nil {
		return nil, fmt.Errorf("bgp: list neighbours: %w", err)
	}
	sp.mu.Lock()
	for i := range out {
		out[i].LastError = sp.lastErr[out[i].Address]
	}
	sp.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out, nil
}

func stateName(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_SESSION_STATE_IDLE:
		return "idle"
	case api.PeerState_SESSION_STATE_CONNECT:
		return "connect"
	case api.PeerState_SESSION_STATE_ACTIVE:
		return "active"
	case api.PeerState_SESSION_STATE_OPENSENT:
		return "opensent"
	case api.PeerState_SESSION_STATE_OPENCONFIRM:
		return "openconfirm"
	case api.PeerState_SESSION_STATE_ESTABLISHED:
		return "established"
	}
	return "unknown"
}

// Close stops the speaker. graceful (with GracefulRestart) leaves the
// sessions without a NOTIFICATION, so neighbours keep the routes for the
// restart time (RFC 4724 §4.2) while the daemon restarts: the process must
// exit right after, which closes the connections. Otherwise every session
// ends with a Cease NOTIFICATION and neighbours withdraw the routes at
// once.
func (sp *Speaker) Close(graceful bool) {
	sp.mu.Lock()
	if sp.closed {
		sp.mu.Unlock()
		return
	}
	sp.closed = true
	sp.mu.Unlock()
	if graceful && sp.cfg.GracefulRestart {
		sp.log.Info("bgp: leaving sessions without a notification; neighbours keep this host's routes for the restart time", "restart_time", sp.cfg.RestartTime)
		sp.stop()
		return
	}
	// Stop sends the Ceases (StopBgp) and ends the rest; calling StopBgp
	// before it made it log an error for the second stop.
	sp.s.Stop()
	sp.stop()
}
