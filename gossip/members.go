package gossip

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// State is a member's state as this node knows it (see Cluster.Members).
type State uint8

const (
	Alive   State = iota // answering probes, or not yet found failing
	Suspect              // this node's probes went unanswered; not yet declared dead
	Dead                 // declared failed; it may come back
	Left                 // announced its leaving
)

func (s State) String() string {
	switch s {
	case Alive:
		return "alive"
	case Suspect:
		return "suspect"
	case Dead:
		return "dead"
	case Left:
		return "left"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Member is one member of the cluster as Cluster.Members reports it.
type Member struct {
	Name    string
	Addr    netip.AddrPort // gossip address
	State   State
	Since   time.Time // when State last changed, on this node's clock
	Info    NodeInfo  // last published; kept for dead and left members
	InfoErr error     // the meta did not decode (Info is zero): ignore this member
}

// delegate receives memberlist's callbacks for a Cluster. memberlist calls
// NotifyJoin, NotifyLeave and NotifyUpdate one at a time, with its node lock
// held: they must not call into memberlist.
type delegate struct{ c *Cluster }

// NodeMeta implements memberlist.Delegate: the encoded NodeInfo, at most
// memberlist.MetaMaxSize bytes (MarshalBinary checked).
func (d *delegate) NodeMeta(limit int) []byte {
	d.c.metaMu.RLock()
	defer d.c.metaMu.RUnlock()
	return d.c.meta
}

// drover sends no user messages over memberlist.
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState implements memberlist.Delegate: every push/pull carries the
// dead members this node remembers (remembered.go).
func (d *delegate) LocalState(join bool) []byte { return d.c.localRemembered(time.Now()) }

// MergeRemoteState implements memberlist.Delegate: the other side's
// remembered dead members.
func (d *delegate) MergeRemoteState(buf []byte, join bool) { d.c.mergeRemembered(buf, time.Now()) }

// NotifyJoin implements memberlist.EventDelegate: a new member, or one that
// was dead or had left, is alive (for this node too, at Start).
func (d *delegate) NotifyJoin(n *memberlist.Node) { d.c.alive(n, true) }

// NotifyUpdate implements memberlist.EventDelegate: a member's meta changed.
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.c.alive(n, false) }

// NotifyLeave implements memberlist.EventDelegate: a member failed or left.
func (d *delegate) NotifyLeave(n *memberlist.Node) { d.c.gone(n) }

// NotifyAlive implements memberlist.AliveDelegate: memberlist is processing
// an alive message about n (it may still find it stale and drop it). A
// member that refutes a suspicion does so with one; memberlist raises no
// event for that, so any alive message about a member this node suspects
// ends the suspicion here. Stale ones end it early: Suspect is a hint, and
// Dead, which is memberlist's verdict, follows all the same.
func (d *delegate) NotifyAlive(n *memberlist.Node) error {
	d.c.unsuspect(n.Name)
	return nil
}

// AckPayload implements memberlist.PingDelegate: nothing rides on acks.
func (d *delegate) AckPayload() []byte { return nil }

// NotifyPingComplete implements memberlist.PingDelegate: one of this node's
// probes was answered directly, which ends this node's suspicion of it.
func (d *delegate) NotifyPingComplete(other *memberlist.Node, _ time.Duration, _ []byte) {
	d.c.unsuspect(other.Name)
}

func nodeAddr(n *memberlist.Node) netip.AddrPort {
	a, _ := netip.AddrFromSlice(n.Addr)
	return netip.AddrPortFrom(a.Unmap(), n.Port)
}

// alive records that memberlist holds n alive with the meta it carries.
func (c *Cluster) alive(n *memberlist.Node, join bool) {
	var info NodeInfo
	flags, err := info.decodeMeta(n.Meta)
	now := time.Now()
	c.mu.Lock()
	e := c.members[n.Name]
	if e == nil {
		e = &entry{Member: Member{Name: n.Name}}
		c.members[n.Name] = e
	}
	prev := e.State
	known := e.Since != (time.Time{})
	addr := nodeAddr(n)
	e.Addr = addr
	e.Info, e.InfoErr = info, err
	e.meta = n.Meta
	e.leaving = err == nil && flags&flagLeaving != 0
	if prev != Alive || !known {
		e.State, e.Since = Alive, now
	}
	c.mu.Unlock()
	c.notify()

	switch {
	case err != nil:
		// memberlist calls again on every update of that member's meta.
		c.rlog.Warn("member info does not decode: member ignored", "peer", n.Name, "err", err)
	case join && n.Name != c.cfg.Name:
		c.log.Info("member alive", "peer", n.Name, "addr", addr, "underlay", info.Underlay)
	case prev == Suspect:
		c.log.Info("member no longer suspect", "peer", n.Name)
	}
}

// gone records that memberlist declared n dead, or that n left.
func (c *Cluster) gone(n *memberlist.Node) {
	now := time.Now()
	c.mu.Lock()
	e := c.members[n.Name]
	if e == nil { // not seen alive (memberlist announces every member alive first)
		var info NodeInfo
		flags, err := info.decodeMeta(n.Meta)
		e = &entry{Member: Member{Name: n.Name, Addr: nodeAddr(n), Info: info, InfoErr: err}}
		e.leaving = err == nil && flags&flagLeaving != 0
		c.members[n.Name] = e
	}
	st := Dead
	if e.leaving {
		st = Left
	}
	e.State, e.Since = st, now
	c.mu.Unlock()
	c.notify()
	if n.Name != c.cfg.Name {
		c.log.Info("member "+st.String(), "peer", n.Name)
	}
}

// markSuspect records that this node's probe of name went unanswered.
func (c *Cluster) markSuspect(name string) {
	now := time.Now()
	c.mu.Lock()
	e := c.members[name]
	if e == nil || name == c.cfg.Name || e.State != Alive {
		c.mu.Unlock()
		return
	}
	e.State, e.Since = Suspect, now
	e.suspectUntil = now.Add(c.maxSuspicion(len(c.members)))
	c.mu.Unlock()
	c.notify()
	c.log.Info("member suspect", "peer", name)
}

// unsuspect ends this node's suspicion of name, if any.
func (c *Cluster) unsuspect(name string) {
	c.mu.Lock()
	e := c.members[name]
	if e == nil || e.State != Suspect {
		c.mu.Unlock()
		return
	}
	e.State, e.Since = Alive, time.Now()
	c.mu.Unlock()
	c.notify()
	c.log.Info("member no longer suspect", "peer", name)
}

// maxSuspicion bounds how long memberlist keeps a member of a cluster of n
// suspect before it declares it dead or sees it refute, plus one probe
// interval.
func (c *Cluster) maxSuspicion(n int) time.Duration {
	return c.cfg.maxSuspicionTimeout(n) + c.cfg.ProbeInterval
}
