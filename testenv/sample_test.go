package testenv

import (
	mrand "math/rand/v2"
	"testing"
)

func TestSamplePairs(t *testing.T) {
	for _, tc := range []struct {
		name      string
		n, k      int
		wantPairs int
	}{
		{"100 containers, 10 random each", 100, 10, 100 * 11},
		{"small lab: every pair", 4, 10, 4 * 3},
		{"exactly all", 5, 3, 5 * 4},
		{"one container", 1, 10, 0},
		{"ring only", 10, 0, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pairs := samplePairs(tc.n, tc.k, mrand.New(mrand.NewPCG(1, 2)))
			if len(pairs) != tc.wantPairs {
				t.Fatalf("got %d pairs, want %d", len(pairs), tc.wantPairs)
			}
			seen := map[[2]int]bool{}
			ring := map[int]bool{}
			for _, p := range pairs {
				switch {
				case p[0] == p[1]:
					t.Fatalf("pair %v: a container to itself", p)
				case p[0] < 0 || p[1] < 0 || p[0] >= tc.n || p[1] >= tc.n:
					t.Fatalf("pair %v: outside 0..%d", p, tc.n-1)
				case seen[p]:
					t.Fatalf("pair %v twice", p)
				}
				seen[p] = true
				if p[1] == (p[0]+1)%tc.n {
					ring[p[0]] = true
				}
			}
			if tc.n > 1 && len(ring) != tc.n {
				t.Fatalf("got %d containers probing their successor, want all %d", len(ring), tc.n)
			}
		})
	}
}
