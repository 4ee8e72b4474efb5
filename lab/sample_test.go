package lab

import (
	"math"
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

func TestPairedRatios(t *testing.T) {
	for _, tc := range []struct {
		a, b            []float64
		ofMeans, median float64
	}{
		{[]float64{5, 7, 7, 5}, []float64{5, 7, 7, 5}, 1, 1},
		// The machine speeds up inside round 2: the ratio of the means
		// drops to 0.933, the median of the rounds stays near 1.
		{[]float64{5.1, 5.1, 5.0, 7.0}, []float64{5.0, 5.1, 6.8, 6.9}, 22.2 / 23.8, (1 + 7.0/6.9) / 2},
		{[]float64{6, 3, 9}, []float64{3, 3, 3}, 2, 2},
		{nil, nil, 0, 0},
	} {
		m, med := PairedRatios(tc.a, tc.b)
		if math.Abs(m-tc.ofMeans) > 1e-9 || math.Abs(med-tc.median) > 1e-9 {
			t.Errorf("PairedRatios(%v, %v): got %v, %v; want %v, %v", tc.a, tc.b, m, med, tc.ofMeans, tc.median)
		}
	}
}

func TestRatioInterval(t *testing.T) {
	for _, tc := range []struct {
		a, b         []float64
		mean, lo, hi float64
	}{
		{[]float64{5, 7}, []float64{5, 7}, 1, 1, 1},
		// Ratios 0.9 and 1.1: mean 1, s = 0.1414, t(1) = 12.706,
		// half-width 12.706 * 0.1414 / sqrt(2) = 1.2706.
		{[]float64{9, 11}, []float64{10, 10}, 1, 1 - 1.2706, 1 + 1.2706},
		// Ratios 0.9, 1.0, 1.1: s = 0.1, t(2) = 4.303, half 4.303 * 0.1 / sqrt(3).
		{[]float64{9, 10, 11}, []float64{10, 10, 10}, 1, 1 - 0.4303/math.Sqrt(3), 1 + 0.4303/math.Sqrt(3)},
		{[]float64{3}, []float64{2}, 1.5, 1.5, 1.5},
		{nil, nil, 0, 0, 0},
	} {
		m, lo, hi := RatioInterval(tc.a, tc.b)
		if math.Abs(m-tc.mean) > 1e-4 || math.Abs(lo-tc.lo) > 1e-4 || math.Abs(hi-tc.hi) > 1e-4 {
			t.Errorf("RatioInterval(%v, %v): got %.4f [%.4f, %.4f]; want %.4f [%.4f, %.4f]", tc.a, tc.b, m, lo, hi, tc.mean, tc.lo, tc.hi)
		}
	}
}
