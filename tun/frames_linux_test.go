package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/drovernet/drover/internal/netnstest"
	"golang.org/x/sys/unix"
)

// Each test gets its own namespace holding one interface, tunName, with
// tunAddr, and a route to peerNet through it; peerAddr plays the far end.
const tunName = "drv-tun0"

var (
	tunAddr  = netip.MustParseAddr("10.99.0.1")
	peerNet  = netip.MustParsePrefix("10.99.1.0/24")
	peerAddr = netip.MustParseAddr("10.99.1.2")
)

// virtio-net header values the tests check (include/uapi/linux/virtio_net.h).
const (
	VirtioNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM: use csum_start, csum_offset
	GSONone         = 0 // VIRTIO_NET_HDR_GSO_NONE
	GSOTCPv4        = 1 // VIRTIO_NET_HDR_GSO_TCPV4
	GSOUDPL4        = 5 // VIRTIO_NET_HDR_GSO_UDP_L4
)

// newNS creates a network namespace drv-tun<tag>…, removed when the test
// ends (skipping the test when not root).
func newNS(t *testing.T, tag string) *netnstest.NetNS {
	t.Helper()
	return netnstest.New(t, "tun"+tag)
}

// goInNS runs fn in ns on a thread of its own (netnstest.NetNS.Do) and
// reports its error on the channel. Sockets and TUN devices belong to the
// namespace they were created in, whichever thread uses them later.
func goInNS(ns *netnstest.NetNS, fn func() error) <-chan error {
	errc := make(chan error, 1)
	go func() { errc <- ns.Do(fn) }()
	return errc
}

// inNS runs fn in ns and fails the test on error.
func inNS(t *testing.T, ns *netnstest.NetNS, fn func() error) {
	t.Helper()
	if err := ns.Do(fn); err != nil {
		t.Fatal(err)
	}
}

// openUp opens tunName in a fresh namespace, brings it up with tunAddr and a
// route to peerNet, then runs more (to make sockets) in the namespace.
func openUp(t *testing.T, tag string, more func() error) (*Frames, *netnstest.NetNS) {
	t.Helper()
	ns := newNS(t, tag)
	var f *Frames
	inNS(t, ns, func() error {
		var err error
		if f, err = Open(tunName); err != nil {
			return err
		}
		if err := Configure(tunName, 1500, []netip.Addr{tunAddr}); err != nil {
			return err
		}
		if err := AddRoute(tunName, Route{Prefix: peerNet}); err != nil {
			return err
		}
		if more != nil {
			return more()
		}
		return nil
	})
	t.Cleanup(func() { f.Close() })
	return f, ns
}

// dialUDP returns a UDP socket (created in the calling thread's namespace)
// connected to to, closed when the test ends.
func dialUDP(t *testing.T, to netip.AddrPort) (*net.UDPConn, error) {
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(to))
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c, nil
}

// readMatch reads frames until match accepts one; it fails the test at a
// deadline. Frames it skips are logged.
func readMatch(t *testing.T, f *Frames, match func(frame []byte) bool) []byte {
	t.Helper()
	buf := make([]byte, MaxFrame)
	f.file.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer f.file.SetReadDeadline(time.Time{})
	for {
		n, err := f.ReadFrame(buf)
		if err != nil {
			t.Fatalf("ReadFrame: %v", err)
		}
		if match(buf[:n]) {
			return buf[:n]
		}
		t.Logf("skipping frame % x", buf[:min(n, 64)])
	}
}

// ipv4 returns the frame's IPv4 packet and its L4 protocol, or ok false.
func ipv4(frame []byte) (pkt []byte, proto byte, ok bool) {
	if len(frame) < VirtioHdrLen+20 {
		return nil, 0, false
	}
	pkt = frame[VirtioHdrLen:]
	if pkt[0]>>4 != 4 || int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) {
		return nil, 0, false
	}
	return pkt, pkt[9], true
}

// hdr is the frame's virtio-net header, decoded (host order: little-endian
// on the machines we test on).
type hdr struct {
	flags, gsoType                         byte
	hdrLen, gsoSize, csumStart, csumOffset uint16
}

func parseHdr(frame []byte) hdr {
	le := binary.LittleEndian
	return hdr{frame[0], frame[1], le.Uint16(frame[2:]), le.Uint16(frame[4:]), le.Uint16(frame[6:]), le.Uint16(frame[8:])}
}

// sum16 adds b to a one's-complement sum (RFC 1071).
func sum16(sum uint32, b []byte) uint32 {
	for ; len(b) >= 2; b = b[2:] {
		sum += uint32(b[0])<<8 | uint32(b[1])
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// ipv4Packet builds an IPv4 packet with header checksum and the L4
// checksum at l4[csumAt], over the pseudo-header (RFC 768, RFC 9293 3.1).
func ipv4Packet(src, dst netip.Addr, proto byte, l4 []byte, csumAt int) []byte {
	p := make([]byte, 20+len(l4))
	be := binary.BigEndian
	p[0] = 0x45
	be.PutUint16(p[2:], uint16(len(p)))
	p[6] = 0x40 // DF
	p[8] = 64
	p[9] = proto
	copy(p[12:16], src.AsSlice())
	copy(p[16:20], dst.AsSlice())
	be.PutUint16(p[10:], fold(sum16(0, p[:20])))
	copy(p[20:], l4)
	l4 = p[20:]
	c := fold(sum16(sum16(uint32(proto)+uint32(len(l4)), p[12:20]), l4))
	if c == 0 && proto == unix.IPPROTO_UDP {
		c = 0xffff // zero means "no checksum" in UDP
	}
	be.PutUint16(l4[csumAt:], c)
	return p
}

// udp4 builds an IPv4/UDP datagram with correct checksums.
func udp4(src, dst netip.AddrPort, payload []byte) []byte {
	u := make([]byte, 8+len(payload))
	be := binary.BigEndian
	be.PutUint16(u[0:], src.Port())
	be.PutUint16(u[2:], dst.Port())
	be.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], payload)
	return ipv4Packet(src.Addr(), dst.Addr(), unix.IPPROTO_UDP, u, 6)
}

// isUDPTo matches an IPv4/UDP frame to dst and returns its payload.
func isUDPTo(frame []byte, dst netip.AddrPort) ([]byte, bool) {
	pkt, proto, ok := ipv4(frame)
	if !ok || proto != unix.IPPROTO_UDP || len(pkt) < 28 {
		return nil, false
	}
	d, _ := netip.AddrFromSlice(pkt[16:20])
	if d != dst.Addr() || binary.BigEndian.Uint16(pkt[22:]) != dst.Port() {
		return nil, false
	}
	return pkt[28:], true
}

func TestFramesRead(t *testing.T) {
	to := netip.AddrPortFrom(peerAddr, 9)
	var c *net.UDPConn
	f, _ := openUp(t, "read", func() (err error) { c, err = dialUDP(t, to); return err })
	payload := []byte("drover frame read")
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	var got []byte
	frame := readMatch(t, f, func(fr []byte) (ok bool) { got, ok = isUDPTo(fr, to); return ok })
	if !bytes.Equal(got, payload) {
		t.Errorf("payload: got %q, want %q", got, payload)
	}
	h := parseHdr(frame)
	switch {
	case h == hdr{}:
	case h.flags == VirtioNeedsCsum && h.gsoType == GSONone && h.csumStart == 20 && h.csumOffset == 6:
	default:
		t.Errorf("header: got %+v, want all zero or NEEDS_CSUM at 20+6", h)
	}
	t.Logf("header %+v", h)
}

func TestFramesReadTooLarge(t *testing.T) {
	to := netip.AddrPortFrom(peerAddr, 9)
	var c *net.UDPConn
	f, _ := openUp(t, "short", func() (err error) { c, err = dialUDP(t, to); return err })
	if _, err := c.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	f.file.SetReadDeadline(time.Now().Add(5 * time.Second))
	small := make([]byte, 100)
	for {
		n, err := f.ReadFrame(small)
		if errors.Is(err, ErrFrameTooLarge) {
			if n != 0 {
				t.Errorf("n: got %d, want 0", n)
			}
			break
		}
		if err != nil {
			t.Fatalf("ReadFrame(100 bytes) of a 1038-byte frame: got %v, want ErrFrameTooLarge", err)
		}
		t.Logf("skipping frame % x", small[:n]) // something else that fit
	}
	// The kernel dropped the whole frame: the next read gets the next one.
	if _, err := c.Write([]byte("next")); err != nil {
		t.Fatal(err)
	}
	var got []byte
	readMatch(t, f, func(fr []byte) (ok bool) { got, ok = isUDPTo(fr, to); return ok })
	if string(got) != "next" {
		t.Errorf("frame after the dropped one: payload %q, want %q", got, "next")
	}
}

func TestFramesWrite(t *testing.T) {
	var ln *net.UDPConn
	f, _ := openUp(t, "write", func() (err error) {
		ln, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(tunAddr, 0)))
		if err == nil {
			t.Cleanup(func() { ln.Close() })
		}
		return err
	})
	dst := ln.LocalAddr().(*net.UDPAddr).AddrPort()
	src := netip.AddrPortFrom(peerAddr, 40000)
	payload := []byte("drover frame write, in three parts")
	pkt := udp4(src, dst, payload)
	hdr := make([]byte, VirtioHdrLen) // all zero: a plain packet
	if err := f.WriteFrame([][]byte{hdr, pkt[:len(pkt)/2], pkt[len(pkt)/2:]}); err != nil {
		t.Fatalf("WriteFrame: %v", err)
	}
	ln.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, from, err := ln.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	if !bytes.Equal(buf[:n], payload) || from != src {
		t.Errorf("received %q from %v, want %q from %v", buf[:n], from, payload, src)
	}
}

func TestFramesWriteDown(t *testing.T) {
	ns := newNS(t, "down")
	var f *Frames
	inNS(t, ns, func() (err error) { f, err = Open(tunName); return err })
	t.Cleanup(func() { f.Close() })
	pkt := udp4(netip.AddrPortFrom(peerAddr, 40000), netip.AddrPortFrom(tunAddr, 9), []byte("x"))
	err := f.WriteFrame([][]byte{make([]byte, VirtioHdrLen), pkt})
	if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), tunName) {
		t.Errorf("WriteFrame to a down interface: got %v, want EIO naming %s", err, tunName)
	}
	if err := f.WriteFrame(make([][]byte, MaxParts+1)); err != ErrTooManyParts {
		t.Errorf("WriteFrame of %d parts: got %v, want ErrTooManyParts", MaxParts+1, err)
	}
}

func TestFramesOffloads(t *testing.T) {
	f, _ := openUp(t, "offl", nil)
	got := f.Offloads()
	if !got.TSO {
		t.Errorf("Offloads: got %+v, want TSO (TUN_F_TSO4|TUN_F_TSO6 since Linux 2.6.27)", got)
	}
	if f.Name() != tunName {
		t.Errorf("Name: got %q, want %q", f.Name(), tunName)
	}
	t.Logf("offloads %+v", got)
}

// blockedIn polls goroutine stacks until one is parked in the poller inside
// fn, or the deadline passes.
func blockedIn(fn string, deadline time.Time) bool {
	buf := make([]byte, 1<<20)
	for time.Now().Before(deadline) {
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, fn) && strings.Contains(g, "runtime_pollWait") {
				return true
			}
		}
		time.Sleep(time.Millisecond)
	}
	return false
}

// blockedRead starts a ReadFrame on f in a goroutine, waits until it is
// parked in the poller, and returns the channel its error arrives on.
func blockedRead(t *testing.T, f *Frames) <-chan error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := f.ReadFrame(make([]byte, MaxFrame))
		errc <- err
	}()
	if !blockedIn("(*Frames).ReadFrame", time.Now().Add(5*time.Second)) {
		t.Fatal("ReadFrame never blocked")
	}
	return errc
}

func TestFramesCloseUnblocksRead(t *testing.T) {
	f, ns := openUp(t, "close", nil)
	errc := blockedRead(t, f)
	if err := f.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-errc:
		if err != os.ErrClosed {
			t.Errorf("blocked ReadFrame after Close: got %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadFrame still blocked 5s after Close")
	}
	if _, err := f.ReadFrame(make([]byte, MaxFrame)); err != os.ErrClosed {
		t.Errorf("ReadFrame after Close: got %v, want os.ErrClosed", err)
	}
	if err := f.WriteFrame([][]byte{make([]byte, VirtioHdrLen+20)}); err != os.ErrClosed {
		t.Errorf("WriteFrame after Close: got %v, want os.ErrClosed", err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	// Non-persistent: the interface went with the descriptor.
	inNS(t, ns, func() error {
		_, err := netlink.LinkByName(tunName)
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return fmt.Errorf("link %s after Close: got %v, want not found", tunName, err)
		}
		return nil
	})
}

func TestFramesNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	to := netip.AddrPortFrom(peerAddr, 9)
	var c *net.UDPConn
	var ln *net.UDPConn
	f, _ := openUp(t, "alloc", func() (err error) {
		if c, err = dialUDP(t, to); err != nil {
			return err
		}
		ln, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(tunAddr, 0)))
		if err == nil {
			t.Cleanup(func() { ln.Close() })
		}
		return err
	})
	const runs = 100
	// AllocsPerRun calls the function runs+1 times: queue that many frames
	// (the device queue holds 500) so no read waits for a sender.
	for range runs + 1 {
		if _, err := c.Write([]byte("alloc")); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, MaxFrame)
	f.file.SetReadDeadline(time.Now().Add(10 * time.Second))
	var rerr error
	if a := testing.AllocsPerRun(runs, func() {
		if _, err := f.ReadFrame(buf); err != nil {
			rerr = err
		}
	}); a != 0 {
		t.Errorf("ReadFrame: %v allocs/op, want 0", a)
	}
	if rerr != nil {
		t.Fatalf("ReadFrame: %v", rerr)
	}

	pkt := udp4(netip.AddrPortFrom(peerAddr, 40000), ln.LocalAddr().(*net.UDPAddr).AddrPort(), []byte("alloc"))
	parts := [][]byte{make([]byte, VirtioHdrLen), pkt[:20], pkt[20:]}
	var werr error
	if a := testing.AllocsPerRun(runs, func() {
		if err := f.WriteFrame(parts); err != nil {
			werr = err
		}
	}); a != 0 {
		t.Errorf("WriteFrame: %v allocs/op, want 0", a)
	}
	if werr != nil {
		t.Fatalf("WriteFrame: %v", werr)
	}
}

// TestFramesUDPGSO sends one 10-segment UDP_SEGMENT write (Linux UDP GSO,
// since 4.18) and expects it as a single USO frame.
func TestFramesUDPGSO(t *testing.T) {
	to := netip.AddrPortFrom(peerAddr, 9)
	var c *net.UDPConn
	f, _ := openUp(t, "uso", func() (err error) { c, err = dialUDP(t, to); return err })
	if !f.Offloads().USO {
		t.Skip("kernel predates TUN_F_USO4/6 (Linux 6.2)")
	}
	const seg, segs = 1000, 10
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, seg)
	}); err != nil || serr != nil {
		t.Fatalf("UDP_SEGMENT: %v %v", err, serr)
	}
	payload := bytes.Repeat([]byte("0123456789"), seg*segs/10)
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	var got []byte
	frame := readMatch(t, f, func(fr []byte) (ok bool) { got, ok = isUDPTo(fr, to); return ok })
	h := parseHdr(frame)
	if h.gsoType != GSOUDPL4 || h.gsoSize != seg || h.flags != VirtioNeedsCsum || h.csumStart != 20 || h.csumOffset != 6 {
		t.Errorf("header: got %+v, want gso_type %d, gso_size %d, NEEDS_CSUM at 20+6", h, GSOUDPL4, seg)
	}
	if !bytes.Equal(got, payload) {
		t.Errorf("payload: got %d bytes, want the %d written", len(got), len(payload))
	}
}

// TestFramesTCPGSO plays the far end of a TCP handshake (RFC 9293 3.5) by
// hand, then expects the sender's first burst as one TSO frame.
func TestFramesTCPGSO(t *testing.T) {
	f, ns := openUp(t, "tso", nil)
	if !f.Offloads().TSO {
		t.Skip("kernel did not accept TUN_F_TSO4")
	}
	peer := netip.AddrPortFrom(peerAddr, 80)
	connc := make(chan net.Conn, 1)
	errc := goInNS(ns, func() error {
		c, err := net.DialTimeout("tcp4", peer.String(), 5*time.Second)
		if err != nil {
			return err
		}
		connc <- c
		return nil
	})
	isTCP := func(fr []byte, flags byte) bool {
		pkt, proto, ok := ipv4(fr)
		return ok && proto == unix.IPPROTO_TCP && len(pkt) >= 40 && pkt[33]&flags == flags &&
			binary.BigEndian.Uint16(pkt[22:]) == peer.Port()
	}
	syn := readMatch(t, f, func(fr []byte) bool { return isTCP(fr, 0x02) })[VirtioHdrLen:]
	be := binary.BigEndian
	client, _ := netip.AddrFromSlice(syn[12:16])
	clientPort := be.Uint16(syn[20:])
	const mss = 1400
	sa := make([]byte, 24) // TCP header with one option: MSS
	be.PutUint16(sa[0:], peer.Port())
	be.PutUint16(sa[2:], clientPort)
	be.PutUint32(sa[4:], 1000)                  // our ISN
	be.PutUint32(sa[8:], be.Uint32(syn[24:])+1) // acknowledge their SYN
	sa[12] = 6 << 4                             // data offset: 6 words
	sa[13] = 0x12                               // SYN|ACK
	be.PutUint16(sa[14:], 65535)                // window (no scaling)
	copy(sa[20:], []byte{2, 4, mss >> 8, mss & 0xff})
	synack := ipv4Packet(peerAddr, client, unix.IPPROTO_TCP, sa, 16)
	if err := f.WriteFrame([][]byte{make([]byte, VirtioHdrLen), synack}); err != nil {
		t.Fatalf("write SYN-ACK: %v", err)
	}
	// The dial sends its conn before it returns nil on errc: both can be
	// ready when the select runs, and a nil from errc is a success.
	var c net.Conn
	select {
	case c = <-connc:
	case err := <-errc:
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		c = <-connc
	}
	t.Cleanup(func() { c.Close() })
	go c.Write(make([]byte, 64<<10)) // blocks for ACKs we never send; Close ends it
	frame := readMatch(t, f, func(fr []byte) bool {
		pkt, _, _ := ipv4(fr)
		return isTCP(fr, 0x10) && len(pkt) > 40
	})
	h := parseHdr(frame)
	if h.gsoType != GSOTCPv4 || h.gsoSize != mss || h.flags != VirtioNeedsCsum || h.csumStart != 20 || h.csumOffset != 16 {
		t.Errorf("header: got %+v, want gso_type %d, gso_size %d, NEEDS_CSUM at 20+16", h, GSOTCPv4, mss)
	}
	if n := len(frame) - VirtioHdrLen - 40; n <= mss {
		t.Errorf("payload: got %d bytes, want more than one segment (%d)", n, mss)
	}
	t.Logf("header %+v, frame %d bytes", h, len(frame))
}

// TestFramesLinkDeleted deletes the interface under a blocked ReadFrame: the
// kernel wakes the reader, and reads and writes then fail with EBADFD,
// which the device reports as os.ErrClosed.
func TestFramesLinkDeleted(t *testing.T) {
	f, ns := openUp(t, "del", nil)
	errc := blockedRead(t, f)
	inNS(t, ns, func() error {
		l, err := netlink.LinkByName(tunName)
		if err != nil {
			return err
		}
		return netlink.LinkDel(l)
	})
	select {
	case err := <-errc:
		if err != os.ErrClosed {
			t.Errorf("blocked ReadFrame after link delete: got %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadFrame still blocked 5s after link delete")
	}
	if err := f.WriteFrame([][]byte{make([]byte, VirtioHdrLen+20)}); err != os.ErrClosed {
		t.Errorf("WriteFrame after link delete: got %v, want os.ErrClosed", err)
	}
}
