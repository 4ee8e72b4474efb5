package blocks

import (
	"maps"
	"math/rand/v2"
	"net/netip"
	"testing"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestOwners(t *testing.T) {
	tests := []struct {
		name   string
		claims []Claim
		want   map[netip.Prefix]string
	}{
		{
			name: "empty",
			want: map[netip.Prefix]string{},
		},
		{
			name: "distinct blocks all kept",
			claims: []Claim{
				{Node: "a", Block: pfx("10.42.1.0/24"), Since: 5},
				{Node: "b", Block: pfx("10.42.2.0/24"), Since: 3},
			},
			want: map[netip.Prefix]string{pfx("10.42.1.0/24"): "a", pfx("10.42.2.0/24"): "b"},
		},
		{
			name: "earliest since wins",
			claims: []Claim{
				{Node: "a", Block: pfx("10.42.1.0/24"), Since: 20},
				{Node: "b", Block: pfx("10.42.1.0/24"), Since: 10},
			},
			want: map[netip.Prefix]string{pfx("10.42.1.0/24"): "b"},
		},
		{
			name: "tie on since goes to smallest name",
			claims: []Claim{
				{Node: "host-b", Block: pfx("10.42.1.0/24"), Since: 10},
				{Node: "host-a", Block: pfx("10.42.1.0/24"), Since: 10},
				{Node: "host-c", Block: pfx("10.42.1.0/24"), Since: 10},
			},
			want: map[netip.Prefix]string{pfx("10.42.1.0/24"): "host-a"},
		},
		{
			name: "name order is bytewise, not numeric",
			claims: []Claim{
				{Node: "h10", Block: pfx("10.42.1.0/24"), Since: 1},
				{Node: "h9", Block: pfx("10.42.1.0/24"), Since: 1},
			},
			want: map[netip.Prefix]string{pfx("10.42.1.0/24"): "h10"},
		},
		{
			name: "static beats an older block claim on the same prefix",
			claims: []Claim{
				{Node: "a", Block: pfx("10.42.1.0/24"), Since: 1},
				{Node: "s", Block: pfx("10.42.1.0/24"), Since: 99, Static: true},
			},
			want: map[netip.Prefix]string{pfx("10.42.1.0/24"): "s"},
		},
		{
			name: "block inside a static /16 loses",
			claims: []Claim{
				{Node: "a", Block: pfx("10.42.7.0/24"), Since: 1},
				{Node: "b", Block: pfx("10.43.7.0/24"), Since: 1},
				{Node: "s", Block: pfx("10.42.0.0/16"), Since: 50, Static: true},
			},
			want: map[netip.Prefix]string{pfx("10.42.0.0/16"): "s", pfx("10.43.7.0/24"): "b"},
		},
		{
			name: "static /25 inside a block makes the whole block lose",
			claims: []Claim{
				{Node: "a", Block: pfx("10.42.7.0/24"), Since: 1},
				{Node: "s", Block: pfx("10.42.7.128/25"), Since: 50, Static: true},
			},
			want: map[netip.Prefix]string{pfx("10.42.7.128/25"): "s"},
		},
		{
			name: "same static prefix from two nodes: earliest since, then name",
			claims: []Claim{
				{Node: "z", Block: pfx("192.168.0.0/24"), Since: 1, Static: true},
				{Node: "b", Block: pfx("192.168.0.0/24"), Since: 2, Static: true},
				{Node: "a", Block: pfx("192.168.1.0/24"), Since: 2, Static: true},
				{Node: "c", Block: pfx("192.168.1.0/24"), Since: 2, Static: true},
			},
			want: map[netip.Prefix]string{pfx("192.168.0.0/24"): "z", pfx("192.168.1.0/24"): "a"},
		},
		{
			name: "overlapping statics are all kept (longest match decides)",
			claims: []Claim{
				{Node: "agg", Block: pfx("10.0.0.0/8"), Static: true},
				{Node: "one", Block: pfx("10.9.0.0/16"), Static: true},
			},
			want: map[netip.Prefix]string{pfx("10.0.0.0/8"): "agg", pfx("10.9.0.0/16"): "one"},
		},
		{
			name: "many-way conflict over two blocks",
			claims: []Claim{
				{Node: "e", Block: pfx("10.42.1.0/24"), Since: 7},
				{Node: "d", Block: pfx("10.42.1.0/24"), Since: 5},
				{Node: "c", Block: pfx("10.42.1.0/24"), Since: 5},
				{Node: "b", Block: pfx("10.42.2.0/24"), Since: 9},
				{Node: "a", Block: pfx("10.42.2.0/24"), Since: 9},
				{Node: "f", Block: pfx("10.42.2.0/24"), Since: 8},
				{Node: "g", Block: pfx("10.42.3.0/24"), Since: 100},
			},
			want: map[netip.Prefix]string{pfx("10.42.1.0/24"): "c", pfx("10.42.2.0/24"): "f", pfx("10.42.3.0/24"): "g"},
		},
		{
			name: "blocks of different lengths: older /23 beats both /24 halves",
			claims: []Claim{
				{Node: "x", Block: pfx("10.42.0.0/24"), Since: 2},
				{Node: "y", Block: pfx("10.42.1.0/24"), Since: 3},
				{Node: "w", Block: pfx("10.42.0.0/23"), Since: 1},
			},
			want: map[netip.Prefix]string{pfx("10.42.0.0/23"): "w"},
		},
		{
			name: "a /23 that lost to a static does not shadow a /24 beside the static",
			claims: []Claim{
				{Node: "w", Block: pfx("10.42.0.0/23"), Since: 1},
				{Node: "y", Block: pfx("10.42.1.0/24"), Since: 3},
				{Node: "s", Block: pfx("10.42.0.0/24"), Since: 9, Static: true},
			},
			want: map[netip.Prefix]string{pfx("10.42.0.0/24"): "s", pfx("10.42.1.0/24"): "y"},
		},
		{
			name: "dead owner keeps its block",
			claims: []Claim{
				{Node: "dead", Block: pfx("10.42.1.0/24"), Since: 1, Live: false},
				{Node: "new", Block: pfx("10.42.1.0/24"), Since: 2, Live: true},
			},
			want: map[netip.Prefix]string{pfx("10.42.1.0/24"): "dead"},
		},
		{
			name: "unmasked blocks are compared masked",
			claims: []Claim{
				{Node: "b", Block: pfx("10.42.1.7/24"), Since: 1},
				{Node: "a", Block: pfx("10.42.1.0/24"), Since: 2},
			},
			want: map[netip.Prefix]string{pfx("10.42.1.0/24"): "b"},
		},
		{
			name: "invalid blocks are ignored",
			claims: []Claim{
				{Node: "a", Since: 1},
				{Node: "b", Block: pfx("10.42.1.0/24"), Since: 2},
			},
			want: map[netip.Prefix]string{pfx("10.42.1.0/24"): "b"},
		},
		{
			name: "IPv6 blocks",
			claims: []Claim{
				{Node: "a", Block: pfx("fd42::/64"), Since: 2},
				{Node: "b", Block: pfx("fd42::/64"), Since: 1},
				{Node: "s", Block: pfx("fd42:0:0:1::/80"), Static: true},
				{Node: "c", Block: pfx("fd42:0:0:1::/64"), Since: 1},
			},
			want: map[netip.Prefix]string{pfx("fd42::/64"): "b", pfx("fd42:0:0:1::/80"): "s"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Owners(tt.claims); !maps.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			// The same claims in any order resolve the same way.
			r := rand.New(rand.NewPCG(1, 2))
			for range 20 {
				shuffled := append([]Claim(nil), tt.claims...)
				r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
				if got := Owners(shuffled); !maps.Equal(got, tt.want) {
					t.Fatalf("shuffled %v: got %v, want %v", shuffled, got, tt.want)
				}
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	claims := []Claim{
		{Node: "dead", Block: pfx("10.42.1.0/24"), Since: 1},
		{Node: "new", Block: pfx("10.42.1.0/24"), Since: 2, Live: true}, // loses to the dead owner
		{Node: "up", Block: pfx("10.42.2.0/24"), Since: 1, Live: true},
		{Node: "s", Block: pfx("192.168.0.0/24"), Static: true, Live: true},
		{Node: "sdead", Block: pfx("192.168.1.0/24"), Static: true},
	}
	want := map[netip.Prefix]string{pfx("10.42.2.0/24"): "up", pfx("192.168.0.0/24"): "s"}
	if got := Routes(claims); !maps.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
