package kernelpeer

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
)

// VXLANOptions are the `up` flags of kernel-vxlan-peer.sh. Zero values keep
// the script's defaults.
type VXLANOptions struct {
	// Name is the peer name, [a-z0-9]{1,8}; it names the namespaces drv-NAME
	// (the wire) and drv-NAME-k (the endpoint). Default UniqueName("x").
	Name string
	// VNI default 1042; Port (UDP destination, also vxlan0's) default 4789.
	VNI  uint32
	Port uint16
	// SrcPortLo..SrcPortHi is the UDP source port range the kernel hashes
	// inner flows into (0: the namespace's ip_local_port_range).
	SrcPortLo, SrcPortHi uint16
	// Local is the kernel's underlay address (default 192.0.2.2), Remote the
	// router's (default 192.0.2.1), both in a /PrefixLen (default 24).
	Local, Remote netip.Addr
	PrefixLen     int
	// Inner is vxlan0's address (default 10.42.2.1/16); MAC its MAC
	// (default 02:42 followed by the inner IPv4 address).
	Inner netip.Prefix
	MAC   net.HardwareAddr
	// RemoteInners get permanent ARP entries to RemoteMAC (default
	// [10.42.1.1]); RemoteMAC also gets an FDB entry to Remote (default 02:42
	// followed by the first remote inner address).
	RemoteInners []netip.Addr
	RemoteMAC    net.HardwareAddr
	// Learning lets vxlan0 learn MAC → VTEP; NoStaticARP leaves out the ARP
	// entries (the kernel then ARPs through the tunnel's flood entry);
	// NoStaticFDB leaves out RemoteMAC's FDB entry (only the flood entry).
	Learning, NoStaticARP, NoStaticFDB bool
	// UDPCsum makes the kernel send UDP checksums (default: 0).
	UDPCsum bool
	// MTU is the underlay MTU (vxlan0 gets MTU-50). Default 1500.
	MTU int
	// AttachNS/AttachIf as in ESPOptions.
	AttachNS, AttachIf string
	// SwitchNS puts the endpoint on bridge br0 of this namespace.
	SwitchNS string
	// RunBase is where the run directory is created. Default DefaultRunBase.
	RunBase string
	// KeepTxOffload leaves vxlan0's TX checksum offload on. By default
	// StartVXLAN turns it off (ethtool -K vxlan0 tx off): over a veth
	// underlay nothing finishes a CHECKSUM_PARTIAL inner TCP/UDP checksum,
	// so a userspace receiver (drover's UDP socket) would get inner packets
	// whose checksum holds only the pseudo-header sum, which the receiving
	// stack then drops. A real NIC (or the kernel's software fallback for
	// one without tunnel offloads) finishes them, so this is what the wire
	// carries between hosts. Kernel-to-kernel traffic never notices: the
	// receiving vxlan driver keeps the skb's checksum state.
	KeepTxOffload bool
}

func (o *VXLANOptions) args() ([]string, error) {
	if o.Name == "" {
		o.Name = UniqueName("x")
	}
	if !nameRE.MatchString(o.Name) {
		return nil, fmt.Errorf("kernelpeer: peer name %q must match [a-z0-9]{1,8}", o.Name)
	}
	a := []string{"up", "--name", o.Name}
	if o.VNI != 0 {
		if o.VNI >= 1<<24 {
			return nil, fmt.Errorf("kernelpeer: VNI %d does not fit in 24 bits", o.VNI)
		}
		a = append(a, "--vni", strconv.FormatUint(uint64(o.VNI), 10))
	}
	if o.Port != 0 {
		a = append(a, "--port", strconv.Itoa(int(o.Port)))
	}
	if o.SrcPortLo != 0 || o.SrcPortHi != 0 {
		a = append(a, "--srcport", strconv.Itoa(int(o.SrcPortLo)), strconv.Itoa(int(o.SrcPortHi)))
	}
	a = appendAddr(a, "--local", o.Local)
	a = appendAddr(a, "--remote", o.Remote)
	if o.PrefixLen != 0 {
		a = append(a, "--plen", strconv.Itoa(o.PrefixLen))
	}
	a = appendPrefix(a, "--inner", o.Inner)
	if o.MAC != nil {
		a = append(a, "--mac", o.MAC.String())
	}
	for _, r := range o.RemoteInners {
		a = appendAddr(a, "--remote-inner", r)
	}
	if o.RemoteMAC != nil {
		a = append(a, "--remote-mac", o.RemoteMAC.String())
	}
	for _, f := range []struct {
		on   bool
		flag string
	}{{o.Learning, "--learning"}, {o.NoStaticARP, "--no-static-arp"}, {o.NoStaticFDB, "--no-static-fdb"}, {o.UDPCsum, "--udpcsum"}} {
		if f.on {
			a = append(a, f.flag)
		}
	}
	if o.MTU != 0 {
		a = append(a, "--mtu", strconv.Itoa(o.MTU))
	}
	a = appendStr(a, "--attach-ns", o.AttachNS)
	a = appendStr(a, "--attach-if", o.AttachIf)
	a = appendStr(a, "--switch-ns", o.SwitchNS)
	return a, nil
}

// VXLANPeer is a running kernel vxlan endpoint. Its fields are what `up`
// printed.
type VXLANPeer struct {
	Name          string
	WireNS        string
	VNI           uint32
	Port          uint16
	Local, Remote netip.Addr
	Inner         netip.Prefix     // vxlan0's address
	MAC           net.HardwareAddr // vxlan0's MAC
	RemoteInners  []netip.Addr
	RemoteMAC     net.HardwareAddr

	epNS string
	rr   *runRoot

	closeOnce sync.Once
	closeErr  error
}

// StartVXLAN runs `kernel-vxlan-peer.sh up`. On failure nothing is left
// behind.
func StartVXLAN(ctx context.Context, o VXLANOptions) (*VXLANPeer, error) {
	args, err := o.args()
	if err != nil {
		return nil, err
	}
	rr, err := newRunRoot(o.RunBase, vxlanScript, vxlanScriptName)
	if err != nil {
		return nil, err
	}
	out, err := rr.run(ctx, upTimeout, args...)
	if err != nil {
		_, _ = rr.run(context.Background(), downTimeout, "down", "--name", o.Name)
		rr.remove()
		return nil, fmt.Errorf("kernelpeer: start VXLAN peer %s: %w", o.Name, err)
	}
	p := &VXLANPeer{Name: o.Name, rr: rr}
	if err := p.parse(parseKV(out)); err != nil {
		p.Close()
		return nil, fmt.Errorf("kernelpeer: VXLAN peer %s: %w\n%s", o.Name, err, out)
	}
	if !o.KeepTxOffload {
		if _, err := p.Exec("ethtool", "-K", "vxlan0", "tx", "off"); err != nil {
			p.Close()
			return nil, fmt.Errorf("kernelpeer: VXLAN peer %s: turn off TX checksum offload: %w", o.Name, err)
		}
	}
	return p, nil
}

func (p *VXLANPeer) parse(kv map[string]string) error {
	var ep errParse
	if kv["PEER"] != p.Name {
		return fmt.Errorf("up printed PEER=%q, want %q", kv["PEER"], p.Name)
	}
	p.epNS = ep.str(kv, "EP_NS")
	p.WireNS = ep.str(kv, "WIRE_NS")
	p.VNI = uint32(ep.uint(kv, "VNI", 24))
	p.Port = uint16(ep.uint(kv, "PORT", 16))
	p.Local = ep.addr(kv, "LOCAL")
	p.Remote = ep.addr(kv, "REMOTE")
	if v := ep.str(kv, "INNER"); v != "" {
		var err error
		if p.Inner, err = netip.ParsePrefix(v); err != nil {
			ep.fail("INNER", v, "not a prefix")
		}
	}
	p.MAC = ep.mac(kv, "MAC")
	for _, s := range strings.Fields(ep.str(kv, "REMOTE_INNERS")) {
		a, err := netip.ParseAddr(s)
		if err != nil {
			ep.fail("REMOTE_INNERS", s, "not an IP address")
		}
		p.RemoteInners = append(p.RemoteInners, a)
	}
	p.RemoteMAC = ep.mac(kv, "REMOTE_MAC")
	return ep.err
}

func (e *errParse) mac(kv map[string]string, k string) net.HardwareAddr {
	v := e.str(kv, k)
	m, err := net.ParseMAC(v)
	if err != nil && v != "" {
		e.fail(k, v, "not a MAC address")
	}
	return m
}

// EndpointNS is the endpoint namespace (drv-NAME-k) holding ul0 and vxlan0:
// run Go code there with DoInNetNS or p.Do.
func (p *VXLANPeer) EndpointNS() string { return p.epNS }

// Do runs fn on a thread inside the endpoint namespace (see DoInNetNS).
func (p *VXLANPeer) Do(fn func() error) error { return DoInNetNS(p.epNS, fn) }

// Exec runs a command in the endpoint namespace and returns its stdout. One
// argument is a shell command line; several are an argv.
func (p *VXLANPeer) Exec(args ...string) (string, error) {
	out, err := p.rr.run(context.Background(), cmdTimeout, append([]string{"exec", "--name", p.Name, "--"}, args...)...)
	return string(out), err
}

// Status reads vxlan0's details and counters, its FDB and its neighbours.
func (p *VXLANPeer) Status() (*VXLANStatus, error) {
	out, err := p.rr.run(context.Background(), cmdTimeout, "status", "--name", p.Name)
	if err != nil {
		return nil, err
	}
	return ParseVXLANStatus(string(out))
}

// Capture starts tcpdump on the underlay bridge, writing a pcap to file.
func (p *VXLANPeer) Capture(file string) error {
	_, err := p.rr.run(context.Background(), cmdTimeout, "capture", "--name", p.Name, "--out", file)
	return err
}

// StopCapture stops the capture Capture started.
func (p *VXLANPeer) StopCapture() error {
	_, err := p.rr.run(context.Background(), cmdTimeout, "capture", "--name", p.Name, "--stop")
	return err
}

// Close runs `down`: deletes the peer's namespaces and its veth in AttachNS,
// and removes the run directory. Safe to call more than once.
func (p *VXLANPeer) Close() error {
	p.closeOnce.Do(func() {
		_, p.closeErr = p.rr.run(context.Background(), downTimeout, "down", "--name", p.Name)
		if err := p.rr.remove(); err != nil && p.closeErr == nil {
			p.closeErr = err
		}
	})
	return p.closeErr
}
