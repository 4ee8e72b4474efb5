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

// Names inside the table: the identity map, the per-direction maps from
// a local pod to its group's chain, and per group (direction, identity) a
// chain "ingress_17" with sets "ingress_17_peers" and "ingress_17_ranges".
const (
	mapIdent  = "ident"
	mapPods   = "_pods" // ingress_pods, egress_pods
	setPeers  = "_peers"
	setRanges = "_ranges"
	chunkSize = 1024 // elements per netlink message
)

// Registers: the 32-bit registers a concatenation is loaded into, one
// field each (nf_tables.h, NFT_REG32_00 is 8).
const (
	reg0 = 8 + iota
	reg1
	reg2
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
	DelSet(*nftables.Set)
	AddRule(*nftables.Rule) *nftables.Rule
	Flush() error
	GetNamedObjects(*nftables.Table) ([]nftables.Obj, error)
}

// Enforcer owns table inet drover_policy in one network namespace.
type Enforcer struct {
	mu    sync.Mutex
	c     conn
	table *nftables.Table
	sets  map[string]*nftables.Set // the maps, by name
	// groups holds each group chain's [peers, ranges] sets; their names
	// carry a generation, bumped when a change replaces a set whole.
	groups map[string][2]*nftables.Set
	gen    uint64
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
	concatPeers  = nftables.MustConcatSetType(nftables.TypeMark, nftables.TypeInetProto, nftables.TypeInetService)
	concatRanges = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
)

func groupChain(d policy.Dir, ident uint32) string {
	return fmt.Sprintf("%s_%d", d, ident)
}

// Apply makes the kernel enforce rs, in one transaction: the first time
// (and after a failure) it replaces the whole table, after that it adds
// and deletes only what changed. A failed transaction changes nothing;
// the next Apply rebuilds.
func (e *Enforcer) Apply(rs *Ruleset) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var err error
	e.stats = Stats{Rebuilt: e.installed == nil}
	old := e.installed
	if old == nil {
		e.rebuild()
		old = &Ruleset{}
	}
	err = e.update(old, rs)
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
// whatever a previous daemon left, add it again with its maps and base
// chain. update then fills it.
func (e *Enforcer) rebuild() {
	c, t := e.c, e.table
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	e.sets = map[string]*nftables.Set{
		mapIdent: {Table: t, Name: mapIdent, KeyType: nftables.TypeIPAddr, IsMap: true, DataType: nftables.TypeMark},
	}
	for d := range policy.Dir(2) {
		name := d.String() + mapPods
		e.sets[name] = &nftables.Set{Table: t, Name: name, KeyType: nftables.TypeIPAddr, IsMap: true, DataType: nftables.TypeVerdict}
	}
	e.groups = map[string][2]*nftables.Set{}
	for _, name := range slices.Sorted(maps.Keys(e.sets)) {
		// AddSet fails only for anonymous sets.
		_ = c.AddSet(e.sets[name], nil)
	}
	e.addBaseChain()
}

// update queues the difference from old to rs: new counters, new groups
// (sets, chain), changed sets and chains, the maps, then what is gone.
func (e *Enforcer) update(old, rs *Ruleset) error {
	c := e.c
	oldCounters, newCounters := counterNames(old), counterNames(rs)
	for _, name := range newCounters {
		if !slices.Contains(oldCounters, name) {
			c.AddObj(&nftables.NamedObj{Table: e.table, Name: name, Type: nftables.ObjTypeCounter, Obj: &expr.Counter{}})
		}
	}
	for d := range policy.Dir(2) {
		before := map[uint32]*Group{}
		for i := range old.Groups[d] {
			before[old.Groups[d][i].Ident] = &old.Groups[d][i]
		}
		for i := range rs.Groups[d] {
			g := &rs.Groups[d][i]
			was := before[g.Ident]
			if was == nil {
				if err := e.addGroup(d, g); err != nil {
					return err
				}
				continue
			}
			if err := e.changeGroup(d, was, g); err != nil {
				return err
			}
		}
		if err := e.diff(e.sets[d.String()+mapPods], podElems(d, old.Groups[d]), podElems(d, rs.Groups[d])); err != nil {
			return err
		}
	}
	if err := e.diff(e.sets[mapIdent], identMapElems(old.Idents), identMapElems(rs.Idents)); err != nil {
		return err
	}
	for d := range policy.Dir(2) {
		for _, g := range old.Groups[d] {
			if slices.ContainsFunc(rs.Groups[d], func(n Group) bool { return n.Ident == g.Ident }) {
				continue
			}
			name := groupChain(d, g.Ident)
			ch := &nftables.Chain{Table: e.table, Name: name}
			c.FlushChain(ch)
			c.DelChain(ch)
			for _, s := range e.groups[name] {
				c.DelSet(s)
			}
			delete(e.groups, name)
		}
	}
	for _, name := range oldCounters {
		if !slices.Contains(newCounters, name) {
			c.DeleteObject(&nftables.NamedObj{Table: e.table, Name: name, Type: nftables.ObjTypeCounter})
		}
	}
	return nil
}

// addGroup queues a new group's sets, filled, and its chain.
func (e *Enforcer) addGroup(d policy.Dir, g *Group) error {
	name := groupChain(d, g.Ident)
	sets, err := e.newGroupSets(name, g)
	if err != nil {
		return err
	}
	ch := e.c.AddChain(&nftables.Chain{Table: e.table, Name: name})
	e.addGroupRules(d, ch, g, sets)
	return nil
}

// newGroupSets queues a group's sets under a new generation, filled.
func (e *Enforcer) newGroupSets(name string, g *Group) ([2]*nftables.Set, error) {
	e.gen++
	sets := [2]*nftables.Set{
		{Table: e.table, Name: fmt.Sprintf("%s%s_%d", name, setPeers, e.gen), KeyType: concatPeers, Concatenation: true, Interval: true},
		{Table: e.table, Name: fmt.Sprintf("%s%s_%d", name, setRanges, e.gen), KeyType: concatRanges, Concatenation: true, Interval: true},
	}
	for _, s := range sets {
		_ = e.c.AddSet(s, nil)
	}
	if err := e.diff(sets[0], nil, peerElems(g.Peers)); err != nil {
		return sets, err
	}
	if err := e.diff(sets[1], nil, rangeElems(g.Ranges)); err != nil {
		return sets, err
	}
	e.groups[name] = sets
	return sets, nil
}

// replaceOver is how many deletions make a change replace a group's sets
// whole: the kernel's pipapo set removes an element in time linear in the
// set, while creating a set and destroying one are cheap (11k deletions
// took 10 s on our 2-core machines, re-adding them 0.3 s).
const replaceOver = 32

// changeGroup queues the changes of a group that exists in the kernel:
// element differences, or new sets when many elements go, and its rules
// again when its policies (its counters) or its sets changed.
func (e *Enforcer) changeGroup(d policy.Dir, was, g *Group) error {
	name := groupChain(d, g.Ident)
	sets := e.groups[name]
	delP, addP := elemDiff(peerElems(was.Peers), peerElems(g.Peers))
	delR, addR := elemDiff(rangeElems(was.Ranges), rangeElems(g.Ranges))
	ch := &nftables.Chain{Table: e.table, Name: name}
	if len(delP)+len(delR) > replaceOver {
		fresh, err := e.newGroupSets(name, g)
		if err != nil {
			return err
		}
		e.c.FlushChain(ch)
		e.addGroupRules(d, ch, g, fresh)
		for _, s := range sets {
			e.c.DelSet(s)
		}
		return nil
	}
	e.stats.Added += len(addP) + len(addR)
	e.stats.Deleted += len(delP) + len(delR)
	for i, ch := range [][2][]nftables.SetElement{{delP, addP}, {delR, addR}} {
		if err := e.queue(sets[i], ch[0], ch[1]); err != nil {
			return err
		}
	}
	if !slices.Equal(was.Policies, g.Policies) {
		e.c.FlushChain(ch)
		e.addGroupRules(d, ch, g, sets)
	}
	return nil
}

// addGroupRules queues a group's chain:
//
//	chain ingress_17 {
//	  ident(ip saddr) . meta l4proto . th dport @ingress_17_peers_N return
//	  ip saddr . meta l4proto . th dport @ingress_17_ranges_N return
//	  counter name "ingress:x/p1" counter name "ingress:x/p2" drop }
//
// (egress the same with ip daddr).
func (e *Enforcer) addGroupRules(d policy.Dir, ch *nftables.Chain, g *Group, sets [2]*nftables.Set) {
	peer := uint32(offSaddr)
	if d == policy.DirEgress {
		peer = offDaddr
	}
	peers, ranges, idm := sets[0], sets[1], e.sets[mapIdent]
	ports := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		// The destination port is at offset 2 in TCP, UDP and SCTP
		// (RFC 9293, RFC 768, RFC 9260).
		&expr.Payload{DestRegister: reg2, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
	ret := &expr.Verdict{Kind: expr.VerdictReturn}
	rules := [][]expr.Any{
		append(append([]expr.Any{
			// The peer's identity replaces its address in the key.
			&expr.Payload{DestRegister: reg0, Base: expr.PayloadBaseNetworkHeader, Offset: peer, Len: 4},
			&expr.Lookup{SourceRegister: reg0, DestRegister: reg0, IsDestRegSet: true, SetName: idm.Name, SetID: idm.ID},
		}, ports...),
			&expr.Lookup{SourceRegister: reg0, SetName: peers.Name, SetID: peers.ID},
			ret,
		),
		append(append([]expr.Any{
			&expr.Payload{DestRegister: reg0, Base: expr.PayloadBaseNetworkHeader, Offset: peer, Len: 4},
		}, ports...),
			&expr.Lookup{SourceRegister: reg0, SetName: ranges.Name, SetID: ranges.ID},
			ret,
		),
	}
	var drop []expr.Any
	for _, ref := range g.Policies {
		drop = append(drop, &expr.Objref{Type: int(nftables.ObjTypeCounter), Name: CounterName(ref, d)})
	}
	rules = append(rules, append(drop, &expr.Verdict{Kind: expr.VerdictDrop}))
	for _, r := range rules {
		e.c.AddRule(&nftables.Rule{Table: e.table, Chain: ch, Exprs: r})
	}
}

// counterNames lists the counters rs's group chains update.
func counterNames(rs *Ruleset) []string {
	var out []string
	for d := range policy.Dir(2) {
		for _, g := range rs.Groups[d] {
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

// addBaseChain queues the base chain:
//
//	chain forward { type filter hook forward priority filter; policy accept
//	  ct state established,related accept
//	  meta nfproto ipv4 ip saddr vmap @egress_pods
//	  meta nfproto ipv4 ip daddr vmap @ingress_pods }
//
// A pod's entry jumps to its group's chain, which returns when a rule
// admits the flow and drops otherwise; open pods have no entry. Replies of
// allowed flows stop at the conntrack rule: only a flow's first packet
// reaches the sets.
func (e *Enforcer) addBaseChain() {
	c, t := e.c, e.table
	accept := nftables.ChainPolicyAccept
	fwd := c.AddChain(&nftables.Chain{Table: t, Name: ForwardChain, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})
	for _, d := range []policy.Dir{policy.DirEgress, policy.DirIngress} {
		self := uint32(offSaddr)
		if d == policy.DirIngress {
			self = offDaddr
		}
		m := e.sets[d.String()+mapPods]
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: self, Len: 4},
			&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
		}})
	}
}

// diff queues the element deletions and additions that turn old into cur
// in set s.
func (e *Enforcer) diff(s *nftables.Set, old, cur []nftables.SetElement) error {
	del, add := elemDiff(old, cur)
	e.stats.Added += len(add)
	e.stats.Deleted += len(del)
	return e.queue(s, del, add)
}

// queue queues deletions, then additions (a box may be replaced by an
// overlapping one), in messages of chunkSize elements.
func (e *Enforcer) queue(s *nftables.Set, del, add []nftables.SetElement) error {
	for part := range slices.Chunk(del, chunkSize) {
		if err := e.c.SetDeleteElements(s, part); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
	}
	for part := range slices.Chunk(add, chunkSize) {
		if err := e.c.SetAddElements(s, part); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
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

func identMapElems(m map[netip.Addr]uint32) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(m))
	for _, a := range slices.SortedFunc(maps.Keys(m), netip.Addr.Compare) {
		out = append(out, nftables.SetElement{Key: a.AsSlice(), Val: binaryutil.NativeEndian.PutUint32(m[a])})
	}
	return out
}

func podElems(d policy.Dir, gs []Group) []nftables.SetElement {
	var out []nftables.SetElement
	for _, g := range gs {
		for _, a := range g.Pods {
			out = append(out, nftables.SetElement{Key: a.AsSlice(), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: groupChain(d, g.Ident)}})
		}
	}
	return out
}

// concat encodes a concatenated key: each field padded to 4 bytes, as the
// registers hold it.
func concat(first []byte, proto uint8, port uint16) []byte {
	b := make([]byte, 0, 12)
	b = append(b, first...)
	b = append(b, proto, 0, 0, 0)
	return append(b, byte(port>>8), byte(port), 0, 0)
}

func peerElems(es []IdentElem) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(es))
	for _, x := range es {
		id := binaryutil.NativeEndian.PutUint32(x.Ident)
		out = append(out, nftables.SetElement{Key: concat(id, x.ProtoLo, x.PortLo), KeyEnd: concat(id, x.ProtoHi, x.PortHi)})
	}
	return out
}

func rangeElems(es []CIDRElem) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(es))
	for _, x := range es {
		out = append(out, nftables.SetElement{Key: concat(x.Lo.AsSlice(), x.ProtoLo, x.PortLo), KeyEnd: concat(x.Hi.AsSlice(), x.ProtoHi, x.PortHi)})
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
