package gossip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Remembered members travel in memberlist's push/pull exchanges (joins and
// anti-entropy), as the delegate's LocalState and MergeRemoteState.
//
// memberlist forgets a dead member after GossipToTheDeadTime and never
// sends it again, while the table keeps it for ForgetAfter (a dead host is
// expected back, and its block claim stands). Without this exchange a host
// that joins during a partition would learn only the members on its side:
// the block holders across the cut would be unknown to it, and it could
// believe it sees a majority of them (package agent, mayClaim) when it sees
// only half. So every push/pull carries the sender's dead members with
// their last Info and how long they have been dead (a duration, not a time:
// clocks differ), and the receiver adds the ones it does not know as dead.
// They are forgotten ForgetAfter after their death, as the sender's own
// entries are, so no exchange keeps a member alive in memory forever.
//
// Encoding (integers big-endian):
//
//	0  1  version = 1
//	1  2  count (at most maxRemembered)
//	then count entries:
//	   1  name length (1..255), then the name
//	   4  seconds dead
//	   1  address tag: 4 (then 4 bytes and a 2-byte port) or 6 (16 and 2)
//	   2  meta length (at most maxMetaLen), then the meta (NodeInfo format 1)
//
// A member with the cluster key can make others remember members that do not
// exist (at most maxRemembered): they count as unreachable block holders,
// which can only stop new block claims, never make one (docs/security.md).

const (
	rememberedV1 = 1
	// maxRemembered bounds the dead members one push/pull can add.
	maxRemembered = 1024
)

// errRemembered is wrapped by every error decodeRemembered returns.
var errRemembered = errors.New("gossip: bad remembered members")

// remembered is one dead member as a push/pull carries it.
type remembered struct {
	name    string
	deadFor time.Duration // whole seconds
	addr    netip.AddrPort
	meta    []byte
}

// appendRemembered encodes rs (at most maxRemembered of them; the rest are
// left out, as are entries whose name or meta the format cannot carry:
// a name of 1..255 bytes, a meta of 1..maxMetaLen) to b.
func appendRemembered(b []byte, rs []remembered) []byte {
	ok := make([]remembered, 0, min(len(rs), maxRemembered))
	for _, r := range rs {
		if len(ok) < maxRemembered && len(r.name) > 0 && len(r.name) <= 255 && len(r.meta) > 0 && len(r.meta) <= maxMetaLen {
			ok = append(ok, r)
		}
	}
	rs = ok
	b = append(b, rememberedV1)
	b = binary.BigEndian.AppendUint16(b, uint16(len(rs)))
	for _, r := range rs {
		b = append(b, byte(len(r.name)))
		b = append(b, r.name...)
		b = binary.BigEndian.AppendUint32(b, uint32(min(r.deadFor/time.Second, 1<<32-1)))
		if a := r.addr.Addr(); a.Is4() {
			a4 := a.As4()
			b = append(b, 4)
			b = append(b, a4[:]...)
		} else {
			a16 := a.As16()
			b = append(b, 6)
			b = append(b, a16[:]...)
		}
		b = binary.BigEndian.AppendUint16(b, r.addr.Port())
		b = binary.BigEndian.AppendUint16(b, uint16(len(r.meta)))
		b = append(b, r.meta...)
	}
	return b
}

// decodeRemembered decodes b, strictly: a truncated input, an unknown
// version or address tag, an empty or oversized name or meta, more than
// maxRemembered entries or bytes after the last entry are errors wrapping
// errRemembered. The metas are sub-slices of b.
func decodeRemembered(b []byte) ([]remembered, error) {
	if len(b) < 3 {
		return nil, fmt.Errorf("%w: %d bytes, truncated", errRemembered, len(b))
	}
	if b[0] != rememberedV1 {
		return nil, fmt.Errorf("%w: version %d, this build reads only %d", errRemembered, b[0], rememberedV1)
	}
	n := int(binary.BigEndian.Uint16(b[1:]))
	if n > maxRemembered {
		return nil, fmt.Errorf("%w: %d entries, at most %d", errRemembered, n, maxRemembered)
	}
	b = b[3:]
	out := make([]remembered, 0, min(n, len(b)/10))
	for i := range n {
		var r remembered
		if len(b) < 1 || b[0] == 0 || len(b) < 1+int(b[0])+4+1 {
			return nil, fmt.Errorf("%w: entry %d: name truncated", errRemembered, i)
		}
		// As an int: 1+b[0] in byte arithmetic wraps to 0 for a
		// 255-byte name (found by FuzzRemembered).
		nl := int(b[0])
		r.name = string(b[1 : 1+nl])
		b = b[1+nl:]
		r.deadFor = time.Duration(binary.BigEndian.Uint32(b)) * time.Second
		b = b[4:]
		var alen int
		switch b[0] {
		case 4:
			alen = 4
		case 6:
			alen = 16
		default:
			return nil, fmt.Errorf("%w: entry %d (%q): address tag %d", errRemembered, i, r.name, b[0])
		}
		if len(b) < 1+alen+2+2 {
			return nil, fmt.Errorf("%w: entry %d (%q): address truncated", errRemembered, i, r.name)
		}
		a, _ := netip.AddrFromSlice(b[1 : 1+alen])
		r.addr = netip.AddrPortFrom(a, binary.BigEndian.Uint16(b[1+alen:]))
		b = b[1+alen+2:]
		ml := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		if ml == 0 || ml > maxMetaLen || len(b) < ml {
			return nil, fmt.Errorf("%w: entry %d (%q): meta of %d bytes (have %d, at most %d)", errRemembered, i, r.name, ml, len(b), maxMetaLen)
		}
		r.meta = b[:ml:ml]
		b = b[ml:]
		out = append(out, r)
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the last entry", errRemembered, len(b))
	}
	return out, nil
}

// localRemembered is the delegate's LocalState: the table's dead members
// (not this node, not unreadable ones, not those that left).
func (c *Cluster) localRemembered(now time.Time) []byte {
	var rs []remembered
	c.mu.Lock()
	for name, e := range c.members {
		if e.State != Dead || name == c.cfg.Name || e.InfoErr != nil || len(name) > 255 || !e.Addr.IsValid() {
			continue
		}
		meta, err := e.Info.MarshalBinary()
		if err != nil {
			continue
		}
		rs = append(rs, remembered{name: name, deadFor: now.Sub(e.Since), addr: e.Addr, meta: meta})
	}
	c.mu.Unlock()
	if len(rs) == 0 {
		return nil
	}
	return appendRemembered(nil, rs)
}

// mergeRemembered is the delegate's MergeRemoteState: dead members this
// node does not know are added as dead, dead since deadFor ago. Members it
// knows in any state keep what it knows (memberlist has merged the live
// ones before this runs).
func (c *Cluster) mergeRemembered(buf []byte, now time.Time) {
	if len(buf) == 0 {
		return
	}
	rs, err := decodeRemembered(buf)
	if err != nil {
		c.rlog.Warn("remembered members from a push/pull ignored", "err", err)
		return
	}
	added := 0
	c.mu.Lock()
	for _, r := range rs {
		if r.name == c.cfg.Name || r.deadFor >= c.cfg.ForgetAfter {
			continue
		}
		if _, ok := c.members[r.name]; ok {
			continue
		}
		var info NodeInfo
		if flags, err := info.decodeMeta(r.meta); err != nil || flags != 0 {
			continue
		}
		c.members[r.name] = &entry{Member: Member{Name: r.name, Addr: r.addr, State: Dead, Since: now.Add(-r.deadFor), Info: info}}
		added++
	}
	c.mu.Unlock()
	if added > 0 {
		c.notify()
		c.rlog.Info("learned dead members from a push/pull", "count", added)
	}
}
