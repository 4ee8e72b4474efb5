package kernelpeer

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// These tests prove the harness by itself, kernel against kernel or against
// plain namespaces, without drover: interop_test.go does drover.

var testNSSeq atomic.Uint32

// newTestNS creates a namespace standing in for the router's (the external
// tests use testenv.NewNetNS; this package's own tests do not depend on
// testenv) and deletes it when the test ends.
func newTestNS(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("%skph%d-%d", Prefix, os.Getpid()%100000, testNSSeq.Add(1))
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		h, err := netns.NewNamed(name)
		if err == nil {
			h.Close()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	t.Cleanup(func() { _ = netns.DeleteNamed(name) })
	return name
}

// leftovers lists the namespaces and run directories named after peer name.
func leftovers(name, runDir string) []string {
	var out []string
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if e.Name() == Prefix+name || strings.HasPrefix(e.Name(), Prefix+name+"-") {
			out = append(out, "netns "+e.Name())
		}
	}
	if _, err := os.Stat(runDir); err == nil {
		out = append(out, "run dir "+runDir)
	}
	return out
}

func linkIn(t *testing.T, ns, link string) bool {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	_, err = nl.LinkByName(link)
	return err == nil
}

// TestHarnessESP boots a UML ESP peer attached to a namespace, pings its
// endpoint from the LAN namespace and over the underlay, reads the SAs, and
// checks that Close leaves nothing behind.
func TestHarnessESP(t *testing.T) {
	NeedUML(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	a := newTestNS(t)
	p, err := StartESP(ctx, ESPOptions{Name: UniqueName("h"), AEAD: ChaCha, AttachNS: a, SPIOut: 0x1b01, SPIIn: 0x1a01})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			p.Close()
		}
	})
	t.Logf("UML ESP peer %s booted in %v (backend %s)", p.Name, p.Boot.Round(time.Millisecond), p.Backend)
	if p.LANNS() != Prefix+p.Name+"-lan" || p.WireNS != Prefix+p.Name {
		t.Errorf("namespaces: got LAN %q wire %q, want %s-lan and %s", p.LANNS(), p.WireNS, Prefix+p.Name, Prefix+p.Name)
	}
	if want := netip.MustParseAddr("10.0.2.1"); p.LANGW != want {
		t.Errorf("LANGW: got %v, want %v", p.LANGW, want)
	}
	if len(p.KeyOut) != 36 || len(p.KeyIn) != 36 {
		t.Errorf("key material: got %d and %d bytes, want 36 (chacha key + salt)", len(p.KeyOut), len(p.KeyIn))
	}

	// LAN host -> endpoint, and router namespace -> endpoint's underlay
	// address through veth, bridge and TAP.
	for _, c := range []struct {
		what string
		in   Doer
		dst  netip.Addr
	}{{"LAN host -> LAN_GW", p.LANDo, p.LANGW}, {"A -> UML underlay", InNetNS(a), p.Local}} {
		rtt, err := Ping(ctx, c.in, c.dst, 3, 0)
		if err != nil {
			t.Errorf("%s: %v\n%s", c.what, err, p.Logs(10))
			continue
		}
		t.Logf("%s %v: rtt %v", c.what, c.dst, rtt)
	}

	st, err := p.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.SAs) != 2 {
		t.Fatalf("got %d SAs, want 2:\n%s", len(st.SAs), st.Raw)
	}
	for _, want := range []XfrmSA{
		{Src: p.Local, Dst: p.Remote, SPI: p.SPIOut},
		{Src: p.Remote, Dst: p.Local, SPI: p.SPIIn},
	} {
		got, ok := st.SA(want.SPI)
		if !ok || got != want {
			t.Errorf("SA %#x: got %+v, %v; want %+v (no traffic through it yet)", want.SPI, got, ok, want)
		}
	}
	if !strings.Contains(st.Raw, "rfc7539esp(chacha20,poly1305)") {
		t.Errorf("status does not show the chacha AEAD:\n%s", st.Raw)
	}
	out, err := p.Exec("uname", "-r")
	if err != nil || (p.Backend == "uml" && !strings.HasPrefix(out, "6.1.")) {
		t.Errorf("Exec uname -r: got %q, %v; want the UML kernel 6.1.x", out, err)
	}
	if _, err := p.Exec("exit 3"); err == nil {
		t.Errorf("Exec of a failing command: got no error")
	}

	umlPID := 0
	if b, err := os.ReadFile(filepath.Join(p.RunDir, "uml.pid")); err == nil {
		umlPID, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	start := time.Now()
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	closed = true
	t.Logf("Close took %v", time.Since(start).Round(time.Millisecond))
	if l := leftovers(p.Name, p.rr.dir); len(l) > 0 {
		t.Errorf("after Close: %v still exist", l)
	}
	if linkIn(t, a, "ul0") {
		t.Errorf("after Close: ul0 still in %s", a)
	}
	if umlPID > 0 && syscall.Kill(umlPID, 0) == nil {
		t.Errorf("after Close: UML process %d still runs", umlPID)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestHarnessVXLAN starts a kernel VXLAN peer attached to a namespace,
// checks its facts and FDB, pings its underlay address, and closes it.
func TestHarnessVXLAN(t *testing.T) {
	NeedVXLAN(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	a := newTestNS(t)
	p, err := StartVXLAN(ctx, VXLANOptions{Name: UniqueName("hx"), AttachNS: a, VNI: 77})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.VNI != 77 || p.MAC.String() != "02:42:0a:2a:02:01" || p.RemoteMAC.String() != "02:42:0a:2a:01:01" || p.EndpointNS() != Prefix+p.Name+"-k" {
		t.Errorf("facts: got VNI %d MAC %v remote MAC %v endpoint %s; want 77, 02:42:0a:2a:02:01, 02:42:0a:2a:01:01, %s-k",
			p.VNI, p.MAC, p.RemoteMAC, p.EndpointNS(), Prefix+p.Name)
	}
	if _, err := Ping(ctx, InNetNS(a), p.Local, 2, 0); err != nil {
		t.Errorf("A -> vxlan endpoint underlay: %v", err)
	}
	st, err := p.Status()
	if err != nil {
		t.Fatal(err)
	}
	if want := "00:00:00:00:00:00 dst 192.0.2.1 self permanent"; !contains(st.FDB, want) {
		t.Errorf("FDB: got %q, want it to contain %q", st.FDB, want)
	}
	n, ok := st.Neighbor(netip.MustParseAddr("10.42.1.1"))
	if !ok || n.State != "PERMANENT" || n.MAC.String() != p.RemoteMAC.String() {
		t.Errorf("static ARP 10.42.1.1: got %+v, %v; want %v PERMANENT", n, ok, p.RemoteMAC)
	}
	if out, err := p.Exec("ethtool", "-k", "vxlan0"); err != nil || !strings.Contains(out, "tx-checksumming: off") {
		t.Errorf("vxlan0 TX checksum offload: got %v\n%s\nwant tx-checksumming: off", err, out)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if l := leftovers(p.Name, p.rr.dir); len(l) > 0 {
		t.Errorf("after Close: %v still exist", l)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestSweep fakes a test process that died with a peer up: Sweep must take
// the peer down, and must leave a live process's peer alone.
func TestSweep(t *testing.T) {
	NeedVXLAN(t)
	live, err := StartVXLAN(t.Context(), VXLANOptions{Name: UniqueName("sl")})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	dead, err := StartVXLAN(t.Context(), VXLANOptions{Name: UniqueName("sd"), Local: netip.MustParseAddr("192.0.2.12")})
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dead.rr.dir, ownerFile), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	gone := Sweep(t.Context())
	if !contains(gone, dead.Name) || contains(gone, live.Name) {
		t.Errorf("Sweep: got %q, want %s and not %s", gone, dead.Name, live.Name)
	}
	if l := leftovers(dead.Name, dead.rr.dir); len(l) > 0 {
		t.Errorf("after Sweep: %v still exist", l)
	}
	if l := leftovers(live.Name, ""); len(l) != 2 {
		t.Errorf("after Sweep: the live peer has %v, want its two namespaces", l)
	}
}
