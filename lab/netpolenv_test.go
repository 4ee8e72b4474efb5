package lab

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drovernet/drover/policy"
	"github.com/drovernet/drover/policy/engine"
	"github.com/drovernet/drover/testenv"
)

// PolicyPod is a pod for network policy tests: a namespace attached to a
// lab host's bridge by the drover CNI plugin (the binary the routers run,
// exec'd with CNI_COMMAND as a runtime does), with the pod's namespace and
// name in CNI_ARGS, and servers on its ports.
type PolicyPod struct {
	Key  string // namespace/name
	Host *Host
	NS   *NetNS
	Addr netip.Addr

	mu       sync.Mutex
	sctp     map[uint32]bool // probe tokens the SCTP listener saw
	close    []func()
	del      func() ([]byte, error)
	detached bool
}

// Detach stops the pod's servers and removes it (CNI DEL), as deleting
// the container would.
func (p *PolicyPod) Detach() error {
	if p.detached {
		return nil
	}
	p.detached = true
	p.stop()
	_, err := p.del()
	return err
}

// AttachPod attaches a new namespace to h as pod namespace/name (CNI ADD;
// DEL when the test ends). labels, if set, go to DROVER_LABELS, ports
// ("name:port/proto") to DROVER_PORTS. Addresses
// come from .100 of h's block up (the lab's own containers hold the low
// ones).
func (l *Lab) AttachPod(t testing.TB, h *Host, namespace, name, labels string, ports []string) *PolicyPod {
	t.Helper()
	ns := testenv.NewNetNS(t, "pp")
	dir := t.TempDir()
	if err := os.Symlink(l.opts.Bin, filepath.Join(dir, "drover")); err != nil {
		t.Fatal(err)
	}
	start := h.Prefix.Addr().As4()
	start[3] = 100
	conf, err := json.Marshal(map[string]any{
		"cniVersion": "1.0.0", "name": "drover", "type": "drover",
		"bridge": h.Bridge, "daemonSocket": h.cfg.ControlSocket, "clusterCIDR": "10.42.0.0/16", "isDefaultGateway": true,
		"ipam": map[string]any{"type": "drover", "dataDir": filepath.Join(l.Dir, h.Name+"-ipam"), "rangeStart": netip.AddrFrom4(start).String()},
	})
	if err != nil {
		t.Fatal(err)
	}
	args := fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s", namespace, name)
	if labels != "" {
		args += ";DROVER_LABELS=" + labels
	}
	if len(ports) > 0 {
		args += ";DROVER_PORTS=" + strings.Join(ports, ",")
	}
	cni := func(cmd string) ([]byte, error) {
		c := exec.Command(filepath.Join(dir, "drover"))
		c.Env = []string{"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=" + ns.Name, "CNI_NETNS=" + ns.Path(), "CNI_IFNAME=eth0",
			"CNI_PATH=" + dir, "CNI_ARGS=" + args, "PATH=" + os.Getenv("PATH")}
		c.Stdin = bytes.NewReader(conf)
		var out, errb bytes.Buffer
		c.Stdout, c.Stderr = &out, &errb
		if err := h.NS.Do(c.Run); err != nil {
			return nil, fmt.Errorf("CNI %s %s/%s on %s: %w\n%s%s", cmd, namespace, name, h.Name, err, out.String(), errb.String())
		}
		return out.Bytes(), nil
	}
	out, err := cni("ADD")
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		IPs []struct{ Address string } `json:"ips"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.IPs) == 0 {
		t.Fatalf("CNI ADD %s/%s: result %s: %v", namespace, name, out, err)
	}
	p, err := netip.ParsePrefix(res.IPs[0].Address)
	if err != nil {
		t.Fatal(err)
	}
	pod := &PolicyPod{Key: namespace + "/" + name, Host: h, NS: ns, Addr: p.Addr(), sctp: map[uint32]bool{},
		del: func() ([]byte, error) { return cni("DEL") }}
	t.Cleanup(func() { _ = pod.Detach() })
	return pod
}

func (p *PolicyPod) stop() {
	for _, f := range p.close {
		f()
	}
	p.close = nil
}

// Serve answers on each port: TCP (writes "ok"), UDP (echoes), and SCTP,
// which this kernel may not have: a raw socket for IP protocol 132 records
// the probe tokens of the packets that reach the pod (a one-way probe: the
// forward hook decides on the first packet of a flow, which is what
// policy tests ask).
func (p *PolicyPod) Serve(t testing.TB, ports []uint16) {
	t.Helper()
	err := p.NS.Do(func() error {
		for _, port := range ports {
			ln, err := net.Listen("tcp4", fmt.Sprintf("%v:%d", p.Addr, port))
			if err != nil {
				return err
			}
			p.close = append(p.close, func() { ln.Close() })
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Write([]byte("ok"))
					c.Close()
				}
			}()
			pc, err := net.ListenPacket("udp4", fmt.Sprintf("%v:%d", p.Addr, port))
			if err != nil {
				return err
			}
			p.close = append(p.close, func() { pc.Close() })
			go func() {
				buf := make([]byte, 64)
				for {
					n, from, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					pc.WriteTo(buf[:n], from)
				}
			}()
		}
		// Non-blocking, so that the file is in Go's poller and Close
		// ends the reader.
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
		if err != nil {
			return fmt.Errorf("raw SCTP socket: %w", err)
		}
		f := os.NewFile(uintptr(fd), "sctp-raw")
		p.close = append(p.close, func() { f.Close() })
		go func() {
			buf := make([]byte, 256)
			for {
				n, err := f.Read(buf)
				if err != nil {
					return
				}
				// IPv4 header, then the SCTP common header (RFC 9260
				// section 3.1): ports, then the verification tag, here
				// the probe's token.
				ihl := int(buf[0]&0x0f) * 4
				if n < ihl+12 {
					continue
				}
				tok := binary.BigEndian.Uint32(buf[ihl+4 : ihl+8])
				p.mu.Lock()
				p.sctp[tok] = true
				p.mu.Unlock()
			}
		}()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

var sctpToken struct {
	sync.Mutex
	n uint32
}

// Probe reports whether a new flow from p reaches dst on proto/port within
// timeout: TCP connects and reads the answer, UDP gets its echo back, SCTP
// arrives (one way).
func (p *PolicyPod) Probe(dst *PolicyPod, proto policy.Protocol, port uint16, timeout time.Duration) (bool, error) {
	target := fmt.Sprintf("%v:%d", dst.Addr, port)
	ok := false
	err := p.NS.Do(func() error {
		switch proto {
		case policy.TCP:
			c, err := net.DialTimeout("tcp4", target, timeout)
			if err != nil {
				return nil
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(timeout))
			b := make([]byte, 2)
			_, err = c.Read(b)
			ok = err == nil && string(b) == "ok"
		case policy.UDP:
			c, err := net.Dial("udp4", target)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(timeout))
			if _, err := c.Write([]byte("probe")); err != nil {
				return nil
			}
			b := make([]byte, 8)
			n, err := c.Read(b)
			ok = err == nil && string(b[:n]) == "probe"
		case policy.SCTP:
			sctpToken.Lock()
			sctpToken.n++
			tok := sctpToken.n
			sctpToken.Unlock()
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_SCTP)
			if err != nil {
				return fmt.Errorf("raw SCTP socket: %w", err)
			}
			defer unix.Close(fd)
			pkt := make([]byte, 12)
			binary.BigEndian.PutUint16(pkt[0:2], 40000+uint16(tok%20000))
			binary.BigEndian.PutUint16(pkt[2:4], port)
			binary.BigEndian.PutUint32(pkt[4:8], tok)
			if err := unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: dst.Addr.As4()}); err != nil {
				return fmt.Errorf("send SCTP probe: %w", err)
			}
			deadline := time.Now().Add(timeout)
			for time.Now().Before(deadline) {
				dst.mu.Lock()
				ok = dst.sctp[tok]
				dst.mu.Unlock()
				if ok {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
		default:
			return fmt.Errorf("probe: protocol %q", proto)
		}
		return nil
	})
	return ok, err
}

// PolicyStatus reads GET /v1/policy from h's router.
func (h *Host) PolicyStatus() (engine.Status, error) {
	var st engine.Status
	err := h.controlGet("/v1/policy", &st)
	return st, err
}

// PolicyBrief reads GET /v1/policy?brief=1 (policies, no pods).
func (h *Host) PolicyBrief() (engine.Status, error) {
	var st engine.Status
	err := h.controlGet("/v1/policy?brief=1", &st)
	return st, err
}

// Iperf runs iperf3 for d from p to dst (a server started in dst for the
// one test) and returns the receiver's bits per second.
func (p *PolicyPod) Iperf(dst *PolicyPod, d time.Duration) (float64, error) {
	bps, err := Iperf(p.NS, dst.NS, dst.Addr, d)
	if err != nil {
		return 0, fmt.Errorf("%s -> %s: %w", p.Key, dst.Key, err)
	}
	return bps, nil
}

// Explain asks h's router whether a new flow from -> to on proto/port
// would pass (GET /v1/policy/explain).
func (h *Host) Explain(from, to string, proto policy.Protocol, port uint16) (engine.Explanation, error) {
	var x engine.Explanation
	q := url.Values{"from": {from}, "to": {to}, "protocol": {string(proto)}, "port": {fmt.Sprint(port)}}
	err := h.controlGet("/v1/policy/explain?"+q.Encode(), &x)
	return x, err
}

func (h *Host) controlGet(path string, v any) error {
	b, err := h.ControlGet(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// caseSelected: DROVER_NETPOL_CASES ("3,17,23") runs only those cases of
// the upstream file, to chase one.
func caseSelected(i int) bool {
	sel := os.Getenv("DROVER_NETPOL_CASES")
	if sel == "" {
		return true
	}
	for _, f := range strings.Split(sel, ",") {
		if strings.TrimSpace(f) == fmt.Sprint(i) {
			return true
		}
	}
	return false
}

// logPodNet logs every pod's address, neighbours and routes, and its
// host's bridge ports: what a failed probe needs to be understood.
func logPodNet(t testing.TB, pods map[string]*PolicyPod) {
	t.Helper()
	hosts := map[*Host]bool{}
	for _, k := range slices.Sorted(maps.Keys(pods)) {
		p := pods[k]
		hosts[p.Host] = true
		neigh, _ := exec.Command("ip", "-n", p.NS.Name, "neigh").CombinedOutput()
		t.Logf("%s on %s: %v\n%s", k, p.Host.Name, p.Addr, neigh)
	}
	for h := range hosts {
		out, _ := exec.Command("ip", "-n", h.NS.Name, "-d", "link", "show", "master", h.Bridge).CombinedOutput()
		rt, _ := exec.Command("ip", "-n", h.NS.Name, "route").CombinedOutput()
		t.Logf("%s bridge ports:\n%s\nroutes:\n%s", h.Name, out, rt)
	}
}
