package lab

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Pair is one probed pair of a sampled reachability check.
type Pair struct {
	From, To ContainerRef
	Addr     netip.Addr // To's address
	RTT      time.Duration
	Err      error // nil: reachable
}

// PairSample is the result of ReachabilitySample.
type PairSample struct {
	// Containers is how many containers the lab has; Pairs the ordered
	// pairs probed, in the order samplePairs made them.
	Containers int
	Pairs      []Pair
}

// Count returns how many of the probed pairs were reachable, out of how
// many.
func (s PairSample) Count() (ok, total int) {
	for _, p := range s.Pairs {
		if p.Err == nil {
			ok++
		}
	}
	return ok, len(s.Pairs)
}

// OK reports whether every probed pair was reachable.
func (s PairSample) OK() bool {
	ok, total := s.Count()
	return ok == total
}

// String is a summary line and the reason for every failed pair.
func (s PairSample) String() string {
	var b strings.Builder
	ok, total := s.Count()
	fmt.Fprintf(&b, "%d/%d sampled pairs reachable (of %d ordered pairs among %d containers)\n",
		ok, total, s.Containers*(s.Containers-1), s.Containers)
	for _, p := range s.Pairs {
		if p.Err != nil {
			fmt.Fprintf(&b, "  %s → %s (%s): %v\n", p.From, p.To, p.Addr, p.Err)
		}
	}
	return b.String()
}

// samplePairs picks ordered pairs among n containers: each container to
// the next one (a ring, so every container sends and answers at least
// once) and to k others at random, never itself and never the same target
// twice. With n-1 <= k+1 that is every pair.
func samplePairs(n, k int, r *mrand.Rand) [][2]int {
	var out [][2]int
	for i := range n {
		if n < 2 {
			break
		}
		succ := (i + 1) % n
		out = append(out, [2]int{i, succ})
		if n-2 <= k { // all the others
			for j := range n {
				if j != i && j != succ {
					out = append(out, [2]int{i, j})
				}
			}
			continue
		}
		seen := map[int]bool{i: true, succ: true}
		for len(seen) < k+2 {
			j := r.IntN(n)
			if !seen[j] {
				seen[j] = true
				out = append(out, [2]int{i, j})
			}
		}
	}
	return out
}

// ReachabilitySample pings, from every container, the next container and k
// others chosen at random (seeded by seed, so a run can be repeated): n ×
// (k+1) pairs instead of the n × (n-1) of Reachability, which for 100
// containers is 9900 pairs. Unreachable pairs are recorded, not returned as
// errors; the error is the context's.
func (l *Lab) ReachabilitySample(ctx context.Context, k int, seed uint64) (PairSample, error) {
	ctrs := l.Containers()
	idx := samplePairs(len(ctrs), k, mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15)))
	s := PairSample{Containers: len(ctrs), Pairs: make([]Pair, len(idx))}
	sem := make(chan struct{}, pingParallel)
	var wg sync.WaitGroup
	for n, ij := range idx {
		from, to := ctrs[ij[0]], ctrs[ij[1]]
		s.Pairs[n] = Pair{From: from.Ref, To: to.Ref, Addr: to.Addr, Err: errNotProbed}
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			s.Pairs[n].RTT, s.Pairs[n].Err = from.Ping(ctx, to.Addr, PingTimeout) // each goroutine its own element
		})
	}
	wg.Wait()
	return s, ctx.Err()
}
