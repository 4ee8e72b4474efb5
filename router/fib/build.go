package fib

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
)

var (
	// ErrInvalidPrefix reports a prefix Insert cannot hold: the zero
	// Prefix, a bad length, or one inside ::ffff:0:0/96 (never matched,
	// since Lookup unmaps IPv4-mapped addresses).
	ErrInvalidPrefix = errors.New("fib: invalid prefix")
	// ErrDuplicatePrefix reports a prefix inserted twice (after masking).
	ErrDuplicatePrefix = errors.New("fib: duplicate prefix")
)

// Builder collects prefixes for a Table. The zero Builder is empty and ready
// to use. A Builder is not safe for concurrent use.
type Builder[V any] struct {
	routes map[netip.Prefix]V
}

// Insert adds p → v. p is masked first (10.1.2.3/8 is stored as 10.0.0.0/8);
// inserting a prefix that is already present, or an invalid one, is an error
// and leaves the Builder unchanged.
func (b *Builder[V]) Insert(p netip.Prefix, v V) error {
	if !p.IsValid() {
		return fmt.Errorf("%w: %s", ErrInvalidPrefix, p)
	}
	m := p.Masked()
	if m.Addr().Is4In6() {
		return fmt.Errorf("%w: %s is IPv4-mapped; insert %s instead", ErrInvalidPrefix, p,
			netip.PrefixFrom(m.Addr().Unmap(), m.Bits()-96))
	}
	if _, dup := b.routes[m]; dup {
		if m != p {
			return fmt.Errorf("%w: %s (as %s)", ErrDuplicatePrefix, m, p)
		}
		return fmt.Errorf("%w: %s", ErrDuplicatePrefix, m)
	}
	if len(b.routes) >= math.MaxInt32 { // indices are int32
		return fmt.Errorf("fib: insert %s: table full", m)
	}
	if b.routes == nil {
		b.routes = make(map[netip.Prefix]V)
	}
	b.routes[m] = v
	return nil
}

// Len returns the number of prefixes inserted so far.
func (b *Builder[V]) Len() int { return len(b.routes) }

// Build returns a Table holding the prefixes inserted so far. The Table
// shares nothing with the Builder, which stays usable: later Inserts do not
// change tables already built.
func (b *Builder[V]) Build() *Table[V] {
	t := &Table[V]{
		pfx:  make([]netip.Prefix, 0, len(b.routes)),
		vals: make([]V, len(b.routes)),
	}
	for p := range b.routes {
		t.pfx = append(t.pfx, p)
	}
	// Compare orders IPv4 before IPv6, then by address, then shorter
	// first: the order All promises and the order the sweep needs, with
	// every prefix after the prefixes that contain it.
	slices.SortFunc(t.pfx, netip.Prefix.Compare)
	n4 := 0
	for i, p := range t.pfx {
		t.vals[i] = b.routes[p]
		if p.Addr().Is4() {
			n4 = i + 1
		}
	}

	var iv intervals
	iv.sweep(t.pfx[:n4], 0, 32)
	t.start4 = make([]uint32, len(iv.start))
	for i, s := range iv.start {
		t.start4[i] = uint32(s.lo)
	}
	t.idx4 = slices.Clone(iv.idx)

	iv = intervals{}
	iv.sweep(t.pfx[n4:], n4, 128)
	t.start6 = slices.Clone(iv.start)
	t.idx6 = slices.Clone(iv.idx)
	return t
}

// intervals accumulates the partition of one address family into maximal
// runs with the same longest match.
type intervals struct {
	start []u128
	idx   []int32
}

// emit starts a new interval at s whose longest match is idx. An interval
// already starting at s is empty and is replaced; an interval with the same
// match as the one before it is merged into it.
func (iv *intervals) emit(s u128, idx int32) {
	if n := len(iv.start); n > 0 && iv.start[n-1] == s {
		iv.start, iv.idx = iv.start[:n-1], iv.idx[:n-1]
	}
	if n := len(iv.idx); n > 0 && iv.idx[n-1] == idx {
		return
	}
	iv.start = append(iv.start, s)
	iv.idx = append(iv.idx, idx)
}

// sweep partitions a width-bit address space (32 or 128) given its prefixes
// in Prefix.Compare order; prefix i gets index base+i. Two prefixes either
// nest or are disjoint, so walking them in order with a stack of the
// prefixes containing the current address gives each interval's longest
// match: the top of the stack.
func (iv *intervals) sweep(pfx []netip.Prefix, base, width int) {
	type open struct {
		last u128 // last address of the prefix, inclusive
		idx  int32
	}
	var stack []open
	top := func() int32 {
		if len(stack) == 0 {
			return noRoute
		}
		return stack[len(stack)-1].idx
	}
	// closeBefore pops the prefixes that end before s (all of them if
	// all); after each, the enclosing prefix (or no route) resumes.
	closeBefore := func(s u128, all bool) {
		for len(stack) > 0 {
			o := stack[len(stack)-1]
			if !all && !o.last.less(s) {
				return
			}
			stack = stack[:len(stack)-1]
			if next, ok := o.last.inc(width); ok {
				iv.emit(next, top())
			}
		}
	}
	iv.emit(u128{}, noRoute)
	for i, p := range pfx {
		s := toU128(p.Addr(), width)
		closeBefore(s, false)
		idx := int32(base + i)
		stack = append(stack, open{last: s.or(hostMask(width - p.Bits())), idx: idx})
		iv.emit(s, idx)
	}
	closeBefore(u128{}, true)
}

func toU128(a netip.Addr, width int) u128 {
	if width == 32 {
		return u128{lo: uint64(addr4(a))}
	}
	return addr6(a)
}

func (a u128) or(b u128) u128 { return u128{a.hi | b.hi, a.lo | b.lo} }

// hostMask returns n low one bits (0 <= n <= 128). Go shifts of 64 or
// more give 0, which the n >= 64 arm relies on for n == 128.
func hostMask(n int) u128 {
	if n >= 64 {
		return u128{hi: 1<<(n-64) - 1, lo: math.MaxUint64}
	}
	return u128{lo: 1<<n - 1}
}

// inc returns a+1, or false if a is the last address of a width-bit space.
func (a u128) inc(width int) (u128, bool) {
	if a == hostMask(width) {
		return u128{}, false
	}
	a.lo++
	if a.lo == 0 {
		a.hi++
	}
	return a, true
}
