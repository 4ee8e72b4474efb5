package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

// BGPRouter is a real BGP router in a namespace of the lab's underlay:
// BIRD 2 or FRR's bgpd (with zebra, which installs what bgpd learns into
// the namespace's kernel table), started by the test and stopped with the
// lab. Its underlay leg is .Addr; Client is a namespace behind it
// (ClientAddr, its default route via the router), the fabric's client that
// reaches containers by their own addresses.
type BGPRouter struct {
	Kind       string // "bird" or "frr"
	NS         *NetNS
	Addr       netip.Addr // underlay address
	AS         uint32
	Client     *NetNS
	ClientNet  netip.Prefix
	ClientAddr netip.Addr
	// Export sends every route the router has to every neighbour (next
	// hop self, as eBGP does): the fabric that routes members' blocks to
	// each other (bgp.import). Otherwise it exports nothing.
	Export bool
	dir    string
	procs  []*process
}

// BGPNeighbor is a drover host as a BGP router's neighbour.
type BGPNeighbor struct {
	Name string
	Addr netip.Addr
	AS   uint32
	// Local is the router's address towards it; invalid: the router's
	// underlay address.
	Local netip.Addr
}

// AddBGPRouter starts a BGP router of kind ("bird" or "frr") on the
// underlay at 192.0.2.<idx> with AS as, peering with neighbors (it imports
// everything they announce into its kernel table and exports nothing),
// with graceful restart helper on, and a client namespace behind it on
// clientNet (router .1, client .10). Everything is removed with the lab.
func (l *Lab) AddBGPRouter(kind string, idx int, as uint32, clientNet netip.Prefix, neighbors []BGPNeighbor) (*BGPRouter, error) {
	bin := map[string]string{"bird": "bird", "frr": "/usr/lib/frr/bgpd"}[kind]
	if bin == "" {
		return nil, fmt.Errorf("bgp router kind %q: want bird or frr", kind)
	}
	if _, err := exec.LookPath(bin); err != nil {
		return nil, fmt.Errorf("bgp router %s: %w (Debian package %s)", kind, err, map[string]string{"bird": "bird2", "frr": "frr"}[kind])
	}
	u, err := l.AddUnderlayHost(idx)
	if err != nil {
		return nil, err
	}
	if err := setSysctls(u.NS, sysctl{key: "net/ipv4/ip_forward", val: "1"}); err != nil {
		return nil, err
	}
	r := &BGPRouter{Kind: kind, NS: u.NS, Addr: u.Addr, AS: as, ClientNet: clientNet.Masked()}
	r.ClientAddr = r.ClientNet.Addr().Next().Next() // .2 ... then .10 below
	for range 8 {
		r.ClientAddr = r.ClientAddr.Next()
	}
	gw := r.ClientNet.Addr().Next()
	client, err := l.newNS(fmt.Sprintf("cl%d", idx))
	if err != nil {
		return nil, err
	}
	r.Client = client
	err = withNetlink(u.NS, func(h *netlink.Handle) error {
		return h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: l.ifName(fmt.Sprintf("cl%d", idx))},
			PeerName: "eth0", PeerNamespace: netlink.NsFd(int(client.Handle()))})
	})
	if err != nil {
		return nil, fmt.Errorf("client link: %w", err)
	}
	err = withNetlink(u.NS, func(h *netlink.Handle) error {
		_, err := addrUp(h, l.ifName(fmt.Sprintf("cl%d", idx)), netip.PrefixFrom(gw, clientNet.Bits()))
		return err
	})
	if err != nil {
		return nil, err
	}
	err = withNetlink(client, func(h *netlink.Handle) error {
		link, err := addrUp(h, "eth0", netip.PrefixFrom(r.ClientAddr, clientNet.Bits()))
		if err != nil {
			return err
		}
		return h.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw.AsSlice()})
	})
	if err != nil {
		return nil, err
	}
	if err := r.start(l, idx, neighbors); err != nil {
		return nil, err
	}
	return r, nil
}

// StartBIRD runs BIRD 2 as a router in ns (an existing namespace of the
// lab: the router between the lab's two underlay subnets, say), with
// router ID addr and AS as, exporting every route to every neighbour.
func (l *Lab) StartBIRD(ns *NetNS, addr netip.Addr, as uint32, neighbors []BGPNeighbor) (*BGPRouter, error) {
	if _, err := exec.LookPath("bird"); err != nil {
		return nil, fmt.Errorf("bird: %w (Debian package bird2)", err)
	}
	r := &BGPRouter{Kind: "bird", NS: ns, Addr: addr, AS: as, Export: true}
	if err := r.start(l, 0, neighbors); err != nil {
		return nil, err
	}
	return r, nil
}

// start makes the router's directory and starts its daemons.
func (r *BGPRouter) start(l *Lab, idx int, neighbors []BGPNeighbor) error {
	// FRR's daemons drop to user frr: their directory must be reachable
	// and writable by it, so it is not under the lab's (a test's
	// temporary directory is 0700).
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%s-%s%d-", Prefix, l.tag, r.Kind, idx))
	if err != nil {
		return err
	}
	r.dir = dir
	l.undo.push("remove "+dir, func() error { return os.RemoveAll(dir) })
	if err := os.Chmod(r.dir, 0o777); err != nil {
		return err
	}
	l.undo.push("stop "+r.Kind, r.stop)
	if r.Kind == "bird" {
		return r.startBIRD(neighbors)
	}
	return r.startFRR(neighbors)
}

func (r *BGPRouter) startBIRD(neighbors []BGPNeighbor) error {
	var b strings.Builder
	fmt.Fprintf(&b, "router id %s;\nlog stderr all;\nprotocol device { scan time 1; }\n", r.Addr)
	// Learned routes go into the namespace's kernel table, so the
	// client's packets follow them.
	b.WriteString("protocol kernel { ipv4 { import none; export all; }; }\n")
	export := "none"
	if r.Export {
		export = "all"
	}
	for _, n := range neighbors {
		local := n.Local
		if !local.IsValid() {
			local = r.Addr
		}
		fmt.Fprintf(&b, "protocol bgp %s {\n  local %s as %d;\n  neighbor %s as %d;\n  graceful restart on;\n  connect retry time 2;\n  ipv4 { import all; export %s; };\n}\n",
			n.Name, local, r.AS, n.Addr, n.AS, export)
	}
	conf := filepath.Join(r.dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return err
	}
	p, err := startProcess("bird", r.NS, filepath.Join(r.dir, "bird.log"),
		[]string{"bird", "-f", "-c", conf, "-s", r.sock(), "-P", filepath.Join(r.dir, "bird.pid")}, nil)
	if err != nil {
		return err
	}
	r.procs = append(r.procs, p)
	return r.waitCLI()
}

func (r *BGPRouter) startFRR(neighbors []BGPNeighbor) error {
	var b strings.Builder
	fmt.Fprintf(&b, "router bgp %d\n bgp router-id %s\n no bgp ebgp-requires-policy\n bgp graceful-restart\n", r.AS, r.Addr)
	for _, n := range neighbors {
		fmt.Fprintf(&b, " neighbor %s remote-as %d\n neighbor %s timers connect 2\n", n.Addr, n.AS, n.Addr)
	}
	conf := filepath.Join(r.dir, "bgpd.conf")
	zconf := filepath.Join(r.dir, "zebra.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(zconf, nil, 0o644); err != nil {
		return err
	}
	zserv := filepath.Join(r.dir, "zserv.api")
	z, err := startProcess("zebra", r.NS, filepath.Join(r.dir, "zebra.log"),
		[]string{"/usr/lib/frr/zebra", "-f", zconf, "-i", filepath.Join(r.dir, "zebra.pid"), "-z", zserv, "--vty_socket", r.dir}, nil)
	if err != nil {
		return err
	}
	r.procs = append(r.procs, z)
	if err := Poll(context.Background(), 10*time.Second, 50*time.Millisecond, func() error {
		_, err := os.Stat(zserv)
		return err
	}); err != nil {
		return fmt.Errorf("zebra: %w\n%s", err, z.tail(20))
	}
	p, err := startProcess("bgpd", r.NS, filepath.Join(r.dir, "bgpd.log"),
		[]string{"/usr/lib/frr/bgpd", "-f", conf, "-i", filepath.Join(r.dir, "bgpd.pid"), "-z", zserv, "--vty_socket", r.dir, "-p", "179"}, nil)
	if err != nil {
		return err
	}
	r.procs = append(r.procs, p)
	return r.waitCLI()
}

func (r *BGPRouter) sock() string { return filepath.Join(r.dir, "bird.ctl") }

// waitCLI waits until the router answers its command line.
func (r *BGPRouter) waitCLI() error {
	err := Poll(context.Background(), 10*time.Second, 50*time.Millisecond, func() error {
		for _, p := range r.procs {
			if p.exited() {
				return fmt.Errorf("%s exited: %v\n%s", p.name, p.exitedErr(), p.tail(20))
			}
		}
		_, err := r.CLI("show protocols")
		if r.Kind == "frr" {
			_, err = r.CLI("show bgp summary")
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: %w", r.Kind, err)
	}
	return nil
}

// CLI runs one command on the router's own command line (birdc, vtysh).
func (r *BGPRouter) CLI(cmd string) (string, error) {
	var argv []string
	if r.Kind == "bird" {
		argv = append([]string{"birdc", "-s", r.sock()}, strings.Fields(cmd)...)
	} else {
		argv = []string{"ip", "netns", "exec", r.NS.Name, "vtysh", "--vty_socket", r.dir, "-c", cmd}
	}
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, out)
	}
	return string(out), nil
}

// Routes returns the routes the router installed in its namespace's
// kernel table for prefixes in within, as "prefix via next-hop".
func (r *BGPRouter) Routes(within netip.Prefix) ([]string, error) {
	var out []string
	err := withNetlink(r.NS, func(h *netlink.Handle) error {
		rs, err := h.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, rt := range rs {
			if rt.Dst == nil || rt.Gw == nil {
				continue
			}
			p, ok := netip.AddrFromSlice(rt.Dst.IP)
			if !ok || !within.Contains(p.Unmap()) {
				continue
			}
			bits, _ := rt.Dst.Mask.Size()
			out = append(out, fmt.Sprintf("%s via %s", netip.PrefixFrom(p.Unmap(), bits), rt.Gw))
		}
		return nil
	})
	return out, err
}

// Log returns the tail of the router's logs.
func (r *BGPRouter) Log(n int) string {
	var b strings.Builder
	for _, p := range r.procs {
		fmt.Fprintf(&b, "%s:\n%s\n", p.name, p.tail(n))
	}
	return b.String()
}

func (r *BGPRouter) stop() error {
	var errs []error
	for i := len(r.procs) - 1; i >= 0; i-- {
		if err := r.procs[i].stop(3 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// GarbageListener accepts BGP connections on ns at addr:179 and answers
// each with bytes that are no BGP message (a hostile or broken
// neighbour). Close stops it.
func GarbageListener(ns *NetNS, addr netip.Addr) (net.Listener, error) {
	var ln net.Listener
	err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 179).String())
		return err
	})
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				// A BGP header (RFC 4271 §4.1: 16-byte marker of
				// ones, length 19) of a message type that does not
				// exist (9), then bytes that are no message at all.
				hdr := append(bytes.Repeat([]byte{0xff}, 16), 0, 19, 9)
				_, _ = c.Write(append(hdr, "GET / HTTP/1.0\r\n\r\n"...))
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln, nil
}
