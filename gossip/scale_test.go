package gossip

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// countAlive is how many members c lists as Alive, without copying the table.
func countAlive(c *Cluster) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, e := range c.members {
		if e.State == Alive {
			n++
		}
	}
	return n
}

// TestScale200 starts 200 members in this process on loopback, each joining
// a random earlier one, and reports how long until every member lists all
// 200 alive, and what each member costs in heap and goroutines.
//
// Timings: gossip every 200ms as by default, but probes every 2s with a 1s
// timeout and SuspicionMult 6, and push/pull every 10s (memberlist scales it
// ×4 at 200 members). 200 members in one process on a 2-core machine that
// others load too are all starved at once: with the default 1s probes they
// start suspecting, even killing, each other; and a mass start is the case
// where gossip alone may miss a member, which only push/pull repairs (at
// the default 30s, every 120s here).
func TestScale200(t *testing.T) {
	if testing.Short() {
		t.Skip("scale test: 200 members (skipped with -short)")
	}
	if raceEnabled {
		t.Skip("scale test: 200 members starve each other under -race; run it without: go test -run TestScale200 ./gossip/")
	}
	const n = 200
	leakCheck(t)
	l, _ := testLog(t, slog.LevelWarn)

	var ms0 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	g0 := runtime.NumGoroutine()

	cs := make([]*Cluster, 0, n)
	t.Cleanup(func() {
		for _, c := range cs {
			_ = c.Shutdown()
		}
	})
	start := time.Now()
	for i := range n {
		name := fmt.Sprintf("m%03d", i)
		cfg := Config{Name: name, BindAddr: loopback, Key: testKey, Log: l.With("node", name),
			ProbeInterval: 2 * time.Second, ProbeTimeout: time.Second, SuspicionMult: 6, PushPullInterval: 10 * time.Second}
		c, err := Start(cfg, testInfo(name, i))
		if err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		cs = append(cs, c)
		if i == 0 {
			continue
		}
		seed := cs[rand.IntN(i)]
		if _, err := c.Join([]string{seed.LocalAddr().String()}); err != nil {
			t.Fatalf("%s: join through %s: %v", name, seed.LocalName(), err)
		}
	}
	joined := time.Since(start)

	lagging := func() error {
		for _, c := range cs {
			if got := countAlive(c); got != n {
				var not []string
				for _, m := range c.Members() {
					if m.State != Alive {
						not = append(not, fmt.Sprintf("%s %v since %v", m.Name, m.State, time.Since(m.Since).Round(time.Millisecond)))
					}
				}
				return fmt.Errorf("%s lists %d members alive, want %d (not alive: %v)", c.LocalName(), got, n, not)
			}
		}
		return nil
	}
	if err := pollEvery(60*time.Second, 50*time.Millisecond, lagging); err != nil {
		t.Fatal(err)
	}
	converged := time.Since(start)

	var ms1 runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	g1 := runtime.NumGoroutine()
	heap := int64(ms1.HeapAlloc) - int64(ms0.HeapAlloc)
	t.Logf("%d members: all started and joined in %v; every member lists all %d alive %v after the first start (%v after the last join)",
		n, joined.Round(time.Millisecond), n, converged.Round(time.Millisecond), (converged - joined).Round(time.Millisecond))
	t.Logf("per member: heap %.1f KiB (HeapAlloc delta after GC %.1f MiB / %d), goroutines %.1f (%d / %d)",
		float64(heap)/n/1024, float64(heap)/(1<<20), n, float64(g1-g0)/n, g1-g0, n)
}

// pollEvery is poll with a given interval.
func pollEvery(timeout, interval time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		<-tick.C
	}
}
