package kernelpeer_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/drovernet/drover/cmd/drover/config"
	"github.com/drovernet/drover/lab"
	"github.com/drovernet/drover/router"
	"github.com/drovernet/drover/testenv"
	"github.com/drovernet/drover/testenv/kernelpeer"
)

// Interop: drover in namespace A against the Linux kernel, for each AEAD
// (ESP-in-UDP, the kernel in User-Mode Linux) and for VXLAN (the host
// kernel's vxlan driver). Both directions: ping and a 10 MiB TCP transfer
// whose SHA-256 is compared, then the counters of both sides.

const transferSize = 10 << 20

var (
	droverUL  = netip.MustParseAddr("192.0.2.1")
	kernelUL  = netip.MustParseAddr("192.0.2.2")
	droverNet = netip.MustParsePrefix("10.0.1.0/24")
	kernelNet = netip.MustParsePrefix("10.0.2.0/24")
	droverTUN = netip.MustParseAddr("10.0.1.1") // first host of droverNet: drover's default TUN address

	vxDroverNet = netip.MustParsePrefix("10.42.1.0/24")
	vxKernelNet = netip.MustParsePrefix("10.42.2.0/24")
	vxDroverTUN = netip.MustParseAddr("10.42.1.1")
	vxKernelIn  = netip.MustParsePrefix("10.42.2.1/16")
	vxDroverMAC = net.HardwareAddr{0x02, 0x42, 0x0a, 0x2a, 0x01, 0x01}
)

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		// Peers of a test binary that was killed (go test -timeout, ^C).
		if gone := kernelpeer.Sweep(context.Background()); len(gone) > 0 {
			fmt.Fprintf(os.Stderr, "kernelpeer: swept leftover peers %v\n", gone)
		}
	}
	os.Exit(m.Run())
}

func TestPrefixMatchesTestenv(t *testing.T) {
	if kernelpeer.Prefix != lab.Prefix {
		t.Fatalf("kernelpeer.Prefix %q, lab.Prefix %q: leftovers would escape Sweep", kernelpeer.Prefix, lab.Prefix)
	}
}

func randKey(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestInteropESP: one UML peer per AEAD, reused by that AEAD's subtests.
func TestInteropESP(t *testing.T) {
	kernelpeer.NeedUML(t)
	bin := testenv.DroverBinary(t)
	for _, c := range []struct {
		name string
		aead kernelpeer.AEAD
		esn  bool
	}{
		{"gcm128", kernelpeer.GCM128, false},
		{"gcm256", kernelpeer.GCM256, false},
		{"chacha", kernelpeer.ChaCha, false},
		{"gcm128-esn", kernelpeer.GCM128, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			interopESP(t, bin, c.aead, c.esn)
		})
	}
}

func interopESP(t *testing.T, bin string, aead kernelpeer.AEAD, esn bool) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	a := testenv.NewNetNS(t, "kpa")
	p := kernelpeer.NewESP(t, kernelpeer.ESPOptions{
		Name: kernelpeer.UniqueName("e"), AEAD: aead,
		SPIOut: 0x00000b01, SPIIn: 0x00000a01,
		KeyOut: randKey(t, aead.KeyLen()), KeyIn: randKey(t, aead.KeyLen()),
		Local: kernelUL, Remote: droverUL,
		LocalInner: kernelNet, RemoteInner: droverNet,
		AttachNS: a.Name, ESN: esn,
	})
	cfg := &config.Config{
		Node:          config.Node{Name: "a", Underlay: droverUL.String(), Prefixes: []string{droverNet.String()}},
		Encapsulation: config.EncapESP,
		Cipher:        aead.Cipher(),
		Peers: []config.Peer{{
			Name: "kernel", Underlay: kernelUL.String(), Prefixes: []string{kernelNet.String()},
			SA: &config.SAPair{
				Out: config.SA{SPI: p.SPIIn, Key: hex.EncodeToString(p.KeyIn)},   // drover → kernel
				In:  config.SA{SPI: p.SPIOut, Key: hex.EncodeToString(p.KeyOut)}, // kernel → drover
				ESN: esn,
			},
		}},
	}
	r := startRouter(t, ctx, bin, a, cfg)
	diag := func(t *testing.T) {
		t.Helper()
		espDiagnostics(t, r, p, a)
	}

	t.Run("ping", func(t *testing.T) {
		for _, c := range []struct {
			what string
			in   kernelpeer.Doer
			dst  netip.Addr
		}{
			{"drover -> kernel endpoint", a.Do, p.LANGW},
			{"drover -> LAN host behind the kernel", a.Do, p.LANHost},
			{"LAN host -> drover", p.LANDo, droverTUN},
		} {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			rtt, err := kernelpeer.Ping(pctx, c.in, c.dst, 3, 0)
			cancel()
			if err != nil {
				t.Errorf("%s (%v): %v", c.what, c.dst, err)
				continue
			}
			t.Logf("%s (%v): rtt %v", c.what, c.dst, rtt)
		}
		if t.Failed() {
			diag(t)
		}
	})
	t.Run("tcp", func(t *testing.T) {
		for _, c := range []struct {
			what     string
			from, to kernelpeer.Doer
			dst      netip.Addr
		}{
			{"LAN host -> drover", p.LANDo, a.Do, droverTUN},
			{"drover -> LAN host", a.Do, p.LANDo, p.LANHost},
		} {
			tctx, cancel := context.WithTimeout(ctx, time.Minute)
			x, err := kernelpeer.TransferTCP(tctx, c.from, c.to, c.dst, transferSize)
			cancel()
			if err != nil {
				t.Errorf("%s: %v", c.what, err)
				continue
			}
			t.Logf("%s: %d bytes in %v (%.0f Mbit/s), sha256 %x", c.what, x.Bytes, x.Duration.Round(time.Millisecond), x.Mbps(), x.RecvSHA[:8])
		}
		if t.Failed() {
			diag(t)
		}
	})
	t.Run("counters", func(t *testing.T) {
		st, err := p.Status()
		if err != nil {
			t.Fatal(err)
		}
		ds, err := r.Status()
		if err != nil {
			t.Fatal(err)
		}
		// Kernel side: the SA drover sends with and the one it receives with.
		in, okIn := st.SA(p.SPIIn)
		out, okOut := st.SA(p.SPIOut)
		if !okIn || !okOut {
			t.Fatalf("kernel SAs %#x/%#x missing:\n%s", p.SPIIn, p.SPIOut, st.Raw)
		}
		for _, sa := range []kernelpeer.XfrmSA{in, out} {
			if sa.Packets == 0 {
				t.Errorf("kernel SA %#08x (%v -> %v): 0 packets", sa.SPI, sa.Src, sa.Dst)
			}
			if sa.IntegrityFailed != 0 || sa.ReplayDrops != 0 || sa.ReplayWindowDrops != 0 {
				t.Errorf("kernel SA %#08x: integrity-failed %d, replay %d, replay-window %d; want 0",
					sa.SPI, sa.IntegrityFailed, sa.ReplayDrops, sa.ReplayWindowDrops)
			}
			if sa.ESN != esn {
				t.Errorf("kernel SA %#08x: ESN %v, want %v", sa.SPI, sa.ESN, esn)
			}
		}
		if e := st.XfrmInErrors(); len(e) > 0 {
			t.Errorf("kernel xfrm_stat inbound errors: %v, want none", e)
		}
		if len(ds.Peers) != 1 {
			t.Fatalf("drover status: %d peers, want 1", len(ds.Peers))
		}
		dp := ds.Peers[0]
		if dp.TxPackets == 0 || dp.RxPackets == 0 {
			t.Errorf("drover peer %s: tx %d rx %d packets, want both > 0", dp.Name, dp.TxPackets, dp.RxPackets)
		}
		if dp.SAOut == nil || dp.SAIn == nil || dp.SAOut.SPI != p.SPIIn || dp.SAIn.SPI != p.SPIOut {
			t.Errorf("drover SAs: got out %+v in %+v, want SPI out %#x in %#x", dp.SAOut, dp.SAIn, p.SPIIn, p.SPIOut)
		} else if dp.SAOut.Packets < in.Packets {
			// The kernel cannot have accepted more than drover sent.
			t.Errorf("kernel accepted %d packets on SA %#x, drover sent %d", in.Packets, in.SPI, dp.SAOut.Packets)
		}
		for _, reason := range []string{"auth", "replay", "unknown_spi", "next_header", "spoofed_source", "truncated", "malformed"} {
			if n := ds.Drops[reason]; n != 0 {
				t.Errorf("drover drops[%s] = %d, want 0", reason, n)
			}
		}
		t.Logf("kernel: SA in %#x %d packets, SA out %#x %d packets; drover: tx %d rx %d packets, SA out %d in %d; drops %v",
			in.SPI, in.Packets, out.SPI, out.Packets, dp.TxPackets, dp.RxPackets, saPackets(dp.SAOut), saPackets(dp.SAIn), nonZero(ds.Drops))
		if t.Failed() {
			diag(t)
		}
	})
}

// TestInteropVXLAN: drover against the host kernel's vxlan0, with the
// kernel's ARP entry for drover static, and with the kernel resolving it by
// ARP through the tunnel (drover answers ARP requests for its addresses).
func TestInteropVXLAN(t *testing.T) {
	kernelpeer.NeedVXLAN(t)
	bin := testenv.DroverBinary(t)
	for _, c := range []struct {
		name        string
		noStaticARP bool
	}{{"static-arp", false}, {"arp", true}} {
		t.Run(c.name, func(t *testing.T) { interopVXLAN(t, bin, c.noStaticARP) })
	}
}

func interopVXLAN(t *testing.T, bin string, noStaticARP bool) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	a := testenv.NewNetNS(t, "kpx")
	p := kernelpeer.NewVXLAN(t, kernelpeer.VXLANOptions{
		Name: kernelpeer.UniqueName("x"), VNI: 1042,
		Local: kernelUL, Remote: droverUL,
		Inner: vxKernelIn, RemoteInners: []netip.Addr{vxDroverTUN}, RemoteMAC: vxDroverMAC,
		NoStaticARP: noStaticARP, AttachNS: a.Name,
	})
	cfg := &config.Config{
		Node: config.Node{
			Name: "a", Underlay: droverUL.String(), Prefixes: []string{vxDroverNet.String()},
			MAC: vxDroverMAC.String(),
		},
		Encapsulation: config.EncapVXLAN,
		VNI:           p.VNI,
		Peers: []config.Peer{{
			Name: "kernel", Underlay: kernelUL.String(), MAC: p.MAC.String(), Prefixes: []string{vxKernelNet.String()},
		}},
	}
	r := startRouter(t, ctx, bin, a, cfg)
	kernelIP := p.Inner.Addr()
	diag := func(t *testing.T) {
		t.Helper()
		vxlanDiagnostics(t, r, p, a)
	}

	t.Run("ping", func(t *testing.T) {
		// Kernel first: without static ARP it must resolve drover's address
		// through the tunnel before its first echo request can leave.
		for _, c := range []struct {
			what string
			in   kernelpeer.Doer
			dst  netip.Addr
		}{
			{"kernel -> drover", p.Do, vxDroverTUN},
			{"drover -> kernel", a.Do, kernelIP},
		} {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			rtt, err := kernelpeer.Ping(pctx, c.in, c.dst, 3, 0)
			cancel()
			if err != nil {
				t.Errorf("%s (%v): %v", c.what, c.dst, err)
				continue
			}
			t.Logf("%s (%v): rtt %v", c.what, c.dst, rtt)
		}
		if t.Failed() {
			diag(t)
		}
	})
	t.Run("tcp", func(t *testing.T) {
		for _, c := range []struct {
			what     string
			from, to kernelpeer.Doer
			dst      netip.Addr
		}{
			{"kernel -> drover", p.Do, a.Do, vxDroverTUN},
			{"drover -> kernel", a.Do, p.Do, kernelIP},
		} {
			tctx, cancel := context.WithTimeout(ctx, time.Minute)
			x, err := kernelpeer.TransferTCP(tctx, c.from, c.to, c.dst, transferSize)
			cancel()
			if err != nil {
				t.Errorf("%s: %v", c.what, err)
				continue
			}
			t.Logf("%s: %d bytes in %v (%.0f Mbit/s), sha256 %x", c.what, x.Bytes, x.Duration.Round(time.Millisecond), x.Mbps(), x.RecvSHA[:8])
		}
		if t.Failed() {
			diag(t)
		}
	})
	t.Run("counters", func(t *testing.T) {
		st, err := p.Status()
		if err != nil {
			t.Fatal(err)
		}
		ds, err := r.Status()
		if err != nil {
			t.Fatal(err)
		}
		if st.RX.Packets == 0 || st.TX.Packets == 0 || st.RX.Errors != 0 || st.RX.Dropped != 0 {
			t.Errorf("kernel vxlan0: RX %+v TX %+v; want packets both ways, no RX errors or drops", st.RX, st.TX)
		}
		n, ok := st.Neighbor(vxDroverTUN)
		wantState := "PERMANENT"
		if noStaticARP {
			wantState = "REACHABLE|STALE|DELAY|PROBE" // learnt by ARP through the tunnel
		}
		if !ok || n.MAC.String() != vxDroverMAC.String() || !strings.Contains("|"+wantState+"|", "|"+n.State+"|") {
			t.Errorf("kernel neighbour %v: got %+v (found %v), want lladdr %v state %s", vxDroverTUN, n, ok, vxDroverMAC, wantState)
		}
		if len(ds.Peers) != 1 {
			t.Fatalf("drover status: %d peers, want 1", len(ds.Peers))
		}
		dp := ds.Peers[0]
		if dp.TxPackets == 0 || dp.RxPackets == 0 {
			t.Errorf("drover peer %s: tx %d rx %d packets, want both > 0", dp.Name, dp.TxPackets, dp.RxPackets)
		}
		for _, reason := range []string{"bad_vxlan", "unknown_peer", "not_for_us", "spoofed_source", "truncated", "malformed"} {
			if n := ds.Drops[reason]; n != 0 {
				t.Errorf("drover drops[%s] = %d, want 0", reason, n)
			}
		}
		t.Logf("kernel vxlan0: RX %d TX %d packets, neighbour %v %v %s; drover: tx %d rx %d packets; drops %v",
			st.RX.Packets, st.TX.Packets, n.IP, n.MAC, n.State, dp.TxPackets, dp.RxPackets, nonZero(ds.Drops))
		if t.Failed() {
			diag(t)
		}
	})
}

// startRouter starts drover in ns and stops it when the test ends, with its
// log tail on a bad exit.
func startRouter(t *testing.T, ctx context.Context, bin string, ns *testenv.NetNS, cfg *config.Config) *lab.Router {
	t.Helper()
	r, err := lab.StartRouter(ctx, bin, ns, cfg, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Errorf("drover exit: %v\n%s", err, r.LogTail(20))
		}
	})
	return r
}

func saPackets(s *router.SAStatus) uint64 {
	if s == nil {
		return 0
	}
	return s.Packets
}

func nonZero(m map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// espDiagnostics logs what a failed ESP interop subtest needs: drover's log
// and status, the kernel's SAs and logs, and a capture of the wire while
// one ping goes each way.
func espDiagnostics(t *testing.T, r *lab.Router, p *kernelpeer.ESPPeer, a *testenv.NetNS) {
	t.Helper()
	pcap := filepath.Join(t.TempDir(), "wire.pcap")
	capErr := p.Capture(pcap, "")
	for _, c := range []struct {
		in  kernelpeer.Doer
		dst netip.Addr
	}{{a.Do, p.LANHost}, {p.LANDo, droverTUN}} {
		// Not the test's context: it may be what ran out.
		pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := kernelpeer.Ping(pctx, c.in, c.dst, 2, 0)
		cancel()
		t.Logf("diagnostic ping to %v: %v", c.dst, err)
	}
	if capErr == nil {
		_ = p.StopCapture()
	}
	st, err := p.Status()
	if err == nil {
		t.Logf("kernel status:\n%s", st.Raw)
	} else {
		t.Logf("kernel status: %v", err)
	}
	logRouter(t, r)
	t.Logf("kernel endpoint logs:\n%s", p.Logs(15))
	t.Logf("wire (tcpdump on the underlay bridge; capture: %v):\n%s", capErr, pcapSummary(pcap))
}

func vxlanDiagnostics(t *testing.T, r *lab.Router, p *kernelpeer.VXLANPeer, a *testenv.NetNS) {
	t.Helper()
	pcap := filepath.Join(t.TempDir(), "wire.pcap")
	capErr := p.Capture(pcap)
	for _, c := range []struct {
		in  kernelpeer.Doer
		dst netip.Addr
	}{{a.Do, p.Inner.Addr()}, {p.Do, vxDroverTUN}} {
		// Not the test's context: it may be what ran out.
		pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := kernelpeer.Ping(pctx, c.in, c.dst, 2, 0)
		cancel()
		t.Logf("diagnostic ping to %v: %v", c.dst, err)
	}
	if capErr == nil {
		_ = p.StopCapture()
	}
	st, err := p.Status()
	if err == nil {
		t.Logf("kernel vxlan status:\n%s", st.Raw)
	} else {
		t.Logf("kernel vxlan status: %v", err)
	}
	logRouter(t, r)
	t.Logf("wire (tcpdump on the underlay bridge; capture: %v):\n%s", capErr, pcapSummary(pcap))
}

func logRouter(t *testing.T, r *lab.Router) {
	t.Helper()
	select {
	case <-r.Done():
		t.Logf("drover (pid %d) has exited: %v", r.PID(), r.ExitErr())
	default:
	}
	if ds, err := r.Status(); err == nil {
		b, _ := json.MarshalIndent(ds, "", "  ")
		t.Logf("drover status:\n%s", b)
	} else {
		t.Logf("drover status: %v", err)
	}
	t.Logf("drover log tail:\n%s", r.LogTail(40))
}

// pcapSummary counts the packets of a capture by kind and shows the first
// ones (tcpdump decodes the VXLAN header and the inner frame).
func pcapSummary(file string) string {
	out, err := exec.Command("tcpdump", "-nr", file, "-e").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("tcpdump -r: %v\n%s", err, out)
	}
	counts := map[string]int{}
	var first []string
	for _, l := range strings.Split(string(out), "\n") {
		if len(l) < 2 || l[0] < '0' || l[0] > '9' {
			continue // not a packet line
		}
		kind := "other"
		switch {
		case strings.Contains(l, ".4500 >") || strings.Contains(l, "UDP-encap"):
			kind = "udp/4500 (ESP-in-UDP)"
		case strings.Contains(l, ".4789:") || strings.Contains(l, "VXLAN"):
			kind = "udp/4789 (VXLAN)"
		case strings.Contains(l, "ARP"):
			kind = "arp"
		case strings.Contains(l, "ICMP"):
			kind = "icmp"
		}
		counts[kind]++
		if len(first) < 30 {
			first = append(first, l)
		}
	}
	var b strings.Builder
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%6d %s\n", counts[k], k)
	}
	b.WriteString(strings.Join(first, "\n"))
	return b.String()
}
