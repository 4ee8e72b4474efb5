package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// Child-process modes: the test binary re-executes itself to allocate from
// another process (real flock contention) or to die at a chosen point.
const (
	envChild = "DROVER_IPAM_TEST_CHILD" // "alloc" or "crash"
	envDir   = "DROVER_IPAM_TEST_DIR"
	envArg   = "DROVER_IPAM_TEST_ARG"
)

func TestMain(m *testing.M) {
	switch os.Getenv(envChild) {
	case "":
		os.Exit(m.Run())
	case "alloc":
		childAlloc()
	case "crash":
		childCrash()
	}
	os.Exit(3)
}

var testPool = Pool{Subnet: netip.MustParsePrefix("10.42.7.0/24"), Exclude: []netip.Addr{netip.MustParseAddr("10.42.7.1")}}

// childAlloc allocates N addresses (owner "p<pid>-<i>") and prints them.
func childAlloc() {
	s, err := Open(os.Getenv(envDir))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	n, _ := strconv.Atoi(os.Getenv(envArg))
	for i := range n {
		a, err := s.Allocate(testPool, Owner{ContainerID: fmt.Sprintf("p%d-%d", os.Getpid(), i), IfName: "eth0"})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(a)
	}
	os.Exit(0)
}

// childCrash allocates for owner "crashed" and SIGKILLs itself at the
// named point ("returned": after Allocate returned, before the caller
// could configure anything).
func childCrash() {
	s, err := Open(os.Getenv(envDir))
	if err != nil {
		os.Exit(1)
	}
	point := os.Getenv(envArg)
	die := func() { syscall.Kill(os.Getpid(), syscall.SIGKILL); select {} }
	s.crash = func(p string) {
		if p == point {
			die()
		}
	}
	if _, err := s.Allocate(testPool, Owner{ContainerID: "crashed", IfName: "eth0"}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if point == "returned" {
		die()
	}
	os.Exit(4) // the point was never reached
}

func child(t *testing.T, dir, mode, arg string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"="+mode, envDir+"="+dir, envArg+"="+arg)
	return cmd
}

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "net"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func owner(i int) Owner { return Owner{ContainerID: fmt.Sprintf("c%03d", i), IfName: "eth0"} }

func TestPoolValidate(t *testing.T) {
	a := netip.MustParseAddr
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		name string
		pool Pool
		want string // "" = valid
		size int
	}{
		{"/24", Pool{Subnet: p("10.42.1.0/24")}, "", 254},
		{"/30", Pool{Subnet: p("10.42.1.0/30")}, "", 2},
		{"/31", Pool{Subnet: p("10.42.1.0/31")}, "too small", 0},
		{"/32", Pool{Subnet: p("10.42.1.1/32")}, "too small", 0},
		{"host bits", Pool{Subnet: p("10.42.1.1/24")}, "host bits set (want 10.42.1.0/24)", 0},
		{"ipv6", Pool{Subnet: p("fd00::/64")}, "want an IPv4 prefix", 0},
		{"zero", Pool{}, "want an IPv4 prefix", 0},
		{"range", Pool{Subnet: p("10.42.1.0/24"), Start: a("10.42.1.100"), End: a("10.42.1.109")}, "", 10},
		{"start is network", Pool{Subnet: p("10.42.1.0/24"), Start: a("10.42.1.0")}, "range start 10.42.1.0 is not a host address", 0},
		{"end is broadcast", Pool{Subnet: p("10.42.1.0/24"), End: a("10.42.1.255")}, "range end 10.42.1.255 is not a host address", 0},
		{"start outside", Pool{Subnet: p("10.42.1.0/24"), Start: a("10.42.2.5")}, "not a host address", 0},
		{"start after end", Pool{Subnet: p("10.42.1.0/24"), Start: a("10.42.1.9"), End: a("10.42.1.8")}, "after end", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.pool.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("got %v, want valid", err)
				}
				if got := tc.pool.Size(); got != tc.size {
					t.Fatalf("size: got %d, want %d", got, tc.size)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// A /29 has hosts .1-.6; .1 is the gateway. Exactly .2-.6 are handed out,
// then ErrFull: never the network (.0), the gateway or the broadcast (.7).
func TestAllocateSkipsNetworkGatewayBroadcast(t *testing.T) {
	s := newStore(t)
	pool := Pool{Subnet: netip.MustParsePrefix("10.9.0.0/29"), Exclude: []netip.Addr{netip.MustParseAddr("10.9.0.1")}}
	var got []string
	for i := range 5 {
		a, err := s.Allocate(pool, owner(i))
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		got = append(got, a.String())
	}
	if want := "10.9.0.2 10.9.0.3 10.9.0.4 10.9.0.5 10.9.0.6"; strings.Join(got, " ") != want {
		t.Fatalf("got %v, want %s", got, want)
	}
	_, err := s.Allocate(pool, owner(99))
	if !errors.Is(err, ErrFull) {
		t.Fatalf("6th allocation: got %v, want ErrFull", err)
	}
	if n, err := s.Free(pool); err != nil || n != 0 {
		t.Fatalf("free: got %d, %v; want 0", n, err)
	}
}

func TestAllocateRange(t *testing.T) {
	s := newStore(t)
	pool := Pool{Subnet: netip.MustParsePrefix("10.9.0.0/24"), Start: netip.MustParseAddr("10.9.0.250"), End: netip.MustParseAddr("10.9.0.251")}
	for i, want := range []string{"10.9.0.250", "10.9.0.251"} {
		a, err := s.Allocate(pool, owner(i))
		if err != nil || a.String() != want {
			t.Fatalf("allocation %d: got %v, %v; want %s", i, a, err, want)
		}
	}
	if _, err := s.Allocate(pool, owner(3)); !errors.Is(err, ErrFull) {
		t.Fatalf("got %v, want ErrFull", err)
	}
}

// An ADD retried for the same attachment gets the address it already holds.
func TestAllocateSameOwnerIsIdempotent(t *testing.T) {
	s := newStore(t)
	a1, err := s.Allocate(testPool, owner(1))
	if err != nil {
		t.Fatal(err)
	}
	a2, err := s.Allocate(testPool, owner(1))
	if err != nil || a2 != a1 {
		t.Fatalf("second allocation for the same owner: got %v, %v; want %v", a2, err, a1)
	}
	other, err := s.Allocate(testPool, Owner{ContainerID: owner(1).ContainerID, IfName: "eth1"})
	if err != nil || other == a1 {
		t.Fatalf("another interface of the same container: got %v, %v; want a different address", other, err)
	}
}

func TestReleaseAndRoundRobin(t *testing.T) {
	s := newStore(t)
	a1, _ := s.Allocate(testPool, owner(1))
	a2, _ := s.Allocate(testPool, owner(2))
	freed, err := s.Release(owner(1))
	if err != nil || len(freed) != 1 || freed[0] != a1 {
		t.Fatalf("release: got %v, %v; want [%v]", freed, err, a1)
	}
	// Releasing again is not an error: DEL is idempotent.
	if freed, err := s.Release(owner(1)); err != nil || len(freed) != 0 {
		t.Fatalf("second release: got %v, %v; want nothing", freed, err)
	}
	a3, _ := s.Allocate(testPool, owner(3))
	if a3 == a1 {
		t.Fatalf("freed %v was handed out again at once; want round-robin past %v", a1, a2)
	}
	if got, _ := s.Lookup(owner(2)); len(got) != 1 || got[0] != a2 {
		t.Fatalf("lookup: got %v, want [%v]", got, a2)
	}
	// Wrap around: the last address is followed by the first.
	small := Pool{Subnet: netip.MustParsePrefix("10.9.1.0/30")}
	b1, _ := s.Allocate(small, owner(10))
	b2, _ := s.Allocate(small, owner(11))
	s.Release(owner(10))
	b3, err := s.Allocate(small, owner(12))
	if err != nil || b3 != b1 {
		t.Fatalf("after %v, %v and releasing %v: got %v, %v; want %v", b1, b2, b1, b3, err, b1)
	}
}

// 50 ADDs at once, each with its own Store (its own lock descriptor, as 50
// plugin processes would have), get 50 distinct addresses.
func TestConcurrentAllocations(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net")
	const n = 50
	addrs := make([]netip.Addr, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			s, err := Open(dir)
			if err != nil {
				errs[i] = err
				return
			}
			addrs[i], errs[i] = s.Allocate(testPool, owner(i))
		})
	}
	wg.Wait()
	seen := map[netip.Addr]int{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("allocation %d: %v", i, errs[i])
		}
		if j, dup := seen[addrs[i]]; dup {
			t.Fatalf("%v handed out twice (owners %d and %d)", addrs[i], j, i)
		}
		seen[addrs[i]] = i
	}
	s, _ := Open(dir)
	rs, err := s.List()
	if err != nil || len(rs) != n {
		t.Fatalf("list: got %d reservations, %v; want %d", len(rs), err, n)
	}
}

// The same across processes: 10 processes allocate 5 addresses each.
func TestConcurrentProcesses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net")
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	const procs, each = 10, 5
	outs := make([]string, procs)
	errs := make([]error, procs)
	var wg sync.WaitGroup
	for i := range procs {
		wg.Go(func() {
			cmd := child(t, dir, "alloc", strconv.Itoa(each))
			var stderr strings.Builder
			cmd.Stderr = &stderr
			b, err := cmd.Output()
			outs[i] = string(b)
			if err != nil {
				errs[i] = fmt.Errorf("%w: %s", err, stderr.String())
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := range procs {
		if errs[i] != nil {
			t.Fatalf("process %d: %v", i, errs[i])
		}
		for _, a := range strings.Fields(outs[i]) {
			if seen[a] {
				t.Fatalf("%s handed out twice", a)
			}
			seen[a] = true
		}
	}
	if len(seen) != procs*each {
		t.Fatalf("got %d addresses, want %d", len(seen), procs*each)
	}
}

// A plugin killed at any point of a reservation never causes a duplicate:
// before the link nothing is reserved (and the temporary file is swept);
// from the link on the address stays reserved for the dead attachment,
// is never handed out to anyone else, and GC frees it.
func TestCrashAtEveryPoint(t *testing.T) {
	for _, tc := range []struct {
		point    string
		reserved bool
	}{
		{"written", false},
		{"synced", false},
		{"linked", true},
		{"durable", true},
		{"returned", true},
	} {
		t.Run(tc.point, func(t *testing.T) {
			s := newStore(t)
			// Others hold addresses already, so the crash happens mid-pool.
			for i := range 3 {
				if _, err := s.Allocate(testPool, owner(i)); err != nil {
					t.Fatal(err)
				}
			}
			err := child(t, s.Dir(), "crash", tc.point).Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("child: got %v, want death by SIGKILL at %q", err, tc.point)
			}
			crashed := Owner{ContainerID: "crashed", IfName: "eth0"}
			held, err := s.Lookup(crashed)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(held) == 1; got != tc.reserved {
				t.Fatalf("reservation of the crashed ADD: got %v, want reserved=%v", held, tc.reserved)
			}
			// Nobody else gets the crashed ADD's address.
			for i := 10; i < 60; i++ {
				a, err := s.Allocate(testPool, owner(i))
				if err != nil {
					t.Fatal(err)
				}
				if tc.reserved && a == held[0] {
					t.Fatalf("%v handed out to %v while reserved for the crashed ADD", a, owner(i))
				}
			}
			if tmps, _ := filepath.Glob(filepath.Join(s.Dir(), tmpPrefix+"*")); len(tmps) != 0 {
				t.Fatalf("temporary files left after later allocations: %v", tmps)
			}
			// GC: every attachment but the crashed one is still valid.
			freed := gc(t, s, func(o Owner) bool { return o != crashed })
			if tc.reserved && (len(freed) != 1 || freed[0] != held[0]) {
				t.Fatalf("GC freed %v, want [%v]", freed, held[0])
			}
			if !tc.reserved && len(freed) != 0 {
				t.Fatalf("GC freed %v, want nothing", freed)
			}
			if held, _ := s.Lookup(crashed); len(held) != 0 {
				t.Fatalf("after GC the crashed ADD still holds %v", held)
			}
		})
	}
}

// gc is what the plugin's GC does with a store: release every reservation
// whose owner is not valid.
func gc(t *testing.T, s *Store, valid func(Owner) bool) []netip.Addr {
	t.Helper()
	rs, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var freed []netip.Addr
	for _, r := range rs {
		if !r.Unreadable && valid(r.Owner) {
			continue
		}
		ok, err := s.ReleaseReservation(r)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			freed = append(freed, r.Addr)
		}
	}
	return freed
}

func TestGCAndUnreadable(t *testing.T) {
	s := newStore(t)
	for i := range 4 {
		if _, err := s.Allocate(testPool, owner(i)); err != nil {
			t.Fatal(err)
		}
	}
	// A file written by hand, not by the store: reserved, owner unknown.
	junk := netip.MustParseAddr("10.42.7.200")
	if err := os.WriteFile(filepath.Join(s.Dir(), junk.String()), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	rs, _ := s.List()
	if len(rs) != 5 || !rs[4].Unreadable || rs[4].Addr != junk {
		t.Fatalf("list: got %+v, want 4 reservations and the unreadable %v", rs, junk)
	}
	freed := gc(t, s, func(o Owner) bool { return o == owner(0) || o == owner(2) })
	if len(freed) != 3 {
		t.Fatalf("GC freed %v, want owners 1 and 3 and the unreadable file", freed)
	}
	rs, _ = s.List()
	if len(rs) != 2 || rs[0].Owner != owner(0) || rs[1].Owner != owner(2) {
		t.Fatalf("after GC: got %+v, want owners 0 and 2", rs)
	}
}

// ReleaseReservation releases nothing when the address changed hands after
// it was listed.
func TestReleaseReservationOwnerChanged(t *testing.T) {
	s := newStore(t)
	a, _ := s.Allocate(testPool, owner(1))
	stale := Reservation{Addr: a, Owner: owner(1)}
	s.Release(owner(1))
	s.Allocate(Pool{Subnet: testPool.Subnet, Start: a, End: a}, owner(2))
	ok, err := s.ReleaseReservation(stale)
	if err != nil || ok {
		t.Fatalf("got %v, %v; want false: %v now belongs to %v", ok, err, a, owner(2))
	}
	if held, _ := s.Lookup(owner(2)); len(held) != 1 {
		t.Fatalf("owner 2 lost its address: %v", held)
	}
}

func TestOwnerRequired(t *testing.T) {
	s := newStore(t)
	for _, o := range []Owner{{}, {ContainerID: "x"}, {IfName: "eth0"}} {
		if _, err := s.Allocate(testPool, o); err == nil {
			t.Fatalf("owner %+v: got nil error, want one", o)
		}
	}
}

// The reservation file is the daemon's source of local containers: its
// format is fixed.
func TestReservationFormat(t *testing.T) {
	s := newStore(t)
	a, _ := s.Allocate(testPool, Owner{ContainerID: "abc", IfName: "eth0"})
	b, err := os.ReadFile(filepath.Join(s.Dir(), a.String()))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"containerID":"abc","ifname":"eth0"}`+"\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	fi, err := os.Stat(s.Dir())
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("store directory mode: got %v, %v; want 0700", fi.Mode(), err)
	}
}

func BenchmarkAllocateRelease(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "net"))
	if err != nil {
		b.Fatal(err)
	}
	for i := range 100 { // a host with 100 containers
		s.Allocate(testPool, owner(i))
	}
	b.ReportAllocs()
	o := Owner{ContainerID: "bench", IfName: "eth0"}
	for b.Loop() {
		if _, err := s.Allocate(testPool, o); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Release(o); err != nil {
			b.Fatal(err)
		}
	}
}

// The pod an attachment belongs to is recorded beside its owner, read back
// by List, and not part of the owner: a retried ADD without it gets the
// same address. Files written before pods were recorded still read.
func TestAllocateForPod(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	o := Owner{ContainerID: "c1", IfName: "eth0"}
	pod := Pod{Namespace: "x", Name: "a-7f9c", Labels: map[string]string{"app": "web", "example.com/tier": ""}}
	ip, err := s.AllocateFor(testPool, o, pod)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := s.Allocate(testPool, o); err != nil || again != ip {
		t.Fatalf("retried ADD: got %v %v, want %v", again, err, ip)
	}
	old := netip.MustParseAddr("10.42.7.200")
	if err := os.WriteFile(filepath.Join(dir, old.String()), []byte(`{"containerID":"c0","ifname":"eth0"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rs, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	got := map[netip.Addr]Pod{}
	for _, r := range rs {
		if r.Unreadable {
			t.Fatalf("%v unreadable", r.Addr)
		}
		got[r.Addr] = r.Pod
	}
	if !reflect.DeepEqual(got[ip], pod) || !reflect.DeepEqual(got[old], Pod{}) || len(got) != 2 {
		t.Fatalf("pods: got %v, want %v: %v and %v: none", got, ip, pod, old)
	}
}
