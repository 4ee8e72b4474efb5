package fib

import (
	"net/netip"
	"testing"
)

// FuzzTable builds a table from fuzzer-chosen prefixes and checks every
// lookup against the linear scan. Input: records of 1 byte length + 4 or 16
// address bytes (family from the length byte's top bit), then the rest as
// probe addresses, 16 bytes each (IPv4-mapped probes included).
func FuzzTable(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0x00, 0, 0, 0, 0})                                        // 0.0.0.0/0, no probes
	f.Add([]byte{0x18, 10, 1, 2, 3, 0x20, 10, 1, 2, 3, 0x08, 10, 0, 0, 0}) // nested IPv4
	f.Add(append([]byte{0x80 | 64, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		0xff, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1)) // IPv6 /64 then a probe
	f.Add([]byte{0x20, 255, 255, 255, 255, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 255, 255, 255, 255}) // top /32, mapped probe
	f.Fuzz(func(t *testing.T, in []byte) {
		var b Builder[int]
		ref := &linear{}
		for len(in) > 0 && in[0] != 0xff && len(ref.pfx) < maxFuzzPrefixes {
			bits, v6 := int(in[0]&0x7f), in[0]&0x80 != 0
			n := 4
			if v6 {
				n = 16
			}
			if len(in) < 1+n {
				break
			}
			var a netip.Addr
			if v6 {
				a = netip.AddrFrom16([16]byte(in[1:17]))
			} else {
				a = netip.AddrFrom4([4]byte(in[1:5]))
			}
			in = in[1+n:]
			p := netip.PrefixFrom(a, bits)
			err := b.Insert(p, len(ref.pfx))
			m := p.Masked()
			valid := p.IsValid() && !m.Addr().Is4In6()
			dup := valid && containsPrefix(ref.pfx, m)
			if (err == nil) != (valid && !dup) {
				t.Fatalf("Insert(%s): got %v, want error %v", p, err, !valid || dup)
			}
			if err == nil {
				ref.pfx = append(ref.pfx, m)
				ref.vals = append(ref.vals, len(ref.pfx)-1)
			}
		}
		tbl := b.Build()
		checkInvariants(t, tbl)
		var addrs []netip.Addr
		for _, p := range ref.pfx {
			addrs = append(addrs, p.Addr(), lastAddr(p), p.Addr().Prev(), lastAddr(p).Next())
		}
		if len(in) > 0 {
			in = in[1:] // the 0xff separator
		}
		for ; len(in) >= 16; in = in[16:] {
			addrs = append(addrs, netip.AddrFrom16([16]byte(in[:16])))
		}
		for _, a := range addrs {
			got, gotOK := tbl.Lookup(a)
			want, wantOK := ref.lookup(a)
			if got != want || gotOK != wantOK {
				t.Fatalf("Lookup(%s): got %d, %v; want %d, %v (table %v)", a, got, gotOK, want, wantOK, ref.pfx)
			}
		}
	})
}

// maxFuzzPrefixes bounds the prefixes FuzzTable reads from one input, so
// that the quadratic reference check keeps executions fast.
const maxFuzzPrefixes = 128

func containsPrefix(ps []netip.Prefix, p netip.Prefix) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}
