package lab

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/drovernet/drover/testenv"
)

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []float64
		want Stat
	}{
		{"none", nil, Stat{}},
		{"one", []float64{3}, Stat{3, 3, 3}},
		{"odd, unsorted", []float64{5, 1, 3}, Stat{1, 3, 5}},
		{"even: mean of the middle two", []float64{4, 1, 2, 10}, Stat{1, 3, 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Summarize(tc.in); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestCountMemberEvents(t *testing.T) {
	log := `time=2026-12-06T07:14:20.1Z level=INFO msg="member dead" component=gossip peer=h5
time=2026-12-06T07:14:20.2Z level=INFO msg="member suspect" component=gossip peer=h6
time=2026-12-06T07:14:20.3Z level=INFO msg="member no longer suspect" component=gossip peer=h6
time=2026-12-06T07:14:20.4Z level=INFO msg="Marking h7 as failed, suspect timeout reached (2 peer confirmations)" component=gossip
time=2026-12-06T07:14:20.5Z level=INFO msg="member dead" component=gossip peer=h7
time=2026-12-06T07:14:20.6Z level=INFO msg="member dead" component=gossip peer=h5
time=2026-12-06T07:14:20.7Z level=INFO msg="member left" component=gossip peer=h8
`
	dead, suspect, peers, err := countMemberEvents(strings.NewReader(log))
	if err != nil || dead != 3 || suspect != 1 || strings.Join(peers, ",") != "h5,h7" {
		t.Fatalf("got dead %d, suspect %d, peers %v, err %v; want 3, 1, [h5 h7], nil", dead, suspect, peers, err)
	}
}

func TestIdleReportString(t *testing.T) {
	r := IdleReport{Duration: 10 * time.Second, Hosts: []HostIdle{
		{Name: "h1", GossipIn: Counts{100, 10000}, GossipOut: Counts{50, 20000}, CPU: 0.01, RSS: 20 << 20},
		{Name: "h2", GossipIn: Counts{300, 30000}, GossipOut: Counts{70, 40000}, CPU: 0.03, RSS: 30 << 20, Dead: 2, DeadPeers: []string{"h3"}},
	}}
	got := r.String()
	for _, want := range []string{
		"idle 10s, 2 hosts",
		"gossip in  bytes/s            1000       2000       3000",
		"gossip out bytes/s            2000       3000       4000",
		"CPU        % of a core        1.00       2.00       3.00",
		"RSS        MiB                20.0       25.0       30.0",
		`"member dead" lines: 2 (about h3)`,
	} {
		if !strings.Contains(got, want) {
			t.Fatalf("report lacks %q:\n%s", want, got)
		}
	}
}

// TestGossipCounters counts a UDP datagram and a TCP exchange on the
// gossip port in a namespace, over loopback: a datagram from port to port
// counts once each way, not twice.
func TestGossipCounters(t *testing.T) {
	ns := testenv.NewNetNS(t, "gc")
	const port = 17946
	if err := addGossipCounters(ns, port); err != nil {
		t.Fatal(err)
	}
	err := ns.Do(func() error {
		a := netip.MustParseAddrPort("127.0.0.1:17946")
		u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(a))
		if err != nil {
			return err
		}
		defer u.Close()
		if _, err := u.WriteToUDPAddrPort(make([]byte, 72), a); err != nil { // 100 bytes of IP
			return err
		}
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(a))
		if err != nil {
			return err
		}
		defer ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", a.String())
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	in, out, err := readGossipCounters(ns)
	if err != nil {
		t.Fatal(err)
	}
	// Loopback: every packet goes out and comes in. The datagram is one
	// packet of 100 bytes; the TCP handshake and close are a few more.
	if out.Packets < 2 || in != out || out.Bytes < 100 {
		t.Fatalf("got in %+v, out %+v; want equal, at least 2 packets and 100 bytes", in, out)
	}
	t.Logf("loopback: in %+v, out %+v", in, out)
}
