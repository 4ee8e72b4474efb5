package lab

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/drovernet/drover/testenv"
)

// TestLabScale100 is the real-process scale point of issue 10: 100 hosts,
// each its own `drover run`, started at the same instant, one container
// each. It checks one cluster with distinct blocks (Converged), converged
// within 30 s of the instant every router was released, a sample of
// container pairs reachable (every container to the next and to
// 10 others: 1100 pairs), and no
// "member dead" over 60 s idle, and logs gossip bytes/s, CPU and RSS per
// host. DROVER_SCALE_HOSTS sets another size (2..200), DROVER_SCALE_IDLE
// another idle time. `drover lab --cluster --hosts 100 --containers 1
// --at-once --idle 5m` is the same with a longer idle period.
func TestLabScale100(t *testing.T) {
	if testing.Short() {
		t.Skip("scale lab: 100 router processes (skipped with -short)")
	}
	if raceEnabled {
		t.Skip("scale lab: runs alone, without -race, in .ci/run's scale step: go test -run TestLabScale100 ./lab/")
	}
	testenv.NeedRoot(t)
	hosts, idle := 100, 60*time.Second
	if v := os.Getenv("DROVER_SCALE_HOSTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2 || n > maxHosts {
			t.Fatalf("DROVER_SCALE_HOSTS=%q: want 2..%d", v, maxHosts)
		}
		hosts = n
	}
	if v := os.Getenv("DROVER_SCALE_IDLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("DROVER_SCALE_IDLE=%q: want a positive duration", v)
		}
		idle = d
	}
	// Issue 10's bound. "The last start" is the instant the gate released
	// every router (Options.StartAtOnce). Before the lab forked its
	// routers behind a gate, gave oversubscribed labs edge timing and one P
	// per router, and before this host's own CPU was cut (one Pair per
	// member, one netlink socket), runs took 17 to 45 s and the test only
	// bounded stalls at 90 s; on 2026-12-07 they took 15.5 to 18.3 s.
	const convergeWithin = 30 * time.Second
	start := time.Now()
	lab := newTestLab(t, Options{Hosts: hosts, Containers: 1, Cluster: true,
		ClusterOptions: ClusterOptions{StartAtOnce: true, ConvergeTimeout: 90 * time.Second}})
	after := lab.ConvergedAt.Sub(lab.lastStart())
	t.Logf("%d hosts (timing %s): up in %v; converged %v after the routers were released; %s",
		hosts, lab.Options().ClusterOptions.Timing, time.Since(start).Round(time.Millisecond), after.Round(time.Millisecond), lab.BlocksSummary())
	if after > convergeWithin {
		t.Errorf("converged %v after the last start, want within %v", after, convergeWithin)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute+idle)
	defer cancel()
	t0 := time.Now()
	s, err := lab.ReachabilitySample(ctx, DefaultSample, uint64(t0.UnixNano()))
	if err != nil {
		t.Fatal(err)
	}
	ok, total := s.Count()
	t.Logf("reachability: %d/%d sampled pairs in %v", ok, total, time.Since(t0).Round(time.Millisecond))
	if !s.OK() {
		t.Errorf("unreachable pairs:\n%s", s)
	}

	rep, err := lab.MeasureIdle(ctx, idle)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", rep)
	if dead, members := rep.Dead(); dead != 0 {
		t.Errorf("%d \"member dead\" lines while idle (about %v), want 0", dead, members)
	}
}
