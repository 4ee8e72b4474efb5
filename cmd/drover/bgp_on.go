//go:build !nobgp

package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/drovernet/drover/agent"
	"github.com/drovernet/drover/bgp"
	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/router"
	"github.com/drovernet/drover/tun"
)

// bgpSpeaker is the daemon's BGP speaker (package bgp); nil without a bgp
// section.
// withBGP is shown by `drover version` (-tags nobgp builds leave it out).
const withBGP = true

type bgpSpeaker struct {
	sp  *bgp.Speaker
	cfg *config.BGP
	log *slog.Logger
}

// startBGP starts the speaker with the configured neighbours; it announces
// nothing until announce.
func startBGP(cfg *config.Config, log *slog.Logger) (*bgpSpeaker, error) {
	b := cfg.BGP
	if b == nil {
		return nil, nil
	}
	log = log.With("component", "bgp")
	c := bgp.Config{
		AS: b.AS, RouterID: b.RouterIDAddr, Local: cfg.Node.UnderlayAddr, ListenPort: b.ListenPort, Import: b.Import,
		GracefulRestart: b.GracefulRestartOn(), RestartTime: b.RestartTime, HoldTime: b.HoldTime, Log: log,
	}
	for i, n := range b.Neighbors {
		nb := bgp.Neighbor{Address: n.AddressAddr, AS: n.AS, Port: n.Port, Passive: n.Passive}
		if n.PasswordFile != "" {
			pw, err := readSecretLine(n.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("bgp.neighbors[%d].password_file: %w", i, err)
			}
			nb.Password = pw
		}
		c.Neighbors = append(c.Neighbors, nb)
	}
	sp, err := bgp.Start(c)
	if err != nil {
		return nil, err
	}
	log.Info("bgp speaker started", "as", b.AS, "router_id", b.RouterIDAddr, "neighbors", len(c.Neighbors),
		"graceful_restart", c.GracefulRestart, "restart_time", b.RestartTime, "listen_port", b.ListenPort)
	return &bgpSpeaker{sp: sp, cfg: b, log: log}, nil
}

// fabric is the agent's Fabric (bgp.import): the speaker's learned routes,
// and the next hop's MAC from the kernel's neighbour table on the
// underlay interface. nil without import.
func (b *bgpSpeaker) fabric(underlay string) agent.Fabric {
	if b == nil || !b.cfg.Import || underlay == "" {
		return nil
	}
	return &speakerFabric{sp: b.sp, dev: underlay, macs: map[netip.Addr]macAt{}}
}

// speakerFabric answers the agent per prefix of every member on every
// step; most share one next hop (the rack's router), so its MAC is read
// from the neighbour table (a netlink dump) at most once a second, not
// once per prefix.
type speakerFabric struct {
	sp  *bgp.Speaker
	dev string

	mu   sync.Mutex
	macs map[netip.Addr]macAt
}

type macAt struct {
	mac [6]byte
	at  time.Time
}

// macTTL is how long a next hop's MAC (or its absence) is believed.
const macTTL = time.Second

func (f *speakerFabric) Route(p netip.Prefix) (netip.Addr, [6]byte, bool) {
	nh, ok := f.sp.Route(p)
	if !ok {
		return netip.Addr{}, [6]byte{}, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	m, ok := f.macs[nh]
	if !ok || now.Sub(m.at) > macTTL {
		if len(f.macs) > 64 { // next hops come and go; never more than a few at once
			clear(f.macs)
		}
		m.mac, _ = tun.NeighborMAC(f.dev, nh) // zero: not resolved yet
		m.at = now
		f.macs[nh] = m
	}
	return nh, m.mac, true
}

// follow wakes the agent whenever the learned routes change, until ctx
// is done.
func (b *bgpSpeaker) follow(ctx context.Context, ag *agent.Agent) {
	if b == nil || !b.cfg.Import {
		return
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-b.sp.Changes():
				ag.Wake()
			}
		}
	}()
}

// readSecretLine reads a one-line secret from a file that only its owner
// may read (as the cluster key).
func readSecretLine(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%s: mode %04o lets group or others read it; want 0600 or stricter (chmod 600 %s)", path, perm, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	b = bytes.TrimRight(b, "\r\n")
	switch {
	case len(b) == 0:
		return "", fmt.Errorf("%s: empty", path)
	case bytes.ContainsAny(b, "\r\n"):
		return "", fmt.Errorf("%s: more than one line", path)
	case len(b) > 80:
		return "", fmt.Errorf("%s: %d bytes; a TCP MD5 key holds at most 80 (RFC 2385)", path, len(b))
	}
	return string(b), nil
}

// announce makes prefixes the announced set.
func (b *bgpSpeaker) announce(prefixes []netip.Prefix) {
	if b == nil {
		return
	}
	if err := b.sp.Announce(prefixes); err != nil {
		b.log.Error("announce prefixes", "err", err)
	}
}

// stop ends the speaker: with graceful restart, without notifying the
// neighbours (they keep the routes for the restart time while the daemon
// restarts); otherwise with a Cease to each, which withdraws the routes.
func (b *bgpSpeaker) stop() {
	if b == nil {
		return
	}
	b.sp.Close(true)
}

// fill adds the speaker to a status.
func (b *bgpSpeaker) fill(st *router.Status) {
	if b == nil {
		return
	}
	bs := &router.BGPStatus{AS: b.cfg.AS, RouterID: b.cfg.RouterIDAddr.String(), Announced: []string{}}
	for _, p := range b.sp.Announced() {
		bs.Announced = append(bs.Announced, p.String())
	}
	ns, err := b.sp.Status()
	if err != nil {
		bs.Error = err.Error()
	}
	for _, n := range ns {
		bs.Neighbors = append(bs.Neighbors, router.BGPNeighborStatus{
			Address: n.Address, AS: n.AS, State: n.State, UptimeSeconds: n.UptimeSeconds,
			PrefixesSent: n.Sent, PrefixesReceived: n.Received, LastError: n.LastError,
		})
	}
	st.BGP = bs
}
