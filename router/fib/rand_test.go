package fib

import (
	"flag"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

var seedFlag = flag.Uint64("fib.seed", 0, "run TestRandomDifferential with only this seed")

// linear is the reference the Table must agree with: scan every prefix,
// keep the longest that contains the (unmapped) address.
type linear struct {
	pfx  []netip.Prefix
	vals []int
}

func (l *linear) lookup(a netip.Addr) (int, bool) {
	a = a.Unmap()
	best, bits := 0, -1
	for i, p := range l.pfx {
		if p.Bits() > bits && p.Contains(a) {
			best, bits = l.vals[i], p.Bits()
		}
	}
	return best, bits >= 0
}

func randAddr(r *rand.Rand, v4 bool) netip.Addr {
	var b [16]byte
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	if v4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

// randOffset keeps a's first bits and randomizes the rest.
func randOffset(r *rand.Rand, a netip.Addr, bits int) netip.Addr {
	b := a.AsSlice()
	for i := range b {
		keep := max(min(bits-8*i, 8), 0) // bits of byte i to keep
		b[i] = b[i]&^(0xff>>keep) | byte(r.Uint32())&(0xff>>keep)
	}
	out, _ := netip.AddrFromSlice(b)
	return out
}

// randPrefixes returns n distinct masked prefixes, half IPv4 and half IPv6.
// Most are drawn near earlier ones (same leading bits, another length) so
// that nesting, shared start addresses and siblings are common, as they are
// in a real table; a purely random set would hardly ever nest.
func randPrefixes(r *rand.Rand, n int) []netip.Prefix {
	seen := make(map[netip.Prefix]bool, n)
	out := make([]netip.Prefix, 0, n)
	for len(out) < n {
		v4 := r.IntN(2) == 0
		width := 128
		if v4 {
			width = 32
		}
		var a netip.Addr
		switch {
		case len(out) > 0 && r.IntN(4) > 0:
			near := out[r.IntN(len(out))]
			if near.Addr().Is4() != v4 {
				continue
			}
			a = randOffset(r, near.Addr(), r.IntN(near.Bits()+1))
		default:
			a = randAddr(r, v4)
		}
		var bits int
		switch r.IntN(8) {
		case 0:
			bits = 0
		case 1:
			bits = width
		default:
			bits = r.IntN(width + 1)
		}
		p := netip.PrefixFrom(a, bits).Masked()
		if p.Addr().Is4In6() || seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	return out
}

// lastAddr returns the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := range b {
		keep := max(min(p.Bits()-8*i, 8), 0)
		b[i] |= 0xff >> keep
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// probes returns the addresses where a wrong interval would show: each
// prefix's first and last address and their neighbours, a random address
// inside it, random addresses anywhere, and the IPv4-mapped form of some.
func probes(r *rand.Rand, pfx []netip.Prefix, random int) []netip.Addr {
	var out []netip.Addr
	for _, p := range pfx {
		first, last := p.Addr(), lastAddr(p)
		out = append(out, first, last, first.Prev(), last.Next(), randOffset(r, first, p.Bits()))
	}
	for range random {
		out = append(out, randAddr(r, r.IntN(2) == 0))
	}
	for i, a := range out {
		if a.Is4() && i%3 == 0 {
			out = append(out, netip.AddrFrom16(a.As16()))
		}
	}
	return out
}

func TestRandomDifferential(t *testing.T) {
	seeds := []uint64{1, rand.Uint64(), rand.Uint64(), rand.Uint64()}
	if raceEnabled { // the linear scan is what -race slows; it races nothing
		seeds = seeds[:2]
	}
	if *seedFlag != 0 {
		seeds = []uint64{*seedFlag}
	}
	sizes, random := []int{1, 2, 10, 100, 2000}, 2000
	if testing.Short() { // also what runs under qemu-user in CI
		sizes, random = []int{1, 2, 10, 300}, 500
	}
	for _, seed := range seeds {
		t.Logf("seed %d (rerun with -fib.seed=%d)", seed, seed)
		r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		for _, n := range sizes {
			pfx := randPrefixes(r, n)
			ref := &linear{pfx: pfx, vals: make([]int, n)}
			var b Builder[int]
			for i, p := range pfx {
				ref.vals[i] = r.Int()
				if err := b.Insert(p, ref.vals[i]); err != nil {
					t.Fatalf("seed %d n %d: Insert(%s): %v", seed, n, p, err)
				}
			}
			tbl := b.Build()
			checkInvariants(t, tbl)
			if tbl.Len() != n {
				t.Fatalf("seed %d n %d: Len: got %d, want %d", seed, n, tbl.Len(), n)
			}
			wantAll := slices.SortedFunc(slices.Values(pfx), netip.Prefix.Compare)
			inserted := make(map[netip.Prefix]int, n)
			for i, p := range pfx {
				inserted[p] = ref.vals[i]
			}
			var gotAll []netip.Prefix
			for p, v := range tbl.All {
				if w, ok := inserted[p]; !ok || w != v {
					t.Fatalf("seed %d n %d: All yielded %s=%d, not inserted", seed, n, p, v)
				}
				gotAll = append(gotAll, p)
			}
			if !slices.Equal(gotAll, wantAll) {
				t.Fatalf("seed %d n %d: All: got %v, want %v", seed, n, gotAll, wantAll)
			}
			for _, a := range probes(r, pfx, random) {
				got, gotOK := tbl.Lookup(a)
				want, wantOK := ref.lookup(a)
				if got != want || gotOK != wantOK {
					t.Fatalf("seed %d n %d: Lookup(%s): got %d, %v; want %d, %v", seed, n, a, got, gotOK, want, wantOK)
				}
			}
		}
	}
}

// checkInvariants checks what search4/search6 rely on: intervals start at
// address 0, are strictly increasing, and adjacent ones differ.
func checkInvariants[V any](t *testing.T, tbl *Table[V]) {
	t.Helper()
	if len(tbl.start4) != len(tbl.idx4) || len(tbl.start6) != len(tbl.idx6) {
		t.Fatalf("interval arrays differ in length: %d/%d, %d/%d", len(tbl.start4), len(tbl.idx4), len(tbl.start6), len(tbl.idx6))
	}
	if len(tbl.start4) == 0 || tbl.start4[0] != 0 || len(tbl.start6) == 0 || tbl.start6[0] != (u128{}) {
		t.Fatalf("intervals do not start at address 0")
	}
	for i := 1; i < len(tbl.start4); i++ {
		if tbl.start4[i] <= tbl.start4[i-1] || tbl.idx4[i] == tbl.idx4[i-1] {
			t.Fatalf("IPv4 interval %d: start %d after %d, index %d after %d", i, tbl.start4[i], tbl.start4[i-1], tbl.idx4[i], tbl.idx4[i-1])
		}
	}
	for i := 1; i < len(tbl.start6); i++ {
		if !tbl.start6[i-1].less(tbl.start6[i]) || tbl.idx6[i] == tbl.idx6[i-1] {
			t.Fatalf("IPv6 interval %d: start %v after %v, index %d after %d", i, tbl.start6[i], tbl.start6[i-1], tbl.idx6[i], tbl.idx6[i-1])
		}
	}
	if n := 2*tbl.Len() + 2; len(tbl.start4)+len(tbl.start6) > n {
		t.Fatalf("got %d intervals for %d prefixes, want at most %d", len(tbl.start4)+len(tbl.start6), tbl.Len(), n)
	}
}
