package enforce

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/drovernet/drover/policy"
)

// Names of what the enforcer installs; docs/policy.md shows them.
const (
	// Table is the policy table, family inet (the rules match IPv4).
	Table = "drover_policy"
	// ForwardChain is the base chain on the forward hook.
	ForwardChain = "forward"
)

// Set names, per direction where it applies.
const (
	setLocal  = "local"
	mapIdent  = "ident"
	setOpen   = "_open"  // ingress_open, egress_open
	setIdent  = "_ident" // ingress_ident, egress_ident
	setCIDR   = "_cidr"
	mapDrop   = "_drop"
	chunkSize = 1024 // elements per netlink message
)

// Registers: the 32-bit registers a concatenation is loaded into, one
// field each (nf_tables.h, NFT_REG32_00 is 8).
const (
	reg0 = 8 + iota
	reg1
	reg2
	reg3
)

// IPv4 header offsets (RFC 791).
const (
	offSaddr = 12
	offDaddr = 16
)

// conn is the part of *nftables.Conn the enforcer uses; queued messages
// go to the kernel as one transaction on Flush.
type conn interface {
	AddTable(*nftables.Table) *nftables.Table
	DelTable(*nftables.Table)
	AddSet(*nftables.Set, []nftables.SetElement) error
	SetAddElements(*nftables.Set, []nftables.SetElement) error
	SetDeleteElements(*nftables.Set, []nftables.SetElement) error
	AddObj(nftables.Obj) nftables.Obj
	DeleteObject(nftables.Obj)
	AddChain(*nftables.Chain) *nftables.Chain
	FlushChain(*nftables.Chain)
	DelChain(*nftables.Chain)
	AddRule(*nftables.Rule) *nftables.Rule
	Flush() error
	GetNamedObjects(*nftables.Table) ([]nftables.Obj, error)
}

// Enforcer owns table inet drover_policy in one network namespace.
type Enforcer struct {
	mu    sync.Mutex
	c     conn
	table *nftables.Table
	sets  map[string]*nftables.Set
	// installed is what the kernel holds; nil makes the next Apply
	// rebuild the table (first use, or after a failed transaction).
	installed *Ruleset
	// stats of the last Apply.
	stats Stats
}

// Stats says what the last Apply changed.
type Stats struct {
	Rebuilt        bool
	Added, Deleted int // set elements
}

// LastApply returns what the last Apply changed.
func (e *Enforcer) LastApply() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stats
}

// New returns an enforcer for the calling process's network namespace.
// Nothing is written until Apply.
func New() (*Enforcer, error) {
	c, err := nftables.New(nftables.WithSockOptions(bigSendBuffer))
	if err != nil {
		return nil, fmt.Errorf("policy: nftables: %w", err)
	}
	return newEnforcer(c), nil
}

// NewIn is New for the namespace ns.
func NewIn(ns netns.NsHandle) (*Enforcer, error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)), nftables.WithSockOptions(bigSendBuffer))
	if err != nil {
		return nil, fmt.Errorf("policy: nftables: %w", err)
	}
	return newEnforcer(c), nil
}

// sendBuffer bounds one transaction: netlink refuses a message larger
// than the socket's send buffer (EMSGSIZE), and a first install of 1000
// pods and 200 policies is a few MB. Like nft, which sizes it to the batch,
// force it past net.core.wmem_max (SO_SNDBUFFORCE, CAP_NET_ADMIN).
const sendBuffer = 64 << 20

func bigSendBuffer(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sendBuffer)
		if serr == nil {
			// The kernel acknowledges every message of the batch.
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, sendBuffer)
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("netlink socket buffers: %w", serr)
	}
	return nil
}

func newEnforcer(c conn) *Enforcer {
	return &Enforcer{c: c, table: &nftables.Table{Family: nftables.TableFamilyINet, Name: Table}}
}

var (
	concatIdent = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeMark, nftables.TypeInetProto, nftables.TypeInetService)
	concatCIDR  = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
)

func (e *Enforcer) newSets() {
	t := e.table
	e.sets = map[string]*nftables.Set{
		setLocal: {Table: t, Name: setLocal, KeyType: nftables.TypeIPAddr},
		mapIdent: {Table: t, Name: mapIdent, KeyType: nftables.TypeIPAddr, IsMap: true, DataType: nftables.TypeMark},
	}
	for d := range policy.Dir(2) {
		p := d.String()
		e.sets[p+setOpen] = &nftables.Set{Table: t, Name: p + setOpen, KeyType: nftables.TypeIPAddr}
		e.sets[p+setIdent] = &nftables.Set{Table: t, Name: p + setIdent, KeyType: concatIdent, Concatenation: true, Interval: true}
		e.sets[p+setCIDR] = &nftables.Set{Table: t, Name: p + setCIDR, KeyType: concatCIDR, Concatenation: true, Interval: true}
		e.sets[p+mapDrop] = &nftables.Set{Table: t, Name: p + mapDrop, KeyType: nftables.TypeIPAddr, IsMap: true, DataType: nftables.TypeVerdict}
	}
}

// Apply makes the kernel enforce rs, in one transaction: the first time
// (and after a failure) it replaces the whole table, after that it adds
// and deletes only the elements, counters and drop chains that changed. A
// failed transaction changes nothing; the next Apply rebuilds.
func (e *Enforcer) Apply(rs *Ruleset) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var err error
	e.stats = Stats{Rebuilt: e.installed == nil}
	if e.installed == nil {
		err = e.rebuild(rs)
	} else {
		err = e.update(e.installed, rs)
	}
	if err == nil {
		err = e.c.Flush()
	}
	if err != nil {
		e.installed = nil
		return fmt.Errorf("policy: apply table inet %s: %w", Table, err)
	}
	e.installed = rs
	return nil
}

// rebuild queues: add the table (a no-op when it exists), delete it with
// whatever a previous daemon left, and add everything again.
func (e *Enforcer) rebuild(rs *Ruleset) error {
	c := e.c
	c.AddTable(e.table)
	c.DelTable(e.table)
	c.AddTable(e.table)
	e.newSets()
	for _, name := range slices.Sorted(maps.Keys(e.sets)) {
		if err := c.AddSet(e.sets[name], nil); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	for _, name := range counterNames(rs) {
		c.AddObj(&nftables.NamedObj{Table: e.table, Name: name, Type: nftables.ObjTypeCounter, Obj: &expr.Counter{}})
	}
	for d := range policy.Dir(2) {
		for _, g := range rs.Drops[d] {
			e.addDropChain(g, d)
		}
	}
	e.addChains()
	return e.diffElements(&Ruleset{}, rs)
}

// update queues the difference from old to rs.
func (e *Enforcer) update(old, rs *Ruleset) error {
	c := e.c
	oldCounters, newCounters := counterNames(old), counterNames(rs)
	for _, name := range newCounters {
		if !slices.Contains(oldCounters, name) {
			c.AddObj(&nftables.NamedObj{Table: e.table, Name: name, Type: nftables.ObjTypeCounter, Obj: &expr.Counter{}})
		}
	}
	for d := range policy.Dir(2) {
		for _, g := range rs.Drops[d] {
			if !hasChain(old.Drops[d], g.Chain) {
				e.addDropChain(g, d)
			}
		}
	}
	// Elements first: the drop map's elements reference the chains
	// removed below.
	if err := e.diffElements(old, rs); err != nil {
		return err
	}
	for d := range policy.Dir(2) {
		for _, g := range old.Drops[d] {
			if !hasChain(rs.Drops[d], g.Chain) {
				ch := &nftables.Chain{Table: e.table, Name: g.Chain}
				c.FlushChain(ch)
				c.DelChain(ch)
			}
		}
	}
	for _, name := range oldCounters {
		if !slices.Contains(newCounters, name) {
			c.DeleteObject(&nftables.NamedObj{Table: e.table, Name: name, Type: nftables.ObjTypeCounter})
		}
	}
	return nil
}

func hasChain(gs []DropGroup, name string) bool {
	return slices.ContainsFunc(gs, func(g DropGroup) bool { return g.Chain == name })
}

// counterNames lists the counters rs's drop chains update.
func counterNames(rs *Ruleset) []string {
	var out []string
	for d := range policy.Dir(2) {
		for _, g := range rs.Drops[d] {
			for _, ref := range g.Policies {
				if n := CounterName(ref, d); !slices.Contains(out, n) {
					out = append(out, n)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// addDropChain queues the chain that counts a denied packet under each
// policy of g and drops it.
func (e *Enforcer) addDropChain(g DropGroup, d policy.Dir) {
	ch := e.c.AddChain(&nftables.Chain{Table: e.table, Name: g.Chain})
	var ex []expr.Any
	for _, ref := range g.Policies {
		ex = append(ex, &expr.Objref{Type: int(nftables.ObjTypeCounter), Name: CounterName(ref, d)})
	}
	ex = append(ex, &expr.Verdict{Kind: expr.VerdictDrop})
	e.c.AddRule(&nftables.Rule{Table: e.table, Chain: ch, Exprs: ex})
}

// addChains queues the base chain and the two direction chains:
//
//	chain forward { type filter hook forward priority filter; policy accept
//	  ct state established,related accept
//	  meta nfproto ipv4 ip saddr @local jump egress
//	  meta nfproto ipv4 ip daddr @local jump ingress }
//	chain egress {
//	  ip saddr @egress_open return
//	  ip saddr . (ip daddr -> @ident) . meta l4proto . th dport @egress_ident return
//	  ip saddr . ip daddr . meta l4proto . th dport @egress_cidr return
//	  ip saddr vmap @egress_drop   (a drop chain: counters, drop)
//	  drop }
//
// and ingress the same way round. Replies of allowed flows stop at the
// conntrack rule; only a flow's first packet reaches the sets.
func (e *Enforcer) addChains() {
	c, t := e.c, e.table
	accept := nftables.ChainPolicyAccept
	fwd := c.AddChain(&nftables.Chain{Table: t, Name: ForwardChain, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	chains := [2]*nftables.Chain{}
	for d := range policy.Dir(2) {
		chains[d] = c.AddChain(&nftables.Chain{Table: t, Name: d.String()})
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})
	local := e.sets[setLocal]
	for _, d := range []policy.Dir{policy.DirEgress, policy.DirIngress} {
		self := uint32(offSaddr)
		if d == policy.DirIngress {
			self = offDaddr
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: self, Len: 4},
			&expr.Lookup{SourceRegister: 1, SetName: local.Name, SetID: local.ID},
			&expr.Verdict{Kind: expr.VerdictJump, Chain: d.String()},
		}})
	}
	ret := &expr.Verdict{Kind: expr.VerdictReturn}
	for d := range policy.Dir(2) {
		self, peer := uint32(offDaddr), uint32(offSaddr)
		if d == policy.DirEgress {
			self, peer = offSaddr, offDaddr
		}
		p := d.String()
		open, ident, cidr, drop := e.sets[p+setOpen], e.sets[p+setIdent], e.sets[p+setCIDR], e.sets[p+mapDrop]
		idm := e.sets[mapIdent]
		ports := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg2},
			&expr.Payload{DestRegister: reg3, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}, // RFC 9293, 768, 9260: dport at 2
		}
		rules := [][]expr.Any{
			{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: self, Len: 4},
				&expr.Lookup{SourceRegister: 1, SetName: open.Name, SetID: open.ID},
				ret,
			},
			append(append([]expr.Any{
				// The peer's identity replaces its address in the key.
				&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: peer, Len: 4},
				&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: idm.Name, SetID: idm.ID},
				&expr.Payload{DestRegister: reg0, Base: expr.PayloadBaseNetworkHeader, Offset: self, Len: 4},
			}, ports...),
				&expr.Lookup{SourceRegister: reg0, SetName: ident.Name, SetID: ident.ID},
				ret,
			),
			append(append([]expr.Any{
				&expr.Payload{DestRegister: reg0, Base: expr.PayloadBaseNetworkHeader, Offset: self, Len: 4},
				&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: peer, Len: 4},
			}, ports...),
				&expr.Lookup{SourceRegister: reg0, SetName: cidr.Name, SetID: cidr.ID},
				ret,
			),
			{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: self, Len: 4},
				&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: drop.Name, SetID: drop.ID},
			},
			{&expr.Verdict{Kind: expr.VerdictDrop}},
		}
		for _, r := range rules {
			c.AddRule(&nftables.Rule{Table: t, Chain: chains[d], Exprs: r})
		}
	}
}

// diffElements queues the element deletions and additions from old to
// rs, deletions first (a box may be replaced by an overlapping one).
func (e *Enforcer) diffElements(old, rs *Ruleset) error {
	type change struct {
		set      string
		old, new []nftables.SetElement
	}
	changes := []change{
		{setLocal, addrElems(old.Local), addrElems(rs.Local)},
		{mapIdent, identMapElems(old.Idents), identMapElems(rs.Idents)},
	}
	for d := range policy.Dir(2) {
		p := d.String()
		changes = append(changes,
			change{p + setOpen, addrElems(old.Open[d]), addrElems(rs.Open[d])},
			change{p + setIdent, identElems(old.Ident[d]), identElems(rs.Ident[d])},
			change{p + setCIDR, cidrElems(old.CIDR[d]), cidrElems(rs.CIDR[d])},
			change{p + mapDrop, dropElems(old.Drops[d]), dropElems(rs.Drops[d])},
		)
	}
	for _, ch := range changes {
		del, add := elemDiff(ch.old, ch.new)
		e.stats.Added += len(add)
		e.stats.Deleted += len(del)
		s := e.sets[ch.set]
		for part := range slices.Chunk(del, chunkSize) {
			if err := e.c.SetDeleteElements(s, part); err != nil {
				return fmt.Errorf("set %s: %w", ch.set, err)
			}
		}
		for part := range slices.Chunk(add, chunkSize) {
			if err := e.c.SetAddElements(s, part); err != nil {
				return fmt.Errorf("set %s: %w", ch.set, err)
			}
		}
	}
	return nil
}

// elemKey identifies an element with its value: a changed value is a
// deletion and an addition.
func elemKey(el nftables.SetElement) string {
	var b strings.Builder
	b.Write(el.Key)
	b.WriteByte(0xff)
	b.Write(el.KeyEnd)
	b.WriteByte(0xff)
	b.Write(el.Val)
	if el.VerdictData != nil {
		b.WriteString(el.VerdictData.Chain)
	}
	return b.String()
}

func elemDiff(old, cur []nftables.SetElement) (del, add []nftables.SetElement) {
	have := make(map[string]bool, len(old))
	for _, el := range old {
		have[elemKey(el)] = true
	}
	want := make(map[string]bool, len(cur))
	for _, el := range cur {
		k := elemKey(el)
		want[k] = true
		if !have[k] {
			add = append(add, el)
		}
	}
	for _, el := range old {
		if !want[elemKey(el)] {
			del = append(del, el)
		}
	}
	return del, add
}

func addrElems(as []netip.Addr) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(as))
	for _, a := range as {
		out = append(out, nftables.SetElement{Key: a.AsSlice()})
	}
	return out
}

func identMapElems(m map[netip.Addr]uint32) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(m))
	for _, a := range slices.SortedFunc(maps.Keys(m), netip.Addr.Compare) {
		out = append(out, nftables.SetElement{Key: a.AsSlice(), Val: binaryutil.NativeEndian.PutUint32(m[a])})
	}
	return out
}

// concat encodes a concatenated key: each field padded to 4 bytes, as the
// registers hold it.
func concat(self netip.Addr, peer []byte, proto uint8, port uint16) []byte {
	b := make([]byte, 0, 16)
	b = append(b, self.AsSlice()...)
	b = append(b, peer...)
	b = append(b, proto, 0, 0, 0)
	return append(b, byte(port>>8), byte(port), 0, 0)
}

func identElems(es []IdentElem) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(es))
	for _, x := range es {
		id := binaryutil.NativeEndian.PutUint32(x.Ident)
		out = append(out, nftables.SetElement{
			Key:    concat(x.Self, id, x.ProtoLo, x.PortLo),
			KeyEnd: concat(x.Self, id, x.ProtoHi, x.PortHi),
		})
	}
	return out
}

func cidrElems(es []CIDRElem) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(es))
	for _, x := range es {
		out = append(out, nftables.SetElement{
			Key:    concat(x.Self, x.Lo.AsSlice(), x.ProtoLo, x.PortLo),
			KeyEnd: concat(x.Self, x.Hi.AsSlice(), x.ProtoHi, x.PortHi),
		})
	}
	return out
}

func dropElems(gs []DropGroup) []nftables.SetElement {
	var out []nftables.SetElement
	for _, g := range gs {
		for _, a := range g.Pods {
			out = append(out, nftables.SetElement{Key: a.AsSlice(), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: g.Chain}})
		}
	}
	return out
}

// Drops are the policy drop counters: packets per counter name
// (CounterName: "ingress:ns/name").
func (e *Enforcer) Drops() (map[string]uint64, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	objs, err := e.c.GetNamedObjects(e.table)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return map[string]uint64{}, nil
		}
		return nil, fmt.Errorf("policy: read counters: %w", err)
	}
	out := map[string]uint64{}
	for _, o := range objs {
		n, ok := o.(*nftables.NamedObj)
		if !ok || n.Type != nftables.ObjTypeCounter {
			continue
		}
		if ctr, ok := n.Obj.(*expr.Counter); ok {
			out[n.Name] = ctr.Packets
		}
	}
	return out, nil
}

// Remove deletes the table. It succeeds when the table is already gone.
func (e *Enforcer) Remove() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.c.AddTable(e.table)
	e.c.DelTable(e.table)
	e.installed = nil
	if err := e.c.Flush(); err != nil {
		return fmt.Errorf("policy: remove table inet %s: %w", Table, err)
	}
	return nil
}
