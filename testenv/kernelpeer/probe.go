package kernelpeer

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Doer runs fn on a thread inside a network namespace: testenv's
// (*NetNS).Do, ESPPeer.LANDo, VXLANPeer.Do, or InNetNS(name). Sockets fn
// opens stay in that namespace.
type Doer func(fn func() error) error

// InNetNS is the Doer of the named namespace.
func InNetNS(name string) Doer {
	return func(fn func() error) error { return DoInNetNS(name, fn) }
}

// Ping sends ICMP echo requests to dst from inside a namespace until count
// replies came back (resending every interval, default 200 ms, so a request
// lost while a neighbour resolves does not fail the probe) or ctx ends. It
// returns the round-trip times of the replies. A raw ICMP socket is used, so
// the caller must be root. Without a ctx deadline it gives up after 10 s.
func Ping(ctx context.Context, in Doer, dst netip.Addr, count int, interval time.Duration) ([]time.Duration, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	if interval <= 0 {
		interval = 200 * time.Millisecond
	}
	network, laddr, proto := "ip4:icmp", "0.0.0.0", 1
	var reqType, replyType icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if dst.Is6() {
		network, laddr, proto = "ip6:ipv6-icmp", "::", 58
		reqType, replyType = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	var c *icmp.PacketConn
	if err := in(func() (err error) {
		c, err = icmp.ListenPacket(network, laddr)
		return err
	}); err != nil {
		return nil, fmt.Errorf("ping %s: %w", dst, err)
	}
	defer c.Close()
	id := int(mrand.Uint32() & 0xffff)
	payload := []byte("drover kernelpeer ping " + strconv.Itoa(os.Getpid()))
	sent := map[int]time.Time{}
	var rtts []time.Duration
	buf := make([]byte, 1500)
	to := &net.IPAddr{IP: dst.AsSlice()}
	for seq := 1; len(rtts) < count; seq++ {
		if err := ctx.Err(); err != nil {
			return rtts, fmt.Errorf("ping %s: %d of %d replies after %d requests: %w", dst, len(rtts), count, seq-1, err)
		}
		msg := icmp.Message{Type: reqType, Body: &icmp.Echo{ID: id, Seq: seq, Data: payload}}
		b, err := msg.Marshal(nil) // the kernel computes the ICMPv6 checksum
		if err != nil {
			return nil, err
		}
		sent[seq] = time.Now()
		if _, err := c.WriteTo(b, to); err != nil {
			return rtts, fmt.Errorf("ping %s: send: %w", dst, err)
		}
		deadline := time.Now().Add(interval)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		_ = c.SetReadDeadline(deadline)
		for len(rtts) < count {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				return rtts, fmt.Errorf("ping %s: receive: %w", dst, err)
			}
			// A raw socket sees every ICMP packet of the namespace.
			if ip, ok := from.(*net.IPAddr); !ok || !ip.IP.Equal(dst.AsSlice()) {
				continue
			}
			m, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil || m.Type != replyType {
				continue
			}
			e, ok := m.Body.(*icmp.Echo)
			if !ok || e.ID != id || string(e.Data) != string(payload) {
				continue
			}
			if t0, ok := sent[e.Seq]; ok {
				rtts = append(rtts, time.Since(t0))
				delete(sent, e.Seq) // a duplicate reply does not count twice
			}
		}
	}
	return rtts, nil
}

// Transfer is the result of TransferTCP.
type Transfer struct {
	Bytes    int64
	Duration time.Duration
	SentSHA  [sha256.Size]byte
	RecvSHA  [sha256.Size]byte
}

// Mbps is the goodput in megabits per second.
func (x Transfer) Mbps() float64 {
	if x.Duration <= 0 {
		return 0
	}
	return float64(x.Bytes) * 8 / x.Duration.Seconds() / 1e6
}

// TransferTCP sends size random bytes over one TCP connection from a client
// in namespace from to a listener on dst (an address of namespace to),
// hashing both ends with SHA-256. It returns an error unless every byte
// arrived and the digests match. The connection must be established within
// 10 s (a lost SYN is retransmitted after 1 s, 3 s, 7 s); the transfer ends
// with ctx's deadline (default 2 minutes).
func TransferTCP(ctx context.Context, from, to Doer, dst netip.Addr, size int64) (Transfer, error) {
	var res Transfer
	var ln net.Listener
	if err := to(func() (err error) {
		var lc net.ListenConfig
		ln, err = lc.Listen(ctx, "tcp", netip.AddrPortFrom(dst, 0).String())
		return err
	}); err != nil {
		return res, fmt.Errorf("tcp %s: listen: %w", dst, err)
	}
	defer ln.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(2 * time.Minute)
	}
	type recv struct {
		n   int64
		sum [sha256.Size]byte
		err error
	}
	got := make(chan recv, 1)
	go func() {
		var r recv
		defer func() { got <- r }()
		_ = ln.(*net.TCPListener).SetDeadline(deadline)
		c, err := ln.Accept()
		if err != nil {
			r.err = fmt.Errorf("accept: %w", err)
			return
		}
		defer c.Close()
		_ = c.SetDeadline(deadline)
		h := sha256.New()
		r.n, r.err = io.Copy(h, c)
		copy(r.sum[:], h.Sum(nil))
	}()

	addr := netip.AddrPortFrom(dst, uint16(ln.Addr().(*net.TCPAddr).Port))
	var c net.Conn
	if err := from(func() (err error) {
		d := net.Dialer{Timeout: 10 * time.Second}
		c, err = d.DialContext(ctx, "tcp", addr.String())
		return err
	}); err != nil {
		return res, fmt.Errorf("tcp %s: dial: %w", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(deadline)
	var seed [32]byte
	_, _ = rand.Read(seed[:])
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(mrand.NewChaCha8(seed), size), h)
	start := time.Now()
	n, err := io.Copy(c, src)
	if err == nil {
		err = c.(*net.TCPConn).CloseWrite()
	}
	if err != nil {
		return res, fmt.Errorf("tcp %s: sent %d of %d bytes: %w", addr, n, size, err)
	}
	copy(res.SentSHA[:], h.Sum(nil))
	var r recv
	select {
	case r = <-got:
	case <-ctx.Done():
		ln.Close()
		return res, fmt.Errorf("tcp %s: waiting for the receiver: %w", addr, ctx.Err())
	}
	res.Duration = time.Since(start)
	res.Bytes, res.RecvSHA = r.n, r.sum
	if r.err != nil {
		return res, fmt.Errorf("tcp %s: received %d of %d bytes: %w", addr, r.n, size, r.err)
	}
	if r.n != size || r.sum != res.SentSHA {
		return res, fmt.Errorf("tcp %s: received %d bytes sha256 %x, sent %d bytes sha256 %x", addr, r.n, r.sum, size, res.SentSHA)
	}
	return res, nil
}
