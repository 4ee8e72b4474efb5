package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/drovernet/drover/internal/sdnotify"
	"github.com/drovernet/drover/tun"
)

// underlayPoll is how often the daemon looks for node.underlay while it
// waits for it: a listing of the host's links is cheap, and a containerlab
// exec line that adds the address is noticed within a fraction of a second.
const underlayPoll = 200 * time.Millisecond

// waitUnderlay returns the interface that holds addr, as lookup
// (tun.UnderlayLinkOf) finds it. When none does, it looks again every
// interval for up to timeout (node.underlay_wait): in containerlab the
// daemon's process starts before its links and addresses exist, and on
// DHCP boards before the lease. Either way an address on no interface is a
// runtime failure (exit 1), not a configuration error: the file may be
// right and the network late, so systemd's Restart=on-failure tries again
// (a configuration error, exit 2, stops the unit for good). It returns
// ctx's error when ctx ends first.
func waitUnderlay(ctx context.Context, addr netip.Addr, lookup func(netip.Addr) (tun.UnderlayLink, error), timeout, interval time.Duration, log *slog.Logger) (tun.UnderlayLink, error) {
	ul, err := lookupUnderlay(addr, lookup)
	if err != nil || ul.Name != "" {
		return ul, err
	}
	if timeout == 0 {
		return ul, fmt.Errorf("node.underlay: %s is on no interface of this host (set node.underlay_wait to wait for it)", addr)
	}
	log.Info("waiting for the underlay address", "address", addr, "timeout", timeout)
	if _, err := sdnotify.Notify("STATUS=waiting for underlay " + addr.String()); err != nil {
		log.Warn("could not tell systemd what the daemon waits for", "err", err)
	}
	start := time.Now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return tun.UnderlayLink{}, ctx.Err()
		case <-deadline.C:
			return tun.UnderlayLink{}, fmt.Errorf("node.underlay: %s appeared on no interface within %s", addr, seconds(timeout))
		case <-tick.C:
		}
		ul, err := lookupUnderlay(addr, lookup)
		if err != nil {
			return ul, err
		}
		if ul.Name != "" {
			log.Info("underlay address up", "address", addr, "interface", ul.Name, "waited", time.Since(start).Round(time.Millisecond))
			return ul, nil
		}
	}
}

func lookupUnderlay(addr netip.Addr, lookup func(netip.Addr) (tun.UnderlayLink, error)) (tun.UnderlayLink, error) {
	ul, err := lookup(addr)
	if err != nil {
		return tun.UnderlayLink{}, fmt.Errorf("node.underlay: looking for %s on this host's interfaces: %w", addr, err)
	}
	return ul, nil
}

// seconds writes a duration as node.underlay_wait is usually written
// ("60s" or "1h", where time.Duration says "1m0s" and "1h0m0s"); anything
// finer as time.Duration does.
func seconds(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Second == 0:
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}
