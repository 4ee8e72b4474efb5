package cni

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"

	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/drovernet/drover/testenv"
)

// execEnv is the environment of one plugin run for container cid in ctr.
func execEnv(cmd, cid string, ctr *testenv.NetNS, extra ...string) map[string]string {
	e := map[string]string{"CNI_COMMAND": cmd, "CNI_CONTAINERID": cid, "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}
	if ctr != nil {
		e["CNI_NETNS"] = ctr.Path()
	}
	for i := 0; i+1 < len(extra); i += 2 {
		e[extra[i]] = extra[i+1]
	}
	return e
}

// 50 plugin processes ADD at once on one host: 50 distinct addresses of
// the block, 50 veths; then 50 DELs at once leave nothing.
func TestConcurrentAdds(t *testing.T) {
	testenv.NeedRoot(t)
	h := newTestHost(t)
	conf := mustJSON(t, h.conf(nil))
	const n = 50
	ctrs := make([]*testenv.NetNS, n)
	for i := range ctrs {
		ctrs[i] = testenv.NewNetNS(t, "cnic")
	}
	runs := make([]pluginRun, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			runs[i] = runPlugin(t, self(t), h.ns, execEnv("ADD", fmt.Sprintf("c%02d", i), ctrs[i]), conf)
		})
	}
	wg.Wait()
	block := netip.MustParsePrefix(testBlock)
	seen := map[netip.Addr]int{}
	for i, r := range runs {
		if r.exit != 0 {
			t.Fatalf("ADD %d: %s", i, r)
		}
		var res types100.Result
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
			t.Fatalf("ADD %d output: %v\n%s", i, err, r.stdout)
		}
		a := resultAddr(t, &res).Addr()
		if !block.Contains(a) {
			t.Fatalf("ADD %d: %v outside %s", i, a, block)
		}
		if j, dup := seen[a]; dup {
			t.Fatalf("%v handed to containers %d and %d", a, j, i)
		}
		seen[a] = i
	}
	if v := h.hostVeths(t); len(v) != n {
		t.Fatalf("got %d veths, want %d", len(v), n)
	}
	for i := range n {
		wg.Go(func() {
			runs[i] = runPlugin(t, self(t), h.ns, execEnv("DEL", fmt.Sprintf("c%02d", i), ctrs[i]), conf)
		})
	}
	wg.Wait()
	for i, r := range runs {
		if r.exit != 0 {
			t.Fatalf("DEL %d: %s", i, r)
		}
	}
	if v := h.hostVeths(t); len(v) != 0 {
		t.Fatalf("veths after DEL: %v", v)
	}
	if rs, _ := h.store(t).List(); len(rs) != 0 {
		t.Fatalf("reservations after DEL: %v", rs)
	}
}

// The plugin SIGKILLed after any step of ADD: no address is handed out
// twice, and GC (the runtime no longer lists the dead attachment) leaves no
// reservation, veth, NAT rule or daemon announcement behind.
func TestKillMidAdd(t *testing.T) {
	testenv.NeedRoot(t)
	for _, step := range []string{"bridge", "reserved", "veth", "configured", "nat", "done"} {
		t.Run(step, func(t *testing.T) {
			h := newTestHost(t)
			confMap := h.conf(map[string]any{"hostNat": true})
			conf := mustJSON(t, confMap)
			dead := testenv.NewNetNS(t, "cnic")
			r := runPlugin(t, self(t), h.ns, execEnv("ADD", "dead", dead, envKillAt, step), conf)
			if r.exit != -9 {
				t.Fatalf("got %s\nwant death by SIGKILL after %s", r, step)
			}
			held, _ := h.store(t).Lookup(ipamOwner("dead"))
			if want := step != "bridge"; (len(held) == 1) != want {
				t.Fatalf("reservation after a kill at %s: got %v, want reserved=%v", step, held, want)
			}
			live := testenv.NewNetNS(t, "cnic")
			res := h.mustAdd(t, "live", live, confMap)
			a := resultAddr(t, res).Addr()
			if slices.Contains(held, a) {
				t.Fatalf("%v handed out while the killed ADD holds it", a)
			}
			if err := h.gc(t, confMap, "live"); err != nil {
				t.Fatalf("GC: %v", err)
			}
			if rs, _ := h.store(t).List(); len(rs) != 1 || rs[0].Addr != a {
				t.Fatalf("reservations after GC: %+v, want only %v", rs, a)
			}
			if v := h.hostVeths(t); !slices.Equal(v, []string{vethName("drvtest", "live", "eth0")}) {
				t.Fatalf("veths after GC: %v", v)
			}
			if ips := h.natIPs(t); !sameAddrs(ips, a) {
				t.Fatalf("NAT rules after GC: %v, want only %v", ips, a)
			}
			added, deleted := h.daemon.notices()
			for _, l := range added {
				if l.ContainerID == "dead" && !slices.Contains(deleted, l.IP) {
					t.Fatalf("daemon still believes %s is local", l.IP)
				}
			}
			if err := h.check(t, "live", live, confMap, res); err != nil {
				t.Fatalf("CHECK of the live container: %v", err)
			}
		})
	}
}
