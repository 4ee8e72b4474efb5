package main

import (
	"fmt"
	"log/slog"

	"github.com/drovernet/drover/agent"
	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/firewall"
	"github.com/drovernet/drover/router"
)

// forwardFilter is the daemon's forward filter (package firewall); f is nil
// when firewall.forward is false.
type forwardFilter struct {
	f   *firewall.Filter
	log *slog.Logger
}

// forwardSpec is what the filter protects: the cluster CIDR, this node's
// prefixes and the static peers' prefixes, entered only from the TUN and
// the container bridge, and with direct routing (underlay: the underlay
// interface) from direct members on the underlay.
func forwardSpec(cfg *config.Config, underlay string) firewall.Spec {
	n := &cfg.Node
	s := firewall.Spec{TUN: n.TUN, Underlay: underlay, AllowFrom: cfg.Firewall.AllowFromList,
		// Direct and fabric members' traffic is admitted by source and
		// MAC, not by conntrack, which network policy needs for replies.
		NoTrack: underlay != "" && !cfg.PolicyOn()}
	if n.Bridge != "none" {
		s.Bridge = n.Bridge
	}
	if cfg.Cluster != nil {
		s.Protected = append(s.Protected, cfg.Cluster.CIDRPrefix)
	}
	s.Protected = append(s.Protected, n.PrefixList...)
	for _, p := range cfg.Peers {
		s.Protected = append(s.Protected, p.PrefixList...)
	}
	return s
}

// startForwardFilter installs the filter, replacing one a crashed daemon
// left.
func startForwardFilter(cfg *config.Config, underlay string, log *slog.Logger) (*forwardFilter, error) {
	ff := &forwardFilter{log: log.With("component", "firewall")}
	if !cfg.Firewall.ForwardOn() {
		ff.log.Warn("forward filter off (firewall.forward: false): forwarding to containers is up to the host's own firewall")
		return ff, nil
	}
	spec := forwardSpec(cfg, underlay)
	if spec.Bridge == "" {
		ff.log.Warn("node.bridge is none: the forward filter trusts no bridge, so containers' routed traffic passes only out of the TUN or as replies")
	}
	f, err := firewall.Install(spec)
	if err != nil {
		return nil, fmt.Errorf("forward filter (firewall.forward: false turns it off): %w", err)
	}
	ff.f = f
	ff.log.Info("forward filter installed", "table", "inet "+firewall.Table, "prefixes", len(spec.Protected))
	return ff, nil
}

// direct is the filter as the agent's DirectFilter, nil when it is off.
func (ff *forwardFilter) direct() agent.DirectFilter {
	if ff == nil || ff.f == nil {
		return nil
	}
	return ff.f
}

// stop removes the filter.
func (ff *forwardFilter) stop() {
	if ff.f == nil {
		return
	}
	if err := ff.f.Remove(); err != nil {
		ff.log.Warn("remove forward filter", "err", err)
		return
	}
	ff.log.Info("forward filter removed")
}

// fill adds the filter's drop counter to a status.
func (ff *forwardFilter) fill(st *router.Status) {
	if ff.f == nil {
		return
	}
	fs := &router.ForwardFilterStatus{Table: "inet " + firewall.Table}
	p, b, err := ff.f.Drops()
	if err != nil {
		fs.Error = err.Error()
	} else {
		fs.DropPackets, fs.DropBytes = p, b
	}
	st.ForwardFilter = fs
}
