// Package arpsock owns an AF_PACKET socket for ARP (RFC 826) bound to one
// interface, read and written through the Go poller: a deadline bounds
// each read, and Close wakes a read in progress at once. The router's ARP
// responder and address conflict detection (package acd, RFC 5227) both
// send and receive ARP through it.
package arpsock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/drovernet/drover/router/packet"
)

var (
	// ErrNoLink is returned by Open and MAC when the interface does not
	// exist (not yet, or no longer).
	ErrNoLink = errors.New("arpsock: no such interface")
	// ErrTimeout is returned by Recv when no frame came by the deadline.
	ErrTimeout = errors.New("arpsock: no frame before the deadline")
)

// Conn is an ARP socket on one interface, in the network namespace of the
// thread that opened it. One Recv and one Send may run at once (each has
// its own state); Close may be called from any goroutine, more than once.
// The poller callbacks are bound once, in Open, not a closure per frame:
// Send allocates nothing, Recv only the sender address recvfrom(2) gives.
type Conn struct {
	file    *os.File
	rc      syscall.RawConn
	ifindex int

	// Recv's state, filled by the read callback.
	rbuf   []byte
	rn     int
	rfrom  unix.Sockaddr
	rerr   error
	readFn func(fd uintptr) bool

	// Send's state.
	wbuf   []byte
	werr   error
	to     unix.SockaddrLinklayer
	sendFn func(fd uintptr) bool

	closeOnce sync.Once
	closeErr  error
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Open binds an ARP socket to the Ethernet interface ifname.
func Open(ifname string) (*Conn, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrNoLink, ifname)
	}
	if len(ifi.HardwareAddr) != len(packet.MAC{}) {
		return nil, fmt.Errorf("arpsock: %s is not an Ethernet interface", ifname)
	}
	proto := htons(unix.ETH_P_ARP)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, int(proto))
	if err != nil {
		return nil, fmt.Errorf("arpsock: packet socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("arpsock: bind %s: %w", ifname, err)
	}
	c := &Conn{file: os.NewFile(uintptr(fd), "arp:"+ifname), ifindex: ifi.Index}
	if c.rc, err = c.file.SyscallConn(); err != nil {
		c.file.Close()
		return nil, fmt.Errorf("arpsock: %s: %w", ifname, err)
	}
	c.to = unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index, Halen: 6}
	c.readFn, c.sendFn = c.read, c.sendTo
	return c, nil
}

// Recv reads one ARP frame (the whole Ethernet frame) into buf, waiting
// until deadline at most (ErrTimeout). outgoing reports a frame this host
// sent: an AF_PACKET socket sees those too.
func (c *Conn) Recv(buf []byte, deadline time.Time) (n int, outgoing bool, err error) {
	if err := c.file.SetReadDeadline(deadline); err != nil {
		return 0, false, err
	}
	c.rbuf = buf
	err = c.rc.Read(c.readFn)
	if err == nil {
		err = c.rerr
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, false, ErrTimeout
		}
		return 0, false, err
	}
	ll, ok := c.rfrom.(*unix.SockaddrLinklayer)
	return c.rn, ok && ll.Pkttype == unix.PACKET_OUTGOING, nil
}

// read is the poller callback for Recv: false (not done) on EAGAIN makes
// the poller wait until the socket is readable.
func (c *Conn) read(fd uintptr) bool {
	c.rn, c.rfrom, c.rerr = unix.Recvfrom(int(fd), c.rbuf, 0)
	return c.rerr != unix.EAGAIN && c.rerr != unix.EINTR
}

// Send transmits one Ethernet frame to the station its destination
// address (its first 6 bytes) names.
func (c *Conn) Send(frame []byte) error {
	if len(frame) < packet.EthHeaderLen {
		return fmt.Errorf("arpsock: frame of %d bytes, shorter than an Ethernet header", len(frame))
	}
	copy(c.to.Addr[:], frame[:6])
	c.wbuf = frame
	if err := c.rc.Write(c.sendFn); err != nil {
		return err
	}
	return c.werr
}

// sendTo is the poller callback for Send.
func (c *Conn) sendTo(fd uintptr) bool {
	c.werr = unix.Sendto(int(fd), c.wbuf, 0, &c.to)
	return c.werr != unix.EAGAIN && c.werr != unix.EINTR
}

// MAC is the interface's address now (a bridge without a fixed address
// takes the lowest of its ports', so it changes as ports come and go), or
// ErrNoLink once the interface is gone. It asks through the socket
// (SIOCGIFNAME by index, then SIOCGIFHWADDR), so the answer is from the
// socket's network namespace whatever the calling thread's (a CNI plugin
// opens the socket in the host's namespace and probes from its own), and
// a bridge deleted and made again under the same name is not the one the
// socket is bound to.
func (c *Conn) MAC() (packet.MAC, error) {
	var mac packet.MAC
	var err error
	cerr := c.rc.Control(func(fd uintptr) {
		var ifr ifreq
		binary.NativeEndian.PutUint32(ifr.union[:4], uint32(c.ifindex))
		if err = ioctl(fd, unix.SIOCGIFNAME, &ifr); err != nil {
			return
		}
		if err = ioctl(fd, unix.SIOCGIFHWADDR, &ifr); err != nil {
			return
		}
		// A struct sockaddr: the family (ARPHRD_ETHER), then the address.
		if binary.NativeEndian.Uint16(ifr.union[:2]) != unix.ARPHRD_ETHER {
			err = fmt.Errorf("arpsock: interface %d is no longer Ethernet", c.ifindex)
			return
		}
		copy(mac[:], ifr.union[2:8])
	})
	if cerr != nil {
		return mac, cerr
	}
	if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
		return mac, ErrNoLink
	}
	return mac, err
}

// ifreq is struct ifreq (<linux/if.h>): the name, then a union of which
// MAC uses the index (int) and the hardware address (struct sockaddr).
type ifreq struct {
	name  [unix.IFNAMSIZ]byte
	union [24]byte
}

func ioctl(fd uintptr, req uint, ifr *ifreq) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), uintptr(unsafe.Pointer(ifr))); e != 0 {
		return e
	}
	return nil
}

// Close closes the socket and wakes a Recv in progress.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.file.Close() })
	return c.closeErr
}
