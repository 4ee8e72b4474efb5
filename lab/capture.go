package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ESP capture: an AF_PACKET socket in the underlay namespace sees every
// frame that enters the underlay bridge from a host's uplink. Only frames
// arriving on the bridge's ports are taken (not the copies the bridge sends
// out of other ports, nor the bridge device's own), so each datagram a host
// sends is counted exactly once.
//
// A router that sends with UDP GSO hands the kernel several ESP datagrams as
// one buffer, and veth and the bridge carry it whole: the socket asks for the
// virtio-net header (PACKET_VNET_HDR) to learn the segment size and counts
// each datagram of such a frame.

// ESPPort is the ESP-in-UDP port the lab's routers use (RFC 3948 §2).
const ESPPort = 4500

// ESPKey identifies one ESP packet's (key, sequence number) use: the SA is
// named by the outer source (the sender), the outer destination and the
// SPI the receiver gave it.
type ESPKey struct {
	Src, Dst netip.Addr
	SPI      uint32
	Seq      uint32
}

func (k ESPKey) String() string {
	return fmt.Sprintf("%s→%s spi %#08x seq %d", k.Src, k.Dst, k.SPI, k.Seq)
}

// ESPCapture records the ESP packets crossing the underlay.
type ESPCapture struct {
	f     *os.File
	ports map[int]string // ifindex → port name
	done  chan struct{}

	closing  atomic.Bool
	stopOnce sync.Once
	res      CaptureResult
	resErr   error

	mu      sync.Mutex
	seen    map[ESPKey]int
	times   map[ESPKey][]time.Time // of pairs seen more than once
	first   map[ESPKey]time.Time
	sas     map[saKey]*SAUse
	packets int
	nonESP  int
	plain   map[[2]netip.Addr]int
	err     error
}

type saKey struct {
	src, dst netip.Addr
	spi      uint32
}

// SAUse is one SA as seen on the wire.
type SAUse struct {
	Src, Dst       netip.Addr
	SPI            uint32
	Packets        int
	MinSeq, MaxSeq uint32
	First, Last    time.Time
}

// CaptureResult summarises a capture.
type CaptureResult struct {
	// Packets is the number of ESP packets seen.
	Packets int
	// NonESP counts other datagrams on the ESP port (keepalives, markers).
	NonESP int
	// Duplicates lists every (SA, seq) seen more than once, with the time
	// of each sighting.
	Duplicates map[ESPKey][]time.Time
	// SAs lists the SAs seen, by sender, then first use.
	SAs []SAUse
	// KernelDrops is what the socket lost (PACKET_STATISTICS): packets
	// the capture did not see, so could not check.
	KernelDrops uint32
	// Plain counts frames that carried container traffic unencapsulated
	// (an IPv4 packet from and to the cluster, 10.0.0.0/8), by (source,
	// destination): direct routing's packets.
	Plain map[[2]netip.Addr]int
}

// clusterNet is where the lab's containers live (every cluster CIDR the
// lab uses lies in it).
var clusterNet = netip.MustParsePrefix("10.0.0.0/8")

// SPIs returns the distinct SPIs src used towards dst, in order of first use.
func (r CaptureResult) SPIs(src, dst netip.Addr) []uint32 {
	var out []uint32
	for _, s := range r.SAs {
		if s.Src == src && s.Dst == dst {
			out = append(out, s.SPI)
		}
	}
	return out
}

// String lists the SAs, a line each.
func (r CaptureResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d ESP packets, %d SAs, %d duplicate (SA, seq) pairs, %d other datagrams on port %d, %d lost by the capture\n",
		r.Packets, len(r.SAs), len(r.Duplicates), r.NonESP, ESPPort, r.KernelDrops)
	for _, s := range r.SAs {
		fmt.Fprintf(&b, "  %s→%s spi %#08x: %d packets, seq %d..%d, %s..%s\n", s.Src, s.Dst, s.SPI, s.Packets, s.MinSeq, s.MaxSeq,
			s.First.Format("15:04:05.000"), s.Last.Format("15:04:05.000"))
	}
	return b.String()
}

// htons converts for the AF_PACKET protocol field (network byte order).
func htons(v uint16) uint16 { return v<<8 | v>>8 }

// CaptureESP starts capturing the ESP packets every host sends into the
// underlay. Stop ends it.
func (l *Lab) CaptureESP() (*ESPCapture, error) {
	c := &ESPCapture{ports: map[int]string{}, done: make(chan struct{}), seen: map[ESPKey]int{}, sas: map[saKey]*SAUse{}, plain: map[[2]netip.Addr]int{},
		times: map[ESPKey][]time.Time{}, first: map[ESPKey]time.Time{}}
	err := withNetlink(l.Underlay, func(nl *netlink.Handle) error {
		for h := 1; h <= len(l.Hosts); h++ {
			link, err := nl.LinkByName(l.underlayPort(h))
			if err != nil {
				return err
			}
			c.ports[link.Attrs().Index] = link.Attrs().Name
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var fd int
	err = l.Underlay.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("capture: packet socket in %s: %w", l.Underlay.Name, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("capture: PACKET_VNET_HDR: %w", err)
	}
	// Room for bursts: the reader is a goroutine on a shared machine.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
	c.f = os.NewFile(uintptr(fd), "packet")
	go c.run()
	return c, nil
}

func (c *ESPCapture) run() {
	defer close(c.done)
	rc, err := c.f.SyscallConn()
	if err != nil {
		c.setErr(err)
		return
	}
	// A GSO frame holds up to 64 KiB of IP packet, after the virtio-net
	// header and the Ethernet header.
	buf := make([]byte, vnetHdrLen+14+65536)
	for {
		var n int
		var from unix.Sockaddr
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), buf, 0)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			if !c.closing.Load() {
				c.setErr(err)
			}
			return
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok || ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if _, port := c.ports[ll.Ifindex]; !port {
			continue
		}
		if n < vnetHdrLen {
			continue
		}
		c.frame(buf[vnetHdrLen:n], segmentSize(buf[:vnetHdrLen]), time.Now())
	}
}

// vnetHdrLen is struct virtio_net_hdr, in front of each frame the socket
// reads with PACKET_VNET_HDR (linux/virtio_net.h).
const vnetHdrLen = 10

// virtioGSOUDPL4 is VIRTIO_NET_HDR_GSO_UDP_L4: a UDP GSO frame, cut into
// datagrams of gso_size payload bytes.
const virtioGSOUDPL4 = 5

// segmentSize returns the UDP payload size of each datagram in a UDP GSO
// frame, or 0 for a frame that is one datagram. The packet socket writes
// the header in the host's byte order (virtio 0.9 legacy layout).
func segmentSize(h []byte) int {
	if h[1]&^0x80 != virtioGSOUDPL4 { // 0x80: VIRTIO_NET_HDR_GSO_ECN
		return 0
	}
	return int(binary.NativeEndian.Uint16(h[4:6]))
}

func (c *ESPCapture) setErr(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
	}
}

// frame parses Ethernet / IPv4 or IPv6 / UDP to ESPPort / ESP (RFC 3948 §2.2).
// A frame with a segment size (UDP GSO) carries one datagram per segSize
// bytes of UDP payload, the last one possibly shorter.
func (c *ESPCapture) frame(b []byte, segSize int, now time.Time) {
	if len(b) < 14 {
		return
	}
	var src, dst netip.Addr
	var udp []byte
	switch binary.BigEndian.Uint16(b[12:14]) {
	case unix.ETH_P_IP:
		ip := b[14:]
		if len(ip) >= 20 && ip[0]>>4 == 4 {
			s, d := netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
			if clusterNet.Contains(s) && clusterNet.Contains(d) {
				c.mu.Lock()
				c.plain[[2]netip.Addr{s, d}]++
				c.mu.Unlock()
				return
			}
		}
		if len(ip) < 20 || ip[0]>>4 != 4 || ip[9] != unix.IPPROTO_UDP {
			return
		}
		if binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 {
			return // a fragment: the lab's MTUs never fragment ESP
		}
		ihl := int(ip[0]&0x0f) * 4
		if len(ip) < ihl+8 {
			return
		}
		src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		udp = ip[ihl:]
	case unix.ETH_P_IPV6:
		ip := b[14:]
		if len(ip) < 48 || ip[6] != unix.IPPROTO_UDP {
			return
		}
		src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		udp = ip[40:]
	default:
		return
	}
	if binary.BigEndian.Uint16(udp[2:4]) != ESPPort {
		return
	}
	pl := udp[8:]
	c.mu.Lock()
	defer c.mu.Unlock()
	if segSize <= 0 {
		c.datagram(src, dst, pl, now)
		return
	}
	for len(pl) > 0 {
		n := min(segSize, len(pl))
		c.datagram(src, dst, pl[:n], now)
		pl = pl[n:]
	}
}

// datagram records one UDP payload sent to ESPPort; c.mu is held.
func (c *ESPCapture) datagram(src, dst netip.Addr, pl []byte, now time.Time) {
	// A non-ESP marker (four zero bytes) or a NAT keepalive (one 0xff
	// byte) is not ESP (RFC 3948 §2.2, §2.3).
	if len(pl) < 8 || binary.BigEndian.Uint32(pl[0:4]) == 0 {
		c.nonESP++
		return
	}
	k := ESPKey{Src: src, Dst: dst, SPI: binary.BigEndian.Uint32(pl[0:4]), Seq: binary.BigEndian.Uint32(pl[4:8])}
	c.packets++
	c.seen[k]++
	switch c.seen[k] {
	case 1:
		c.first[k] = now
	case 2:
		c.times[k] = []time.Time{c.first[k], now}
	default:
		c.times[k] = append(c.times[k], now)
	}
	sk := saKey{src, dst, k.SPI}
	s := c.sas[sk]
	if s == nil {
		s = &SAUse{Src: src, Dst: dst, SPI: k.SPI, First: now, MinSeq: k.Seq, MaxSeq: k.Seq}
		c.sas[sk] = s
	}
	s.Packets++
	s.Last = now
	s.MinSeq, s.MaxSeq = min(s.MinSeq, k.Seq), max(s.MaxSeq, k.Seq)
}

// tpacketStats is struct tpacket_stats (linux/if_packet.h).
type tpacketStats struct {
	Packets uint32
	Drops   uint32
}

// Stop ends the capture and returns what it saw; later calls return the
// same.
func (c *ESPCapture) Stop() (CaptureResult, error) {
	c.stopOnce.Do(func() { c.res, c.resErr = c.stop() })
	return c.res, c.resErr
}

func (c *ESPCapture) stop() (CaptureResult, error) {
	var st tpacketStats
	var drops uint32
	if rc, err := c.f.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			l := uint32(unsafe.Sizeof(st))
			_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_PACKET, unix.PACKET_STATISTICS, uintptr(unsafe.Pointer(&st)), uintptr(unsafe.Pointer(&l)), 0)
			if errno == 0 {
				drops = st.Drops
			}
		})
	}
	c.closing.Store(true)
	c.f.Close()
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	res := CaptureResult{Packets: c.packets, NonESP: c.nonESP, Duplicates: map[ESPKey][]time.Time{}, KernelDrops: drops, Plain: maps.Clone(c.plain)}
	for k, ts := range c.times {
		res.Duplicates[k] = ts
	}
	for _, s := range c.sas {
		res.SAs = append(res.SAs, *s)
	}
	sort.Slice(res.SAs, func(i, j int) bool {
		a, b := res.SAs[i], res.SAs[j]
		if a.Src != b.Src {
			return a.Src.Less(b.Src)
		}
		return a.First.Before(b.First)
	})
	return res, c.err
}

// DuplicateList renders up to n duplicates, sorted.
func (r CaptureResult) DuplicateList(n int) []string {
	var out []string
	for k, ts := range r.Duplicates {
		var at []string
		for _, t := range ts {
			at = append(at, t.Format("15:04:05.000"))
		}
		out = append(out, fmt.Sprintf("%s seen %d times (%s)", k, len(ts), strings.Join(at, ", ")))
	}
	slices.Sort(out)
	if len(out) > n {
		out = append(out[:n], fmt.Sprintf("... and %d more", len(out)-n))
	}
	return out
}
