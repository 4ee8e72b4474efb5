//go:build linux

package udp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Conn is a batched UDP socket for the underlay. See the package doc for
// who may call what concurrently.
type Conn struct {
	pc     *net.UDPConn    // owns the descriptor and its registration with the netpoller
	rc     syscall.RawConn // pc's; Read/Write park the goroutine until the fd is ready
	local  netip.AddrPort
	family int  // unix.AF_INET or unix.AF_INET6
	v6only bool // an AF_INET6 socket that cannot send to or receive from IPv4

	rx rxBatch // owned by the goroutine inside ReadBatch
	tx txBatch // owned by the goroutine inside WriteBatch
}

// Listen opens a UDP socket bound to cfg.Local, with the socket buffers
// and batch size of cfg, and outer fragmentation allowed (see the package
// doc, "Fragmentation"). It does not set SO_REUSEADDR: on UDP that option
// lets a second socket bind the same port and silently take its traffic,
// so a second drover on one host would blackhole the first instead of
// failing to start.
func Listen(cfg Config) (*Conn, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("udp: listen %s: %w", cfg.Local, err)
	}
	network, address := listenTarget(cfg.Local)
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		// Runs after socket(2) and Go's own options (IPV6_V6ONLY), before bind(2).
		var err error
		if cerr := rc.Control(func(fd uintptr) { err = setSockopts(int(fd), cfg) }); cerr != nil {
			return cerr
		}
		return err
	}}
	pc, err := lc.ListenPacket(context.Background(), network, address)
	if err != nil {
		return nil, fmt.Errorf("udp: listen %s: %w", cfg.Local, err)
	}
	c := &Conn{pc: pc.(*net.UDPConn)}
	if c.rc, err = c.pc.SyscallConn(); err != nil {
		c.pc.Close()
		return nil, fmt.Errorf("udp: listen %s: %w", cfg.Local, err)
	}
	if cerr := c.rc.Control(func(fd uintptr) { err = c.inspect(int(fd)) }); cerr != nil {
		err = cerr
	}
	if err != nil {
		c.pc.Close()
		return nil, fmt.Errorf("udp: listen %s: %w", cfg.Local, err)
	}
	c.rx.init(cfg.BatchSize)
	c.tx.init(cfg.BatchSize, c.family, c.v6only)
	if !cfg.NoGSO {
		// UDP_SEGMENT exists since Linux 4.18; getsockopt on it fails before.
		_ = c.rc.Control(func(fd uintptr) {
			_, gerr := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
			c.tx.gso.Store(gerr == nil)
		})
	}
	return c, nil
}

// listenTarget maps a configured local address onto the network and address
// strings of net.ListenConfig, which then picks the socket family: "udp4"
// for IPv4 (mapped or not), "udp" for the dual-stack wildcards, "udp6" (and
// so IPV6_V6ONLY) for a specific IPv6 address.
func listenTarget(local netip.AddrPort) (network, address string) {
	a, port := local.Addr(), local.Port()
	switch {
	case !a.IsValid():
		// No address at all: Go opens a dual-stack socket, or an IPv4 one
		// where the kernel has no IPv6.
		return "udp", ":" + strconv.Itoa(int(port))
	case a.Is4() || a.Is4In6():
		return "udp4", netip.AddrPortFrom(a.Unmap(), port).String()
	case a.IsUnspecified() && a.Zone() == "":
		return "udp", local.String()
	default:
		return "udp6", local.String()
	}
}

// setSockopts sets the options that must be in place before bind(2).
func setSockopts(fd int, cfg Config) error {
	family, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return fmt.Errorf("getsockopt SO_DOMAIN: %w", err)
	}
	if err := setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, "SO_RCVBUF", cfg.RecvBuffer); err != nil {
		return err
	}
	if err := setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, "SO_SNDBUF", cfg.SendBuffer); err != nil {
		return err
	}
	// Never set DF, and let the kernel fragment the outer datagram: see the
	// package doc, "Fragmentation". On an AF_INET6 socket IP_MTU_DISCOVER
	// governs the IPv4-mapped half of a dual-stack socket (the kernel sends
	// those through the IPv4 path).
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT); err != nil {
		return fmt.Errorf("setsockopt IP_MTU_DISCOVER: %w", err)
	}
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DONT); err != nil {
			return fmt.Errorf("setsockopt IPV6_MTU_DISCOVER: %w", err)
		}
	}
	return nil
}

// setBuffer sets a socket buffer size, first with the *FORCE option that
// ignores the sysctl cap (needs CAP_NET_ADMIN), then with the plain one.
func setBuffer(fd, force, plain int, name string, size int) error {
	if size <= 0 {
		return nil
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size) == nil {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, size); err != nil {
		return fmt.Errorf("setsockopt %s %d: %w", name, size, err)
	}
	return nil
}

// inspect records what the bound socket turned out to be.
func (c *Conn) inspect(fd int) error {
	family, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return fmt.Errorf("getsockopt SO_DOMAIN: %w", err)
	}
	c.family = family
	if family == unix.AF_INET6 {
		v, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		if err != nil {
			return fmt.Errorf("getsockopt IPV6_V6ONLY: %w", err)
		}
		c.v6only = v != 0
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("getsockname: %w", err)
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		c.local = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		a := netip.AddrFrom16(sa.Addr)
		if sa.ZoneId != 0 {
			a = a.WithZone(zoneName(sa.ZoneId))
		}
		c.local = netip.AddrPortFrom(a, uint16(sa.Port))
	default:
		return fmt.Errorf("getsockname: unexpected %T", sa)
	}
	return nil
}

// SetGRO turns UDP generic receive offload on or off (UDP_GRO, Linux 5.0+).
// With it on, the kernel may hand ReadBatch several datagrams from one
// source, of one size, as one message (see Msg.Segment), so the caller must
// pass buffers of 65535 bytes and split them. The error is the kernel's
// when it has no UDP_GRO; the Conn then works as before. Call it before the
// first ReadBatch, not concurrently with one.
func (c *Conn) SetGRO(on bool) error {
	v := 0
	if on {
		v = 1
	}
	var err error
	if cerr := c.rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, v) }); cerr != nil {
		return fmt.Errorf("udp: setsockopt UDP_GRO: %w", cerr)
	}
	if err != nil {
		return fmt.Errorf("udp: setsockopt UDP_GRO: %w", err)
	}
	c.rx.gro.Store(on)
	return nil
}

// Offloads reports whether WriteBatch uses UDP GSO (it stops after the
// kernel refuses it with EIO) and whether ReadBatch has GRO on.
func (c *Conn) Offloads() (gso, gro bool) {
	return c.tx.gso.Load(), c.rx.gro.Load()
}

// LocalAddr returns the bound address, with the real port when Config.Local
// had port 0. A dual-stack socket reports [::].
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// Close closes the socket. A ReadBatch or WriteBatch blocked on it returns
// an error matching net.ErrClosed (errors.Is), as do later calls.
func (c *Conn) Close() error { return c.pc.Close() }

// ReadBatch receives at least one datagram, blocking (parked in the
// netpoller, not in the kernel) until one arrives, and as many more as are
// already queued, up to len(msgs) and the batch size. It returns how many
// it received: msgs[:n] have N, Addr and Truncated set; the rest are
// untouched. With len(msgs) == 0 it returns 0, nil at once. Errors are
// net.ErrClosed after Close (wrapped in *net.OpError) or a raw
// syscall.Errno from recvmmsg(2).
//
// Not safe for concurrent use with itself (it panics if misused); safe
// alongside one WriteBatch.
func (c *Conn) ReadBatch(msgs []Msg) (int, error) {
	rx := &c.rx
	if !rx.busy.CompareAndSwap(false, true) {
		panic("udp: concurrent ReadBatch calls on one Conn")
	}
	defer rx.busy.Store(false)
	n := rx.prepare(msgs)
	if n == 0 {
		return 0, nil
	}
	err := c.rc.Read(rx.fn)
	if err == nil && rx.errno != 0 {
		err = rx.errno
	}
	got := 0
	if err == nil {
		got = rx.got
		rx.finish(msgs[:got])
	}
	rx.release(n)
	return got, err
}

// WriteBatch sends every message of msgs, batch-size messages per
// sendmmsg(2) call, each as one datagram Head||Buf (a gather write: Head
// is not copied in front of Buf). A sent message's N is len(Head)+len(Buf).
// A message the socket cannot take (a destination of the
// wrong family, ErrAddrFamily; or one the kernel refuses, such as EMSGSIZE
// or ENETUNREACH) is skipped, its N set to -1, and the rest still go out.
// It returns the number of messages sent and the error of the lowest-
// indexed message that failed, or net.ErrClosed (wrapped in *net.OpError)
// if the socket is closed, in which case the unsent messages have N = -1.
// If the socket buffer is full it waits in the netpoller for room.
//
// Not safe for concurrent use with itself (it panics if misused); safe
// alongside one ReadBatch.
func (c *Conn) WriteBatch(msgs []Msg) (int, error) {
	tx := &c.tx
	if !tx.busy.CompareAndSwap(false, true) {
		panic("udp: concurrent WriteBatch calls on one Conn")
	}
	defer tx.busy.Store(false)
	sent := 0
	var first error
	plain := 0
	for off := 0; off < len(msgs); {
		chunk := msgs[off:min(len(msgs), off+len(tx.hdrs))]
		tx.prepare(chunk, plain)
		plain = 0
		if tx.n > 0 {
			if err := c.rc.Write(tx.fn); err != nil {
				// Closed: the callback may have sent part of the chunk
				// before it had to wait; prepare set N = -1 on the rest.
				sent += tx.sent
				for i := off + len(chunk); i < len(msgs); i++ {
					msgs[i].N = -1
				}
				tx.release()
				return sent, err
			}
		}
		sent += tx.sent
		if first == nil {
			first = tx.err
		}
		redo, redoCnt := tx.redo, tx.redoCnt
		tx.release()
		if redo >= 0 {
			// A refused GSO group: everything before it is done; send it
			// again as plain datagrams, then go on.
			off, plain = off+redo, redoCnt
			continue
		}
		off += len(chunk)
	}
	return sent, first
}
