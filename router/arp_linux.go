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
			r.log.Warn("ARP responder", "bridge", ifname, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

var errNoLink = errors.New("no such interface")

// answerARPOn serves one attachment to the bridge until an error or ctx.
func (r *Router) answerARPOn(ctx context.Context, ifname string) error {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return errNoLink
	}
	var mac packet.MAC
	if len(ifi.HardwareAddr) != len(mac) {
		return fmt.Errorf("%s: not an Ethernet interface", ifname)
	}
	copy(mac[:], ifi.HardwareAddr)
	proto := htons(unix.ETH_P_ARP)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		return fmt.Errorf("bind %s: %w", ifname, err)
	}
	// A receive timeout lets the loop notice ctx and a vanished bridge.
	tv := unix.Timeval{Sec: 1}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("%s: SO_RCVTIMEO: %w", ifname, err)
	}
	r.log.Info("answering ARP for remote addresses", "bridge", ifname, "mac", mac)
	buf := make([]byte, 128)
	reply := make([]byte, 0, packet.EthHeaderLen+packet.ARPLen)
	for ctx.Err() == nil {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				if _, err := net.InterfaceByIndex(ifi.Index); err != nil {
					return errNoLink // bridge deleted: wait for a new one
				}
				continue
			}
			return fmt.Errorf("read %s: %w", ifname, err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
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
		cur, err := net.InterfaceByIndex(ifi.Index)
		if err != nil {
			return errNoLink
		}
		copy(mac[:], cur.HardwareAddr)
		reply = packet.AppendEth(reply[:0], req.SenderMAC, mac, packet.EtherTypeARP)
		reply = packet.AppendARPReply(reply, &req, mac)
		to := &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index, Halen: 6}
		copy(to.Addr[:], req.SenderMAC[:])
		if err := unix.Sendto(fd, reply, 0, to); err != nil {
			r.log.Warn("ARP reply", "bridge", ifname, "err", err)
			continue
		}
		r.arpReplies.Add(1)
	}
	return nil
}

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
