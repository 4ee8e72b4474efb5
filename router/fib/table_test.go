package fib

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
)

func mustBuild[V any](t testing.TB, routes map[string]V) *Table[V] {
	t.Helper()
	var b Builder[V]
	for s, v := range routes {
		if err := b.Insert(netip.MustParsePrefix(s), v); err != nil {
			t.Fatalf("Insert(%s): %v", s, err)
		}
	}
	return b.Build()
}

func TestLookup(t *testing.T) {
	type probe struct {
		addr string
		want string // "" means no route
	}
	tests := []struct {
		name   string
		routes []string // each route's value is its own text
		probes []probe
	}{
		{
			name: "empty table",
			probes: []probe{
				{"10.0.0.1", ""}, {"::1", ""}, {"0.0.0.0", ""}, {"::ffff:10.0.0.1", ""},
			},
		},
		{
			name:   "IPv4 default route",
			routes: []string{"0.0.0.0/0"},
			probes: []probe{
				{"0.0.0.0", "0.0.0.0/0"}, {"10.1.2.3", "0.0.0.0/0"},
				{"255.255.255.255", "0.0.0.0/0"}, {"::1", ""}, {"2001:db8::1", ""},
			},
		},
		{
			name:   "IPv6 default route",
			routes: []string{"::/0"},
			probes: []probe{
				{"::", "::/0"}, {"2001:db8::1", "::/0"},
				{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::/0"},
				{"10.1.2.3", ""}, {"::ffff:10.1.2.3", ""},
			},
		},
		{
			name:   "IPv4 /32 hosts, at both ends of the space",
			routes: []string{"10.1.2.3/32", "0.0.0.0/32", "255.255.255.255/32", "10.1.2.0/24"},
			probes: []probe{
				{"10.1.2.3", "10.1.2.3/32"}, {"10.1.2.2", "10.1.2.0/24"}, {"10.1.2.4", "10.1.2.0/24"},
				{"0.0.0.0", "0.0.0.0/32"}, {"0.0.0.1", ""},
				{"255.255.255.255", "255.255.255.255/32"}, {"255.255.255.254", ""},
			},
		},
		{
			name: "IPv6 /128 hosts, at both ends of the space",
			routes: []string{"2001:db8::1/128", "::/128", "2001:db8::/64",
				"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"},
			probes: []probe{
				{"2001:db8::1", "2001:db8::1/128"}, {"2001:db8::", "2001:db8::/64"},
				{"2001:db8::2", "2001:db8::/64"}, {"2001:db8::ffff:ffff:ffff:ffff", "2001:db8::/64"},
				{"2001:db8:0:1::", ""}, {"::", "::/128"}, {"::1", ""},
				{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"},
				{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", ""},
			},
		},
		{
			name:   "overlapping IPv4 prefixes",
			routes: []string{"0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.128/25", "10.1.2.200/32"},
			probes: []probe{
				{"9.255.255.255", "0.0.0.0/0"}, {"10.0.0.0", "10.0.0.0/8"},
				{"10.0.255.255", "10.0.0.0/8"}, {"10.1.0.0", "10.1.0.0/16"},
				{"10.1.1.255", "10.1.0.0/16"}, {"10.1.2.0", "10.1.2.0/24"},
				{"10.1.2.127", "10.1.2.0/24"}, {"10.1.2.128", "10.1.2.128/25"},
				{"10.1.2.199", "10.1.2.128/25"}, {"10.1.2.200", "10.1.2.200/32"},
				{"10.1.2.201", "10.1.2.128/25"}, {"10.1.2.255", "10.1.2.128/25"},
				{"10.1.3.0", "10.1.0.0/16"}, {"10.2.0.0", "10.0.0.0/8"},
				{"11.0.0.0", "0.0.0.0/0"},
			},
		},
		{
			name:   "overlapping IPv6 prefixes sharing a start address",
			routes: []string{"2001:db8::/32", "2001:db8::/48", "2001:db8::/64", "2001:db8:0:0:8000::/65"},
			probes: []probe{
				{"2001:db8::", "2001:db8::/64"}, {"2001:db8::7fff:ffff:ffff:ffff", "2001:db8::/64"},
				{"2001:db8::8000:0:0:0", "2001:db8:0:0:8000::/65"},
				{"2001:db8:0:1::", "2001:db8::/48"}, {"2001:db8:1::", "2001:db8::/32"},
				{"2001:db9::", ""}, {"2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", ""},
			},
		},
		{
			name:   "IPv4 and IPv6 are separate",
			routes: []string{"10.0.0.0/8", "::/96", "::a00:0/104"},
			probes: []probe{
				// ::10.1.2.3 (IPv4-compatible, not mapped) has the same low
				// 32 bits as 10.1.2.3 but is IPv6.
				{"::10.1.2.3", "::a00:0/104"}, {"10.1.2.3", "10.0.0.0/8"},
				{"::11.0.0.1", "::/96"}, {"11.0.0.1", ""},
			},
		},
		{
			name:   "IPv4-mapped addresses are looked up as IPv4",
			routes: []string{"10.1.0.0/16", "::/0", "::ffff:0:0/95"},
			probes: []probe{
				{"::ffff:10.1.2.3", "10.1.0.0/16"}, {"::ffff:10.2.0.1", ""},
				{"::fffe:10.1.2.3", "::ffff:0:0/95"}, {"::1", "::/0"},
			},
		},
		{
			name:   "zone is ignored",
			routes: []string{"fe80::/64"},
			probes: []probe{{"fe80::1%eth0", "fe80::/64"}, {"fe81::1%eth0", ""}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			routes := map[string]string{}
			for _, r := range tt.routes {
				routes[r] = r
			}
			tbl := mustBuild(t, routes)
			if got := tbl.Len(); got != len(tt.routes) {
				t.Errorf("Len: got %d, want %d", got, len(tt.routes))
			}
			for _, p := range tt.probes {
				got, ok := tbl.Lookup(netip.MustParseAddr(p.addr))
				if got != p.want || ok != (p.want != "") {
					t.Errorf("Lookup(%s): got %q, %v; want %q, %v", p.addr, got, ok, p.want, p.want != "")
				}
			}
		})
	}
}

func TestLookupZeroAndNil(t *testing.T) {
	tbl := mustBuild(t, map[string]int{"0.0.0.0/0": 1, "::/0": 2})
	if v, ok := tbl.Lookup(netip.Addr{}); ok {
		t.Errorf("Lookup(zero Addr): got %d, true; want no route", v)
	}
	var nilTable *Table[int]
	if v, ok := nilTable.Lookup(netip.MustParseAddr("10.0.0.1")); ok {
		t.Errorf("nil table Lookup: got %d, true; want no route", v)
	}
	if n := nilTable.Len(); n != 0 {
		t.Errorf("nil table Len: got %d, want 0", n)
	}
	for p := range nilTable.All {
		t.Errorf("nil table All: got %s, want nothing", p)
	}
	var zero Table[int]
	if v, ok := zero.Lookup(netip.MustParseAddr("::1")); ok {
		t.Errorf("zero table Lookup: got %d, true; want no route", v)
	}
}

func TestInsertErrors(t *testing.T) {
	var b Builder[int]
	if err := b.Insert(netip.MustParsePrefix("10.0.0.0/8"), 1); err != nil {
		t.Fatalf("Insert(10.0.0.0/8): %v", err)
	}
	tests := []struct {
		name    string
		p       netip.Prefix
		want    error
		mention string
	}{
		{"duplicate", netip.MustParsePrefix("10.0.0.0/8"), ErrDuplicatePrefix, "10.0.0.0/8"},
		{"duplicate after masking", netip.MustParsePrefix("10.9.9.9/8"), ErrDuplicatePrefix, "10.0.0.0/8"},
		{"zero prefix", netip.Prefix{}, ErrInvalidPrefix, "invalid"},
		{"IPv4 length 33", netip.PrefixFrom(netip.MustParseAddr("10.0.0.0"), 33), ErrInvalidPrefix, "invalid"},
		{"IPv6 length -1", netip.PrefixFrom(netip.MustParseAddr("::"), -1), ErrInvalidPrefix, "invalid"},
		{"IPv4-mapped", netip.MustParsePrefix("::ffff:10.1.0.0/112"), ErrInvalidPrefix, "10.1.0.0/16"},
		{"all of IPv4-mapped", netip.MustParsePrefix("::ffff:0.0.0.0/96"), ErrInvalidPrefix, "0.0.0.0/0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := b.Insert(tt.p, 2)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Insert(%s): got %v, want %v", tt.p, err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("Insert(%s): got error %q, want it to mention %q", tt.p, err, tt.mention)
			}
		})
	}
	// Failed inserts leave the builder as it was.
	tbl := b.Build()
	if tbl.Len() != 1 {
		t.Errorf("Len after failed inserts: got %d, want 1", tbl.Len())
	}
	if v, _ := tbl.Lookup(netip.MustParseAddr("10.1.1.1")); v != 1 {
		t.Errorf("Lookup(10.1.1.1) after failed inserts: got %d, want 1", v)
	}
}

func TestInsertMasks(t *testing.T) {
	var b Builder[string]
	for _, s := range []string{"10.1.2.3/8", "2001:db8::1/32", "192.168.1.1/32"} {
		if err := b.Insert(netip.MustParsePrefix(s), s); err != nil {
			t.Fatalf("Insert(%s): %v", s, err)
		}
	}
	var got []string
	for p, v := range b.Build().All {
		got = append(got, p.String()+"="+v)
	}
	want := []string{"10.0.0.0/8=10.1.2.3/8", "192.168.1.1/32=192.168.1.1/32", "2001:db8::/32=2001:db8::1/32"}
	if !slices.Equal(got, want) {
		t.Errorf("All: got %q, want %q", got, want)
	}
}

func TestAllOrder(t *testing.T) {
	in := []string{"::/0", "10.1.0.0/16", "2001:db8::/32", "0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/24", "9.0.0.0/8", "::1/128"}
	want := []string{"0.0.0.0/0", "9.0.0.0/8", "10.0.0.0/8", "10.1.0.0/16", "10.1.0.0/24", "::/0", "::1/128", "2001:db8::/32"}
	for range 5 { // map iteration in the builder is random: order must not be
		routes := map[string]string{}
		for _, s := range in {
			routes[s] = s
		}
		tbl := mustBuild(t, routes)
		var got []string
		for p, v := range tbl.All {
			if p.String() != v {
				t.Fatalf("All: prefix %s came with value %s", p, v)
			}
			got = append(got, v)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("All: got %q, want %q", got, want)
		}
		n := 0
		for range tbl.All {
			n++
			if n == 3 {
				break
			}
		}
		if n != 3 {
			t.Fatalf("All after break: got %d yields, want 3", n)
		}
	}
}

func TestBuildIsSnapshot(t *testing.T) {
	var b Builder[int]
	a := netip.MustParseAddr("10.1.2.3")
	if err := b.Insert(netip.MustParsePrefix("10.0.0.0/8"), 1); err != nil {
		t.Fatal(err)
	}
	first := b.Build()
	if err := b.Insert(netip.MustParsePrefix("10.1.0.0/16"), 2); err != nil {
		t.Fatal(err)
	}
	second := b.Build()
	if v, _ := first.Lookup(a); v != 1 || first.Len() != 1 {
		t.Errorf("first table after later Insert: got Lookup %d Len %d, want 1 and 1", v, first.Len())
	}
	if v, _ := second.Lookup(a); v != 2 || second.Len() != 2 {
		t.Errorf("second table: got Lookup %d Len %d, want 2 and 2", v, second.Len())
	}
	if b.Len() != 2 {
		t.Errorf("Builder.Len: got %d, want 2", b.Len())
	}
}

// TestConcurrentLookup lets -race check that Lookup writes nothing shared.
func TestConcurrentLookup(t *testing.T) {
	tbl := mustBuild(t, map[string]int{"0.0.0.0/0": 0, "10.0.0.0/8": 8, "10.1.0.0/16": 16, "2001:db8::/32": 32})
	probes := map[string]int{"10.1.2.3": 16, "10.2.0.0": 8, "1.1.1.1": 0, "2001:db8::1": 32, "::ffff:10.1.0.1": 16}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 1000 {
				for a, want := range probes {
					if got, ok := tbl.Lookup(netip.MustParseAddr(a)); !ok || got != want {
						t.Errorf("Lookup(%s): got %d, %v; want %d, true", a, got, ok, want)
						return
					}
				}
			}
		})
	}
	wg.Wait()
}

func TestLookupNoAllocs(t *testing.T) {
	tbl := mustBuild(t, map[string]*int{"10.0.0.0/8": new(int), "2001:db8::/32": new(int), "10.1.0.0/16": new(int)})
	for _, s := range []string{"10.1.2.3", "11.0.0.1", "2001:db8::1", "2001:db9::1", "::ffff:10.1.2.3", "fe80::1%eth0"} {
		a := netip.MustParseAddr(s)
		if n := testing.AllocsPerRun(100, func() { _, _ = tbl.Lookup(a) }); n != 0 {
			t.Errorf("Lookup(%s): got %v allocs/op, want 0", s, n)
		}
	}
}
