package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
)

// conn is the part of *nftables.Conn the filter uses: queued messages go
// to the kernel as one transaction on Flush.
type conn interface {
	AddTable(*nftables.Table) *nftables.Table
	DelTable(*nftables.Table)
	AddObj(nftables.Obj) nftables.Obj
	AddChain(*nftables.Chain) *nftables.Chain
	AddRule(*nftables.Rule) *nftables.Rule
	AddSet(*nftables.Set, []nftables.SetElement) error
	DelSet(*nftables.Set)
	FlushChain(*nftables.Chain)
	FlushSet(*nftables.Set)
	SetAddElements(*nftables.Set, []nftables.SetElement) error
	Flush() error
	GetObject(nftables.Obj) (nftables.Obj, error)
}

// Filter is an installed forward filter.
type Filter struct {
	rs Ruleset

	mu     sync.Mutex // serialises use of c (Drops is called by HTTP handlers)
	c      conn
	direct Direct // what SetDirect installed last
}

// Install builds the filter for s and installs it in the calling process's
// network namespace, replacing the table a previous daemon left (after a
// crash, say) in the same transaction.
func Install(s Spec) (*Filter, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("firewall: nftables: %w", err)
	}
	return install(c, s)
}

// InstallIn is Install in the namespace ns.
func InstallIn(ns netns.NsHandle, s Spec) (*Filter, error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return nil, fmt.Errorf("firewall: nftables: %w", err)
	}
	return install(c, s)
}

// install sends one batch: add the table (a no-op when it exists), delete
// it with whatever is in it, add it again with the counter, chains and
// rules. The kernel applies the batch atomically, so rules are never
// doubled and forwarding is never unfiltered in between; a batch that
// fails leaves the old table as it was.
func install(c conn, s Spec) (*Filter, error) {
	rs, err := Build(s)
	if err != nil {
		return nil, err
	}
	c.AddTable(rs.Table)
	c.DelTable(rs.Table)
	c.AddTable(rs.Table)
	c.AddObj(rs.Counter)
	for _, ch := range rs.Chains {
		c.AddChain(ch)
	}
	for _, set := range rs.Sets {
		if err := c.AddSet(set, nil); err != nil {
			return nil, fmt.Errorf("firewall: set %s: %w", set.Name, err)
		}
	}
	for _, m := range rs.Maps {
		if err := c.AddSet(m, rs.Elements[m.Name]); err != nil {
			return nil, fmt.Errorf("firewall: map %s: %w", m.Name, err)
		}
	}
	for _, r := range rs.Rules {
		c.AddRule(r)
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("firewall: install table inet %s: %w", Table, err)
	}
	return &Filter{rs: rs, c: c}, nil
}

// Ruleset is what f installed.
func (f *Filter) Ruleset() Ruleset { return f.rs }

// Drops returns the packets and bytes the filter has dropped since it was
// installed.
func (f *Filter) Drops() (packets, bytes uint64, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, err := f.c.GetObject(&nftables.NamedObj{Table: f.rs.Table, Name: DropCounter, Type: nftables.ObjTypeCounter})
	if err != nil {
		return 0, 0, fmt.Errorf("firewall: read counter %s: %w", DropCounter, err)
	}
	n, ok := o.(*nftables.NamedObj)
	if !ok {
		return 0, 0, fmt.Errorf("firewall: counter %s: unexpected object %T", DropCounter, o)
	}
	ctr, ok := n.Obj.(*expr.Counter)
	if !ok {
		return 0, 0, fmt.Errorf("firewall: counter %s: unexpected object data %T", DropCounter, n.Obj)
	}
	return ctr.Packets, ctr.Bytes, nil
}

// ErrNoUnderlay is returned by SetDirect on a filter built without
// Spec.Underlay.
var ErrNoUnderlay = errors.New("firewall: no underlay interface: direct sources cannot be admitted")

// SetDirect makes srcs the sources accepted on the underlay interface, in
// one transaction (nothing is admitted twice or missing in between). A
// source's prefix is accepted only from its MAC address. Invalid prefixes
// are refused before anything changes.
//
// The transaction empties UnderlayChain, empties or removes the direct
// sets of the last call, adds those of new prefix lengths and the
// chain's rules (BuildDirect), and with NoTrack refills DirectDst4 and
// DirectDst6.
func (f *Filter) SetDirect(srcs []Source) error {
	var ul *nftables.Chain
	for _, ch := range f.rs.Chains {
		if ch.Name == UnderlayChain {
			ul = ch
		}
	}
	if ul == nil {
		return ErrNoUnderlay
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := BuildDirect(f.rs.Table, srcs, idDirectFirst)
	if err != nil {
		return err
	}
	var dst [2][]netip.Prefix
	for _, s := range srcs {
		p, _ := directPrefix(s.Prefix) // valid: BuildDirect checked
		fam := 0
		if p.Addr().Is6() {
			fam = 1
		}
		dst[fam] = append(dst[fam], p)
	}
	f.c.FlushChain(ul)
	old := map[string]*nftables.Set{}
	for _, set := range f.direct.Sets {
		old[set.Name] = set
	}
	for i, set := range d.Sets {
		if o, ok := old[set.Name]; ok {
			delete(old, set.Name)
			*set = *o // the kernel's set: the rule looks it up by name
			f.c.FlushSet(set)
			if err := f.c.SetAddElements(set, d.Elements[i]); err != nil {
				return fmt.Errorf("firewall: set %s: %w", set.Name, err)
			}
			continue
		}
		if err := f.c.AddSet(set, d.Elements[i]); err != nil {
			return fmt.Errorf("firewall: set %s: %w", set.Name, err)
		}
	}
	for _, set := range f.direct.Sets {
		if _, gone := old[set.Name]; gone {
			f.c.DelSet(set)
		}
	}
	for _, r := range d.Rules {
		f.c.AddRule(r)
	}
	// With NoTrack: DirectDst4 and DirectDst6.
	for i, set := range f.rs.Sets {
		f.c.FlushSet(set)
		if es := dstElements(dst[i]); len(es) > 0 {
			if err := f.c.SetAddElements(set, es); err != nil {
				return fmt.Errorf("firewall: set %s: %w", set.Name, err)
			}
		}
	}
	if err := f.c.Flush(); err != nil {
		return fmt.Errorf("firewall: direct sources: %w", err)
	}
	f.direct = d
	return nil
}

// Remove deletes the filter's table. It succeeds when the table is
// already gone (removed by hand, say), so it can be retried.
func (f *Filter) Remove() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.c.AddTable(f.rs.Table) // so that the delete never fails on a missing table
	f.c.DelTable(f.rs.Table)
	if err := f.c.Flush(); err != nil {
		return fmt.Errorf("firewall: remove table inet %s: %w", Table, err)
	}
	return nil
}
