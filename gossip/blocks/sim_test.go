package blocks

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// simScenario models hosts starting at once with empty state and an
// eventually consistent gossip view.
type simScenario struct {
	name  string
	hosts int
	cidr  netip.Prefix
	bits  int
	// fullAt is the first round from which every host sees every other
	// host's latest claim. Before it, after each round host i learns host
	// j's latest claim with probability (round+1)/fullAt and otherwise keeps
	// what it knew (nothing, or a stale claim).
	fullAt int
	// skew spreads the hosts' clocks uniformly over ±skew. Zero: all hosts
	// start at the same instant, so every first claim has the same Since.
	skew time.Duration
}

// simResult is what one run of a scenario measured.
type simResult struct {
	rounds    int // Decide rounds until the last change (>= 1)
	moves     int // claims changed after round 0 (lost conflicts)
	dualPeak  int // most blocks held by two or more hosts in one round
	dualRound int // rounds in which some block was held by two or more hosts
}

// simulate runs one scenario with one seed. Each round every host runs
// Decide on its own view, all at the same time; then gossip updates views.
// It stops after 3 quiet rounds with full views and checks the end state.
func simulate(t *testing.T, sc simScenario, seed uint64) simResult {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	n := sc.hosts
	names := make([]string, n)
	seen := map[string]bool{}
	offset := make([]time.Duration, n)
	for i := range names {
		for names[i] == "" || seen[names[i]] {
			names[i] = fmt.Sprintf("node-%06x", r.Uint32()&0xffffff)
		}
		seen[names[i]] = true
		if sc.skew > 0 {
			offset[i] = time.Duration(r.Int64N(int64(2*sc.skew))) - sc.skew
		}
	}
	cur := make([]Claim, n)
	known := make([][]Claim, n) // known[i][j]: what host i last heard host j claim
	for i := range known {
		known[i] = make([]Claim, n)
	}
	viewOf := func(i int) []Claim {
		var v []Claim
		for j, c := range known[i] {
			if j != i && c.Block.IsValid() {
				v = append(v, c)
			}
		}
		return v
	}

	var res simResult
	quiet := 0
	const maxRounds = 200
	for round := 0; ; round++ {
		if round == maxRounds {
			t.Fatalf("%s seed %d: no convergence after %d rounds: %v", sc.name, seed, maxRounds, cur)
		}
		next := make([]Claim, n)
		changedAny := false
		for i := range n {
			now := t0.Add(time.Duration(round)*time.Second + offset[i])
			c, changed, err := Decide(names[i], cur[i], viewOf(i), sc.cidr, sc.bits, now)
			if err != nil {
				t.Fatalf("%s seed %d round %d: %s: %v", sc.name, seed, round, names[i], err)
			}
			next[i] = c
			if changed {
				changedAny = true
				if round > 0 {
					res.moves++
				}
			}
		}
		cur = next
		if changedAny {
			res.rounds = round + 1
			quiet = 0
		} else if round >= sc.fullAt {
			quiet++
			if quiet == 3 {
				break
			}
		}
		// Transient double holding: hosts whose own views both say "mine".
		holders := map[netip.Prefix]int{}
		for _, c := range cur {
			holders[c.Block]++
		}
		dual := 0
		for _, k := range holders {
			if k > 1 {
				dual++
			}
		}
		res.dualPeak = max(res.dualPeak, dual)
		if dual > 0 {
			res.dualRound++
		}
		// Gossip: views catch up with the claims just made.
		p := float64(round+1) / float64(sc.fullAt)
		for i := range n {
			for j := range n {
				if i != j && (round+1 >= sc.fullAt || r.Float64() < p) {
					known[i][j] = cur[j]
				}
			}
		}
	}

	// End state: distinct blocks, every view agrees, and each block is
	// routed to exactly one host: its holder.
	held := map[netip.Prefix]string{}
	for i, c := range cur {
		if o, dup := held[c.Block]; dup {
			t.Fatalf("%s seed %d: %v held by both %s and %s", sc.name, seed, c.Block, o, names[i])
		}
		held[c.Block] = names[i]
	}
	var first map[netip.Prefix]string
	for i := range n {
		routes := Routes(append(viewOf(i), cur[i]))
		if first == nil {
			first = routes
		} else if !maps.Equal(routes, first) {
			t.Fatalf("%s seed %d: %s routes %v, %s routes %v", sc.name, seed, names[i], routes, names[0], first)
		}
	}
	if !maps.Equal(first, held) {
		t.Fatalf("%s seed %d: routes %v, want the held blocks %v", sc.name, seed, first, held)
	}
	return res
}

// TestSimulateSimultaneousStart models the issue's acceptance case ("10 hosts
// started at the same moment end with 10 distinct blocks") and harsher
// variants, over 200 seeds each, and logs rounds to convergence.
func TestSimulateSimultaneousStart(t *testing.T) {
	seeds := 200
	if testing.Short() {
		seeds = 40
	}
	scenarios := []simScenario{
		{name: "issue: 10 hosts, /16 into /24 (256 blocks)", hosts: 10, cidr: pfx("10.42.0.0/16"), bits: 24, fullAt: 4},
		{name: "tight: 10 hosts, 16 blocks", hosts: 10, cidr: pfx("10.42.0.0/20"), bits: 24, fullAt: 4},
		{name: "full: 16 hosts, 16 blocks", hosts: 16, cidr: pfx("10.42.0.0/20"), bits: 24, fullAt: 4},
		{name: "skew: 10 hosts, 16 blocks, clocks ±5s", hosts: 10, cidr: pfx("10.42.0.0/20"), bits: 24, fullAt: 4, skew: 5 * time.Second},
		{name: "slow gossip: 10 hosts, 16 blocks, full views at round 10", hosts: 10, cidr: pfx("10.42.0.0/20"), bits: 24, fullAt: 10},
		{name: "many: 50 hosts, 64 blocks", hosts: 50, cidr: pfx("10.42.0.0/18"), bits: 24, fullAt: 4},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			var rounds, after []int
			moves, dualPeak, dualRounds, conflicted := 0, 0, 0, 0
			for seed := range uint64(seeds) {
				res := simulate(t, sc, seed)
				rounds = append(rounds, res.rounds)
				after = append(after, max(0, res.rounds-sc.fullAt))
				moves += res.moves
				dualPeak = max(dualPeak, res.dualPeak)
				dualRounds = max(dualRounds, res.dualRound)
				if res.moves > 0 {
					conflicted++
				}
			}
			slices.Sort(rounds)
			slices.Sort(after)
			t.Logf("%d seeds: rounds to last change median %d, p90 %d, max %d (of those, rounds with full views, from round %d: median %d, max %d); "+
				"runs with a conflict %d, moves %.2f/run; transient double holds: at most %d blocks at once, in at most %d rounds",
				seeds, rounds[len(rounds)/2], rounds[len(rounds)*9/10], rounds[len(rounds)-1],
				sc.fullAt+1, after[len(after)/2], after[len(after)-1],
				conflicted, float64(moves)/float64(seeds), dualPeak, dualRounds)
		})
	}
}
