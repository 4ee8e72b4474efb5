package lab

import (
	"bytes"
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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// Probing is in-process: a socket opened inside a container's namespace
// (through NetNS.Do) stays there, so the I/O afterwards runs on ordinary
// goroutines and the lab needs neither ping(8) nor iperf.
const (
	// PingTimeout bounds one pair of the reachability matrix. The first
	// packets of a pair also wait for ARP on both bridges, so a pair gets
	// several requests, one per pingInterval, and any reply counts.
	PingTimeout  = 3 * time.Second
	pingInterval = 250 * time.Millisecond
	// pingParallel bounds the pairs probed at once: each holds a raw
	// socket and, while opening it, an OS thread.
	pingParallel = 8
	// stallTimeout ends a TCP measurement that moved no data for this long
	// (a black-holed tunnel), whatever the context says.
	stallTimeout = 10 * time.Second
)

// ErrDigest means a Transfer delivered different bytes than were sent.
var ErrDigest = errors.New("lab: transfer digest mismatch")

// errNotProbed marks pairs that were never probed (the context ended first).
var errNotProbed = errors.New("not probed")

// pingID numbers echo requests: every Ping gets its own ICMP identifier, so
// concurrent probes that share a namespace (a raw socket sees every ICMP
// packet there) only take their own replies.
var pingID atomic.Uint32

func init() { pingID.Store(mrand.Uint32()) }

// Ping sends ICMP echo requests (RFC 792) from the container to addr, one
// every 250 ms, until a matching echo reply arrives or timeout passes. It
// returns the round trip of the request that was answered.
func (c *Container) Ping(ctx context.Context, addr netip.Addr, timeout time.Duration) (time.Duration, error) {
	var conn *icmp.PacketConn
	err := c.NS.Do(func() error {
		var err error
		conn, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("%s: icmp socket: %w", c.Ref, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	id := int(pingID.Add(1) & 0xffff)
	token := make([]byte, 16)
	rand.Read(token)
	dst := &net.IPAddr{IP: addr.AsSlice()}
	deadline := time.Now().Add(timeout)
	sent := map[int]time.Time{}
	buf := make([]byte, 1500)
	var lastErr error
	for seq := 0; ; seq++ {
		now := time.Now()
		if !now.Before(deadline) {
			if lastErr != nil {
				return 0, fmt.Errorf("no echo reply in %v (%d requests; last send: %w)", timeout, seq, lastErr)
			}
			return 0, fmt.Errorf("no echo reply in %v (%d requests)", timeout, seq)
		}
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: token}}
		b, err := msg.Marshal(nil)
		if err != nil {
			return 0, err
		}
		// A failed send (no route yet, neighbour unresolved) is one
		// failed attempt, not the end of the probe.
		if _, err := conn.WriteTo(b, dst); err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			lastErr = err
		} else {
			sent[seq] = now
		}
		next := now.Add(pingInterval)
		if next.After(deadline) {
			next = deadline
		}
		if err := conn.SetReadDeadline(next); err != nil {
			return 0, ctxOr(ctx, err)
		}
		for {
			n, from, err := conn.ReadFrom(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return 0, ctxOr(ctx, err)
			}
			m, err := icmp.ParseMessage(1, buf[:n]) // 1: ICMPv4
			if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
				continue
			}
			echo, ok := m.Body.(*icmp.Echo)
			if !ok || echo.ID != id || !bytes.Equal(echo.Data, token) {
				continue
			}
			if ip, ok := from.(*net.IPAddr); !ok || !ip.IP.Equal(dst.IP) {
				continue
			}
			if t, ok := sent[echo.Seq]; ok {
				return time.Since(t), nil
			}
		}
	}
}

// ctxOr prefers the context's error: a socket closed by context.AfterFunc
// reports "use of closed network connection", which hides the reason.
func ctxOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Matrix is the result of Reachability: rows probe, columns answer.
type Matrix struct {
	Containers []ContainerRef
	Addrs      []netip.Addr
	// RTT[i][j] is the echo round trip from Containers[i] to Containers[j],
	// when it was reachable.
	RTT [][]time.Duration
	// Err[i][j] is why Containers[i] could not reach Containers[j]; nil
	// when it could, and on the diagonal (never probed).
	Err [][]error
}

func newMatrix(ctrs []*Container) Matrix {
	n := len(ctrs)
	m := Matrix{RTT: make([][]time.Duration, n), Err: make([][]error, n)}
	for i, c := range ctrs {
		m.Containers = append(m.Containers, c.Ref)
		m.Addrs = append(m.Addrs, c.Addr)
		m.RTT[i] = make([]time.Duration, n)
		m.Err[i] = make([]error, n)
		for j := range n {
			if j != i {
				m.Err[i][j] = errNotProbed
			}
		}
	}
	return m
}

// Reachable reports whether Containers[i] reached Containers[j].
func (m Matrix) Reachable(i, j int) bool { return i != j && m.Err[i][j] == nil }

// Count returns how many ordered pairs were reachable, out of how many.
func (m Matrix) Count() (ok, total int) {
	for i := range m.Containers {
		for j := range m.Containers {
			if i == j {
				continue
			}
			total++
			if m.Reachable(i, j) {
				ok++
			}
		}
	}
	return ok, total
}

// OK reports whether every container reached every other.
func (m Matrix) OK() bool {
	ok, total := m.Count()
	return ok == total
}

// Unreachable lists the failed pairs with their reasons, one per line.
func (m Matrix) Unreachable() []string {
	var out []string
	for i := range m.Containers {
		for j := range m.Containers {
			if i != j && !m.Reachable(i, j) {
				out = append(out, fmt.Sprintf("%s → %s (%s): %v", m.Containers[i], m.Containers[j], m.Addrs[j], m.Err[i][j]))
			}
		}
	}
	return out
}

// String renders the matrix as a table (rows: from, columns: to; "ok" or
// "--"), a summary line and the reason for every failed pair.
func (m Matrix) String() string {
	var b strings.Builder
	w := 2 // "ok"
	for _, r := range m.Containers {
		w = max(w, len(r.String()))
	}
	w0 := max(w, len("from\\to"))
	fmt.Fprintf(&b, "%-*s", w0, "from\\to")
	for _, r := range m.Containers {
		fmt.Fprintf(&b, " %*s", w, r)
	}
	b.WriteByte('\n')
	for i, r := range m.Containers {
		fmt.Fprintf(&b, "%-*s", w0, r)
		for j := range m.Containers {
			cell := "--"
			switch {
			case i == j:
				cell = "."
			case m.Reachable(i, j):
				cell = "ok"
			}
			fmt.Fprintf(&b, " %*s", w, cell)
		}
		b.WriteByte('\n')
	}
	ok, total := m.Count()
	fmt.Fprintf(&b, "%d/%d reachable\n", ok, total)
	for _, u := range m.Unreachable() {
		fmt.Fprintf(&b, "  %s\n", u)
	}
	return b.String()
}

// Reachability pings every container from every other one (same host and
// across hosts), a bounded number of pairs at a time. Unreachable pairs are
// recorded in the matrix, not returned as errors; the error is the
// context's, when it ended before every pair was probed.
func (l *Lab) Reachability(ctx context.Context) (Matrix, error) {
	ctrs := l.Containers()
	m := newMatrix(ctrs)
	sem := make(chan struct{}, pingParallel)
	var wg sync.WaitGroup
	for i, from := range ctrs {
		for j, to := range ctrs {
			if i == j {
				continue
			}
			wg.Go(func() {
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
				defer func() { <-sem }()
				// Each pair writes only its own cells.
				m.RTT[i][j], m.Err[i][j] = from.Ping(ctx, to.Addr, PingTimeout)
			})
		}
	}
	wg.Wait()
	return m, ctx.Err()
}

// Result is one TCP measurement.
type Result struct {
	From, To ContainerRef
	// Bytes is what the receiver got.
	Bytes int64
	// Duration runs from the first write to the receiver's end of stream.
	Duration time.Duration
	// Digest is the SHA-256 of the data (Transfer only), equal on both ends.
	Digest [sha256.Size]byte
}

// BitsPerSecond is the goodput.
func (r Result) BitsPerSecond() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Bytes) * 8 / r.Duration.Seconds()
}

// String is e.g. "h1c1 → h2c1: 1.52 Gbit/s (570.1 MB in 3.00 s)".
func (r Result) String() string {
	return fmt.Sprintf("%s → %s: %s (%.1f MB in %.2f s)", r.From, r.To, FormatBits(r.BitsPerSecond()), float64(r.Bytes)/1e6, r.Duration.Seconds())
}

// FormatBits renders a rate in bit/s with a decimal unit.
func FormatBits(bps float64) string {
	switch {
	case bps >= 1e9:
		return fmt.Sprintf("%.2f Gbit/s", bps/1e9)
	case bps >= 1e6:
		return fmt.Sprintf("%.1f Mbit/s", bps/1e6)
	default:
		return fmt.Sprintf("%.0f kbit/s", bps/1e3)
	}
}

// Throughput sends pseudo-random data over one TCP stream from one container
// to another for d and reports what arrived.
func (l *Lab) Throughput(ctx context.Context, from, to ContainerRef, d time.Duration) (Result, error) {
	// Incompressible data, generated once: the cost measured is the
	// tunnel's, not the generator's.
	buf := make([]byte, 128<<10)
	newRand().Read(buf)
	var n int64
	res, err := l.tcpRun(ctx, from, to,
		func(w io.Writer) error {
			end := time.Now().Add(d)
			for time.Now().Before(end) {
				if _, err := w.Write(buf); err != nil {
					return err
				}
			}
			return nil
		},
		func(r io.Reader) error {
			var err error
			n, err = io.CopyBuffer(io.Discard, r, make([]byte, 128<<10))
			return err
		})
	res.Bytes = n
	return res, err
}

// Transfer sends exactly n bytes of random data over one TCP stream and
// checks that the receiver got n bytes with the sender's SHA-256 (ErrDigest
// otherwise).
func (l *Lab) Transfer(ctx context.Context, from, to ContainerRef, n int64) (Result, error) {
	hs, hr := sha256.New(), sha256.New()
	var got int64
	res, err := l.tcpRun(ctx, from, to,
		func(w io.Writer) error {
			_, err := io.CopyBuffer(io.MultiWriter(w, hs), io.LimitReader(newRand(), n), make([]byte, 64<<10))
			return err
		},
		func(r io.Reader) error {
			var err error
			got, err = io.CopyBuffer(hr, r, make([]byte, 64<<10))
			return err
		})
	res.Bytes = got
	if err != nil {
		return res, err
	}
	copy(res.Digest[:], hs.Sum(nil))
	if got != n || !bytes.Equal(hs.Sum(nil), hr.Sum(nil)) {
		return res, fmt.Errorf("%w: sent %d bytes, SHA-256 %x; received %d bytes, SHA-256 %x", ErrDigest, n, hs.Sum(nil), got, hr.Sum(nil))
	}
	return res, nil
}

// newRand is a fast pseudo-random stream with a fresh random seed.
func newRand() *mrand.ChaCha8 {
	var seed [32]byte
	rand.Read(seed[:])
	return mrand.NewChaCha8(seed)
}

// tcpRun connects from → to, runs send on the client (then half-closes it)
// and recv on the server until end of stream, and times the whole. Reads and
// writes that make no progress for stallTimeout fail; ctx ending closes both
// ends.
func (l *Lab) tcpRun(ctx context.Context, from, to ContainerRef, send func(io.Writer) error, recv func(io.Reader) error) (Result, error) {
	res := Result{From: from, To: to}
	src, err := l.Container(from)
	if err != nil {
		return res, err
	}
	dst, err := l.Container(to)
	if err != nil {
		return res, err
	}
	cl, sv, err := tcpConnect(ctx, src, dst)
	if err != nil {
		return res, fmt.Errorf("%s → %s: %w", from, to, err)
	}
	defer cl.Close()
	defer sv.Close()
	stop := context.AfterFunc(ctx, func() { cl.Close(); sv.Close() })
	defer stop()

	start := time.Now()
	sendErr := make(chan error, 1)
	go func() {
		err := send(idleWriter{cl})
		if err == nil {
			err = cl.CloseWrite()
		} else {
			sv.Close() // unblock recv
		}
		sendErr <- err
	}()
	rerr := recv(idleReader{sv})
	res.Duration = time.Since(start)
	if rerr != nil {
		cl.Close() // unblock send
	}
	serr := <-sendErr
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if serr != nil {
		return res, fmt.Errorf("%s → %s: send: %w", from, to, serr)
	}
	if rerr != nil {
		return res, fmt.Errorf("%s → %s: receive: %w", from, to, rerr)
	}
	return res, nil
}

// tcpConnect listens in dst's namespace and dials from src's namespace.
func tcpConnect(ctx context.Context, src, dst *Container) (client, server *net.TCPConn, err error) {
	var ln *net.TCPListener
	err = dst.NS.Do(func() error {
		var err error
		ln, err = net.ListenTCP("tcp4", &net.TCPAddr{IP: dst.Addr.AsSlice()})
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("listen in %s: %w", dst.Ref, err)
	}
	defer ln.Close()
	type accepted struct {
		c   *net.TCPConn
		err error
	}
	acc := make(chan accepted, 1)
	go func() {
		c, err := ln.AcceptTCP()
		acc <- accepted{c, err}
	}()
	err = src.NS.Do(func() error {
		d := net.Dialer{Timeout: stallTimeout}
		c, err := d.DialContext(ctx, "tcp4", ln.Addr().String())
		if err != nil {
			return err
		}
		client = c.(*net.TCPConn)
		return nil
	})
	if err != nil {
		ln.Close()
		<-acc
		return nil, nil, fmt.Errorf("dial %s from %s: %w", ln.Addr(), src.Ref, err)
	}
	// The handshake is complete, so the connection is in the accept queue.
	a := <-acc
	if a.err != nil {
		client.Close()
		return nil, nil, fmt.Errorf("accept in %s: %w", dst.Ref, a.err)
	}
	return client, a.c, nil
}

// idleReader and idleWriter fail an operation that makes no progress for
// stallTimeout: a lost tunnel must fail the measurement, not hang it.
type idleReader struct{ c *net.TCPConn }

func (r idleReader) Read(p []byte) (int, error) {
	if err := r.c.SetReadDeadline(time.Now().Add(stallTimeout)); err != nil {
		return 0, err
	}
	return r.c.Read(p)
}

type idleWriter struct{ c *net.TCPConn }

func (w idleWriter) Write(p []byte) (int, error) {
	if err := w.c.SetWriteDeadline(time.Now().Add(stallTimeout)); err != nil {
		return 0, err
	}
	return w.c.Write(p)
}
