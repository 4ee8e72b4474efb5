package router

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
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

// packetPort is an AF_PACKET socket bound to the bridge for ARP.
type packetPort struct {
	fd      int
	ifindex int
	proto   uint16
}

func openPacketPort(ifname string) (*packetPort, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, errNoLink
	}
	if len(ifi.HardwareAddr) != len(packet.MAC{}) {
		return nil, fmt.Errorf("%s: not an Ethernet interface", ifname)
	}
	proto := htons(unix.ETH_P_ARP)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", ifname, err)
	}
	// A receive timeout lets the loop notice ctx and a vanished bridge.
	tv := unix.Timeval{Sec: 1}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: SO_RCVTIMEO: %w", ifname, err)
	}
	return &packetPort{fd: fd, ifindex: ifi.Index, proto: proto}, nil
}

func (p *packetPort) recv(buf []byte) (int, bool, error) {
	n, from, err := unix.Recvfrom(p.fd, buf, 0)
	if err != nil {
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return 0, false, errTimeout
		}
		return 0, false, err
	}
	ll, ok := from.(*unix.SockaddrLinklayer)
	return n, ok && ll.Pkttype == unix.PACKET_OUTGOING, nil
}

func (p *packetPort) send(frame []byte, to packet.MAC) error {
	sa := &unix.SockaddrLinklayer{Protocol: p.proto, Ifindex: p.ifindex, Halen: 6}
	copy(sa.Addr[:], to[:])
	return unix.Sendto(p.fd, frame, 0, sa)
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

func (p *packetPort) close() { unix.Close(p.fd) }

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
