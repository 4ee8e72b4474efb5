package blocks

import (
	"fmt"
	"testing"
)

// benchClaims is a settled cluster of n hosts, one /24 each of a /8 split
// into /24 blocks, plus a few static prefixes.
func benchClaims(b *testing.B, n int) []Claim {
	b.Helper()
	cidr := pfx("10.0.0.0/8")
	var claims []Claim
	for _, s := range []string{"192.168.0.0/24", "10.200.0.0/16"} {
		claims = append(claims, Claim{Node: "static", Block: pfx(s), Static: true, Live: true})
	}
	for i := range n {
		node := fmt.Sprintf("host-%d", i)
		p, ok := Choose(cidr, 24, node, claims)
		if !ok {
			b.Fatal("cluster full")
		}
		claims = append(claims, Claim{Node: node, Block: p, Since: int64(i), Live: true})
	}
	return claims
}

// BenchmarkDecide is the work a host does per membership change.
func BenchmarkDecide(b *testing.B) {
	for _, n := range []int{10, 200, 5000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			claims := benchClaims(b, n)
			self := claims[len(claims)/2]
			b.ReportAllocs()
			for b.Loop() {
				if _, changed, err := Decide(self.Node, self, claims, pfx("10.0.0.0/8"), 24, t0); err != nil || changed {
					b.Fatal(changed, err)
				}
			}
		})
	}
}
