package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drovernet/drover/internal/ratelog"
	"github.com/drovernet/drover/router/packet"
	"github.com/drovernet/drover/router/udp"
	"github.com/drovernet/drover/tun"
)

// Encap is the underlay encapsulation.
type Encap uint8

const (
	EncapESP   Encap = iota + 1 // RFC 4303 tunnel mode in RFC 3948 UDP
	EncapVXLAN                  // RFC 7348
)

func (e Encap) String() string {
	switch e {
	case EncapESP:
		return "esp"
	case EncapVXLAN:
		return "vxlan"
	}
	return "unknown"
}

// Conn is the underlay socket: *udp.Conn, or a fake in tests.
type Conn interface {
	ReadBatch(msgs []udp.Msg) (int, error)
	WriteBatch(msgs []udp.Msg) (int, error)
	// WriteTo sends one datagram; safe to call concurrently with WriteBatch
	// (the ingress pipeline uses it for the rare ARP reply).
	WriteTo(b []byte, to netip.AddrPort) error
	LocalAddr() netip.AddrPort
	Close() error
}

// Config is what the router needs to know about this host.
type Config struct {
	Name     string
	Encap    Encap
	Cipher   string // for status only
	VNI      uint32 // VXLAN
	MAC      packet.MAC
	Prefixes []netip.Prefix // container addresses behind this host
	Addrs    []netip.Addr   // the TUN's own addresses: ICMP source, ARP answers
	// MTU is the TUN device's MTU: the largest packet Read returns.
	MTU         int
	UnderlayMTU int // for status only
	TUN         string
	Log         *slog.Logger
	// ICMPRate caps the ICMP errors sent per second (RFC 1812 §4.3.2.8
	// asks routers to limit them). Default 100.
	ICMPRate int
	// NoGRO keeps the underlay socket from coalescing received datagrams
	// (UDP GRO), which the router otherwise asks for when the Conn can.
	NoGRO bool
}

// Router moves packets between a TUN device and the underlay socket.
type Router struct {
	cfg Config
	log *slog.Logger
	// rlog is log for lines on paths that repeat (per packet, per retry):
	// at most ratelog.Burst lines of a kind per ratelog.Window.
	rlog *slog.Logger
	dev  tun.FrameDevice
	conn Conn

	mu    sync.Mutex // serialises SetPeers and SetLocal (writers of state)
	state atomic.Pointer[snapshot]
	drops dropCounters

	txPackets, txBytes atomic.Uint64
	rxPackets, rxBytes atomic.Uint64
	icmpSent           atomic.Uint64
	keepalives, nonESP atomic.Uint64
	arpReplies         atomic.Uint64

	// pipelines counts the egress and ingress goroutines of Run that have
	// not returned: Running is true while both are there.
	pipelines atomic.Int32

	closeOnce sync.Once
}

// New returns a router over dev and conn. It takes ownership of both: Run
// closes them when it returns.
func New(cfg Config, dev tun.FrameDevice, conn Conn) (*Router, error) {
	if cfg.Encap != EncapESP && cfg.Encap != EncapVXLAN {
		return nil, fmt.Errorf("router: unknown encapsulation %d", cfg.Encap)
	}
	if cfg.MTU < 576 || cfg.MTU > 65535 {
		return nil, fmt.Errorf("router: TUN MTU %d outside 576..65535", cfg.MTU)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.ICMPRate == 0 {
		cfg.ICMPRate = 100
	}
	r := &Router{cfg: cfg, log: cfg.Log.With("component", "router"), dev: dev, conn: conn}
	r.rlog = ratelog.New(r.log, 0, 0)
	if err := r.SetPeers(nil); err != nil {
		return nil, err
	}
	return r, nil
}

// Run moves packets until ctx is done or a device fails, then closes the TUN
// device and the socket and returns (nil after ctx is done).
func (r *Router) Run(ctx context.Context) error {
	errc := make(chan error, 2)
	r.pipelines.Add(2)
	go func() { defer r.pipelines.Add(-1); errc <- r.egress() }()
	go func() { defer r.pipelines.Add(-1); errc <- r.ingress() }()
	r.log.Info("started", "encapsulation", r.cfg.Encap, "listen", r.conn.LocalAddr(), "tun_mtu", r.cfg.MTU)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	r.close()
	if err == nil {
		err = <-errc
	} else {
		<-errc
	}
	if ctx.Err() != nil {
		err = nil
	}
	r.log.Info("stopped")
	return err
}

// Running reports whether both pipelines of Run (egress and ingress) are
// running. They block on the TUN and the socket while there is no
// traffic, so this says they are alive, not that they make progress: a
// pipeline that fails returns, and Run with it.
func (r *Router) Running() bool { return r.pipelines.Load() == 2 }

func (r *Router) close() {
	r.closeOnce.Do(func() {
		r.dev.Close()
		r.conn.Close()
	})
}

// isClosed reports whether err means the device or socket was closed on
// purpose (shutdown), which ends a pipeline quietly.
func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed)
}

// Drops returns the drop counter of one reason.
func (r *Router) Drops(reason DropReason) uint64 { return r.drops[reason].Load() }

// Status returns a snapshot of the counters and peers.
func (r *Router) Status() Status {
	st := Status{
		Node:          r.cfg.Name,
		Encapsulation: r.cfg.Encap.String(),
		TUN:           r.cfg.TUN,
		TUNMTU:        r.cfg.MTU,
		UnderlayMTU:   r.cfg.UnderlayMTU,
		Listen:        r.conn.LocalAddr().String(),
		Drops:         make(map[string]uint64, numDropReasons),
		TxPackets:     r.txPackets.Load(),
		TxBytes:       r.txBytes.Load(),
		RxPackets:     r.rxPackets.Load(),
		RxBytes:       r.rxBytes.Load(),
		ICMPSent:      r.icmpSent.Load(),
		Keepalives:    r.keepalives.Load(),
		NonESP:        r.nonESP.Load(),
		ARPReplies:    r.arpReplies.Load(),
	}
	if r.cfg.Encap == EncapESP {
		st.Cipher = r.cfg.Cipher
	}
	snap := r.state.Load()
	for _, p := range snap.prefixes {
		st.Prefixes = append(st.Prefixes, p.String())
	}
	for _, a := range snap.addrs {
		st.Addresses = append(st.Addresses, a.String())
	}
	for i := range r.drops {
		st.Drops[DropReason(i).String()] = r.drops[i].Load()
	}
	now := time.Now()
	for _, p := range snap.peers {
		ps := PeerStatus{
			Name:      p.Name,
			Underlay:  p.Underlay.String(),
			TunnelMTU: p.TunnelMTU,
			TxPackets: p.Stats.txPackets.Load(),
			TxBytes:   p.Stats.txBytes.Load(),
			RxPackets: p.Stats.rxPackets.Load(),
			RxBytes:   p.Stats.rxBytes.Load(),
		}
		age := int64(now.Sub(p.Stats.created).Seconds())
		for _, pfx := range p.Prefixes {
			ps.Prefixes = append(ps.Prefixes, pfx.String())
		}
		if p.Out != nil {
			ps.SAOut = &SAStatus{SPI: p.Out.SPI(), Packets: ps.TxPackets, Bytes: ps.TxBytes, AgeSeconds: age}
		}
		if len(p.In) > 0 {
			ps.SAIn = &SAStatus{SPI: p.In[0].SPI(), Packets: ps.RxPackets, Bytes: ps.RxBytes, AgeSeconds: age}
		}
		st.Peers = append(st.Peers, ps)
	}
	return st
}
