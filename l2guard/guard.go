package l2guard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Guard reads and writes the guard table of one network namespace.
type Guard struct {
	mu sync.Mutex // one transaction at a time on c
	c  *nftables.Conn
	t  *nftables.Table
}

// Open returns the guard of the network namespace ns (the host's, for the
// plugin; netns.None() for the caller's own); nothing is written until
// Add.
func Open(ns netns.NsHandle) (*Guard, error) {
	var opts []nftables.ConnOption
	if ns.IsOpen() {
		opts = append(opts, nftables.WithNetNSFd(int(ns)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("l2guard: nftables: %w", err)
	}
	return &Guard{c: c, t: &nftables.Table{Family: nftables.TableFamilyBridge, Name: Table}}, nil
}

// The sets' IDs name them within the transaction that creates them. They
// are set here because the library would otherwise draw them from a
// package-level counter it increments without a lock (a data race when
// two Guards of one process add sets at once, as concurrent ADDs in one
// test do).
const (
	idPorts    = 1
	idMetadata = 2
)

// portsSet is the map from port name to port chain. Its key is marked
// host byte order (the set's user data, which only nft(8) reads): without
// it nft list showed every element as "" (the name read backwards, NUL
// first), so an operator saw no port names and a saved listing could not
// be loaded back with nft -f.
func (g *Guard) portsSet() *nftables.Set {
	return &nftables.Set{Table: g.t, ID: idPorts, Name: mapPorts, KeyType: nftables.TypeIFName, IsMap: true,
		DataType: nftables.TypeVerdict, KeyByteOrder: binaryutil.NativeEndian}
}

func (g *Guard) metadataSet() *nftables.Set {
	return &nftables.Set{Table: g.t, ID: idMetadata, Name: setMetadata, KeyType: nftables.TypeIPAddr}
}

func (g *Guard) preChain() *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return &nftables.Chain{Table: g.t, Name: chainPre, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookPrerouting,
		Priority: nftables.ChainPriorityRef(-200), Policy: &accept}
}

func (g *Guard) forwardChain() *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return &nftables.Chain{Table: g.t, Name: chainForward, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward,
		Priority: nftables.ChainPriorityFilter, Policy: &accept}
}

// exists reports whether the table exists.
func (g *Guard) exists() (bool, error) {
	ts, err := g.c.ListTablesOfFamily(nftables.TableFamilyBridge)
	if err != nil {
		return false, fmt.Errorf("l2guard: list tables: %w", err)
	}
	return slices.ContainsFunc(ts, func(t *nftables.Table) bool { return t.Name == Table }), nil
}

// ensure makes the table with its counters, sets and base chains, in one
// transaction that fails with EEXIST if the table exists: of two plugins
// racing to make it, one makes all of it and the other makes nothing.
func (g *Guard) ensure() error {
	ok, err := g.exists()
	if err != nil || ok {
		return err
	}
	c := g.c
	c.CreateTable(g.t)
	for _, r := range Reasons {
		c.AddObj(&nftables.NamedObj{Table: g.t, Name: r, Type: nftables.ObjTypeCounter, Obj: &expr.Counter{}})
	}
	ports, meta := g.portsSet(), g.metadataSet()
	for _, s := range []*nftables.Set{ports, meta} {
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("l2guard: set %s: %w", s.Name, err)
		}
	}
	pre, fwd := c.AddChain(g.preChain()), c.AddChain(g.forwardChain())
	for _, r := range preroutingRules(ports, meta) {
		c.AddRule(&nftables.Rule{Table: g.t, Chain: pre, Exprs: r})
	}
	for _, r := range metadataRules(meta) {
		c.AddRule(&nftables.Rule{Table: g.t, Chain: fwd, Exprs: r})
	}
	if err := c.Flush(); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil // another plugin made it meanwhile
		}
		return fmt.Errorf("l2guard: create table bridge %s: %w", Table, err)
	}
	return nil
}

// Add guards p: frames from p.IfName must carry p.MAC and p.IP (see the
// package comment), and metadata lists addresses only the host may answer
// for. A chain p left by an earlier ADD is replaced in the same
// transaction.
func (g *Guard) Add(p Port, metadata []netip.Addr) error {
	if err := p.validate(); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.ensure(); err != nil {
		return err
	}
	c := g.c
	if err := g.queueRemove(p.IfName); err != nil {
		return err
	}
	meta := g.metadataSet()
	var elems []nftables.SetElement
	for _, a := range metadata {
		if !a.Is4() {
			return fmt.Errorf("l2guard: metadata address %v is not IPv4", a)
		}
		b := a.As4()
		elems = append(elems, nftables.SetElement{Key: b[:]})
	}
	if len(elems) > 0 {
		if err := c.SetAddElements(meta, elems); err != nil {
			return fmt.Errorf("l2guard: metadata set: %w", err)
		}
	}
	ch := c.AddChain(&nftables.Chain{Table: g.t, Name: PortChain(p.IfName)})
	for _, r := range portRules(p) {
		c.AddRule(&nftables.Rule{Table: g.t, Chain: ch, Exprs: r})
	}
	err := c.SetAddElements(g.portsSet(), []nftables.SetElement{{
		Key: ifname(p.IfName), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: ch.Name},
	}})
	if err != nil {
		return fmt.Errorf("l2guard: ports map: %w", err)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("l2guard: guard %s (%s, %s): %w", p.IfName, p.MAC, p.IP, err)
	}
	return nil
}

// queueRemove queues the removal of ifname's map element and chain, if
// they exist.
func (g *Guard) queueRemove(name string) error {
	inMap, err := g.portNames()
	if err != nil {
		return err
	}
	if slices.Contains(inMap, name) {
		if err := g.c.SetDeleteElements(g.portsSet(), []nftables.SetElement{{Key: ifname(name)}}); err != nil {
			return fmt.Errorf("l2guard: ports map: %w", err)
		}
	}
	chains, err := g.chains()
	if err != nil {
		return err
	}
	if slices.Contains(chains, PortChain(name)) {
		ch := &nftables.Chain{Table: g.t, Name: PortChain(name)}
		g.c.FlushChain(ch)
		g.c.DelChain(ch)
	}
	return nil
}

// chains lists the names of the table's chains.
func (g *Guard) chains() ([]string, error) {
	all, err := g.c.ListChainsOfTableFamily(nftables.TableFamilyBridge)
	if err != nil {
		return nil, fmt.Errorf("l2guard: list chains: %w", err)
	}
	var out []string
	for _, ch := range all {
		if ch.Table.Name == Table {
			out = append(out, ch.Name)
		}
	}
	return out, nil
}

// portNames lists the keys of the ports map (nil without the table).
func (g *Guard) portNames() ([]string, error) {
	ok, err := g.exists()
	if err != nil || !ok {
		return nil, err
	}
	elems, err := g.c.GetSetElements(g.portsSet())
	if err != nil {
		return nil, fmt.Errorf("l2guard: read ports map: %w", err)
	}
	out := make([]string, 0, len(elems))
	for _, e := range elems {
		out = append(out, strings.TrimRight(string(e.Key), "\x00"))
	}
	slices.Sort(out)
	return out, nil
}

// Remove stops guarding the port ifname: its map element and chain go in
// one transaction. A port that is not guarded is not an error (DEL is
// idempotent).
func (g *Guard) Remove(name string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	ok, err := g.exists()
	if err != nil || !ok {
		return err
	}
	if err := g.queueRemove(name); err != nil {
		return err
	}
	if err := g.c.Flush(); err != nil {
		return fmt.Errorf("l2guard: remove %s: %w", name, err)
	}
	return nil
}

// Ports lists the guarded ports: the ports map's keys and the port chains
// without one (an interrupted removal), sorted.
func (g *Guard) Ports() ([]string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	names, err := g.portNames()
	if err != nil || names == nil {
		return names, err
	}
	chains, err := g.chains()
	if err != nil {
		return nil, err
	}
	for _, ch := range chains {
		if n, ok := strings.CutPrefix(ch, portPrefix); ok && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names, nil
}

// Check reports how the guard of p differs from what Add installs: a
// missing table, base chain, rule, map element or metadata address, or a
// rule changed. nil means p is guarded as it must be.
func (g *Guard) Check(p Port, metadata []netip.Addr) error {
	if err := p.validate(); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	ok, err := g.exists()
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("l2guard: table bridge %s does not exist", Table)
	}
	ports, meta := g.portsSet(), g.metadataSet()
	want := []struct {
		ch    *nftables.Chain
		rules [][]expr.Any
	}{
		{g.preChain(), preroutingRules(ports, meta)},
		{g.forwardChain(), metadataRules(meta)},
		{&nftables.Chain{Table: g.t, Name: PortChain(p.IfName)}, portRules(p)},
	}
	for _, w := range want {
		got, err := g.c.GetRules(g.t, w.ch)
		if err != nil {
			return fmt.Errorf("l2guard: chain %s: %w", w.ch.Name, err)
		}
		if err := sameRules(got, w.rules); err != nil {
			return fmt.Errorf("l2guard: chain %s: %w", w.ch.Name, err)
		}
	}
	elems, err := g.c.GetSetElements(ports)
	if err != nil {
		return fmt.Errorf("l2guard: read ports map: %w", err)
	}
	i := slices.IndexFunc(elems, func(e nftables.SetElement) bool { return string(e.Key) == string(ifname(p.IfName)) })
	if i < 0 {
		return fmt.Errorf("l2guard: port %s is not in the ports map", p.IfName)
	}
	if kind, chain, err := verdict(elems[i].Val); err != nil || kind != expr.VerdictJump || chain != PortChain(p.IfName) {
		return fmt.Errorf("l2guard: port %s: map element is verdict %d chain %q (%v), want jump %s", p.IfName, kind, chain, err, PortChain(p.IfName))
	}
	have, err := g.c.GetSetElements(meta)
	if err != nil {
		return fmt.Errorf("l2guard: read metadata set: %w", err)
	}
	for _, a := range metadata {
		b := a.As4()
		if !slices.ContainsFunc(have, func(e nftables.SetElement) bool { return string(e.Key) == string(b[:]) }) {
			return fmt.Errorf("l2guard: metadata address %v is not in the metadata set", a)
		}
	}
	return nil
}

// verdict decodes a verdict map element's data as the library returns it:
// the nested NFTA_DATA_VERDICT attributes, code and chain.
func verdict(b []byte) (expr.VerdictKind, string, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return 0, "", err
	}
	ad.ByteOrder = binary.BigEndian
	var kind expr.VerdictKind
	var chain string
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			kind = expr.VerdictKind(int32(ad.Uint32()))
		case unix.NFTA_VERDICT_CHAIN:
			chain = ad.String()
		}
	}
	return kind, chain, ad.Err()
}

// sameRules compares a chain's rules, as the kernel lists them, with want.
// Set IDs exist only in the transaction that made a set (the kernel lists
// lookups by name), so they are not compared.
func sameRules(got []*nftables.Rule, want [][]expr.Any) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d rules, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := normal(got[i].Exprs), normal(want[i])
		if !reflect.DeepEqual(g, w) {
			return fmt.Errorf("rule %d (handle %d) differs: got %s, want %s", i+1, got[i].Handle, describe(g), describe(w))
		}
	}
	return nil
}

func normal(es []expr.Any) []expr.Any {
	out := make([]expr.Any, len(es))
	for i, e := range es {
		if l, ok := e.(*expr.Lookup); ok {
			c := *l
			c.SetID = 0
			e = &c
		}
		out[i] = e
	}
	return out
}

func describe(es []expr.Any) string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = fmt.Sprintf("%T%+v", e, e)
	}
	return strings.Join(parts, " ")
}

// Drops returns the packets each reason dropped (Reasons), or nil when the
// table does not exist.
func (g *Guard) Drops() (map[string]uint64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ok, err := g.exists()
	if err != nil || !ok {
		return nil, err
	}
	objs, err := g.c.GetNamedObjects(g.t)
	if err != nil {
		return nil, fmt.Errorf("l2guard: read counters: %w", err)
	}
	out := map[string]uint64{}
	for _, o := range objs {
		n, ok := o.(*nftables.NamedObj)
		if !ok || n.Type != nftables.ObjTypeCounter {
			continue
		}
		if ctr, ok := n.Obj.(*expr.Counter); ok && slices.Contains(Reasons, n.Name) {
			out[n.Name] = ctr.Packets
		}
	}
	return out, nil
}

// Delete removes the whole table (tests, and an operator's cleanup).
func (g *Guard) Delete() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	ok, err := g.exists()
	if err != nil || !ok {
		return err
	}
	g.c.DelTable(g.t)
	if err := g.c.Flush(); err != nil {
		return fmt.Errorf("l2guard: delete table: %w", err)
	}
	return nil
}
