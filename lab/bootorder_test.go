package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// permutations lists every order of 0..n-1.
func permutations(n int) [][]int {
	if n == 1 {
		return [][]int{{0}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := append(slices.Clone(p[:i]), n-1)
			out = append(out, append(q, p[i:]...))
		}
	}
	return out
}

// Boot order (issue 10): three hosts with the README's cluster config (hosts
// 2 and 3 join host 1) started one second apart in every order form one
// cluster with full container reachability within 5 s of the last start.
// Hosts that come up before their seed are alone and retry their joins
// (from every 250 ms up to every 2 s with the labs' fast timing), instead of
// waiting out the 30 s reconnect interval as before; they claim their
// blocks once they have joined.
func TestClusterBootOrder(t *testing.T) {
	if got := len(permutations(3)); got != 6 {
		t.Fatalf("permutations(3): got %d, want 6", got)
	}
	for _, order := range permutations(3) {
		name := fmt.Sprintf("h%d,h%d,h%d", order[0]+1, order[1]+1, order[2]+1)
		t.Run(name, func(t *testing.T) {
			lab := newClusterLab(t, Options{Hosts: 3, Containers: 1, HostOptions: []HostOptions{{Manual: true}, {Manual: true}, {Manual: true}}})
			var last time.Time
			for k, i := range order {
				if k > 0 {
					time.Sleep(time.Second)
				}
				last = time.Now()
				// Not StartRouter: a host that starts before its seed
				// claims no block until it has joined (cluster.bootstrap).
				h := lab.Hosts[i]
				if err := lab.launch(t.Context(), h, lab.seedsFor(h)); err != nil {
					t.Fatal(err)
				}
			}
			if err := lab.WaitConverged(t.Context(), lab.Hosts, 5*time.Second); err != nil {
				t.Fatalf("order %s: %v\n%s", name, err, lab.ClusterViews())
			}
			took := time.Since(last)
			for _, h := range lab.Hosts {
				if err := lab.checkBlock(h); err != nil {
					t.Fatal(err)
				}
			}
			at := waitMatrix(t, lab, 5*time.Second)
			t.Logf("RESULT start order %s: converged %v, full reachability %v after the last start",
				name, took.Round(time.Millisecond), at.Sub(last).Round(time.Millisecond))
			if d := at.Sub(last); d > 5*time.Second {
				t.Errorf("order %s: full reachability %v after the last start, want within 5s", name, d)
			}
		})
	}
}

// A restarted host whose only seed is gone finds the cluster again through
// the members it remembers (state_dir/members.json).
func TestClusterRejoinWithoutSeed(t *testing.T) {
	lab := newClusterLab(t, Options{Hosts: 3, Containers: 1})
	h1, h3 := lab.Hosts[0], lab.Hosts[2]
	book := filepath.Join(h3.StateDir(), "members.json")
	err := Poll(t.Context(), 15*time.Second, 100*time.Millisecond, func() error {
		b, err := os.ReadFile(book)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), h1.Underlay.String()) || !strings.Contains(string(b), lab.Hosts[1].Underlay.String()) {
			return fmt.Errorf("h3's address book lacks a member:\n%s", b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.StopRouter(h3); err != nil {
		t.Fatal(err)
	}
	if err := lab.KillRouter(h1); err != nil { // the seed is gone for good
		t.Fatal(err)
	}
	// h3 restarts with only the dead seed configured.
	start := time.Now()
	if err := lab.startRouter(t.Context(), h3, []string{lab.seedAddr(h1)}, true); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitConverged(t.Context(), []*Host{lab.Hosts[1], h3}, 10*time.Second); err != nil {
		t.Fatalf("h3 without its seed: %v\n%s", err, lab.ClusterViews())
	}
	t.Logf("RESULT h3 rejoined through a remembered member %v after its restart (its seed dead)", time.Since(start).Round(time.Millisecond))
	waitPing(t, h3.Containers[0], lab.Hosts[1].Containers[0], 10*time.Second)
}

// A host whose seeds never answer claims no block and says why (its CNI ADD
// then fails with code 11 and that reason: cni TestAddBeforeJoined); with
// cluster.bootstrap it starts a cluster alone.
func TestClusterNoBlockBeforeJoining(t *testing.T) {
	lab := newClusterLab(t, Options{Hosts: 1, Containers: 1, HostOptions: []HostOptions{{Manual: true}}})
	h := lab.Hosts[0]
	if err := lab.launch(t.Context(), h, []string{"192.0.2.77"}); err != nil { // nobody there
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		v, err := h.Router.Cluster()
		if err != nil {
			t.Fatal(err)
		}
		st, err := h.Router.Status()
		if err != nil {
			t.Fatal(err)
		}
		if v.Block != "" || len(st.Prefixes) != 0 {
			t.Fatalf("alone without bootstrap: block %q, prefixes %v; want none", v.Block, st.Prefixes)
		}
		if !strings.Contains(st.BlockNote, "not joined") || v.AloneSince == "" {
			t.Fatalf("alone without bootstrap: status block_note %q, alone_since %q; want the reason and a time", st.BlockNote, v.AloneSince)
		}
		time.Sleep(200 * time.Millisecond)
	}
	out, _ := exec.Command(lab.opts.Bin, "status", "--socket", h.Router.Config.ControlSocket).CombinedOutput()
	t.Logf("drover status of a host alone without bootstrap:\n%s", out)
	if err := lab.StopRouter(h); err != nil {
		t.Fatal(err)
	}
	h.cfg.Cluster.Bootstrap = true
	if err := lab.startRouter(t.Context(), h, []string{"192.0.2.77"}, true); err != nil {
		t.Fatalf("with bootstrap: %v", err)
	}
	t.Logf("with cluster.bootstrap: block %s claimed alone", h.Prefix)
}

// pingAll pings between the first containers of every pair of hosts.
func pingAll(t *testing.T, hosts []*Host) time.Time {
	t.Helper()
	for _, a := range hosts {
		for _, b := range hosts {
			if a != b {
				waitPing(t, a.Containers[0], b.Containers[0], 5*time.Second)
			}
		}
	}
	return time.Now()
}

// startAndReach waits for hosts to converge after the last start, addresses
// them and checks every pair of containers; it reports the times.
func startAndReach(t *testing.T, lab *Lab, hosts []*Host, last time.Time, what string) {
	t.Helper()
	if err := lab.WaitConverged(t.Context(), hosts, 5*time.Second); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, lab.ClusterViews())
	}
	conv := time.Since(last)
	for _, h := range hosts {
		if err := lab.checkBlock(h); err != nil {
			t.Fatal(err)
		}
	}
	at := pingAll(t, hosts)
	t.Logf("RESULT %s: converged %v, every pair of containers reached %v after the last start",
		what, conv.Round(time.Millisecond), at.Sub(last).Round(time.Millisecond))
	if d := at.Sub(last); d > 5*time.Second {
		t.Errorf("%s: full reachability %v after the last start, want within 5s", what, d)
	}
}

// The other boot cases of issue 10: the seed 60 s late; the seed never up
// but a second seed is; the seed dies after the others joined, comes back,
// and a new host joins through the seed's address.
func TestClusterBootCases(t *testing.T) {
	manual := []HostOptions{{Manual: true}, {Manual: true}, {Manual: true}, {Manual: true}}
	t.Run("seed-60s-late", func(t *testing.T) {
		lab := newClusterLab(t, Options{Hosts: 3, Containers: 1, HostOptions: manual[:3]})
		h1, h2, h3 := lab.Hosts[0], lab.Hosts[1], lab.Hosts[2]
		for _, h := range []*Host{h2, h3} {
			if err := lab.launch(t.Context(), h, lab.seedsFor(h)); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(60 * time.Second)
		last := time.Now()
		if err := lab.launch(t.Context(), h1, nil); err != nil {
			t.Fatal(err)
		}
		startAndReach(t, lab, lab.Hosts, last, "seed h1 started 60 s after h2 and h3")
	})
	t.Run("second-seed", func(t *testing.T) {
		lab := newClusterLab(t, Options{Hosts: 3, Containers: 1, HostOptions: manual[:3]})
		h1, h2, h3 := lab.Hosts[0], lab.Hosts[1], lab.Hosts[2]
		seeds := []string{lab.seedAddr(h1), lab.seedAddr(h2)} // h1 never starts
		if err := lab.launch(t.Context(), h3, seeds); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		h2.cfg.Cluster.Bootstrap = true // the second seed may found the cluster
		last := time.Now()
		if err := lab.launch(t.Context(), h2, seeds); err != nil {
			t.Fatal(err)
		}
		startAndReach(t, lab, []*Host{h2, h3}, last, "seed h1 never up, second seed h2 started 2 s after h3")
	})
	t.Run("seed-dies-new-host", func(t *testing.T) {
		lab := newClusterLab(t, Options{Hosts: 4, Containers: 1, HostOptions: []HostOptions{{}, {}, {}, {Manual: true}}})
		h1, h4 := lab.Hosts[0], lab.Hosts[3]
		running := lab.Hosts[:3]
		// Every host has written down the members it saw (members.json).
		err := Poll(t.Context(), 15*time.Second, 100*time.Millisecond, func() error {
			for _, h := range running {
				if _, err := os.Stat(filepath.Join(h.StateDir(), "members.json")); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := lab.KillRouter(h1); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second) // declared dead by the others
		// The seed comes back with no seeds of its own (it founded the
		// cluster) and finds it through the members it remembers; a new
		// host joins through the seed's address.
		if err := lab.startRouter(t.Context(), h1, nil, true); err != nil {
			t.Fatal(err)
		}
		last := time.Now()
		if err := lab.launch(t.Context(), h4, []string{lab.seedAddr(h1)}); err != nil {
			t.Fatal(err)
		}
		startAndReach(t, lab, lab.Hosts, last, "seed h1 killed and restarted, new host h4 joining through it")
	})
}
