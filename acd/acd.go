// Package acd detects IPv4 address conflicts on a LAN before an address is
// used, as RFC 5227 (IPv4 Address Conflict Detection) describes: ARP probes
// that ask for the address with sender address 0.0.0.0, and any ARP that
// shows another station using it (a reply or request with it as sender, or
// another station's probe for it) is a conflict.
//
// The CNI plugin's uplink model hands out addresses of the physical LAN:
// drover's hosts split the operator's range among themselves, but a PLC or a
// laptop configured by hand may already use one. Probing skips it.
//
// Timing. RFC 5227 section 1.1 probes 3 times, 1 to 2 s apart, and waits 2 s
// after the last: about 7 s. A CNI ADD cannot wait that long for each
// candidate, so the defaults are 3 probes 100 ms apart and 200 ms after the
// last (about 0.4 s), configurable. A station on the same LAN answers an ARP
// request in well under a millisecond; the RFC's long intervals are for
// stations that are themselves booting or links whose spanning tree is not
// yet forwarding, which a LAN that already carries the host's own traffic
// is not. What this cannot detect is a station that is off during the
// probe: announcing (Announce) afterwards puts the address in every cache,
// and RFC 5227 section 2.4's defence is the other station's business.
package acd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/drovernet/drover/arpsock"
	"github.com/drovernet/drover/router/packet"
)

// ErrTimeout is what Conn.Recv returns when nothing arrived by the
// deadline: the ARP socket's.
var ErrTimeout = arpsock.ErrTimeout

// Conn sends and receives ARP frames (whole Ethernet frames) on one
// interface: an ARP socket (*arpsock.Conn), or a fake in tests.
type Conn interface {
	Send(frame []byte) error
	// Recv reads one ARP frame into buf, waiting at most until deadline
	// (then ErrTimeout); outgoing reports a frame this host sent.
	Recv(buf []byte, deadline time.Time) (n int, outgoing bool, err error)
}

// Config sets the probe timing (zero values take the defaults).
type Config struct {
	Probes   int           // probes sent (default 3; RFC 5227 PROBE_NUM)
	Interval time.Duration // between probes (default 100 ms; RFC: 1-2 s)
	Wait     time.Duration // after the last probe (default 200 ms; RFC ANNOUNCE_WAIT 2 s)
}

func (c Config) withDefaults() Config {
	if c.Probes <= 0 {
		c.Probes = 3
	}
	if c.Interval <= 0 {
		c.Interval = 100 * time.Millisecond
	}
	if c.Wait <= 0 {
		c.Wait = 200 * time.Millisecond
	}
	return c
}

// Conflict reports that another station uses an address.
type Conflict struct {
	IP  netip.Addr
	MAC packet.MAC // the other station's
	Why string     // "reply", "request" or "probe"
}

func (c *Conflict) Error() string {
	return fmt.Sprintf("acd: %v is in use on the LAN by %v (its ARP %s)", c.IP, c.MAC, c.Why)
}

// Prober probes addresses through one interface whose MAC is mac.
type Prober struct {
	conn Conn
	mac  packet.MAC
	cfg  Config
	now  func() time.Time
	buf  []byte
}

// NewProber returns a prober sending from mac through conn.
func NewProber(conn Conn, mac packet.MAC, cfg Config) *Prober {
	return &Prober{conn: conn, mac: mac, cfg: cfg.withDefaults(), now: time.Now, buf: make([]byte, 256)}
}

// Probe sends ARP probes for ip and listens: nil means nothing else uses
// it, a *Conflict that something does. Another error (the interface
// vanished, ctx ended) means the answer is unknown.
func (p *Prober) Probe(ctx context.Context, ip netip.Addr) error {
	if !ip.Is4() {
		return fmt.Errorf("acd: %v is not IPv4", ip)
	}
	probe := p.frame(packet.ARP{Op: packet.ARPRequest, SenderMAC: p.mac, SenderIP: netip.IPv4Unspecified(), TargetIP: ip})
	for i := range p.cfg.Probes {
		if err := p.conn.Send(probe); err != nil {
			return fmt.Errorf("acd: send probe for %v: %w", ip, err)
		}
		wait := p.cfg.Interval
		if i == p.cfg.Probes-1 {
			wait = p.cfg.Wait
		}
		if err := p.listen(ctx, ip, p.now().Add(wait)); err != nil {
			return err
		}
	}
	return nil
}

// listen reads ARP until deadline and reports the first conflict for ip.
func (p *Prober) listen(ctx context.Context, ip netip.Addr, deadline time.Time) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !p.now().Before(deadline) {
			return nil
		}
		// Frames this host sent count too: conflict skips only our
		// own MAC's (our probes, looped back), not another of the
		// host's interfaces holding the address.
		n, _, err := p.conn.Recv(p.buf, deadline)
		if errors.Is(err, ErrTimeout) {
			continue
		}
		if err != nil {
			return fmt.Errorf("acd: receive: %w", err)
		}
		if c := p.conflict(p.buf[:n], ip); c != nil {
			return c
		}
	}
}

// conflict applies RFC 5227 section 2.1.1 to one received frame: a conflict
// is any ARP whose sender address is ip, or a probe for ip (sender address
// 0.0.0.0) from another station. Our own probes (looped back by the
// socket) are not.
func (p *Prober) conflict(frame []byte, ip netip.Addr) *Conflict {
	var e packet.Eth
	if e.Parse(frame) != nil || e.Type != packet.EtherTypeARP {
		return nil
	}
	var a packet.ARP
	if a.Parse(frame[packet.EthHeaderLen:]) != nil || a.SenderMAC == p.mac {
		return nil
	}
	switch {
	case a.SenderIP == ip && a.Op == packet.ARPReply:
		return &Conflict{IP: ip, MAC: a.SenderMAC, Why: "reply"}
	case a.SenderIP == ip:
		return &Conflict{IP: ip, MAC: a.SenderMAC, Why: "request"}
	case a.SenderIP.IsUnspecified() && a.TargetIP == ip && a.Op == packet.ARPRequest:
		return &Conflict{IP: ip, MAC: a.SenderMAC, Why: "probe"}
	}
	return nil
}

// Announce sends an ARP announcement (RFC 5227 section 2.3: a request
// with sender and target address ip) that ip is at mac, so that stations
// with a stale entry for ip (its previous holder's MAC) update it.
func Announce(conn Conn, mac packet.MAC, ip netip.Addr) error {
	p := Prober{mac: mac}
	if err := conn.Send(p.frame(packet.ARP{Op: packet.ARPRequest, SenderMAC: mac, SenderIP: ip, TargetIP: ip})); err != nil {
		return fmt.Errorf("acd: announce %v: %w", ip, err)
	}
	return nil
}

var broadcast = packet.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// frame is a broadcast Ethernet frame carrying a.
func (p *Prober) frame(a packet.ARP) []byte {
	b := make([]byte, packet.EthHeaderLen, packet.EthHeaderLen+packet.ARPLen)
	packet.PutEth(b, broadcast, p.mac, packet.EtherTypeARP)
	return a.Append(b)
}
