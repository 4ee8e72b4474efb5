package cni

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/drovernet/drover/testenv"
)

// uplinkLab is a LAN: a bridge drv-lan in an outside namespace O, with the
// LAN's router L (192.168.77.1, and 10.77.0.1 behind it), a LAN device D
// (192.168.77.50) and a host namespace H whose "physical NIC" drv-nic0 is
// a port of it. H has 192.168.77.10/24 on the NIC, a default route and a
// more specific static route through the router.
type uplinkLab struct {
	H, L, O, D *testenv.NetNS
	h          *netlink.Handle
}

const (
	upNIC    = "drv-nic0"
	upBridge = "drv-up0"
)

func newUplinkLab(t *testing.T) *uplinkLab {
	t.Helper()
	l := &uplinkLab{H: testenv.NewNetNS(t, "uph"), L: testenv.NewNetNS(t, "upl"), O: testenv.NewNetNS(t, "upo"), D: testenv.NewNetNS(t, "upd")}
	var err error
	if l.h, err = l.H.Netlink(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.h.Close)
	steps := []string{
		"ip -n %[3]s link add drv-lan type bridge",
		"ip -n %[3]s link set drv-lan up",
		"ip -n %[3]s link add drv-oh type veth peer name " + upNIC + " netns %[1]s",
		"ip -n %[1]s link set " + upNIC + " address 02:00:00:00:77:10",
		"ip -n %[3]s link add drv-ol type veth peer name eth0 netns %[2]s",
		"ip -n %[3]s link add drv-od type veth peer name eth0 netns %[4]s",
		"ip -n %[3]s link set drv-oh master drv-lan up",
		"ip -n %[3]s link set drv-ol master drv-lan up",
		"ip -n %[3]s link set drv-od master drv-lan up",
		"ip -n %[1]s addr add 192.168.77.10/24 dev " + upNIC,
		"ip -n %[1]s link set " + upNIC + " up",
		"ip -n %[1]s route add default via 192.168.77.1",
		"ip -n %[1]s route add 10.77.0.0/16 via 192.168.77.1 metric 50",
		"ip -n %[2]s addr add 192.168.77.1/24 dev eth0",
		"ip -n %[2]s addr add 10.77.0.1/16 dev lo",
		"ip -n %[2]s link set eth0 up",
		"ip -n %[4]s addr add 192.168.77.50/24 dev eth0",
		"ip -n %[4]s link set eth0 up",
	}
	for _, s := range steps {
		s = fmt.Sprintf(s, l.H.Name, l.L.Name, l.O.Name, l.D.Name)
		if out, err := run(strings.Fields(s)...); err != nil {
			t.Fatalf("%s: %v\n%s", s, err, out)
		}
	}
	return l
}

// echo serves a line echo in L on addr and returns a connection to it
// from H.
func (l *uplinkLab) echo(t *testing.T, addr string) net.Conn {
	t.Helper()
	var ln net.Listener
	if err := l.L.Do(func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					s, err := r.ReadString('\n')
					if err != nil {
						return
					}
					fmt.Fprint(c, s)
				}
			}()
		}
	}()
	var c net.Conn
	if err := l.H.Do(func() (err error) { c, err = net.DialTimeout("tcp4", addr, 5*time.Second); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// run runs a command and returns its combined output.
func run(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	return string(out), err
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintln(c, msg)
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != msg+"\n" {
		t.Errorf("echo of %q: got %q, %v", msg, got, err)
	}
}

// config returns the IPv4 addresses and the non-kernel routes of link.
func (l *uplinkLab) config(t *testing.T, link string) (addrs, routes []string) {
	t.Helper()
	out, err := run("ip", "-n", l.H.Name, "-4", "-o", "addr", "show", "dev", link)
	if err != nil {
		return nil, nil // no such link
	}
	for _, f := range strings.Split(strings.TrimSpace(out), "\n") {
		if i := strings.Index(f, "inet "); i >= 0 {
			addrs = append(addrs, strings.Fields(f[i:])[1])
		}
	}
	out, _ = run("ip", "-n", l.H.Name, "-4", "route", "show", "dev", link)
	for _, r := range strings.Split(strings.TrimSpace(out), "\n") {
		if r != "" && !strings.Contains(r, "proto kernel") {
			routes = append(routes, strings.TrimSpace(r))
		}
	}
	return addrs, routes
}

// TestUplinkMoveAndRestore: the host's address and routes move from the NIC
// to the bridge and back, an established TCP connection through the NIC
// keeps working across both moves, and a repeated attach changes nothing.
func TestUplinkMoveAndRestore(t *testing.T) {
	l := newUplinkLab(t)
	c := l.echo(t, "10.77.0.1:7001") // via the static route
	roundTrip(t, c, "before")
	wantAddrs := []string{"192.168.77.10/24"}
	wantRoutes := []string{"default via 192.168.77.1", "10.77.0.0/16 via 192.168.77.1 metric 50"}
	state := filepath.Join(t.TempDir(), uplinkFile)
	var br netlink.Link
	if err := l.H.Do(func() (err error) { br, err = attachUplink(l.H.Handle(), l.h, upBridge, upNIC, state); return err }); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, "moved")
	if a, r := l.config(t, upBridge); fmt.Sprint(a) != fmt.Sprint(wantAddrs) || fmt.Sprint(r) != fmt.Sprint(wantRoutes) {
		t.Errorf("bridge: addresses %q routes %q, want %q and %q", a, r, wantAddrs, wantRoutes)
	}
	if a, r := l.config(t, upNIC); len(a) != 0 || len(r) != 0 {
		t.Errorf("NIC after the move: addresses %q routes %q, want none", a, r)
	}
	nic, _ := l.h.LinkByName(upNIC)
	if nic.Attrs().MasterIndex != br.Attrs().Index || br.Attrs().HardwareAddr.String() != "02:00:00:00:77:10" {
		t.Errorf("NIC master %d (bridge %d), bridge MAC %v; want the NIC under the bridge, with its MAC", nic.Attrs().MasterIndex, br.Attrs().Index, br.Attrs().HardwareAddr)
	}
	// Bridged LAN frames stay out of the host's netfilter hooks.
	if out, err := run("ip", "-n", l.H.Name, "-d", "link", "show", upBridge); err != nil ||
		!strings.Contains(out, "nf_call_iptables 0") || !strings.Contains(out, "nf_call_ip6tables 0") || !strings.Contains(out, "nf_call_arptables 0") {
		t.Errorf("bridge %s: want nf_call_iptables, ip6tables and arptables 0: %v\n%s", upBridge, err, out)
	}
	if p, ok, err := uplinkSubnet(l.h, br, netip.MustParseAddr("192.168.77.99")); !ok || err != nil || p.String() != "192.168.77.0/24" {
		t.Errorf("uplinkSubnet: %v %v %v, want 192.168.77.0/24", p, ok, err)
	}
	// Again (the next container's ADD): nothing changes.
	if err := l.H.Do(func() (err error) { _, err = attachUplink(l.H.Handle(), l.h, upBridge, upNIC, state); return err }); err != nil {
		t.Fatal(err)
	}
	if a, r := l.config(t, upBridge); fmt.Sprint(a) != fmt.Sprint(wantAddrs) || fmt.Sprint(r) != fmt.Sprint(wantRoutes) {
		t.Errorf("bridge after a second attach: %q %q", a, r)
	}
	// The LAN reaches the host's address through the bridge.
	if out, err := run("ip", "netns", "exec", l.L.Name, "ping", "-c1", "-W2", "192.168.77.10"); err != nil {
		t.Errorf("ping from the LAN: %v\n%s", err, out)
	}

	if err := restoreUplink(l.h, state); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, "restored")
	if a, r := l.config(t, upNIC); fmt.Sprint(a) != fmt.Sprint(wantAddrs) || fmt.Sprint(r) != fmt.Sprint(wantRoutes) {
		t.Errorf("NIC after restore: addresses %q routes %q, want %q and %q", a, r, wantAddrs, wantRoutes)
	}
	if _, err := l.h.LinkByName(upBridge); !isNotFound(err) {
		t.Errorf("bridge after restore: %v, want it deleted", err)
	}
	if err := restoreUplink(l.h, state); err != nil { // no record: nothing to do
		t.Errorf("second restore: %v", err)
	}
}

// TestUplinkOperatorBridge: a NIC the operator already put under the bridge
// is used as it is, and restore leaves it there.
func TestUplinkOperatorBridge(t *testing.T) {
	l := newUplinkLab(t)
	for _, s := range []string{
		"ip -n %[1]s addr flush dev " + upNIC,
		"ip -n %[1]s link add " + upBridge + " type bridge",
		"ip -n %[1]s link set " + upNIC + " master " + upBridge,
		"ip -n %[1]s addr add 192.168.77.10/24 dev " + upBridge,
		"ip -n %[1]s link set " + upBridge + " up",
	} {
		if out, err := run(strings.Fields(fmt.Sprintf(s, l.H.Name))...); err != nil {
			t.Fatalf("%s: %v\n%s", s, err, out)
		}
	}
	state := filepath.Join(t.TempDir(), uplinkFile)
	if err := l.H.Do(func() (err error) { _, err = attachUplink(l.H.Handle(), l.h, upBridge, upNIC, state); return err }); err != nil {
		t.Fatal(err)
	}
	if err := restoreUplink(l.h, state); err != nil {
		t.Fatal(err)
	}
	nic, _ := l.h.LinkByName(upNIC)
	if nic.Attrs().MasterIndex == 0 {
		t.Error("restore released the operator's NIC from the operator's bridge")
	}
	// A bridge named as the uplink, or a NIC under another master.
	if err := l.H.Do(func() (err error) { _, err = attachUplink(l.H.Handle(), l.h, "drv-other", upNIC, state); return err }); err == nil || !strings.Contains(err.Error(), "already a port") {
		t.Errorf("NIC under another bridge: %v, want an error", err)
	}
	if err := l.H.Do(func() (err error) { _, err = attachUplink(l.H.Handle(), l.h, "drv-x", upBridge, state); return err }); err == nil || !strings.Contains(err.Error(), "is a bridge") {
		t.Errorf("a bridge as uplink: %v, want an error", err)
	}
}
