package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/drovernet/drover/cni/ipam"
	"github.com/drovernet/drover/lab"
	"github.com/drovernet/drover/testenv"
)

// daemonLocals is the daemon's GET /v1/local.
func daemonLocals(t testing.TB, sock string) []Local {
	t.Helper()
	b, err := newDaemonClient(sock).do(context.Background(), http.MethodGet, "/v1/local", nil)
	if err != nil {
		t.Fatalf("GET /v1/local: %v", err)
	}
	var ls []Local
	if err := json.Unmarshal(b, &ls); err != nil {
		t.Fatalf("GET /v1/local: %v\n%s", err, b)
	}
	return ls
}

// wantDaemonLists fails unless the daemon lists ip for container cid
// (listed) or does not list ip at all (!listed).
func wantDaemonLists(t testing.TB, sock, cid string, ip netip.Addr, listed bool) {
	t.Helper()
	ls := daemonLocals(t, sock)
	i := slices.IndexFunc(ls, func(l Local) bool { return l.IP == ip.String() })
	switch {
	case listed && (i < 0 || ls[i].ContainerID != cid || ls[i].IfName != "eth0"):
		t.Fatalf("daemon's /v1/local: got %+v, want %s for %s/eth0", ls, ip, cid)
	case !listed && i >= 0:
		t.Fatalf("daemon's /v1/local still lists %+v", ls[i])
	}
}

// addOutcome is what one ADD process came to.
type addOutcome struct {
	cid    string
	ctr    *testenv.NetNS
	addr   netip.Addr   // succeeded
	err    *types.Error // failed with a CNI error
	killed bool         // SIGKILLed by the test mid-ADD
	// killedReserved: SIGKILLed once its reservation was on disk.
	killedReserved bool
	run            string // exit status and output, for failures
}

// killer, when not nil, runs beside one ADD process and may SIGKILL it; it
// must return once done is closed.
type killer func(p *os.Process, done <-chan struct{})

// killAfter kills after d (the ADD may have finished by then: a kill that
// comes too late changes nothing).
func killAfter(d time.Duration) killer {
	return func(p *os.Process, done <-chan struct{}) {
		select {
		case <-done:
		case <-time.After(d):
			_ = p.Kill()
		}
	}
}

// killReserved kills as soon as o holds an address in store: after the
// reservation, before (most of) the rest of ADD.
func killReserved(store *ipam.Store, o ipam.Owner) killer {
	return func(p *os.Process, done <-chan struct{}) {
		tk := time.NewTicker(time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-tk.C:
				if held, _ := store.Lookup(o); len(held) > 0 {
					_ = p.Kill()
					return
				}
			}
		}
	}
}

// startAdd runs one ADD of the plugin binary bin from inside host, beside
// kill if not nil.
func startAdd(t *testing.T, bin string, host *testenv.NetNS, cid string, ctr *testenv.NetNS, conf []byte, kill killer) addOutcome {
	cmd := exec.Command(bin)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CNI_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range execEnv("ADD", cid, ctr) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin = bytes.NewReader(conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	o := addOutcome{cid: cid, ctr: ctr}
	if err := host.Do(cmd.Start); err != nil { // forked from a thread inside host
		t.Errorf("start ADD %s: %v", cid, err)
		return o
	}
	done := make(chan struct{})
	killerDone := make(chan struct{})
	go func() {
		defer close(killerDone)
		if kill != nil {
			kill(cmd.Process, done)
		}
	}()
	err := cmd.Wait()
	close(done)
	<-killerDone
	o.run = fmt.Sprintf("ADD %s: %v\nstdout: %s\nstderr: %s", cid, err, stdout.String(), stderr.String())
	var ee *exec.ExitError
	switch {
	case err == nil:
		var res struct {
			IPs []struct {
				Address string `json:"address"`
			} `json:"ips"`
		}
		if json.Unmarshal(stdout.Bytes(), &res) != nil || len(res.IPs) != 1 {
			t.Errorf("%s: no single address in the result", o.run)
			return o
		}
		p, perr := netip.ParsePrefix(res.IPs[0].Address)
		if perr != nil {
			t.Errorf("%s: %v", o.run, perr)
		}
		o.addr = p.Addr()
	case errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL:
		o.killed = true
	case errors.As(err, &ee) && ee.ExitCode() == 1:
		var e types.Error
		if json.Unmarshal(stdout.Bytes(), &e) != nil || e.Code == 0 {
			t.Errorf("%s: exit 1 without a CNI error object", o.run)
		}
		o.err = &e
	default:
		t.Errorf("%s: unexpected end", o.run)
	}
	return o
}

// The host's daemon SIGKILLed while many ADDs run (real plugin processes
// of the drover binary, some of them SIGKILLed mid-ADD too), ADDs while it
// is down, then ADDs after its restart. ADDs that needed the daemon fail
// with code 11 and leave nothing behind; no address is held twice; the
// restarted daemon lists exactly what is reserved (also what was added
// while it was away); GC with the containers that exist leaves one
// reservation and one veth per live container and nothing else, and every
// live container reaches the gateway.
func TestDaemonKilledMidAdds(t *testing.T) {
	testenv.NeedRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	lb, err := lab.NewLab(ctx, lab.Options{Hosts: 1, Containers: 1, Tag: "cnk", Bin: testenv.DroverBinary(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lb.Close() })
	host := lb.Hosts[0]
	sock := host.Router.Config.ControlSocket
	bin, real := pluginBinary(t)
	if !real {
		t.Log("the test binary plays the plugin (cmd/drover does not build)")
	}
	const network = "drvkill"
	dataDir := t.TempDir()
	conf := mustJSON(t, map[string]any{
		"cniVersion": "1.1.0", "name": network, "type": "drover",
		"bridge": host.Bridge, "daemonSocket": sock,
		// The lab's own containers hold the low addresses.
		"ipam": map[string]any{"type": "drover", "dataDir": dataDir, "rangeStart": fmt.Sprintf("10.42.%d.100", host.Index)},
	})

	const (
		phaseA  = 30 // at once; the daemon is killed when killAt have finished
		killAt  = 12
		phaseB  = 10 // while the daemon is down
		phaseC  = 20 // after its restart
		killOne = 5  // every killOne-th ADD of phases A and C is SIGKILLed
	)
	store, err := ipam.Open(filepath.Join(dataDir, network))
	if err != nil {
		t.Fatal(err)
	}
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 4))
	var mu sync.Mutex // rng, outcomes
	var outcomes []addOutcome
	var killedAt time.Time
	next := 0
	batch := func(n int, killSome bool, done func(finished int)) []addOutcome {
		ctrs := make([]*testenv.NetNS, n)
		for i := range ctrs {
			ctrs[i] = testenv.NewNetNS(t, "cnk")
		}
		out := make([]addOutcome, n)
		var wg sync.WaitGroup
		finished := 0
		for i := range n {
			cid := fmt.Sprintf("k%02d", next+i)
			// Killed plugins alternate: once the reservation is on
			// disk, or at a random moment.
			var kill killer
			onReserve := false
			if k := next + i; killSome && k%killOne == killOne-1 {
				if onReserve = (k/killOne)%2 == 0; onReserve {
					kill = killReserved(store, ipamOwner(cid))
				} else {
					mu.Lock()
					kill = killAfter(time.Duration(1+rng.IntN(250)) * time.Millisecond)
					mu.Unlock()
				}
			}
			wg.Go(func() {
				out[i] = startAdd(t, bin, host.NS, cid, ctrs[i], conf, kill)
				out[i].killedReserved = onReserve && out[i].killed
				mu.Lock()
				finished++
				f := finished
				mu.Unlock()
				if done != nil {
					done(f)
				}
			})
		}
		wg.Wait()
		next += n
		mu.Lock()
		outcomes = append(outcomes, out...)
		mu.Unlock()
		return out
	}

	// Phase A: the daemon dies while ADDs are in flight.
	var killOnce sync.Once
	a := batch(phaseA, true, func(f int) {
		if f == killAt {
			killOnce.Do(func() {
				if err := lb.KillRouter(host); err != nil {
					t.Error(err)
				}
				mu.Lock()
				killedAt = time.Now()
				mu.Unlock()
			})
		}
	})
	if killedAt.IsZero() {
		t.Fatal("the daemon was never killed")
	}
	// Phase B: the daemon is down; every ADD needs it (no mtu, no
	// bridgeSubnet in the config).
	b := batch(phaseB, false, nil)
	for _, o := range b {
		if o.err == nil || o.err.Code != types.ErrTryAgainLater || !strings.Contains(o.err.Msg, "drover daemon not reachable at "+sock) {
			t.Errorf("ADD while the daemon is down: got %s\nwant CNI error 11 naming the socket", o.run)
		}
	}
	if err := lb.StartRouter(ctx, host); err != nil {
		t.Fatal(err)
	}
	// Phase C: the daemon is back.
	c := batch(phaseC, true, nil)
	for _, o := range append(a, c...) {
		if o.err != nil && o.err.Code != types.ErrTryAgainLater {
			t.Errorf("ADD failed with code %d, want only 11 (daemon gone):\n%s", o.err.Code, o.run)
		}
	}
	for _, o := range c {
		if !o.killed && !o.addr.IsValid() {
			t.Errorf("ADD after the restart did not succeed:\n%s", o.run)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	live := map[ipam.Owner]netip.Addr{}
	var succeeded, failed, killed int
	byAddr := map[netip.Addr]string{}
	for _, o := range outcomes {
		switch {
		case o.addr.IsValid():
			succeeded++
			if other, dup := byAddr[o.addr]; dup {
				t.Fatalf("%v handed to %s and %s", o.addr, other, o.cid)
			}
			byAddr[o.addr] = o.cid
			live[ipamOwner(o.cid)] = o.addr
		case o.killed:
			killed++
		default:
			failed++
		}
	}
	bridgeHost := &testHost{ns: host.NS}
	leaked := func(stage string) (int, []ipam.Reservation) {
		t.Helper()
		rs, err := store.List()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range rs {
			if _, ok := live[r.Owner]; !ok {
				n++
				// Only a killed ADD may leave a reservation: a failed one
				// undoes itself.
				i := slices.IndexFunc(outcomes, func(o addOutcome) bool { return ipamOwner(o.cid) == r.Owner })
				if i < 0 || !outcomes[i].killed {
					t.Errorf("%s: reservation %v of %s, which is neither live nor killed", stage, r.Addr, r.Owner)
				}
			}
		}
		return n, rs
	}
	// What the daemon lists must be what is reserved, nothing more or
	// less: it learned what was added while it was down from the directory.
	wantDaemonEqualsStore := func(stage string, rs []ipam.Reservation) {
		t.Helper()
		var got, want []string
		for _, l := range daemonLocals(t, sock) {
			if l.Network == network {
				got = append(got, l.IP+" "+l.ContainerID)
			}
		}
		for _, r := range rs {
			want = append(want, r.Addr.String()+" "+r.Owner.ContainerID)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: daemon lists\n %q\nreserved\n %q", stage, got, want)
		}
	}
	leakedBefore, rs := leaked("before GC")
	for _, o := range outcomes {
		if o.killedReserved && !slices.ContainsFunc(rs, func(r ipam.Reservation) bool { return r.Owner == ipamOwner(o.cid) }) {
			t.Errorf("%s, killed after its reservation, holds none", o.cid)
		}
	}
	vethsBefore := len(bridgeHost.hostVeths(t))
	wantDaemonEqualsStore("before GC", rs)

	gcConf := map[string]any{}
	if err := json.Unmarshal(conf, &gcConf); err != nil {
		t.Fatal(err)
	}
	att := []map[string]string{}
	for o := range live {
		att = append(att, map[string]string{"containerID": o.ContainerID, "ifname": o.IfName})
	}
	gcConf["cni.dev/valid-attachments"] = att
	if r := runPlugin(t, bin, host.NS, map[string]string{"CNI_COMMAND": "GC", "CNI_PATH": "/opt/cni/bin"}, mustJSON(t, gcConf)); r.exit != 0 {
		t.Fatalf("GC: %s", r)
	}

	leakedAfter, rs := leaked("after GC")
	if leakedAfter != 0 || len(rs) != len(live) {
		t.Errorf("after GC: %d reservations (%d leaked), want exactly the %d live containers'", len(rs), leakedAfter, len(live))
	}
	for _, r := range rs {
		if live[r.Owner] != r.Addr {
			t.Errorf("after GC: %v reserved for %s, which got %v", r.Addr, r.Owner, live[r.Owner])
		}
	}
	var wantVeths []string
	for o := range live {
		wantVeths = append(wantVeths, vethName(network, o.ContainerID, o.IfName))
	}
	gotVeths := bridgeHost.hostVeths(t)
	slices.Sort(wantVeths)
	slices.Sort(gotVeths)
	if !slices.Equal(gotVeths, wantVeths) {
		t.Errorf("veths after GC: got %d %v, want the %d of the live containers", len(gotVeths), gotVeths, len(wantVeths))
	}
	wantDaemonEqualsStore("after GC", rs)

	// Inside the containers: each live one holds its address on eth0 and
	// reaches the gateway; no other has an eth0 left.
	held := map[netip.Addr]string{}
	for _, o := range outcomes {
		nl, err := o.ctr.Netlink()
		if err != nil {
			t.Fatal(err)
		}
		l, lerr := nl.LinkByName("eth0")
		var addrs []netip.Addr
		if lerr == nil {
			as, err := nl.AddrList(l, syscall.AF_INET)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range as {
				if p, ok := addrPrefix(a); ok {
					addrs = append(addrs, p.Addr())
				}
			}
		}
		nl.Close()
		switch {
		case o.addr.IsValid() && !slices.Equal(addrs, []netip.Addr{o.addr}):
			t.Errorf("live %s: eth0 holds %v (%v), want %v", o.cid, addrs, lerr, o.addr)
		case !o.addr.IsValid() && lerr == nil:
			t.Errorf("%s (killed %v) still has eth0 %v after GC", o.cid, o.killed, addrs)
		}
		for _, a := range addrs {
			if other, dup := held[a]; dup {
				t.Errorf("%v configured in %s and %s", a, other, o.cid)
			}
			held[a] = o.cid
		}
	}
	for _, o := range outcomes {
		if o.addr.IsValid() {
			if err := ping(t, o.ctr, host.Gateway); err != nil {
				t.Errorf("live %s (%v) → gateway %v: %v", o.cid, o.addr, host.Gateway, err)
			}
		}
	}
	t.Logf("%d ADDs: %d succeeded, %d failed with code 11, %d plugins SIGKILLed mid-ADD; daemon SIGKILLed after %d of the first %d and restarted after %d more",
		len(outcomes), succeeded, failed, killed, killAt, phaseA, phaseB)
	t.Logf("before GC: %d reservations, %d leaked, %d veths; after GC: %d reservations, %d leaked, %d veths",
		len(live)+leakedBefore, leakedBefore, vethsBefore, len(rs), leakedAfter, len(gotVeths))
	if t.Failed() {
		t.Logf("router log:\n%s", host.Router.LogTail(30))
		t.FailNow()
	}

	// And the restarted daemon follows DEL.
	var wg sync.WaitGroup
	for o := range live {
		wg.Go(func() {
			i := slices.IndexFunc(outcomes, func(x addOutcome) bool { return x.cid == o.ContainerID })
			if r := runPlugin(t, bin, host.NS, execEnv("DEL", o.ContainerID, outcomes[i].ctr), conf); r.exit != 0 {
				t.Errorf("DEL %s: %s", o.ContainerID, r)
			}
		})
	}
	wg.Wait()
	if _, rs := leaked("after DEL"); len(rs) != 0 {
		t.Errorf("reservations after DEL: %v", rs)
	}
	wantDaemonEqualsStore("after DEL", nil)
}
