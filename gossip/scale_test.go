package gossip

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
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
// Timings are memberlist's LAN defaults (probe every 1s, gossip every
// 200ms, push/pull every 30s): on a loaded 2-core machine, faster probing of
// 200 members in one process starves the probes themselves and members
// start suspecting each other.
func TestScale200(t *testing.T) {
	if testing.Short() {
		t.Skip("scale test: 200 members (skipped with -short)")
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
		cfg := Config{Name: name, BindAddr: loopback, Key: testKey, Log: l.With("node", name)}
		if v := os.Getenv("SCALE_GI"); v != "" {
			cfg.GossipInterval, _ = time.ParseDuration(v)
		}
		if v := os.Getenv("SCALE_PP"); v != "" {
			cfg.PushPullInterval, _ = time.ParseDuration(v)
		}
		if v := os.Getenv("SCALE_PI"); v != "" {
			cfg.ProbeInterval, _ = time.ParseDuration(v)
			cfg.ProbeTimeout = cfg.ProbeInterval / 2
		}
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
				return fmt.Errorf("%s lists %d members alive, want %d", c.LocalName(), got, n)
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
	if p := os.Getenv("SCALE_HEAP"); p != "" {
		f, _ := os.Create(p)
		_ = pprof.WriteHeapProfile(f)
		f.Close()
	}
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
