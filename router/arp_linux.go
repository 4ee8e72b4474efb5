package router

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/drovernet/drover/arpsock"
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
		if err != nil && !errors.Is(err, arpsock.ErrNoLink) {
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

// arpPort is one attachment to the bridge: an ARP socket
// (*arpsock.Conn), or a fake in tests.
type arpPort interface {
	// Recv reads one ARP frame into buf; outgoing reports a frame this
	// host sent. It returns arpsock.ErrTimeout when nothing came by
	// deadline, so the caller can check ctx and the bridge.
	Recv(buf []byte, deadline time.Time) (n int, outgoing bool, err error)
	// Send transmits an Ethernet frame to its destination address.
	Send(frame []byte) error
	// MAC is the bridge's MAC now, or arpsock.ErrNoLink once the bridge
	// is gone.
	MAC() (packet.MAC, error)
}

// arpRecvTimeout bounds a read, so that the loop notices a vanished bridge.
const arpRecvTimeout = time.Second

// answerARPOn serves one attachment to the bridge until an error or ctx.
func (r *Router) answerARPOn(ctx context.Context, ifname string) error {
	p, err := arpsock.Open(ifname)
	if err != nil {
		return err
	}
	defer p.Close()
	// A stop must not wait out the receive timeout (up to a second of a
	// daemon's shutdown, before its BGP Cease and its leave): closing
	// the socket wakes the read at once.
	stop := context.AfterFunc(ctx, func() { p.Close() })
	defer stop()
	return r.serveARP(ctx, p, ifname)
}

// serveARP answers the ARP requests p receives until an error or ctx.
func (r *Router) serveARP(ctx context.Context, p arpPort, ifname string) error {
	mac, err := p.MAC()
	if err != nil {
		return err
	}
	r.log.Info("answering ARP for remote addresses", "bridge", ifname, "mac", mac)
	buf := make([]byte, 128)
	reply := make([]byte, 0, packet.EthHeaderLen+packet.ARPLen)
	for ctx.Err() == nil {
		n, outgoing, err := p.Recv(buf, time.Now().Add(arpRecvTimeout))
		if err != nil {
			if errors.Is(err, arpsock.ErrTimeout) {
				if _, err := p.MAC(); err != nil {
					return arpsock.ErrNoLink // bridge deleted: wait for a new one
				}
				continue
			}
			return fmt.Errorf("read %s: %w", ifname, err)
		}
		if outgoing {
			continue // sent by this host: a tap sees them (a socket for ARP alone does not)
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
		if mac, err = p.MAC(); err != nil {
			return arpsock.ErrNoLink
		}
		reply = packet.AppendEth(reply[:0], req.SenderMAC, mac, packet.EtherTypeARP)
		reply = packet.AppendARPReply(reply, &req, mac)
		if err := p.Send(reply); err != nil {
			// One line per request would be one per ARP retry of every
			// container while the bridge is unwell: rate-limited.
			r.rlog.Warn("ARP reply", "bridge", ifname, "err", err)
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
