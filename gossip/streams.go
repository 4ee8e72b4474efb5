package gossip

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// memberlist v0.6.0 takes every TCP connection its listener accepts and
// serves it in a goroutine of its own: it reads the stream's first bytes,
// and for an encrypted stream (net.go, decryptRemoteState) the message type
// encryptMsg and a 4-byte length, then buffers that many bytes — up to
// 20 MiB — before it can check the authentication tag. Anyone who reaches
// the gossip port could thus make the daemon hold 20 MiB per connection,
// for as many connections as they open, each for TCPTimeout.
//
// streamGuard sits between memberlist's NetTransport and memberlist and
// screens every inbound stream before memberlist sees it:
//   - at most Config.MaxStreams are in memberlist's hands at once; past that
//     the guard stops taking connections, which wait in the kernel's listen
//     backlog (memory the process does not hold) instead of in goroutines;
//   - at most Config.MaxStreamsPerIP come from one remote address; more are
//     closed at once, so one host cannot take every slot;
//   - the first 5 bytes must arrive within streamHeaderTimeout and say
//     encryptMsg (drover sets no label and requires encryption, so any
//     other first byte is refused by memberlist anyway) with a length of at
//     most Config.MaxStreamBytes.
//
// So the memory that strangers can make memberlist hold is at most
// MaxStreams × MaxStreamBytes (plus a goroutine and two 4 KiB buffers per
// stream), for at most streamHeaderTimeout + TCPTimeout each.
type streamGuard struct {
	memberlist.NodeAwareTransport
	limits streamLimits
	log    *slog.Logger // rate-limited

	out  chan net.Conn
	slot chan struct{} // one token per stream in progress (screening or memberlist's)
	stop chan struct{}
	wg   sync.WaitGroup

	mu    sync.Mutex // guards perIP
	perIP map[netip.Addr]int

	refused atomic.Uint64 // streams closed by the guard

	// dialCtx ends every dial in progress when the Cluster shuts down
	// (cancelDials), so that a join towards an unreachable seed does not
	// hold Shutdown for TCPTimeout.
	dialCtx     context.Context
	cancelDials context.CancelFunc
}

// DialAddressTimeout implements memberlist.NodeAwareTransport as
// NetTransport does, but ends with cancelDials.
func (g *streamGuard) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.DialContext(g.dialCtx, "tcp", a.Addr)
}

// DialTimeout implements memberlist.Transport, like DialAddressTimeout.
func (g *streamGuard) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return g.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

type streamLimits struct {
	total, perIP int
	maxBytes     uint32
	header       time.Duration // for the first 5 bytes
}

// streamHeaderTimeout bounds how long a new stream may take to send its
// first 5 bytes: a member writes its whole message at once.
const streamHeaderTimeout = 2 * time.Second

// encryptMsg is memberlist's message type for an encrypted stream
// (net.go: the 11th of its append-only messageType values).
const encryptMsg = 10

var (
	errStreamType = errors.New("stream is not encrypted (first byte not encryptMsg)")
	errStreamSize = errors.New("stream longer than MaxStreamBytes")
)

func newStreamGuard(inner memberlist.NodeAwareTransport, l streamLimits, log *slog.Logger) *streamGuard {
	g := &streamGuard{
		NodeAwareTransport: inner,
		limits:             l,
		log:                log,
		out:                make(chan net.Conn),
		slot:               make(chan struct{}, l.total),
		stop:               make(chan struct{}),
		perIP:              map[netip.Addr]int{},
	}
	g.dialCtx, g.cancelDials = context.WithCancel(context.Background())
	g.wg.Add(1)
	go g.accept()
	return g
}

// StreamCh implements memberlist.Transport: the streams that passed.
func (g *streamGuard) StreamCh() <-chan net.Conn { return g.out }

// Shutdown implements memberlist.Transport.
func (g *streamGuard) Shutdown() error {
	g.cancelDials()
	close(g.stop)
	g.wg.Wait()
	// NetTransport's listener may be blocked handing over one more
	// connection, and its Shutdown waits for the listener.
	done := make(chan struct{})
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for {
			select {
			case c := <-g.NodeAwareTransport.StreamCh():
				_ = c.Close()
			case <-done:
				return
			}
		}
	}()
	err := g.NodeAwareTransport.Shutdown()
	close(done)
	<-drained
	return err
}

// accept takes a connection, refuses it if its address has too many, and
// otherwise waits for a slot: with every slot taken, later connections stay
// in the kernel's backlog.
func (g *streamGuard) accept() {
	defer g.wg.Done()
	in := g.NodeAwareTransport.StreamCh()
	for {
		var conn net.Conn
		select {
		case conn = <-in:
		case <-g.stop:
			return
		}
		ip := remoteIP(conn)
		if !g.takeIP(ip) {
			g.refuse(conn, "too many streams from one address", ip)
			continue
		}
		select {
		case g.slot <- struct{}{}:
		case <-g.stop:
			_ = conn.Close()
			g.releaseIP(ip)
			return
		}
		g.wg.Add(1)
		go g.screen(conn, ip)
	}
}

func remoteIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

func (g *streamGuard) takeIP(ip netip.Addr) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.perIP[ip] >= g.limits.perIP {
		return false
	}
	g.perIP[ip]++
	return true
}

func (g *streamGuard) releaseIP(ip netip.Addr) {
	g.mu.Lock()
	if g.perIP[ip]--; g.perIP[ip] <= 0 {
		delete(g.perIP, ip)
	}
	g.mu.Unlock()
}

// release frees what an admitted stream holds: its address's share and
// its slot.
func (g *streamGuard) release(ip netip.Addr) {
	g.releaseIP(ip)
	<-g.slot
}

func (g *streamGuard) refuse(c net.Conn, why string, ip netip.Addr) {
	g.refused.Add(1)
	_ = c.Close()
	g.log.Warn("gossip stream refused", "reason", why, "addr", ip)
}

// screen reads the stream's header and hands the stream to memberlist, or
// closes it.
func (g *streamGuard) screen(conn net.Conn, ip netip.Addr) {
	defer g.wg.Done()
	var hdr [5]byte
	_ = conn.SetReadDeadline(time.Now().Add(g.limits.header))
	_, err := io.ReadFull(conn, hdr[:])
	if err == nil && hdr[0] != encryptMsg {
		err = errStreamType
	}
	if err == nil && binary.BigEndian.Uint32(hdr[1:]) > g.limits.maxBytes {
		err = errStreamSize
	}
	if err != nil {
		g.refuse(conn, err.Error(), ip)
		g.release(ip)
		return
	}
	_ = conn.SetReadDeadline(time.Time{}) // memberlist sets its own (TCPTimeout)
	gc := &guardedConn{Conn: conn, pre: hdr, release: func() { g.release(ip) }}
	select {
	case g.out <- gc:
	case <-g.stop:
		_ = gc.Close()
	}
}

// guardedConn gives memberlist the header the guard read, then the rest of
// the stream; closing it frees its slot.
type guardedConn struct {
	net.Conn
	pre     [5]byte
	off     int
	once    sync.Once
	release func()
}

func (c *guardedConn) Read(b []byte) (int, error) {
	if c.off < len(c.pre) {
		n := copy(b, c.pre[c.off:])
		c.off += n
		return n, nil
	}
	return c.Conn.Read(b)
}

func (c *guardedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
