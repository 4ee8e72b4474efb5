package cni

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/drovernet/drover/cni/ipam"
	"github.com/drovernet/drover/l2guard"
)

func (p *plugin) cmdDel(args *skel.CmdArgs) error {
	c, e := parseConfig(args.StdinData)
	if e != nil {
		return e
	}
	return p.del(context.Background(), c, args)
}

// del detaches the container. It succeeds when there is nothing left to do
// (a second DEL, a namespace already gone), and releases the address last,
// after everything that used it is gone, so the next holder never inherits
// a NAT rule, a veth or a daemon announcement.
func (p *plugin) del(ctx context.Context, c *config, args *skel.CmdArgs) error {
	store, err := c.store()
	if err != nil {
		return err
	}
	owner := ipam.Owner{ContainerID: args.ContainerID, IfName: args.IfName}
	ips, err := store.Lookup(owner)
	if err != nil {
		return cniErr(types.ErrIOFailure, "read reservations", err)
	}
	held := func(a netip.Addr) bool {
		for _, ip := range ips {
			if ip == a {
				return true
			}
		}
		return false
	}
	var errs []error
	if len(ips) > 0 {
		if err := p.removeNAT(c, held); err != nil {
			errs = append(errs, err)
		}
	}

	hostNL, err := netlink.NewHandleAt(p.hostNS)
	if err != nil {
		return cniErr(types.ErrInternal, "netlink in the host namespace", err)
	}
	defer hostNL.Close()
	hostName := vethName(c.Name, args.ContainerID, args.IfName)
	if err := p.unguard(hostName); err != nil {
		errs = append(errs, err)
	}
	if err := deleteLink(hostNL, hostName); err != nil {
		errs = append(errs, err)
	}
	// The container end goes with the host end; if the host end was
	// renamed or moved, remove the container's directly. A namespace that
	// is gone took its interfaces with it.
	if args.Netns != "" {
		if ctrNS, e := openNetNS(args.Netns); e == nil {
			if ctrNL, err := netlink.NewHandleAt(ctrNS); err == nil {
				if l, err := ctrNL.LinkByName(args.IfName); err == nil && l.Type() == "veth" {
					if err := ctrNL.LinkDel(l); err != nil && !isNotFound(err) {
						errs = append(errs, fmt.Errorf("delete %s in %s: %w", args.IfName, args.Netns, err))
					}
				}
				ctrNL.Close()
			}
			ctrNS.Close()
		}
	}

	d := newDaemonClient(c.DaemonSocket)
	for _, ip := range ips {
		p.forget(ctx, d, ip)
	}
	if _, err := store.Release(owner); err != nil {
		errs = append(errs, err)
	}
	if c.Uplink != "" {
		if err := p.restoreIfUnused(hostNL, store); err != nil {
			errs = append(errs, fmt.Errorf("restore uplink %s: %w", c.Uplink, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return cniErr(types.ErrInternal, "DEL", err)
	}
	return nil
}

// unguard removes a port's layer-2 guard (nothing if it has none).
func (p *plugin) unguard(hostName string) error {
	g, err := l2guard.Open(p.hostNS)
	if err == nil {
		err = g.Remove(hostName)
	}
	if err != nil {
		return fmt.Errorf("layer-2 guard of %s: %w", hostName, err)
	}
	return nil
}

// gcGuard removes the guard of every port whose interface is gone, of any
// network: a port name is a hash of its attachment, so a live one always
// has its link.
func (p *plugin) gcGuard(h *netlink.Handle) error {
	g, err := l2guard.Open(p.hostNS)
	if err != nil {
		return err
	}
	ports, err := g.Ports()
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range ports {
		if _, err := h.LinkByName(name); isNotFound(err) {
			errs = append(errs, g.Remove(name))
		}
	}
	return errors.Join(errs...)
}

// forget tells the daemon an address is gone; best effort.
func (p *plugin) forget(ctx context.Context, d *daemonClient, ip netip.Addr) {
	err := d.delLocal(ctx, ip)
	if err != nil && !errors.Is(err, errNoDaemon) && !errors.Is(err, errNotImplemented) {
		p.log.Warn("daemon: forget local address", "ip", ip, "err", err)
	}
}

// removeNAT deletes the network's NAT rules whose address match selects.
// Without hostNat an nftables failure (no nf_tables in the kernel) is only
// logged: there were no rules to remove.
func (p *plugin) removeNAT(c *config, match func(netip.Addr) bool) error {
	nat, err := openNAT(p.hostNS)
	if err == nil {
		err = nat.remove(c.Name, match)
	}
	if err != nil {
		if c.hostNat {
			return fmt.Errorf("host NAT: %w", err)
		}
		p.log.Warn("host NAT cleanup", "err", err)
	}
	return nil
}

func (p *plugin) cmdGC(args *skel.CmdArgs) error {
	c, e := parseConfig(args.StdinData)
	if e != nil {
		return e
	}
	return p.gc(context.Background(), c)
}

// gc releases every reservation whose attachment the runtime no longer
// lists in cni.dev/valid-attachments (none listed: none valid), with its
// veth, NAT rule and daemon announcement, and removes NAT rules of the
// network whose address is not reserved at all. It goes on past errors and
// reports them together.
func (p *plugin) gc(ctx context.Context, c *config) error {
	valid := map[ipam.Owner]bool{}
	for _, a := range c.valid {
		valid[ipam.Owner{ContainerID: a.ContainerID, IfName: a.IfName}] = true
	}
	store, err := c.store()
	if err != nil {
		return err
	}
	rs, err := store.List()
	if err != nil {
		return cniErr(types.ErrIOFailure, "read reservations", err)
	}
	keep := map[netip.Addr]bool{}
	var stale []ipam.Reservation
	for _, r := range rs {
		if !r.Unreadable && valid[r.Owner] {
			keep[r.Addr] = true
		} else {
			stale = append(stale, r)
		}
	}
	var errs []error
	if err := p.removeNAT(c, func(a netip.Addr) bool { return !keep[a] }); err != nil {
		errs = append(errs, err)
	}
	hostNL, err := netlink.NewHandleAt(p.hostNS)
	if err != nil {
		return cniErr(types.ErrInternal, "netlink in the host namespace", err)
	}
	defer hostNL.Close()
	d := newDaemonClient(c.DaemonSocket)
	for _, r := range stale {
		if !r.Unreadable {
			name := vethName(c.Name, r.Owner.ContainerID, r.Owner.IfName)
			if err := p.unguard(name); err != nil {
				errs = append(errs, err)
			}
			if err := deleteLink(hostNL, name); err != nil {
				errs = append(errs, err)
			}
		}
		p.forget(ctx, d, r.Addr)
		if _, err := store.ReleaseReservation(r); err != nil {
			errs = append(errs, err)
		}
	}
	if err := p.gcGuard(hostNL); err != nil {
		p.log.Warn("layer-2 guard GC", "err", err)
	}
	if c.Uplink != "" {
		if err := p.restoreIfUnused(hostNL, store); err != nil {
			errs = append(errs, fmt.Errorf("restore uplink %s: %w", c.Uplink, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return cniErr(types.ErrInternal, "GC", err)
	}
	return nil
}

func (p *plugin) cmdStatus(args *skel.CmdArgs) error {
	c, e := parseConfig(args.StdinData)
	if e != nil {
		return e
	}
	return p.status(context.Background(), c)
}

// status is ready when ADD could succeed now: the daemon answers (or the
// config does without it), the reservation directory is usable, and the
// pool has a free address. Otherwise code 50 (not available).
func (p *plugin) status(ctx context.Context, c *config) error {
	pl, e := c.resolve(ctx, newDaemonClient(c.DaemonSocket))
	if e != nil {
		if e.Code == types.ErrTryAgainLater {
			return types.NewError(types.ErrPluginNotAvailable, e.Msg, e.Details)
		}
		return e
	}
	store, err := c.store()
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, err.Error(), "")
	}
	free, err := store.Free(pl.pool)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, err.Error(), "")
	}
	if free == 0 {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("no free address in %s", pl.pool), "")
	}
	return nil
}
