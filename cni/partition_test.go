package cni

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/drovernet/drover/lab"
	"github.com/drovernet/drover/router"
	"github.com/drovernet/drover/testenv"
)

// Partition (issue 10): six hosts cut into two halves heal with no address
// in use on two hosts. During the cut containers are attached through the
// real plugin on every host of both sides (each from its own block, which
// the cut does not take away), and a new host joins each side: neither
// reaches more than half of the six block holders it knows (3 of 6), so
// neither claims a block and their CNI ADDs fail with code 11 naming the
// reason. After the heal both claim distinct blocks, every host keeps the
// block it had, no host reports a stranded container, every address of
// every container is distinct and inside its host's block, and the
// containers reach each other.
func TestLabPartitionHeals(t *testing.T) {
	testenv.NeedRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	opts := lab.Options{Hosts: 8, Containers: 1, Cluster: true, Tag: "cpt", Bin: testenv.DroverBinary(t),
		HostOptions: []lab.HostOptions{6: {Manual: true}, 7: {Manual: true}}}
	lb, err := lab.NewLab(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster views:\n%s", lb.ClusterViews())
			for _, h := range lb.Running() {
				t.Logf("--- %s log:\n%s", h.Name, h.Router.LogTail(30))
			}
		}
		lb.Close()
	})
	hs := lb.Hosts
	sideA, sideB := []*lab.Host{hs[0], hs[1], hs[2], hs[6]}, []*lab.Host{hs[3], hs[4], hs[5], hs[7]}
	before := map[*lab.Host]netip.Prefix{}
	for _, h := range hs[:6] {
		if before[h], err = h.Block(); err != nil {
			t.Fatal(err)
		}
	}

	type ctr struct {
		host *lab.Host
		ns   *testenv.NetNS
		addr netip.Addr
	}
	var mu sync.Mutex
	var ctrs []ctr
	dataDir := t.TempDir()
	// conf is h's network config: addresses from .100 of its block (the
	// lab's own containers hold the low ones), or no range while it has
	// no block (the ADD fails before one is needed).
	conf := func(h *lab.Host) []byte {
		ipamConf := map[string]any{"type": "drover", "dataDir": filepath.Join(dataDir, h.Name)}
		if b, err := h.Block(); err == nil {
			a := b.Addr().As4()
			a[3] = 100
			ipamConf["rangeStart"] = netip.AddrFrom4(a).String()
		}
		return mustJSON(t, map[string]any{
			"cniVersion": "1.1.0", "name": "drvpt", "type": "drover",
			"bridge": h.Bridge, "daemonSocket": h.ControlSocket(), "ipam": ipamConf,
		})
	}
	add := func(h *lab.Host, n int) pluginRun {
		t.Helper()
		ns := testenv.NewNetNS(t, "cptc")
		cid := fmt.Sprintf("%s-c%d", h.Name, n)
		c := conf(h)
		r := runPlugin(t, self(t), h.NS, execEnv("ADD", cid, ns), c)
		if r.exit == 0 {
			var res types100.Result
			if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
				t.Fatalf("%s ADD output: %v\n%s", h.Name, err, r.stdout)
			}
			mu.Lock()
			ctrs = append(ctrs, ctr{h, ns, resultAddr(t, &res).Addr()})
			mu.Unlock()
			t.Cleanup(func() { runPlugin(t, self(t), h.NS, execEnv("DEL", cid, ns), c) })
		}
		return r
	}
	for _, h := range hs[:6] {
		if r := add(h, 0); r.exit != 0 {
			t.Fatalf("%s ADD before the cut: %s", h.Name, r)
		}
	}

	heal, err := lb.Partition(sideA, sideB)
	if err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	err = lab.Poll(ctx, 20*time.Second, 100*time.Millisecond, func() error {
		for _, pair := range [][2]*lab.Host{{hs[0], hs[3]}, {hs[3], hs[0]}, {hs[2], hs[5]}, {hs[5], hs[2]}} {
			v, err := pair[0].Router.Cluster()
			if err != nil {
				return err
			}
			if m := v.Member(pair[1].Name); m == nil || m.State != "dead" {
				return fmt.Errorf("%s lists %s as %v, want dead", pair[0].Name, pair[1].Name, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	dead := time.Now()
	t.Logf("RESULT cut: each side lists the other dead %v after the cut", dead.Sub(cut).Round(time.Millisecond))

	// Containers on both sides during the cut.
	for _, h := range hs[:6] {
		for n := 1; n <= 2; n++ {
			if r := add(h, n); r.exit != 0 {
				t.Fatalf("%s ADD during the cut: %s", h.Name, r)
			}
		}
	}
	// A new host on each side: no block, and ADD fails with code 11. They
	// join after memberlist has forgotten the other side (the labs' fast
	// timing: 5 s after death), so they learn of its holders only from
	// the dead members gossip remembers.
	if d := 7*time.Second - time.Since(dead); d > 0 {
		time.Sleep(d)
	}
	if err := lb.Launch(ctx, hs[6], hs[0]); err != nil {
		t.Fatal(err)
	}
	if err := lb.Launch(ctx, hs[7], hs[3]); err != nil {
		t.Fatal(err)
	}
	for _, h := range hs[6:] {
		var note string
		err := lab.Poll(ctx, 15*time.Second, 100*time.Millisecond, func() error {
			st, err := h.Router.Status()
			if err != nil {
				return err
			}
			note = st.BlockNote
			if !strings.Contains(note, "3 of the 6 other hosts holding blocks are reachable") {
				return fmt.Errorf("%s: block note %q, prefixes %v; want the quorum note", h.Name, note, st.Prefixes)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// The note stays for a while: it is not a moment before a claim.
		time.Sleep(2 * time.Second)
		if v, err := h.Router.Cluster(); err != nil || v.Block != "" {
			t.Fatalf("%s during the cut: block %q (%v), want none", h.Name, v.Block, err)
		}
		r := add(h, 0)
		if r.exit == 0 || r.err == nil || r.err.Code != 11 || !strings.Contains(r.err.Msg, "3 of the 6") {
			t.Fatalf("%s ADD during the cut: got %s; want code 11 naming the quorum", h.Name, r)
		}
		t.Logf("RESULT new host %s during the cut: %s", h.Name, note)
		// It knows the far side's holders because its seed remembered
		// them, not because memberlist still had them.
		if log := h.Router.LogTail(500); !strings.Contains(log, "learned dead members from a push/pull") {
			t.Fatalf("%s did not learn the dead members from its seed:\n%s", h.Name, log)
		}
	}

	if err := heal(); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	if err := lb.WaitConverged(ctx, hs, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("RESULT healed: one cluster of 8 with distinct blocks %v after the heal", time.Since(healed).Round(time.Millisecond))
	for _, h := range hs[:6] {
		if b, _ := h.Block(); b != before[h] {
			t.Fatalf("%s: block %v after the heal, had %v", h.Name, b, before[h])
		}
	}
	for _, h := range hs[6:] {
		if err := lb.AddressHost(h); err != nil {
			t.Fatal(err)
		}
		if r := add(h, 1); r.exit != 0 {
			t.Fatalf("%s ADD after the heal: %s", h.Name, r)
		}
	}

	// No address on two hosts: the plugin's containers and the lab's own.
	where := map[netip.Addr]string{}
	claim := func(a netip.Addr, owner string, h *lab.Host) {
		if o, dup := where[a]; dup {
			t.Fatalf("address %v in use twice: %s and %s", a, o, owner)
		}
		where[a] = owner
		if b, _ := h.Block(); !b.Contains(a) {
			t.Fatalf("%s: address %v outside its host's block %v", owner, a, b)
		}
	}
	for _, c := range ctrs {
		claim(c.addr, c.host.Name+"/"+c.ns.Name, c.host)
	}
	for _, h := range hs {
		for _, c := range h.Containers {
			claim(c.Addr, h.Name+"/lab", h)
		}
		st, err := h.Router.Status()
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Stranded) != 0 {
			t.Fatalf("%s reports stranded containers: %+v", h.Name, st.Stranded)
		}
	}
	// Every plugin container reaches one container on every other host.
	pairs := 0
	for _, c := range ctrs {
		seen := map[*lab.Host]bool{c.host: true}
		for _, d := range ctrs {
			if seen[d.host] {
				continue
			}
			seen[d.host] = true
			if err := ping(t, c.ns, d.addr); err != nil {
				t.Fatalf("%s (%v) → %s (%v): %v", c.host.Name, c.addr, d.host.Name, d.addr, err)
			}
			pairs++
		}
	}
	t.Logf("RESULT after the heal: %d addresses, all distinct; %d container pairs across hosts reachable", len(where), pairs)
}

// Two clusters formed apart (each with its own bootstrap host) meet, and
// a block is held on both sides (issue 10: "when two sides that both hold
// a block meet"). The claim made first wins everywhere; the loser moves to
// a free block at once, hands out only from it, and reports the
// containers left with addresses of the lost block (drover status, the
// metric, the log) instead of routing them: every host routes the lost
// block to its winner. Once such a container is deleted the report clears.
//
// In 10.42.0.0/22 the lab's names choose: h1 10.42.1.0, h2 10.42.0.0,
// h3 10.42.3.0, and h4 (its first choice, h3's, taken) 10.42.0.0 again:
// cluster A is h1 and h2, cluster B h3 and h4, and h2 and h4 both hold
// 10.42.0.0/24, h2's claim the older.
func TestLabMergeStrands(t *testing.T) {
	testenv.NeedRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	lb, err := lab.NewLab(ctx, lab.Options{Hosts: 4, Containers: 1, Cluster: true, Tag: "cms", Bin: testenv.DroverBinary(t),
		ClusterOptions: lab.ClusterOptions{CIDR: "10.42.0.0/22"},
		HostOptions:    []lab.HostOptions{2: {Manual: true}, 3: {Manual: true}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster views:\n%s", lb.ClusterViews())
			for _, h := range lb.Running() {
				t.Logf("--- %s log:\n%s", h.Name, h.Router.LogTail(40))
			}
		}
		lb.Close()
	})
	h1, h2, h3, h4 := lb.Hosts[0], lb.Hosts[1], lb.Hosts[2], lb.Hosts[3]
	contested := netip.MustParsePrefix("10.42.0.0/24")
	if b, _ := h2.Block(); b != contested {
		t.Fatalf("h2 holds %v, want %v (the lab's names choose it)", b, contested)
	}
	// Cluster B: h3 founds it alone, h4 joins h3.
	if err := lb.Launch(ctx, h3); err != nil {
		t.Fatal(err)
	}
	if err := lb.Launch(ctx, h4, h3); err != nil {
		t.Fatal(err)
	}
	if err := lb.WaitConverged(ctx, []*lab.Host{h3, h4}, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if b, _ := h4.Block(); b != contested {
		t.Fatalf("h4 holds %v, want %v", b, contested)
	}
	dataDir := t.TempDir()
	conf := mustJSON(t, map[string]any{
		"cniVersion": "1.1.0", "name": "drvms", "type": "drover",
		"bridge": h4.Bridge, "daemonSocket": h4.ControlSocket(),
		"ipam": map[string]any{"type": "drover", "dataDir": dataDir},
	})
	add := func(cid string) (*testenv.NetNS, netip.Addr) {
		t.Helper()
		ns := testenv.NewNetNS(t, "cmsc")
		r := runPlugin(t, self(t), h4.NS, execEnv("ADD", cid, ns), conf)
		if r.exit != 0 {
			t.Fatalf("ADD %s on h4: %s", cid, r)
		}
		t.Cleanup(func() { runPlugin(t, self(t), h4.NS, execEnv("DEL", cid, ns), conf) })
		var res types100.Result
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
			t.Fatal(err)
		}
		return ns, resultAddr(t, &res).Addr()
	}
	ns1, a1 := add("early-1")
	_, a2 := add("early-2")
	if !contested.Contains(a1) || !contested.Contains(a2) {
		t.Fatalf("h4's containers got %v and %v, want addresses of %v", a1, a2, contested)
	}

	// The sites are connected: h4 restarts with h1 as its seed (killed,
	// so h3 retries it and comes along).
	if err := lb.KillRouter(h4); err != nil {
		t.Fatal(err)
	}
	met := time.Now()
	if err := lb.Launch(ctx, h4, h1); err != nil {
		t.Fatal(err)
	}
	all := lb.Hosts
	if err := lb.WaitConverged(ctx, all, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("RESULT merged: one cluster of 4 with distinct blocks %v after h4 met h1", time.Since(met).Round(time.Millisecond))
	if b, _ := h2.Block(); b != contested {
		t.Fatalf("h2 holds %v after the merge, want %v (the older claim)", b, contested)
	}
	moved, _ := h4.Block()
	if moved == contested {
		t.Fatalf("h4 still holds %v", contested)
	}
	for _, h := range []*lab.Host{h1, h3} {
		v, err := h.Router.Cluster()
		if err != nil {
			t.Fatal(err)
		}
		if r := v.RouteTo(contested); r == nil || r.Peer != h2.Name {
			t.Fatalf("%s routes %v to %+v, want h2", h.Name, contested, r)
		}
	}
	// h4 reports both containers, by ID, and hands out from its new block.
	var st *router.Status
	err = lab.Poll(ctx, 15*time.Second, 200*time.Millisecond, func() error {
		if st, err = h4.Router.Status(); err != nil {
			return err
		}
		if len(st.Stranded) != 2 {
			return fmt.Errorf("h4 reports stranded %+v, want early-1 and early-2", st.Stranded)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []struct {
		ip  netip.Addr
		cid string
	}{{a1, "early-1"}, {a2, "early-2"}} {
		if got := st.Stranded[i]; got.IP != want.ip.String() || got.ContainerID != want.cid || got.IfName != "eth0" || got.Network != "drvms" {
			t.Fatalf("stranded[%d]: got %+v, want %v %s eth0 drvms", i, got, want.ip, want.cid)
		}
	}
	out, err := exec.Command(lb.Options().Bin, "status", "--socket", h4.ControlSocket()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "stranded: 2 containers") || !strings.Contains(string(out), "early-1") {
		t.Fatalf("drover status on h4 (%v):\n%s", err, out)
	}
	if log := h4.Router.LogTail(500); !strings.Contains(log, "container stranded") || !strings.Contains(log, "container_id=early-2") {
		t.Fatalf("h4's log does not name the stranded containers:\n%s", log)
	}
	_, a3 := add("late")
	if !moved.Contains(a3) {
		t.Fatalf("ADD on h4 after the move: %v, want an address of its new block %v", a3, moved)
	}
	t.Logf("RESULT h4 lost %v to h2, moved to %v, reports %s and %s stranded, hands out %v", contested, moved, a1, a2, a3)

	// One stranded container deleted: the report shrinks.
	if r := runPlugin(t, self(t), h4.NS, execEnv("DEL", "early-1", ns1), conf); r.exit != 0 {
		t.Fatalf("DEL early-1: %s", r)
	}
	err = lab.Poll(ctx, 15*time.Second, 200*time.Millisecond, func() error {
		if st, err = h4.Router.Status(); err != nil {
			return err
		}
		if len(st.Stranded) != 1 || st.Stranded[0].ContainerID != "early-2" {
			return fmt.Errorf("h4 reports stranded %+v, want only early-2", st.Stranded)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
