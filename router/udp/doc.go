// Package udp is the router's underlay socket: a UDP socket that moves a
// batch of datagrams per system call, recvmmsg(2) and sendmmsg(2), without
// allocating per packet. ESP-in-UDP (RFC 3948, port 4500) and VXLAN
// (RFC 7348, port 4789) both ride on it; the caller picks the port.
//
// It owns the socket, its options, and the system-call scratch. It does
// not own payload buffers, framing, peers or counters: those are the
// router's. It is Linux only; elsewhere Listen returns ErrUnsupported.
//
// # Batching
//
// ReadBatch parks the calling goroutine in the Go netpoller (through the
// socket's syscall.RawConn) until the socket is readable, then takes every
// queued datagram, up to the batch size, in one recvmmsg. WriteBatch hands
// up to a batch-size slice of messages to one sendmmsg and calls again only
// if the kernel stopped early, so a 64-packet burst costs one system call
// in each direction instead of 64. The callbacks given to RawConn are
// method values made once in Listen, and each direction's mmsghdr, iovec,
// sockaddr and control-message arrays are allocated once, sized to
// Config.BatchSize, so steady-state batches allocate nothing. A message
// WriteBatch cannot send is skipped (its N is -1) and the rest still go;
// the error of the first such message is returned.
//
// WriteBatch gathers: a message is Msg.Head followed by Msg.Buf, two iovecs
// of one datagram, so a caller can put headers it built in front of a
// payload that stays in the buffer it was read into, with no headroom and
// no copy (VXLAN: outer and inner headers in Head, the inner payload still
// in the 64 KiB TUN read buffer). The iovec array holds two per message.
//
// # Offloads
//
// WriteBatch uses UDP generic segmentation offload (UDP_SEGMENT, Linux
// 4.18+, probed in Listen, off with Config.NoGSO): a run of consecutive
// messages to one destination with the first one's size, len(Head) +
// len(Buf) (the last may be shorter), goes as one mmsghdr with the iovecs
// of all its messages and a UDP_SEGMENT control message. The stack handles
// the run as one packet as far as the device (or, through veth and
// loopback, as far as the receiving socket) and there cuts it every size
// bytes, whatever the iovec boundaries, into the messages' datagrams. A
// run the kernel refuses is resent datagram by datagram; after EIO (the
// route cannot offload the UDP checksum) GSO stays off. Receivers see the
// same datagrams as without GSO.
//
// SetGRO turns on generic receive offload (UDP_GRO, Linux 5.0+): the
// kernel may then deliver a run of equal-size datagrams from one source as
// one message, with the size in Msg.Segment, and the caller splits it. It
// is opt-in because the caller must bring buffers that hold 64 KiB.
//
// # Ownership and concurrency
//
// The caller owns every Msg, its Buf and its Head. A Conn borrows them
// only for the duration of one ReadBatch or WriteBatch call and drops its
// references before returning, so a buffer may be reused or recycled as
// soon as the call returns (and not before: the kernel writes into or
// reads from it during the call).
//
// ReadBatch and WriteBatch each have their own scratch: one goroutine may
// read while another writes. Each must not be called from two goroutines
// at once; the scratch would be shared, so a Conn panics rather than let
// the kernel write into the wrong buffers. Close may be called from any
// goroutine and unblocks both (net.ErrClosed).
//
// # Addresses
//
// One Conn is one socket of one family, chosen from Config.Local: IPv4, or
// IPv6-only for a specific IPv6 address, or dual-stack for "::" (and for an
// unset address). Peers are netip.AddrPort. Received IPv4 sources are
// always plain IPv4 (a dual-stack socket's IPv4-mapped sources are
// unmapped), and a dual-stack socket accepts plain IPv4 destinations (it
// maps them). A destination the socket's family cannot reach fails with
// ErrAddrFamily without a system call. To serve two specific addresses of
// different families, open two Conns.
//
// # Fragmentation
//
// The socket never sets DF on the outer packet and lets the kernel fragment
// outer datagrams larger than the path: IP_MTU_DISCOVER = IP_PMTUDISC_DONT
// and IPV6_MTU_DISCOVER = IPV6_PMTUDISC_DONT. This is what the Linux ESP
// gateway does (shared/interop, "MTU and fragmentation"): an inner packet
// without DF that no longer fits once encapsulated still reaches the peer,
// as outer fragments that the peer's UDP socket reassembles, instead of
// being dropped by the first smaller link with an ICMP error that would go
// to us, not to the inner sender, who could do nothing with it. Inner
// packets with DF set are the router's business: it answers them with ICMP
// "fragmentation needed" (RFC 1191) against the tunnel MTU before they ever
// reach this socket. The Linux default, IP_PMTUDISC_WANT, would set DF on
// every outer packet and so lose the first oversized packet at any hop with
// a smaller MTU.
//
// # Errors
//
// Listen wraps its errors with %w and names the address. On the packet
// path, errors are sentinels or raw syscall.Errno values (errors.Is(err,
// unix.EMSGSIZE) works) so that a storm of failing sends allocates nothing;
// a closed Conn returns an error matching net.ErrClosed.
package udp
