package acd

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/drovernet/drover/router/packet"
)

// fakeConn answers the prober's probes with scripted frames, on a fake
// clock that Recv advances to the deadline when nothing is queued.
type fakeConn struct {
	now    time.Time
	sent   [][]byte
	answer func(probe int) [][]byte // frames that arrive after probe number probe (1-based)
	queue  [][]byte
}

func (f *fakeConn) Send(b []byte) error {
	f.sent = append(f.sent, append([]byte{}, b...))
	if f.answer != nil {
		f.queue = append(f.queue, f.answer(len(f.sent))...)
	}
	return nil
}

func (f *fakeConn) Recv(buf []byte, deadline time.Time) (int, bool, error) {
	if len(f.queue) == 0 {
		f.now = deadline
		return 0, false, ErrTimeout
	}
	f.now = f.now.Add(time.Millisecond)
	n := copy(buf, f.queue[0])
	f.queue = f.queue[1:]
	return n, false, nil
}

var (
	ours   = packet.MAC{0x0a, 0x58, 0, 0, 0, 1}
	theirs = packet.MAC{0x02, 0, 0, 0, 0, 9}
	cand   = netip.MustParseAddr("192.168.50.20")
	other  = netip.MustParseAddr("192.168.50.21")
)

func arp(op uint16, sha packet.MAC, spa, tpa netip.Addr) []byte {
	b := make([]byte, packet.EthHeaderLen)
	packet.PutEth(b, broadcast, sha, packet.EtherTypeARP)
	a := packet.ARP{Op: op, SenderMAC: sha, SenderIP: spa, TargetIP: tpa}
	return a.Append(b)
}

func TestProbe(t *testing.T) {
	zero := netip.IPv4Unspecified()
	cases := []struct {
		name   string
		answer [][]byte // after the second probe
		why    string   // "" = free
	}{
		{"silence", nil, ""},
		{"a reply", [][]byte{arp(packet.ARPReply, theirs, cand, zero)}, "reply"},
		{"a request from it", [][]byte{arp(packet.ARPRequest, theirs, cand, other)}, "request"},
		{"another station's probe", [][]byte{arp(packet.ARPRequest, theirs, zero, cand)}, "probe"},
		{"our own probe looped back", [][]byte{arp(packet.ARPRequest, ours, zero, cand)}, ""},
		{"ARP about another address", [][]byte{arp(packet.ARPReply, theirs, other, zero), arp(packet.ARPRequest, theirs, zero, other)}, ""},
		{"not ARP", [][]byte{append(arp(packet.ARPReply, theirs, cand, zero)[:12], 0x08, 0x00)}, ""},
		{"a short frame", [][]byte{arp(packet.ARPReply, theirs, cand, zero)[:20]}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeConn{now: time.Unix(1000, 0)}
			f.answer = func(n int) [][]byte {
				if n == 2 {
					return tc.answer
				}
				return nil
			}
			p := NewProber(f, ours, Config{})
			p.now = func() time.Time { return f.now }
			start := f.now
			err := p.Probe(context.Background(), cand)
			var c *Conflict
			switch {
			case tc.why == "" && err != nil:
				t.Fatalf("got %v, want free", err)
			case tc.why != "" && (!errors.As(err, &c) || c.Why != tc.why || c.MAC != theirs || c.IP != cand):
				t.Fatalf("got %v, want a conflict (%s) with %v", err, tc.why, theirs)
			}
			if tc.why == "" {
				if len(f.sent) != 3 {
					t.Errorf("sent %d probes, want 3", len(f.sent))
				}
				if got := f.now.Sub(start); got != 400*time.Millisecond {
					t.Errorf("took %v, want 400ms (100+100+200)", got)
				}
			} else if len(f.sent) != 2 {
				t.Errorf("sent %d probes before the conflict, want 2", len(f.sent))
			}
			// Every probe: broadcast, from us, sender address 0.0.0.0,
			// target the candidate (RFC 5227 2.1.1).
			for _, b := range f.sent {
				var a packet.ARP
				if err := a.Parse(b[packet.EthHeaderLen:]); err != nil || a.Op != packet.ARPRequest || a.SenderMAC != ours ||
					!a.SenderIP.IsUnspecified() || a.TargetIP != cand || a.TargetMAC != (packet.MAC{}) || [6]byte(b[:6]) != broadcast {
					t.Errorf("probe %x: %+v, %v", b, a, err)
				}
			}
		})
	}
}

func TestProbeContext(t *testing.T) {
	f := &fakeConn{now: time.Unix(1000, 0)}
	p := NewProber(f, ours, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Probe(ctx, cand); !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
	if err := p.Probe(context.Background(), netip.MustParseAddr("fd00::1")); err == nil {
		t.Error("IPv6: got nil, want an error")
	}
}

func TestAnnounce(t *testing.T) {
	f := &fakeConn{}
	if err := Announce(f, ours, cand); err != nil {
		t.Fatal(err)
	}
	var a packet.ARP
	if len(f.sent) != 1 || a.Parse(f.sent[0][packet.EthHeaderLen:]) != nil || a.SenderIP != cand || a.TargetIP != cand || a.SenderMAC != ours {
		t.Errorf("announcement %x: %+v", f.sent, a)
	}
}
