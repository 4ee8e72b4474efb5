package blocks

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestBlocks(t *testing.T) {
	tests := []struct {
		cidr    string
		bits    int
		n       int
		first   string
		last    string
		wantErr string
	}{
		{cidr: "10.42.0.0/16", bits: 24, n: 256, first: "10.42.0.0/24", last: "10.42.255.0/24"},
		{cidr: "10.42.0.0/16", bits: 16, n: 1, first: "10.42.0.0/16", last: "10.42.0.0/16"},
		{cidr: "10.42.0.0/16", bits: 17, n: 2, first: "10.42.0.0/17", last: "10.42.128.0/17"},
		{cidr: "10.42.0.0/16", bits: 26, n: 1024, first: "10.42.0.0/26", last: "10.42.255.192/26"},
		{cidr: "10.42.0.0/16", bits: 32, n: 65536, first: "10.42.0.0/32", last: "10.42.255.255/32"},
		{cidr: "10.0.0.0/8", bits: 24, n: 65536, first: "10.0.0.0/24", last: "10.255.255.0/24"},
		{cidr: "10.42.3.0/29", bits: 31, n: 4, first: "10.42.3.0/31", last: "10.42.3.6/31"},
		{cidr: "0.0.0.0/0", bits: 2, n: 4, first: "0.0.0.0/2", last: "192.0.0.0/2"},
		{cidr: "fd42::/48", bits: 64, n: 65536, first: "fd42::/64", last: "fd42:0:0:ffff::/64"},
		{cidr: "fd42::/112", bits: 120, n: 256, first: "fd42::/120", last: "fd42::ff00/120"},
		{cidr: "fd42::/120", bits: 128, n: 256, first: "fd42::/128", last: "fd42::ff/128"},
		{cidr: "10.42.0.0/16", bits: 15, wantErr: "want /16../32"},
		{cidr: "10.42.0.0/16", bits: 33, wantErr: "want /16../32"},
		{cidr: "10.0.0.0/8", bits: 25, wantErr: "more than 65536"},
		{cidr: "fd42::/48", bits: 65, wantErr: "more than 65536"},
		{cidr: "10.42.1.0/16", bits: 24, wantErr: "host bits set (want 10.42.0.0/16)"},
		{cidr: "", bits: 24, wantErr: "not a valid prefix"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s_%d", tt.cidr, tt.bits), func(t *testing.T) {
			var cidr netip.Prefix
			if tt.cidr != "" {
				cidr = netip.MustParsePrefix(tt.cidr)
			}
			got, err := Blocks(cidr, tt.bits)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %d blocks, err %v; want error containing %q", len(got), err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.n {
				t.Fatalf("got %d blocks, want %d", len(got), tt.n)
			}
			if got[0].String() != tt.first || got[len(got)-1].String() != tt.last {
				t.Errorf("got %v … %v, want %s … %s", got[0], got[len(got)-1], tt.first, tt.last)
			}
			// Ascending, disjoint, each inside cidr with the right length and
			// index: blockIndex inverts blockAt.
			for i, b := range got {
				if b.Bits() != tt.bits || !cidr.Contains(b.Addr()) || b.Masked() != b {
					t.Fatalf("block %d: got %v, not a masked /%d of %v", i, b, tt.bits, cidr)
				}
				if j := blockIndex(cidr, tt.bits, b.Addr()); j != i {
					t.Fatalf("blockIndex(%v): got %d, want %d", b, j, i)
				}
				if i > 0 && got[i-1].Addr().Compare(b.Addr()) >= 0 {
					t.Fatalf("blocks %d, %d out of order: %v, %v", i-1, i, got[i-1], b)
				}
			}
		})
	}
}

func TestChooseSpreads(t *testing.T) {
	cidr := pfx("10.42.0.0/16")
	starts := map[netip.Prefix]int{}
	for i := 1; i <= 50; i++ {
		p, ok := Choose(cidr, 24, fmt.Sprintf("h%d", i), nil)
		if !ok {
			t.Fatalf("h%d: no block in an empty cluster", i)
		}
		starts[p]++
	}
	// 50 uniform picks among 256 give about 45.6 distinct values on average
	// (256·(1-(255/256)^50)); a hash that clusters similar names gives far fewer.
	t.Logf("h1..h50: %d distinct starting blocks of 256", len(starts))
	if len(starts) < 42 {
		t.Errorf("got %d distinct starting blocks for h1..h50, want >= 42", len(starts))
	}
	// The same name always starts at the same block.
	a, _ := Choose(cidr, 24, "h7", nil)
	b, _ := Choose(cidr, 24, "h7", nil)
	if a != b {
		t.Errorf("h7: got %v then %v, want the same block", a, b)
	}
}

// TestChooseSpreadsSmallCluster: FNV-1a's low bits depend only on the low
// bits of each byte, so without mixing, names differing only in a byte's high
// bits ("h-a" and "h-q": 0x61, 0x71) would always start at the same block of
// a 16-block cluster.
func TestChooseSpreadsSmallCluster(t *testing.T) {
	cidr := pfx("10.42.0.0/20")
	same := 0
	for c := 'a'; c <= 'j'; c++ {
		p1, _ := Choose(cidr, 24, "h-"+string(c), nil)
		p2, _ := Choose(cidr, 24, "h-"+string(c+16), nil)
		if p1 == p2 {
			same++
		}
	}
	// A uniform hash makes about 10/16 of these pairs collide.
	if same > 3 {
		t.Errorf("got %d of 10 name pairs starting at the same block of 16, want <= 3", same)
	}
}

func TestChooseAvoidsClaims(t *testing.T) {
	cidr := pfx("10.42.0.0/16")
	start, _ := Choose(cidr, 24, "me", nil)
	_, step := probe("me", 256)
	next := func(p netip.Prefix, k int) netip.Prefix {
		return blockAt(cidr, 24, (blockIndex(cidr, 24, p.Addr())+k*step)%256)
	}
	tests := []struct {
		name   string
		claims []Claim
		want   netip.Prefix
	}{
		{"free start", nil, start},
		{"start held by a live node", []Claim{{Node: "x", Block: start, Live: true}}, next(start, 1)},
		{"start held by a dead node", []Claim{{Node: "x", Block: start}}, next(start, 1)},
		{"start and the next held", []Claim{{Node: "x", Block: start}, {Node: "y", Block: next(start, 1)}}, next(start, 2)},
		{"static /25 inside the start block", []Claim{{Node: "s", Block: netip.PrefixFrom(start.Addr(), 25), Static: true}}, next(start, 1)},
		{"claim of a longer prefix inside the start block", []Claim{{Node: "x", Block: netip.PrefixFrom(start.Addr(), 30)}}, next(start, 1)},
		{"unmasked claim", []Claim{{Node: "x", Block: netip.PrefixFrom(next(start, 0).Addr().Next(), 24)}}, next(start, 1)},
		{"claims outside the cluster or another family are ignored", []Claim{
			{Node: "x", Block: pfx("10.43.0.0/16"), Static: true},
			{Node: "y", Block: pfx("fd42::/64")},
			{Node: "z", Block: pfx("::ffff:10.42.0.0/112")}, // IPv4-mapped IPv6 is IPv6
		}, start},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Choose(cidr, 24, "me", tt.claims)
			if !ok || got != tt.want {
				t.Errorf("got %v, %v; want %v, true", got, ok, tt.want)
			}
		})
	}
}

// TestChooseWraps: the probe visits every block, wrapping around; with all
// but the last block of its order held, that one is chosen.
func TestChooseWraps(t *testing.T) {
	cidr := pfx("10.42.0.0/24")
	bits := 28 // 16 blocks
	start, step := probe("me", 16)
	seen := map[int]bool{}
	var claims []Claim
	for k := range 16 {
		i := (start + k*step) & 15
		seen[i] = true
		if k < 15 {
			claims = append(claims, Claim{Node: fmt.Sprint("x", i), Block: blockAt(cidr, bits, i)})
		}
	}
	if len(seen) != 16 {
		t.Fatalf("probe order of me (start %d, step %d) visits %d of 16 blocks", start, step, len(seen))
	}
	want := blockAt(cidr, bits, (start+15*step)&15)
	if got, ok := Choose(cidr, bits, "me", claims); !ok || got != want {
		t.Errorf("start %d step %d: got %v, %v; want %v, true", start, step, got, ok, want)
	}
}

// TestChooseStormRounds: a simulated start-up storm (every host without a
// block chooses with the blocks settled so far; of hosts that chose the
// same block one keeps it) settles in few rounds. Each round costs a
// claim's settle time in a real cluster.
func TestChooseStormRounds(t *testing.T) {
	cidr := pfx("10.42.0.0/16")
	for _, tc := range []struct {
		hosts     int
		maxRounds float64
	}{{100, 3.2}, {200, 4.5}} {
		const trials = 50
		rounds := 0
		for trial := range trials {
			var settled []Claim
			var pending []string
			for i := 1; i <= tc.hosts; i++ {
				pending = append(pending, fmt.Sprintf("t%d-h%d", trial, i))
			}
			for len(pending) > 0 {
				rounds++
				pick := map[netip.Prefix][]string{}
				for _, n := range pending {
					p, ok := Choose(cidr, 24, n, settled)
					if !ok {
						t.Fatalf("%d hosts: no free block", tc.hosts)
					}
					pick[p] = append(pick[p], n)
				}
				pending = pending[:0]
				for p, ns := range pick {
					settled = append(settled, Claim{Node: ns[0], Block: p})
					pending = append(pending, ns[1:]...)
				}
			}
		}
		mean := float64(rounds) / trials
		t.Logf("%d hosts in 256 blocks: %.2f rounds on average", tc.hosts, mean)
		if mean > tc.maxRounds {
			t.Errorf("%d hosts: %.2f rounds on average, want at most %.1f", tc.hosts, mean, tc.maxRounds)
		}
	}
}

func TestChooseNeverTakesHeld(t *testing.T) {
	// Fill a 64-block cluster one Choose at a time with random interleaved
	// statics; no pick may overlap anything held, and the last one fails.
	cidr := pfx("10.42.0.0/18")
	var claims []Claim
	claims = append(claims,
		Claim{Node: "s1", Block: pfx("10.42.5.0/25"), Static: true},
		Claim{Node: "s2", Block: pfx("10.42.32.0/22"), Static: true}, // 4 blocks
		Claim{Node: "d", Block: pfx("10.42.60.0/23")},                // 2 blocks, dead, still held
	)
	free := 64 - 1 - 4 - 2
	for i := range free {
		node := fmt.Sprintf("n%d", i)
		p, ok := Choose(cidr, 24, node, claims)
		if !ok {
			t.Fatalf("pick %d: cluster full with %d claims, want a free block", i, len(claims))
		}
		for _, c := range claims {
			if c.Block.Overlaps(p) {
				t.Fatalf("pick %d (%s): got %v, which overlaps %v held by %s", i, node, p, c.Block, c.Node)
			}
		}
		claims = append(claims, Claim{Node: node, Block: p})
	}
	if p, ok := Choose(cidr, 24, "late", claims); ok {
		t.Errorf("full cluster: got %v, true; want ok=false", p)
	}
	// A static covering the whole cluster leaves nothing.
	if p, ok := Choose(cidr, 24, "late", []Claim{{Node: "s", Block: pfx("10.0.0.0/8"), Static: true}}); ok {
		t.Errorf("cluster inside a static /8: got %v, true; want ok=false", p)
	}
	if p, ok := Choose(cidr, 33, "x", nil); ok {
		t.Errorf("invalid bits: got %v, true; want ok=false", p)
	}
}
