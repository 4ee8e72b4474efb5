package router

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drovernet/drover/router/packet"
)

// AnswerARP answers ARP requests on the container bridge ifname for
// addresses that a live remote peer owns, with the bridge's own MAC, so that
// a container which holds the whole cluster CIDR as on-link (the flat /16
// model Rancher used) sends its frames for remote containers to this host,
// which routes them into the tunnel. Local containers answer for
// themselves and unknown addresses get no answer (RFC 826; this is proxy
// ARP, RFC 1027, limited to what the forwarding table says is remote).
//
// The bridge may not exist yet (the CNI plugin creates it with the first
// container) or may be recreated; AnswerARP waits for it and reattaches. It
// returns when ctx is done.
func (r *Router) AnswerARP(ctx context.Context, ifname string) error {
	for {
		err := r.answerARPOn(ctx, ifname)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !errors.Is(err, errNoLink) {
			// Retried every second: a lasting fault is rate-limited.
			r.rlog.Warn("ARP responder", "bridge", ifname, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

var (
	errNoLink  = errors.New("no such interface")
	errTimeout = errors.New("no frame within the receive timeout")
)

// arpPort is one attachment to the bridge: an AF_PACKET socket
// (packetPort), or a fake in tests.
type arpPort interface {
	// recv reads one ARP frame into buf; outgoing reports a frame this
	// host sent. It returns errTimeout when nothing came for a while, so
	// the caller can check ctx and the bridge.
	recv(buf []byte) (n int, outgoing bool, err error)
	// send transmits an Ethernet frame to the station to.
	send(frame []byte, to packet.MAC) error
	// mac is the bridge's MAC now, or errNoLink once the bridge is gone.
	mac() (packet.MAC, error)
}

// answerARPOn serves one attachment to the bridge until an error or ctx.
func (r *Router) answerARPOn(ctx context.Context, ifname string) error {
	p, err := openPacketPort(ifname)
	if err != nil {
		return err
	}
	defer p.close()
	// A stop must not wait out the receive timeout (up to a second of a
	// daemon's shutdown, before its BGP Cease and its leave): closing
	// the socket wakes the read at once.
	stop := context.AfterFunc(ctx, p.close)
	defer stop()
	return r.serveARP(ctx, p, ifname)
}

// serveARP answers the ARP requests p receives until an error or ctx.
func (r *Router) serveARP(ctx context.Context, p arpPort, ifname string) error {
	mac, err := p.mac()
	if err != nil {
		return err
	}
	r.log.Info("answering ARP for remote addresses", "bridge", ifname, "mac", mac)
	buf := make([]byte, 128)
	reply := make([]byte, 0, packet.EthHeaderLen+packet.ARPLen)
	for ctx.Err() == nil {
		n, outgoing, err := p.recv(buf)
		if err != nil {
			if errors.Is(err, errTimeout) {
				if _, err := p.mac(); err != nil {
					return errNoLink // bridge deleted: wait for a new one
				}
				continue
			}
			return fmt.Errorf("read %s: %w", ifname, err)
		}
		if outgoing {
			continue // our own replies, and the host's own requests
		}
		var eth packet.Eth
		var req packet.ARP
		if eth.Parse(buf[:n]) != nil || eth.Type != packet.EtherTypeARP ||
			req.Parse(buf[packet.EthHeaderLen:n]) != nil || req.Op != packet.ARPRequest {
			continue
		}
		if !r.isRemote(req.TargetIP) {
			continue
		}
		// The bridge's MAC now: a bridge without a fixed address takes the
		// lowest of its ports' and so changes as containers come and go.
		if mac, err = p.mac(); err != nil {
			return errNoLink
		}
		reply = packet.AppendEth(reply[:0], req.SenderMAC, mac, packet.EtherTypeARP)
		reply = packet.AppendARPReply(reply, &req, mac)
		if err := p.send(reply, req.SenderMAC); err != nil {
			// One line per request would be one per ARP retry of every
			// container while the bridge is unwell: rate-limited.
			r.rlog.Warn("ARP reply", "bridge", ifname, "err", err)
			continue
		}
		r.arpReplies.Add(1)
	}
	return nil
}

// packetPort is an AF_PACKET socket bound to the bridge for ARP. The
// descriptor is non-blocking and registered with the Go poller, so a
// deadline bounds each read and close wakes a read in progress.
type packetPort struct {
	file    *os.File
	rc      syscall.RawConn
	ifindex int

	// The poller callbacks' arguments and results: method values made
	// once (readFn, sendFn), not a closure per frame.
	buf       []byte
	n         int
	from      unix.Sockaddr
	err       error
	to        unix.SockaddrLinklayer
	readFn    func(fd uintptr) bool
	sendFn    func(fd uintptr) bool
	closeOnce sync.Once
}

// arpRecvTimeout bounds a read, so that the loop notices a vanished bridge.
const arpRecvTimeout = time.Second

func openPacketPort(ifname string) (*packetPort, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, errNoLink
	}
	if len(ifi.HardwareAddr) != len(packet.MAC{}) {
		return nil, fmt.Errorf("%s: not an Ethernet interface", ifname)
	}
	proto := htons(unix.ETH_P_ARP)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, int(proto))
	if err != nil {
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", ifname, err)
	}
	p := &packetPort{file: os.NewFile(uintptr(fd), "arp:"+ifname), ifindex: ifi.Index}
	if p.rc, err = p.file.SyscallConn(); err != nil {
		p.file.Close()
		return nil, fmt.Errorf("%s: %w", ifname, err)
	}
	p.to = unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index, Halen: 6}
	p.readFn, p.sendFn = p.read, p.sendTo
	return p, nil
}

func (p *packetPort) recv(buf []byte) (int, bool, error) {
	if err := p.file.SetReadDeadline(time.Now().Add(arpRecvTimeout)); err != nil {
		return 0, false, err
	}
	p.buf = buf
	err := p.rc.Read(p.readFn)
	if err == nil {
		err = p.err
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, false, errTimeout
		}
		return 0, false, err
	}
	ll, ok := p.from.(*unix.SockaddrLinklayer)
	return p.n, ok && ll.Pkttype == unix.PACKET_OUTGOING, nil
}

// read is the poller callback for recv: false (not done) on EAGAIN makes
// the poller wait until the socket is readable.
func (p *packetPort) read(fd uintptr) bool {
	p.n, p.from, p.err = unix.Recvfrom(int(fd), p.buf, 0)
	return p.err != unix.EAGAIN && p.err != unix.EINTR
}

func (p *packetPort) send(frame []byte, to packet.MAC) error {
	copy(p.to.Addr[:], to[:])
	p.buf = frame
	if err := p.rc.Write(p.sendFn); err != nil {
		return err
	}
	return p.err
}

// sendTo is the poller callback for send.
func (p *packetPort) sendTo(fd uintptr) bool {
	p.err = unix.Sendto(int(fd), p.buf, 0, &p.to)
	return p.err != unix.EAGAIN && p.err != unix.EINTR
}

func (p *packetPort) mac() (packet.MAC, error) {
	var mac packet.MAC
	ifi, err := net.InterfaceByIndex(p.ifindex)
	if err != nil || len(ifi.HardwareAddr) != len(mac) {
		return mac, errNoLink
	}
	copy(mac[:], ifi.HardwareAddr)
	return mac, nil
}

// close is safe to call twice and from another goroutine: it wakes a read
// in progress.
func (p *packetPort) close() { p.closeOnce.Do(func() { p.file.Close() }) }

// isRemote reports whether a live peer owns a (so traffic to it goes into
// the tunnel) and it is not one of our own addresses.
func (r *Router) isRemote(a netip.Addr) bool {
	st := r.state.Load()
	if _, ok := st.local.Lookup(a); ok {
		return false
	}
	_, ok := st.fib.Lookup(a)
	return ok
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
