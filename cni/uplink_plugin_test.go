package cni

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/drovernet/drover/l2guard"
	"github.com/drovernet/drover/testenv"
)

// uplinkHost is the plugin on the uplink lab's host H, with the uplink
// model's config: LAN addresses .100-.119.
func (l *uplinkLab) plugin(t *testing.T) *testHost {
	t.Helper()
	h := &testHost{
		ns:      l.H,
		p:       &plugin{hostNS: l.H.Handle(), log: slog.New(slog.NewTextHandler(t.Output(), nil))},
		daemon:  newFakeDaemon(t, testBlock, 1438),
		dataDir: t.TempDir(),
	}
	// This host's chunk of the range, as the daemon would claim it.
	h.daemon.chunk = "192.168.77.104-192.168.77.119"
	h.base = map[string]any{
		"cniVersion": "1.1.0", "name": "drvtest", "type": "drover",
		"uplink": upNIC, "bridge": upBridge, "daemonSocket": h.daemon.sock,
		"ipam": map[string]any{"type": "drover", "dataDir": h.dataDir, "rangeStart": "192.168.77.100", "rangeEnd": "192.168.77.119"},
	}
	return h
}

func inNSRun(t *testing.T, ns *testenv.NetNS, args ...string) (string, error) {
	t.Helper()
	return run(append([]string{"ip", "netns", "exec", ns.Name}, args...)...)
}

// TestUplinkModel: containers get LAN addresses on a bridge with the NIC
// as uplink; they reach the LAN's router and a LAN device, which reaches
// them by their own addresses with its source preserved; an address the
// device already uses is skipped (ACD); the metadata address answers from
// the host and its ARP never reaches the LAN; CHECK sees a tampered guard;
// removing the last container gives the NIC its address back.
func TestUplinkModel(t *testing.T) {
	l := newUplinkLab(t)
	// The LAN device also holds .104, the first address of the host's
	// chunk.
	if out, err := run("ip", "-n", l.D.Name, "addr", "add", "192.168.77.104/24", "dev", "eth0"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	h := l.plugin(t)
	conf := h.conf(nil)
	ctrs := map[string]*testenv.NetNS{"c1": testenv.NewNetNS(t, "upc1"), "c2": testenv.NewNetNS(t, "upc2")}
	res := map[string]*types100.Result{}
	addrs := map[string]netip.Prefix{}
	for _, cid := range []string{"c1", "c2"} {
		start := time.Now()
		res[cid] = h.mustAdd(t, cid, ctrs[cid], conf)
		addrs[cid] = resultAddr(t, res[cid])
		t.Logf("ADD %s: %v in %v", cid, addrs[cid], time.Since(start).Round(time.Millisecond))
		if gw := res[cid].IPs[0].Gateway.String(); gw != "192.168.77.1" {
			t.Errorf("%s: gateway %s, want the LAN's router 192.168.77.1", cid, gw)
		}
	}
	for cid, a := range addrs {
		if a.Bits() != 24 || a.Addr() == netip.MustParseAddr("192.168.77.104") ||
			a.Addr().Less(netip.MustParseAddr("192.168.77.104")) || netip.MustParseAddr("192.168.77.119").Less(a.Addr()) {
			t.Errorf("%s got %v, want a /24 address of the host's chunk .105-.119 (.104 is the LAN device's)", cid, a)
		}
	}
	if addrs["c1"] == addrs["c2"] {
		t.Fatalf("both containers got %v", addrs["c1"])
	}
	if reqs := h.daemon.chunkRequests(); len(reqs) == 0 || reqs[0] != "drvtest 192.168.77.100 192.168.77.119 16" {
		t.Errorf("chunk requests %q, want the network's range with the default chunk size", reqs)
	}
	if added, _ := h.daemon.notices(); len(added) != 2 || added[0].Uplink != upNIC || added[0].PrefixLen != 24 || added[0].Gateway != "192.168.77.1" {
		t.Errorf("daemon notices %+v, want two uplink containers with their prefix length and gateway", added)
	}

	// Reachability: container -> router, device; device -> container.
	for cid, ns := range ctrs {
		for _, dst := range []string{"192.168.77.1", "192.168.77.50", "10.77.0.1"} {
			if out, err := inNSRun(t, ns, "ping", "-c1", "-W2", dst); err != nil {
				t.Errorf("%s -> %s: %v\n%s", cid, dst, err, out)
			}
		}
	}
	for cid, ns := range ctrs {
		var ln net.Listener
		if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp4", ":7070"); return err }); err != nil {
			t.Fatal(err)
		}
		from := make(chan string, 1)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				from <- c.RemoteAddr().(*net.TCPAddr).IP.String()
				c.Close()
			}
		}()
		var c net.Conn
		err := l.D.Do(func() (err error) {
			d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("192.168.77.50")}}
			c, err = d.Dial("tcp4", netip.AddrPortFrom(addrs[cid].Addr(), 7070).String())
			return err
		})
		if err != nil {
			t.Errorf("LAN device -> %s by its address: %v", cid, err)
		} else {
			c.Close()
			if got := <-from; got != "192.168.77.50" {
				t.Errorf("%s saw the LAN device as %s, want 192.168.77.50 (no NAT)", cid, got)
			}
		}
		ln.Close()
	}

	// The metadata address: answered by the host, its ARP never on the LAN.
	sniff := startSniff(t, l.D)
	if out, err := inNSRun(t, ctrs["c1"], "ping", "-c1", "-W2", "169.254.169.250"); err != nil {
		t.Errorf("c1 -> metadata address: %v\n%s", err, out)
	}
	// A ping to the device while the capture runs shows it sees the LAN.
	if out, err := inNSRun(t, ctrs["c1"], "ping", "-c1", "-W2", "192.168.77.50"); err != nil {
		t.Errorf("c1 -> device: %v\n%s", err, out)
	}
	seen := sniff()
	if strings.Contains(seen, "169.254.169.250") {
		t.Errorf("the LAN saw the metadata address:\n%s", seen)
	}
	if !strings.Contains(seen, addrs["c1"].Addr().String()+" > 192.168.77.50: ICMP echo request") {
		t.Errorf("the capture on the LAN device missed c1's ping (is it capturing?):\n%s", seen)
	}

	for cid, ns := range ctrs {
		if err := h.check(t, cid, ns, conf, res[cid]); err != nil {
			t.Errorf("CHECK %s: %v", cid, err)
		}
	}
	hostName := vethName("drvtest", "c1", "eth0")
	out, err := run("ip", "netns", "exec", l.H.Name, "nft", "flush", "chain", "bridge", l2guard.Table, l2guard.PortChain(hostName))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if err := h.check(t, "c1", ctrs["c1"], conf, res["c1"]); err == nil || !strings.Contains(err.Error(), "rules") {
		t.Errorf("CHECK after flushing c1's guard: %v, want it to fail naming the rules", err)
	}

	// DEL: the first leaves the uplink bridged, the last restores the NIC.
	if err := h.del(t, "c1", ctrs["c1"], conf); err != nil {
		t.Fatal(err)
	}
	if a, _ := l.config(t, upNIC); len(a) != 0 {
		t.Errorf("NIC has %v after the first DEL, want its address still on the bridge", a)
	}
	if err := h.del(t, "c2", ctrs["c2"], conf); err != nil {
		t.Fatal(err)
	}
	assertUplinkRestored(t, l, h)
}

// assertUplinkRestored: no container state of the network is left and the
// NIC has its configuration back.
func assertUplinkRestored(t *testing.T, l *uplinkLab, h *testHost) {
	t.Helper()
	if a, r := l.config(t, upNIC); fmt.Sprint(a) != "[192.168.77.10/24]" || len(r) != 2 {
		t.Errorf("NIC after the last container: addresses %v routes %v, want 192.168.77.10/24 and 2 routes", a, r)
	}
	if _, err := l.h.LinkByName(upBridge); !isNotFound(err) {
		t.Errorf("bridge %s: %v, want it gone", upBridge, err)
	}
	if rs, err := h.store(t).List(); err != nil || len(rs) != 0 {
		t.Errorf("reservations left: %v %v", rs, err)
	}
	g, err := l2guard.Open(l.H.Handle())
	if err != nil {
		t.Fatal(err)
	}
	if ports, err := g.Ports(); err != nil || len(ports) != 0 {
		t.Errorf("guarded ports left: %v %v", ports, err)
	}
	if v := linksIn(t, l.H, "drv"); len(v) != 1 || v[0] != upNIC {
		t.Errorf("links left on the host: %v, want only %s", v, upNIC)
	}
}

// startSniff runs tcpdump on a namespace's eth0 (ARP and ICMP) until the
// returned function is called, which returns what it printed.
func startSniff(t *testing.T, ns *testenv.NetNS) func() string {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "tcpdump", "-l", "-n", "-i", "eth0", "arp or icmp")
	cmd.Stdout = &out
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("tcpdump: %v", err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			errOut.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "listening on") {
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("tcpdump did not start")
	}
	stopped := false
	stop := func() string {
		if !stopped {
			stopped = true
			time.Sleep(200 * time.Millisecond)
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
			pw.Close()
		}
		return out.String()
	}
	t.Cleanup(func() { stop() })
	return stop
}

// TestUplinkConcurrentAdds: 20 ADDs at once get 20 distinct LAN addresses,
// and GC of them all restores the NIC.
func TestUplinkConcurrentAdds(t *testing.T) {
	l := newUplinkLab(t)
	h := l.plugin(t)
	h.daemon.chunk = "192.168.77.100-192.168.77.119"
	conf := h.conf(nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[netip.Addr]string{}
	for i := range 20 {
		ns := testenv.NewNetNS(t, fmt.Sprintf("upcc%02d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			cid := fmt.Sprintf("c%02d", i)
			res, err := h.add(t, cid, ns, conf)
			if err != nil {
				t.Errorf("ADD %s: %v", cid, err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			a := resultAddr(t, res).Addr()
			if other, dup := got[a]; dup {
				t.Errorf("%s and %s both got %v", cid, other, a)
			}
			got[a] = cid
		}()
	}
	wg.Wait()
	if len(got) != 20 {
		t.Fatalf("%d distinct addresses, want 20", len(got))
	}
	if err := h.gc(t, conf); err != nil {
		t.Fatal(err)
	}
	assertUplinkRestored(t, l, h)
}

// Without the daemon the range cannot be split among hosts: ADD is code 11
// and leaves nothing; a daemon that does not split ranges (404) leaves the
// whole range to this host.
func TestUplinkChunkFromDaemon(t *testing.T) {
	l := newUplinkLab(t)
	h := l.plugin(t)
	conf := h.conf(map[string]any{"daemonSocket": "/nonexistent/drover.sock"})
	ctr := testenv.NewNetNS(t, "upnc")
	_, err := h.add(t, "c1", ctr, conf)
	wantCNIError(t, err, 11, "the daemon splits the LAN range among hosts")
	if err := h.gc(t, h.conf(nil)); err != nil {
		t.Fatal(err)
	}
	assertUplinkRestored(t, l, h)

	h.daemon.chunk = ""
	res := h.mustAdd(t, "c2", ctr, h.conf(nil))
	if a := resultAddr(t, res).Addr(); a != netip.MustParseAddr("192.168.77.100") {
		t.Errorf("with a daemon that does not split ranges: %v, want the range's first address", a)
	}
	if err := h.del(t, "c2", ctr, h.conf(nil)); err != nil {
		t.Fatal(err)
	}
	assertUplinkRestored(t, l, h)
}
