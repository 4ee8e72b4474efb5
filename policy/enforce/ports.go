package enforce

import (
	"slices"

	"github.com/drovernet/drover/policy"
)

// portSet is a union of protocol/port ranges, kept canonical (sorted,
// merged) so that equal sets compare equal and its boxes are disjoint.
type portSet struct {
	// all admits every protocol and port (a rule without ports).
	all bool
	// ranges per protocol: TCP, UDP, SCTP.
	ranges [3][]portRange
}

type portRange struct{ lo, hi uint16 }

var protos = [3]policy.Protocol{policy.TCP, policy.UDP, policy.SCTP}

func protoIndex(p policy.Protocol) int {
	return slices.Index(protos[:], p)
}

func (ps *portSet) empty() bool {
	if ps.all {
		return false
	}
	for _, r := range ps.ranges {
		if len(r) > 0 {
			return false
		}
	}
	return true
}

func (ps *portSet) clone() *portSet {
	c := &portSet{all: ps.all}
	for i, r := range ps.ranges {
		c.ranges[i] = slices.Clone(r)
	}
	return c
}

func (ps *portSet) add(p policy.Protocol, lo, hi uint16) {
	i := protoIndex(p)
	if i < 0 || ps.all {
		return
	}
	ps.ranges[i] = mergeRanges(append(ps.ranges[i], portRange{lo, hi}))
}

func (ps *portSet) union(o *portSet) {
	if ps.all {
		return
	}
	if o.all {
		*ps = portSet{all: true}
		return
	}
	for i := range ps.ranges {
		if len(o.ranges[i]) > 0 {
			ps.ranges[i] = mergeRanges(append(ps.ranges[i], o.ranges[i]...))
		}
	}
}

func (ps *portSet) equal(o *portSet) bool {
	if ps.all != o.all {
		return false
	}
	for i := range ps.ranges {
		if !slices.Equal(ps.ranges[i], o.ranges[i]) {
			return false
		}
	}
	return true
}

// mergeRanges sorts rs and merges overlapping and adjacent ranges.
func mergeRanges(rs []portRange) []portRange {
	slices.SortFunc(rs, func(a, b portRange) int { return int(a.lo) - int(b.lo) })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && uint32(r.lo) <= uint32(out[n-1].hi)+1 {
			out[n-1].hi = max(out[n-1].hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

type box struct {
	protoLo, protoHi uint8
	portLo, portHi   uint16
}

// boxes are ps as disjoint protocol x port boxes: one for everything, or
// one per protocol and port range.
func (ps *portSet) boxes() []box {
	if ps.all {
		return []box{{0, 255, 0, 65535}}
	}
	var out []box
	for i, rs := range ps.ranges {
		n := protos[i].Number()
		for _, r := range rs {
			out = append(out, box{n, n, r.lo, r.hi})
		}
	}
	return out
}
