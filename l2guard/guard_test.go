package l2guard_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/drovernet/drover/internal/netnstest"
	"github.com/drovernet/drover/l2guard"
	"github.com/drovernet/drover/router/packet"
)

// guardLab is a host namespace H with bridge drv-gbr, two containers C1
// and C2 on guarded ports and a LAN namespace L on an unguarded port (the
// uplink). The bridge holds the metadata address.
type guardLab struct {
	H, C1, C2, L *netnstest.NetNS
	g            *l2guard.Guard
	p1, p2       l2guard.Port
	lanMAC       net.HardwareAddr
	brMAC        net.HardwareAddr
}

var (
	metaAddr = netip.MustParseAddr("169.254.169.250")
	gwAddr   = netip.MustParseAddr("10.9.0.1") // L, the LAN's router
	c1Addr   = netip.MustParseAddr("10.9.0.11")
	c2Addr   = netip.MustParseAddr("10.9.0.12")
	hostAddr = netip.MustParseAddr("10.9.0.2")
)

func newGuardLab(t *testing.T) *guardLab {
	t.Helper()
	netnstest.NeedRoot(t)
	l := &guardLab{H: netnstest.New(t, "gh"), C1: netnstest.New(t, "gc1"), C2: netnstest.New(t, "gc2"), L: netnstest.New(t, "gl")}
	h, err := l.H.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "drv-gbr", HardwareAddr: net.HardwareAddr{0x0a, 0x58, 0, 0, 0, 1}}}
	must(t, h.LinkAdd(br))
	must(t, h.AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: hostAddr.AsSlice(), Mask: net.CIDRMask(24, 32)}}))
	must(t, h.AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: metaAddr.AsSlice(), Mask: net.CIDRMask(32, 32)}}))
	must(t, h.LinkSetUp(br))
	l.brMAC = br.HardwareAddr
	attach := func(ns *netnstest.NetNS, host string, addr netip.Addr, mac net.HardwareAddr) {
		t.Helper()
		// IPv4 only, as the plugin configures a container: no IPv6
		// chatter (router solicitations, MLD) for the guard to count.
		must(t, ns.Do(func() error {
			return os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0)
		}))
		must(t, h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host, MasterIndex: br.Index}, PeerName: "eth0",
			PeerHardwareAddr: mac, PeerNamespace: netlink.NsFd(ns.Handle())}))
		hl, err := h.LinkByName(host)
		must(t, err)
		must(t, h.LinkSetUp(hl))
		nl, err := ns.Netlink()
		must(t, err)
		defer nl.Close()
		eth, err := nl.LinkByName("eth0")
		must(t, err)
		must(t, nl.AddrAdd(eth, &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(24, 32)}, Flags: unix.IFA_F_NODAD}))
		must(t, nl.LinkSetUp(eth))
	}
	l.p1 = l2guard.Port{IfName: "drv-gp1", MAC: net.HardwareAddr{0x0a, 0x58, 10, 9, 0, 11}, IP: c1Addr}
	l.p2 = l2guard.Port{IfName: "drv-gp2", MAC: net.HardwareAddr{0x0a, 0x58, 10, 9, 0, 12}, IP: c2Addr}
	l.lanMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	attach(l.C1, l.p1.IfName, c1Addr, l.p1.MAC)
	attach(l.C2, l.p2.IfName, c2Addr, l.p2.MAC)
	attach(l.L, "drv-gup", gwAddr, l.lanMAC)
	l.g, err = l2guard.Open(l.H.Handle())
	must(t, err)
	for _, p := range []l2guard.Port{l.p1, l.p2} {
		if err := l.g.Add(p, []netip.Addr{metaAddr}); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// sniffer reads every frame arriving on one interface of a namespace.
type sniffer struct {
	fd int
}

// sniff reads what eth0 of ns receives.
func sniff(t *testing.T, ns *netnstest.NetNS) *sniffer { return sniffOn(t, ns, "eth0") }

func sniffOn(t *testing.T, ns *netnstest.NetNS, ifname string) *sniffer {
	t.Helper()
	var s sniffer
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		s.fd = fd
		tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	})
	must(t, err)
	t.Cleanup(func() { unix.Close(s.fd) })
	return &s
}

// saw reports whether a frame containing marker arrives within d.
func (s *sniffer) saw(marker []byte, d time.Duration) bool {
	buf := make([]byte, 2048)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(s.fd, buf, 0)
		if err == nil && bytes.Contains(buf[:n], marker) {
			return true
		}
	}
	return false
}

// frames returns every frame that arrives within d.
func (s *sniffer) frames(d time.Duration) [][]byte {
	var out [][]byte
	buf := make([]byte, 2048)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(s.fd, buf, 0)
		if err == nil {
			out = append(out, bytes.Clone(buf[:n]))
		}
	}
	return out
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// sendFrame sends one raw Ethernet frame out of eth0 in ns.
func sendFrame(t *testing.T, ns *netnstest.NetNS, frame []byte) {
	t.Helper()
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		copy(sa.Addr[:], frame[:6])
		return unix.Sendto(fd, frame, 0, sa)
	})
	must(t, err)
}

var broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func eth(dst, src net.HardwareAddr, typ uint16, payload []byte) []byte {
	b := append(append(append([]byte{}, dst...), src...), byte(typ>>8), byte(typ))
	return append(b, payload...)
}

func arpFrame(op uint16, ethSrc, sha net.HardwareAddr, spa, tpa netip.Addr, marker []byte) []byte {
	a := packet.ARP{Op: op, SenderMAC: packet.MAC(sha), SenderIP: spa, TargetIP: tpa}
	return eth(broadcast, ethSrc, 0x0806, append(a.Append(nil), marker...))
}

// ipv4UDP is an IPv4/UDP packet with a valid header checksum.
func ipv4UDP(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	udp := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	udp = append(udp, payload...)
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	return append(ip, udp...)
}

// ipv6ICMP is an IPv6 packet from fe80::1 to ff02::1 carrying an ICMPv6
// message of type typ (the checksum is not filled in: nothing here checks it).
func ipv6ICMP(typ byte, marker []byte) []byte {
	body := append([]byte{typ, 0, 0, 0}, marker...)
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(body)))
	h[6], h[7] = unix.IPPROTO_ICMPV6, 255
	copy(h[8:], netip.MustParseAddr("fe80::1").AsSlice())
	copy(h[24:], netip.MustParseAddr("ff02::1").AsSlice())
	return append(h, body...)
}

func drops(t *testing.T, g *l2guard.Guard) map[string]uint64 {
	t.Helper()
	d, err := g.Drops()
	must(t, err)
	return d
}

// TestGuardFrames sends each forgery of the threat model from a guarded
// container, and the legitimate frames beside them: the LAN sees exactly
// the legitimate ones, and each forgery is counted under its reason.
func TestGuardFrames(t *testing.T) {
	l := newGuardLab(t)
	lan := sniff(t, l.L)
	c2 := sniff(t, l.C2)
	other := net.HardwareAddr{0x0a, 0x58, 10, 9, 0, 99}
	n := 0
	var forged [][]byte
	marker := func() []byte { n++; return []byte(fmt.Sprintf("drv-marker-%03d", n)) }
	cases := []struct {
		name   string
		from   *netnstest.NetNS
		frame  func(m []byte) []byte
		pass   bool
		reason string
	}{
		{"ARP request for the gateway", l.C1, func(m []byte) []byte {
			return arpFrame(packet.ARPRequest, l.p1.MAC, l.p1.MAC, c1Addr, gwAddr, m)
		}, true, ""},
		{"UDP from its own address", l.C1, func(m []byte) []byte {
			return eth(l.lanMAC, l.p1.MAC, 0x0800, ipv4UDP(c1Addr, gwAddr, 40000, 9, m))
		}, true, ""},
		{"another MAC", l.C1, func(m []byte) []byte {
			return eth(l.lanMAC, other, 0x0800, ipv4UDP(c1Addr, gwAddr, 40000, 9, m))
		}, false, l2guard.DropMAC},
		{"another container's address", l.C1, func(m []byte) []byte {
			return eth(l.lanMAC, l.p1.MAC, 0x0800, ipv4UDP(c2Addr, gwAddr, 40000, 9, m))
		}, false, l2guard.DropIP},
		{"a forged ARP reply for the gateway", l.C1, func(m []byte) []byte {
			return arpFrame(packet.ARPReply, l.p1.MAC, l.p1.MAC, gwAddr, c2Addr, m)
		}, false, l2guard.DropARP},
		{"ARP with another sender MAC", l.C1, func(m []byte) []byte {
			return arpFrame(packet.ARPRequest, l.p1.MAC, other, c1Addr, gwAddr, m)
		}, false, l2guard.DropARP},
		{"a DHCP offer", l.C1, func(m []byte) []byte {
			return eth(broadcast, l.p1.MAC, 0x0800, ipv4UDP(c1Addr, netip.MustParseAddr("255.255.255.255"), 67, 68, m))
		}, false, l2guard.DropDHCP},
		{"a router advertisement", l.C1, func(m []byte) []byte {
			return eth(net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, l.p1.MAC, 0x86dd, ipv6ICMP(134, m))
		}, false, l2guard.DropRA},
		{"other IPv6", l.C1, func(m []byte) []byte {
			return eth(net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, l.p1.MAC, 0x86dd, ipv6ICMP(128, m))
		}, false, l2guard.DropIPv6},
		{"a VLAN-tagged frame", l.C1, func(m []byte) []byte {
			return eth(l.lanMAC, l.p1.MAC, 0x8100, append([]byte{0, 5, 0x08, 0x00}, ipv4UDP(c1Addr, gwAddr, 40000, 9, m)...))
		}, false, l2guard.DropOther},
		{"ARP for the metadata address", l.C1, func(m []byte) []byte {
			return arpFrame(packet.ARPRequest, l.p1.MAC, l.p1.MAC, c1Addr, metaAddr, m)
		}, false, l2guard.DropMetadata},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := drops(t, l.g)
			m := marker()
			if !tc.pass {
				forged = append(forged, m)
			}
			sendFrame(t, tc.from, tc.frame(m))
			if got := lan.saw(m, 300*time.Millisecond); got != tc.pass {
				t.Errorf("the LAN saw it: %v, want %v", got, tc.pass)
			}
			after := drops(t, l.g)
			for _, r := range l2guard.Reasons {
				got := after[r] - before[r]
				switch {
				case r != tc.reason && got != 0:
					t.Errorf("%s: counted %d, want 0", r, got)
				case r == tc.reason && r == l2guard.DropMetadata && got == 0:
					// A broadcast is dropped once per port it would
					// have been bridged to.
					t.Errorf("%s: counted 0, want at least 1", r)
				case r == tc.reason && r != l2guard.DropMetadata && got != 1:
					t.Errorf("%s: counted %d, want 1", r, got)
				}
			}
		})
	}
	// C2, on the same bridge, saw none of C1's forgeries (a broadcast
	// among them: the ARP for the metadata address).
	for _, f := range c2.frames(200 * time.Millisecond) {
		for _, m := range forged {
			if bytes.Contains(f, m) {
				t.Errorf("C2 received a forged frame %q", m)
			}
		}
	}

	// From the LAN (an unguarded port): nothing reaches the metadata
	// address, and the LAN's own traffic passes.
	t.Run("LAN to the metadata address", func(t *testing.T) {
		host := sniffOn(t, l.H, "drv-gbr")
		before := drops(t, l.g)
		m := marker()
		sendFrame(t, l.L, eth(l.brMAC, l.lanMAC, 0x0800, ipv4UDP(gwAddr, metaAddr, 40000, 80, m)))
		if host.saw(m, 300*time.Millisecond) {
			t.Error("the host's bridge received a LAN packet to the metadata address")
		}
		if got := drops(t, l.g)[l2guard.DropMetadata] - before[l2guard.DropMetadata]; got != 1 {
			t.Errorf("drop_metadata counted %d, want 1", got)
		}
		c1 := sniff(t, l.C1)
		m = marker()
		sendFrame(t, l.L, eth(l.p1.MAC, l.lanMAC, 0x0800, ipv4UDP(gwAddr, c1Addr, 40000, 9, m)))
		if !c1.saw(m, 300*time.Millisecond) {
			t.Error("the LAN's packet to C1 did not arrive")
		}
	})
}

// TestGuardCheck: Check passes on what Add installed and names what an
// operator (or an attacker with root) changed; Remove leaves no trace.
func TestGuardCheck(t *testing.T) {
	l := newGuardLab(t)
	for _, p := range []l2guard.Port{l.p1, l.p2} {
		if err := l.g.Check(p, []netip.Addr{metaAddr}); err != nil {
			t.Fatalf("Check %s after Add: %v", p.IfName, err)
		}
	}
	// Another port's address is not p1's.
	wrong := l.p1
	wrong.IP = c2Addr
	if err := l.g.Check(wrong, nil); err == nil || !strings.Contains(err.Error(), "rule") {
		t.Errorf("Check with another address: %v, want a rule that differs", err)
	}
	// The listing names each port, and loads back with the ports it
	// lists (an operator's save and restore; nft(8) compiles a few
	// matches to other, equivalent expressions, which Check reports, so
	// the table Add made is put back afterwards).
	listed := nft(t, l.H, "list", "table", "bridge", l2guard.Table)
	for _, p := range []l2guard.Port{l.p1, l.p2} {
		if want := fmt.Sprintf("%q : jump %s", p.IfName, l2guard.PortChain(p.IfName)); !strings.Contains(listed, want) {
			t.Errorf("nft list: no %s in:\n%s", want, listed)
		}
	}
	saved := filepath.Join(t.TempDir(), "guard.nft")
	must(t, os.WriteFile(saved, []byte(listed), 0o600))
	nft(t, l.H, "delete", "table", "bridge", l2guard.Table)
	nft(t, l.H, "-f", saved)
	if ports, err := l.g.Ports(); err != nil || strings.Join(ports, ",") != "drv-gp1,drv-gp2" {
		t.Errorf("Ports after nft -f of the listing: %v, %v; want drv-gp1,drv-gp2", ports, err)
	}
	must(t, l.g.Delete())
	for _, p := range []l2guard.Port{l.p1, l.p2} {
		must(t, l.g.Add(p, []netip.Addr{metaAddr}))
	}
	// Delete one rule of p1's chain with the nft tool.
	out := nft(t, l.H, "-a", "list", "chain", "bridge", l2guard.Table, l2guard.PortChain(l.p1.IfName))
	handle := ""
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "ip saddr") {
			if i := strings.Index(line, "# handle "); i >= 0 {
				handle = strings.TrimSpace(line[i+len("# handle "):])
			}
		}
	}
	if handle == "" {
		t.Fatalf("no ip saddr rule in:\n%s", out)
	}
	nft(t, l.H, "delete", "rule", "bridge", l2guard.Table, l2guard.PortChain(l.p1.IfName), "handle", handle)
	if err := l.g.Check(l.p1, nil); err == nil {
		t.Error("Check after deleting the ip saddr rule: nil, want an error")
	} else {
		t.Logf("tampered: %v", err)
	}
	if err := l.g.Check(l.p2, nil); err != nil {
		t.Errorf("Check of the untouched port: %v", err)
	}
	// A base rule.
	nft(t, l.H, "flush", "chain", "bridge", l2guard.Table, "forward")
	if err := l.g.Check(l.p2, nil); err == nil || !strings.Contains(err.Error(), "forward") {
		t.Errorf("Check after flushing the forward chain: %v, want an error naming it", err)
	}
	// Add repairs the port's chain (a re-ADD); Remove clears it.
	must(t, l.g.Add(l.p1, []netip.Addr{metaAddr}))
	if ports, err := l.g.Ports(); err != nil || strings.Join(ports, ",") != "drv-gp1,drv-gp2" {
		t.Errorf("Ports: %v, %v; want drv-gp1,drv-gp2", ports, err)
	}
	for _, p := range []l2guard.Port{l.p1, l.p2} {
		must(t, l.g.Remove(p.IfName))
		must(t, l.g.Remove(p.IfName)) // idempotent
	}
	if ports, err := l.g.Ports(); err != nil || len(ports) != 0 {
		t.Errorf("Ports after Remove: %v, %v; want none", ports, err)
	}
	if out := nft(t, l.H, "list", "table", "bridge", l2guard.Table); strings.Contains(out, "port_") {
		t.Errorf("a port chain is left:\n%s", out)
	}
	must(t, l.g.Delete())
}

// TestGuardConcurrentAdds: twenty plugins adding ports at once to a
// namespace without the table make it once, with each base rule once.
func TestGuardConcurrentAdds(t *testing.T) {
	netnstest.NeedRoot(t)
	h := netnstest.New(t, "gcc")
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g, err := l2guard.Open(h.Handle())
			if err == nil {
				err = g.Add(l2guard.Port{IfName: fmt.Sprintf("drv-p%02d", i), MAC: net.HardwareAddr{2, 0, 0, 0, 0, byte(i)},
					IP: netip.AddrFrom4([4]byte{10, 9, 1, byte(i + 1)})}, []netip.Addr{metaAddr})
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	g, err := l2guard.Open(h.Handle())
	must(t, err)
	for i := range 20 {
		p := l2guard.Port{IfName: fmt.Sprintf("drv-p%02d", i), MAC: net.HardwareAddr{2, 0, 0, 0, 0, byte(i)}, IP: netip.AddrFrom4([4]byte{10, 9, 1, byte(i + 1)})}
		if err := g.Check(p, []netip.Addr{metaAddr}); err != nil {
			t.Errorf("Check %s: %v", p.IfName, err)
		}
	}
	if ports, _ := g.Ports(); len(ports) != 20 {
		t.Errorf("%d ports, want 20", len(ports))
	}
}

func TestPortValidate(t *testing.T) {
	g := &l2guard.Guard{}
	for _, p := range []l2guard.Port{
		{IfName: "", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, IP: c1Addr},
		{IfName: "drv-0123456789abcdef", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, IP: c1Addr},
		{IfName: "drv-x", MAC: net.HardwareAddr{2, 0, 0}, IP: c1Addr},
		{IfName: "drv-x", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, IP: netip.MustParseAddr("fd00::1")},
	} {
		if err := g.Add(p, nil); err == nil || !strings.HasPrefix(err.Error(), "l2guard: ") {
			t.Errorf("Add(%+v): %v, want a validation error", p, err)
		}
	}
}

func nft(t *testing.T, ns *netnstest.NetNS, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.Name, "nft"}, args...)...).CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("nft %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Fatal(err)
	}
	return string(out)
}
