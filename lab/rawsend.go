package lab

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"
)

// SendRawUDP sends one IPv4/UDP datagram from inside ns with the source
// address src, whatever the namespace's own addresses are: a raw socket
// with IP_HDRINCL (RFC 791 header written here), so the kernel routes it by
// destination only. It is how a test forges the inner source of a packet
// that a router then seals for a peer.
func SendRawUDP(ns *NetNS, src, dst netip.AddrPort, payload []byte) error {
	if !src.Addr().Is4() || !dst.Addr().Is4() {
		return fmt.Errorf("raw UDP: %s → %s: IPv4 only", src, dst)
	}
	pkt := make([]byte, 28+len(payload))
	ip := pkt[:20]
	ip[0] = 0x45                                          // version 4, IHL 5
	binary.BigEndian.PutUint16(ip[2:4], uint16(len(pkt))) // total length (the kernel fills it in too)
	binary.BigEndian.PutUint16(ip[6:8], 0x4000)           // DF
	ip[8] = 64                                            // TTL
	ip[9] = unix.IPPROTO_UDP                              //
	copy(ip[12:16], src.Addr().AsSlice())                 //
	copy(ip[16:20], dst.Addr().AsSlice())                 //
	binary.BigEndian.PutUint16(ip[10:12], ipChecksum(ip)) // the kernel recomputes it; set anyway
	udp := pkt[20:]
	binary.BigEndian.PutUint16(udp[0:2], src.Port())
	binary.BigEndian.PutUint16(udp[2:4], dst.Port())
	binary.BigEndian.PutUint16(udp[4:6], uint16(8+len(payload)))
	// UDP checksum 0: none (RFC 768), valid for IPv4.
	copy(udp[8:], payload)

	return ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW) // IPPROTO_RAW implies IP_HDRINCL
		if err != nil {
			return fmt.Errorf("raw socket in %s: %w", ns.Name, err)
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrInet4{Addr: dst.Addr().As4()}
		if err := unix.Sendto(fd, pkt, 0, sa); err != nil {
			return fmt.Errorf("raw send %s → %s in %s: %w", src, dst, ns.Name, err)
		}
		return nil
	})
}

// ipChecksum is the RFC 1071 Internet checksum of an IPv4 header whose
// checksum field is zero.
func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// UDPSink collects the datagrams a container receives on one port.
type UDPSink struct {
	conn *net.UDPConn
	done chan struct{}

	mu  sync.Mutex
	got []UDPDatagram
}

// UDPDatagram is one received datagram.
type UDPDatagram struct {
	From    netip.AddrPort
	Payload []byte
}

// ListenUDP starts collecting the datagrams that reach the container on
// port (any of its addresses). Close stops it.
func (c *Container) ListenUDP(port uint16) (*UDPSink, error) {
	s := &UDPSink{done: make(chan struct{})}
	err := c.NS.Do(func() error {
		var err error
		s.conn, err = net.ListenUDP("udp4", &net.UDPAddr{Port: int(port)})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: listen udp %d: %w", c.Ref, port, err)
	}
	go func() {
		defer close(s.done)
		buf := make([]byte, 65536)
		for {
			n, from, err := s.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.got = append(s.got, UDPDatagram{From: netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), Payload: bytes.Clone(buf[:n])})
			s.mu.Unlock()
		}
	}()
	return s, nil
}

// Count returns how many datagrams carried payload.
func (s *UDPSink) Count(payload []byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, d := range s.got {
		if bytes.Equal(d.Payload, payload) {
			n++
		}
	}
	return n
}

// Datagrams returns a copy of everything received so far.
func (s *UDPSink) Datagrams() []UDPDatagram {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]UDPDatagram(nil), s.got...)
}

// Close stops collecting.
func (s *UDPSink) Close() {
	s.conn.Close()
	<-s.done
}
