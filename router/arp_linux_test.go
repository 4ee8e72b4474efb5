package router

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/drovernet/drover/internal/ratelog"
	"github.com/drovernet/drover/router/packet"
	"github.com/drovernet/drover/router/udp"
	"github.com/drovernet/drover/tun/tuntest"
)

// failingPort is an arpPort whose sends all fail: it hands out frames, one
// per Recv, then errDone.
type failingPort struct {
	frames [][]byte
	sends  int
}

var (
	errDone     = errors.New("fake: no more frames")
	errSendFail = errors.New("fake: no buffer space")
)

func (p *failingPort) Recv(buf []byte, _ time.Time) (int, bool, error) {
	if len(p.frames) == 0 {
		return 0, false, errDone
	}
	n := copy(buf, p.frames[0])
	p.frames = p.frames[1:]
	return n, false, nil
}

func (p *failingPort) Send([]byte) error {
	p.sends++
	return errSendFail
}

func (p *failingPort) MAC() (packet.MAC, error) { return macA, nil }

// TestARPSendFailureFlood: when every ARP reply fails to send, a flood of
// requests writes a few log lines, not one per request.
// arpRouter is router a (pfxA) with one live peer b (pfxB) whose
// addresses are answered for, logging to logs.
func arpRouter(t *testing.T, logs io.Writer) *Router {
	t.Helper()
	conn, err := udp.Listen(udp.Config{Local: netip.MustParseAddrPort("127.0.0.1:0")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r, err := New(Config{Name: "a", Encap: EncapVXLAN, VNI: 1, MAC: macA, Prefixes: []netip.Prefix{pfxA},
		MTU: 1400, TUN: "tuntest", Log: slog.New(slog.NewTextHandler(logs, nil))}, tuntest.NewFrames(), conn)
	if err != nil {
		t.Fatal(err)
	}
	peer := &Peer{Name: "b", Underlay: netip.MustParseAddrPort("127.0.0.9:4789"), MAC: macB, Prefixes: []netip.Prefix{pfxB}, TunnelMTU: 1400}
	if err := r.SetPeers([]*Peer{peer}); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestARPSendFailureFlood(t *testing.T) {
	var logs bytes.Buffer
	r := arpRouter(t, &logs)

	const requests = 1000
	req := packet.ARP{Op: packet.ARPRequest, SenderMAC: macA, SenderIP: netip.MustParseAddr("10.42.1.2"),
		TargetIP: netip.MustParseAddr("10.42.2.9")} // b's: remote, so answered
	frame := packet.AppendEth(nil, packet.BroadcastMAC, macA, packet.EtherTypeARP)
	frame = req.Append(frame)
	p := &failingPort{}
	for range requests {
		p.frames = append(p.frames, frame)
	}
	logs.Reset() // "answering ARP" and the like are not what is counted
	if err := r.serveARP(context.Background(), p, "drv-br0"); !errors.Is(err, errDone) {
		t.Fatalf("serveARP: got %v, want %v", err, errDone)
	}
	if p.sends != requests {
		t.Fatalf("replies attempted: got %d, want %d", p.sends, requests)
	}
	var lines int
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `msg="ARP reply"`) {
			lines++
		}
	}
	t.Logf("%d failed ARP replies: %d log lines", requests, lines)
	if lines != ratelog.Burst {
		t.Fatalf("log lines for %d failed replies: got %d, want %d", requests, lines, ratelog.Burst)
	}
	if got := r.Status().ARPReplies; got != 0 {
		t.Errorf("arp_replies: got %d, want 0", got)
	}
}
