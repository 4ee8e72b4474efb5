package fib

import (
	"encoding/binary"
	"net/netip"
)

// noRoute marks an interval that no prefix covers.
const noRoute = -1

// u128 is an IPv6 address as a big-endian pair, so that ordering addresses
// is two integer comparisons.
type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

func addr4(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func addr6(a netip.Addr) u128 {
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// Table maps IPv4 and IPv6 prefixes to values of type V and answers
// longest-prefix-match queries. It is immutable: build it with a Builder and
// replace it whole (atomic.Pointer[Table[V]]) rather than change it. Any
// number of goroutines may use a Table at once. A nil *Table is an empty
// table.
type Table[V any] struct {
	// start4[i] is the first address of the i-th IPv4 interval and idx4[i]
	// the index in pfx/vals of its longest match, or noRoute. start4[0] is
	// always 0, intervals are sorted and adjacent ones never share an
	// index. Same for the IPv6 pair.
	start4 []uint32
	idx4   []int32
	start6 []u128
	idx6   []int32

	// pfx and vals are the routes in All order: IPv4 before IPv6, then by
	// address, then shorter prefix first.
	pfx  []netip.Prefix
	vals []V
}

// Lookup returns the value of the longest prefix that contains a, and
// whether there is one. An IPv4-mapped IPv6 address is looked up as its IPv4
// address; an IPv6 zone is ignored; the zero Addr matches nothing. Lookup
// does not allocate.
func (t *Table[V]) Lookup(a netip.Addr) (V, bool) {
	var zero V
	if t == nil {
		return zero, false
	}
	a = a.Unmap()
	i := int32(noRoute)
	switch {
	case a.Is4():
		i = search4(t.start4, t.idx4, addr4(a))
	case a.Is6():
		i = search6(t.start6, t.idx6, addr6(a))
	}
	if i == noRoute {
		return zero, false
	}
	return t.vals[i], true
}

// search4 returns idx[j] for the last j with start[j] <= x. The loop keeps
// the answer in [base, base+n) and halves n each round with a conditional
// move instead of a branch, so its cost depends only on len(start).
func search4(start []uint32, idx []int32, x uint32) int32 {
	if len(start) == 0 {
		return noRoute
	}
	base, n := 0, len(start)
	for n > 1 {
		half := n >> 1
		if start[base+half] <= x {
			base += half
		}
		n -= half
	}
	return idx[base]
}

// search6 is search4 for IPv6.
func search6(start []u128, idx []int32, x u128) int32 {
	if len(start) == 0 {
		return noRoute
	}
	base, n := 0, len(start)
	for n > 1 {
		half := n >> 1
		if !x.less(start[base+half]) {
			base += half
		}
		n -= half
	}
	return idx[base]
}

// Len returns the number of prefixes in t.
func (t *Table[V]) Len() int {
	if t == nil {
		return 0
	}
	return len(t.pfx)
}

// All yields every prefix (masked) and its value: IPv4 before IPv6, then by
// address, then shorter prefix first. Use it as `for p, v := range t.All`.
func (t *Table[V]) All(yield func(netip.Prefix, V) bool) {
	if t == nil {
		return
	}
	for i, p := range t.pfx {
		if !yield(p, t.vals[i]) {
			return
		}
	}
}
