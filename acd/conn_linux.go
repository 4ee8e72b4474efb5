package acd

import (
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drovernet/drover/router/packet"
)

// PacketConn is an AF_PACKET socket for ARP bound to one interface, in the
// network namespace of the thread that opened it.
type PacketConn struct {
	fd      int
	ifindex int
	mac     packet.MAC
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Open binds an ARP socket to the interface ifname.
func Open(ifname string) (*PacketConn, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("acd: %w", err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("acd: %s is not an Ethernet interface", ifname)
	}
	proto := htons(unix.ETH_P_ARP)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return nil, fmt.Errorf("acd: packet socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("acd: bind %s: %w", ifname, err)
	}
	return &PacketConn{fd: fd, ifindex: ifi.Index, mac: packet.MAC(ifi.HardwareAddr)}, nil
}

// MAC is the interface's address.
func (c *PacketConn) MAC() packet.MAC { return c.mac }

// Send transmits one frame (its destination is in the frame).
func (c *PacketConn) Send(frame []byte) error {
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: c.ifindex, Halen: 6}
	copy(sa.Addr[:], frame[:6])
	return unix.Sendto(c.fd, frame, 0, sa)
}

// Recv reads one frame, waiting until deadline at most.
func (c *PacketConn) Recv(buf []byte, deadline time.Time) (int, error) {
	d := time.Until(deadline)
	if d <= 0 {
		return 0, ErrTimeout
	}
	tv := unix.NsecToTimeval(max(d, time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return 0, err
	}
	n, _, err := unix.Recvfrom(c.fd, buf, 0)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
		return 0, ErrTimeout
	}
	return n, err
}

// Close closes the socket.
func (c *PacketConn) Close() error { return unix.Close(c.fd) }
