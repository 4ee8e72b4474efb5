//go:build linux

package udp

import (
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// oobSize is the control-message room kept per slot: UDP_SEGMENT on send
// and UDP_GRO on receive are each one cmsg of a uint16 or an int,
// CmsgSpace(4) = 24 bytes on 64-bit targets; 64 leaves room for a second
// (IP_PKTINFO is 32).
const oobSize = 64

// scratch is one direction's preallocated system-call arguments: slot i of
// hdrs always points at names[i] and oob[i*oobSize:], and at iovs[i] on
// receive; on send a slot points at a run of iovs (one or two per message,
// several messages in a GSO slot), so a batch only rewrites lengths and
// pointers into these arrays. Addresses of both families are stored in
// RawSockaddrInet6 slots, the larger of the two.
type scratch struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	oob   []byte
}

// init allocates n slots and n*iovsPerMsg iovecs: 1 per message on receive,
// maxIovsPerMsg on send, where a message may be Head and Buf. A batch holds
// at most n messages however they share slots, so a send never runs out.
func (s *scratch) init(n, iovsPerMsg int) {
	s.hdrs = make([]unix.Mmsghdr, n)
	s.iovs = make([]unix.Iovec, n*iovsPerMsg)
	s.names = make([]unix.RawSockaddrInet6, n)
	s.oob = make([]byte, n*oobSize)
	for i := range s.hdrs {
		h := &s.hdrs[i].Hdr
		h.Iov = &s.iovs[i*iovsPerMsg]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&s.names[i]))
		h.Control = &s.oob[i*oobSize]
	}
}

// release drops the references to the caller's buffers held by iovecs
// [0, n), so the Conn does not keep them alive after the call returns.
func (s *scratch) release(n int) {
	for i := range n {
		s.iovs[i].Base = nil
	}
}

// rxBatch is ReadBatch's state. fn is the recvmmsg callback handed to
// RawConn.Read; it is a method value made once, so a call allocates
// nothing, and it talks to ReadBatch through the fields below.
type rxBatch struct {
	scratch
	busy  atomic.Bool
	fn    func(fd uintptr) bool
	n     int           // in: slots prepared
	got   int           // out: datagrams received
	errno syscall.Errno // out: hard error from recvmmsg
	zones map[uint32]string
	gro   atomic.Bool // UDP_GRO is on: look for its control message
}

func (rx *rxBatch) init(n int) {
	rx.scratch.init(n, 1)
	rx.fn = rx.recv
	rx.zones = make(map[uint32]string)
}

// prepare points the first min(len(msgs), batch size) slots at msgs' buffers.
func (rx *rxBatch) prepare(msgs []Msg) int {
	n := min(len(msgs), len(rx.hdrs))
	for i := range n {
		b := msgs[i].Buf
		rx.iovs[i].Base = unsafe.SliceData(b)
		rx.iovs[i].SetLen(len(b))
		h := &rx.hdrs[i]
		h.Hdr.Namelen = unix.SizeofSockaddrInet6
		h.Hdr.SetControllen(oobSize) // the kernel shrinks it to what it wrote
		h.Hdr.Flags = 0
		h.Len = 0
	}
	rx.n, rx.got, rx.errno = n, 0, 0
	return n
}

// recv runs inside RawConn.Read. The socket is non-blocking (Go made it
// so), so recvmmsg takes what is queued and returns; EAGAIN before the
// first datagram means "park me until readable", which returning false
// asks the netpoller to do.
func (rx *rxBatch) recv(fd uintptr) bool {
	for {
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd,
			uintptr(unsafe.Pointer(&rx.hdrs[0])), uintptr(rx.n), 0, 0, 0)
		switch e {
		case 0:
			if r == 0 {
				return false // nothing after all; wait rather than return an empty batch
			}
			rx.got = int(r)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			rx.errno = e
			return true
		}
	}
}

// finish copies the kernel's results into msgs (one per received datagram).
func (rx *rxBatch) finish(msgs []Msg) {
	gro := rx.gro.Load()
	for i := range msgs {
		h := &rx.hdrs[i]
		m := &msgs[i]
		m.N = int(h.Len)
		m.Truncated = h.Hdr.Flags&unix.MSG_TRUNC != 0
		m.Addr = rx.addr(&rx.names[i])
		m.Segment = 0
		if gro && h.Hdr.Controllen > 0 {
			m.Segment = groSize(rx.oob[i*oobSize : i*oobSize+min(int(h.Hdr.Controllen), oobSize)])
		}
	}
}

// groSize returns the segment size from a UDP_GRO control message (SOL_UDP,
// an int: udp(7)), or 0 when b holds none (the datagram was not coalesced).
func groSize(b []byte) int {
	for len(b) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(b) {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && l >= unix.CmsgLen(2) {
			return int(*(*uint16)(unsafe.Pointer(&b[unix.CmsgLen(0)])))
		}
		sp := unix.CmsgSpace(l - unix.CmsgLen(0))
		if sp > len(b) {
			return 0
		}
		b = b[sp:]
	}
	return 0
}

// addr decodes a source sockaddr. IPv4-mapped sources (IPv4 peers of a
// dual-stack socket) are unmapped, so a peer has one address whichever
// socket it reached.
func (rx *rxBatch) addr(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), getPort(&sa4.Port))
	case unix.AF_INET6:
		a := netip.AddrFrom16(sa.Addr)
		if a.Is4In6() {
			a = a.Unmap()
		} else if sa.Scope_id != 0 {
			a = a.WithZone(rx.zone(sa.Scope_id))
		}
		return netip.AddrPortFrom(a, getPort(&sa.Port))
	}
	return netip.AddrPort{}
}

// zone returns the zone name for an interface index, cached: looking it up
// allocates and asks the kernel, which must not happen per packet.
func (rx *rxBatch) zone(index uint32) string {
	if z, ok := rx.zones[index]; ok {
		return z
	}
	z := zoneName(index)
	rx.zones[index] = z
	return z
}

// zoneName names interface index as netip and net do: the interface name,
// or the decimal index if it has none (any more).
func zoneName(index uint32) string {
	if ifi, err := net.InterfaceByIndex(int(index)); err == nil {
		return ifi.Name
	}
	return strconv.FormatUint(uint64(index), 10)
}

// txBatch is WriteBatch's state, shaped like rxBatch. Messages that cannot
// be sent are left out of the slots, and with GSO one slot carries several
// messages, so idx and cnt map slot k back to msgs[idx[k]:idx[k]+cnt[k]].
// A message's size is len(Head)+len(Buf) (Msg.size): that is what GSO
// groups by and what N reports.
type txBatch struct {
	scratch
	busy   atomic.Bool
	fn     func(fd uintptr) bool
	idx    []int
	cnt    []int
	family int
	v6only bool
	scopes map[string]uint32
	// gso: group runs of messages into UDP_SEGMENT sends. Probed in Listen;
	// cleared for good when the kernel says the route cannot do it (EIO).
	gso atomic.Bool

	msgs   []Msg // in: the chunk being sent (borrowed until release)
	n      int   // in: slots prepared
	niov   int   // in: iovecs filled, all pointing into msgs (cleared by release)
	start  int   // progress: first slot not yet handed to the kernel
	sent   int   // out: messages sent
	err    error // out: error of the lowest-indexed failed message
	errIdx int   // index in msgs of err's message
	// redo is the index in msgs of a GSO group the kernel refused, to be
	// sent again one datagram per message (redoCnt of them); -1 for none.
	redo, redoCnt int

	parked  uint64 // times the send buffer was full (EAGAIN); for tests and future counters
	gsoSent uint64 // GSO groups (slots of more than one message) the kernel took
	gsoFail uint64 // GSO groups the kernel refused and that were resent one by one
}

// maxIovsPerMsg: a message is at most two iovecs, Head then Buf.
const maxIovsPerMsg = 2

// GSO limits. A UDP_SEGMENT send is one UDP datagram as far as the socket
// layer goes, so its payload must fit one IPv4 datagram (65535 - 20 - 8;
// IPv6 allows slightly more, the smaller bound serves both), and the kernel
// takes at most UDP_MAX_SEGMENTS segments (64 before Linux 6.2, 128 since).
const (
	gsoMaxBytes    = 65535 - 20 - 8
	gsoMaxSegments = 64
)

func (tx *txBatch) init(n, family int, v6only bool) {
	tx.scratch.init(n, maxIovsPerMsg)
	tx.fn = tx.send
	tx.idx = make([]int, n)
	tx.cnt = make([]int, n)
	tx.family, tx.v6only = family, v6only
	tx.scopes = make(map[string]uint32)
}

// prepare fills slots for the sendable messages of msgs (at most the batch
// size) and fails the others. Every message starts with N = -1. With GSO, a
// run of consecutive messages to one destination whose sizes (Head plus
// Buf) equal the first's (the last may be shorter, and ends the run) shares
// one slot: the iovecs of all its messages in order and a UDP_SEGMENT
// control message with the size, so the kernel builds the datagrams from
// one system-call entry and, through devices that pass GSO packets on
// (veth, loopback, virtio), carries them as one packet as far as the
// receiver. The kernel cuts the slot's bytes every size bytes whatever the
// iovec boundaries, so each datagram is exactly one message's Head||Buf.
// The first plain messages are never grouped (a resend of a refused group).
func (tx *txBatch) prepare(msgs []Msg, plain int) {
	tx.msgs = msgs
	tx.n, tx.niov, tx.start, tx.sent, tx.err, tx.errIdx = 0, 0, 0, 0, nil, len(msgs)
	tx.redo, tx.redoCnt = -1, 0
	gsoOn := tx.gso.Load()
	j := 0             // next iovec
	first := 0         // first iovec of slot tx.n-1
	open := false      // slot tx.n-1 takes more segments
	seg, bytes := 0, 0 // its segment size and payload so far
	for i := range msgs {
		m := &msgs[i]
		m.N = -1
		if open {
			k := tx.n - 1
			if l := m.size(); l <= seg && l > 0 && tx.cnt[k] < gsoMaxSegments && bytes+l <= gsoMaxBytes &&
				m.Addr == msgs[tx.idx[k]].Addr {
				j = tx.putIovs(j, m)
				tx.cnt[k]++
				tx.hdrs[k].Hdr.SetIovlen(j - first)
				bytes += l
				open = l == seg
				continue
			}
			open = false
		}
		k := tx.n
		namelen, err := tx.putAddr(&tx.names[k], m.Addr)
		if err != nil {
			tx.fail(i, err)
			continue
		}
		first = j
		j = tx.putIovs(j, m)
		h := &tx.hdrs[k]
		h.Hdr.Iov = &tx.iovs[first]
		h.Hdr.SetIovlen(j - first)
		h.Hdr.Namelen = namelen
		h.Hdr.SetControllen(0) // set below for a GSO group
		h.Hdr.Flags = 0
		h.Len = 0
		tx.idx[k], tx.cnt[k] = i, 1
		tx.n++
		seg = m.size()
		bytes = seg
		open = gsoOn && seg > 0 && i >= plain
	}
	tx.niov = j
	for k := range tx.n {
		if tx.cnt[k] > 1 {
			putSegment(tx.oob[k*oobSize:], uint16(msgs[tx.idx[k]].size()))
			tx.hdrs[k].Hdr.SetControllen(unix.CmsgSpace(2))
		}
	}
}

// putIovs points iovecs from j on at m's Head (if any) and Buf, and returns
// the next free index. Buf gets an iovec even when empty if Head is empty
// too, so an empty datagram is one zero-length iovec, as before Head
// existed; otherwise empty parts are left out.
func (tx *txBatch) putIovs(j int, m *Msg) int {
	if len(m.Head) > 0 {
		tx.iovs[j].Base = unsafe.SliceData(m.Head)
		tx.iovs[j].SetLen(len(m.Head))
		j++
	}
	if len(m.Buf) > 0 || len(m.Head) == 0 {
		tx.iovs[j].Base = unsafe.SliceData(m.Buf)
		tx.iovs[j].SetLen(len(m.Buf))
		j++
	}
	return j
}

// putSegment writes the UDP_SEGMENT control message (SOL_UDP, a uint16 in
// host order: udp(7)) at the start of b.
func putSegment(b []byte, size uint16) {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&b[unix.CmsgLen(0)])) = size
}

func (tx *txBatch) fail(i int, err error) {
	if i < tx.errIdx {
		tx.err, tx.errIdx = err, i
	}
}

// send runs inside RawConn.Write. sendmmsg stops at the first message the
// kernel refuses and reports only how many went before it (the error is
// lost if that is not zero), so a short count means "call again from
// there": the refused message then comes first and its error is returned,
// and it is skipped. A refused GSO group instead stops the batch and is
// marked for a resend one datagram at a time (redo): the kernel refuses
// UDP_SEGMENT where the route cannot offload the checksum (EIO, after which
// GSO stays off) and for segments longer than the path (EINVAL), and either
// way the datagrams themselves may still go. EAGAIN (socket buffer full)
// parks the goroutine until writable; RawConn.Write then calls send again,
// which resumes at start.
func (tx *txBatch) send(fd uintptr) bool {
	for tx.start < tx.n {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd,
			uintptr(unsafe.Pointer(&tx.hdrs[tx.start])), uintptr(tx.n-tx.start), 0, 0, 0)
		if e == 0 && r == 0 {
			e = unix.EIO // cannot happen for vlen > 0; never spin on it
		}
		switch e {
		case 0:
			for k := tx.start; k < tx.start+int(r); k++ {
				if c := tx.cnt[k]; c > 1 {
					for i := tx.idx[k]; i < tx.idx[k]+c; i++ {
						tx.msgs[i].N = tx.msgs[i].size()
					}
					tx.sent += c
					tx.gsoSent++
				} else {
					tx.msgs[tx.idx[k]].N = int(tx.hdrs[k].Len)
					tx.sent++
				}
			}
			tx.start += int(r)
		case unix.EINTR:
		case unix.EAGAIN:
			tx.parked++
			return false
		default:
			k := tx.start
			if tx.cnt[k] > 1 {
				if e == unix.EIO {
					tx.gso.Store(false)
				}
				tx.gsoFail++
				tx.redo, tx.redoCnt = tx.idx[k], tx.cnt[k]
				return true
			}
			tx.fail(tx.idx[k], e)
			tx.start++
		}
	}
	return true
}

func (tx *txBatch) release() {
	tx.scratch.release(tx.niov)
	tx.niov = 0
	tx.msgs = nil
}

// putAddr writes the sockaddr for destination ap into sa and returns its
// length. An IPv4 socket takes IPv4 and IPv4-mapped destinations; an IPv6
// socket takes IPv6 ones and, unless it is IPv6-only, IPv4 ones in their
// mapped form (RFC 4291 §2.5.5.2), which is how a dual-stack socket sends
// IPv4.
func (tx *txBatch) putAddr(sa *unix.RawSockaddrInet6, ap netip.AddrPort) (uint32, error) {
	a := ap.Addr()
	if tx.family == unix.AF_INET {
		if !a.Is4() && !a.Is4In6() {
			return 0, ErrAddrFamily
		}
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.Unmap().As4()}
		putPort(&sa4.Port, ap.Port())
		return unix.SizeofSockaddrInet4, nil
	}
	if !a.IsValid() || (tx.v6only && (a.Is4() || a.Is4In6())) {
		return 0, ErrAddrFamily
	}
	var scope uint32
	if z := a.Zone(); z != "" && !a.Is4In6() {
		var ok bool
		if scope, ok = tx.scope(z); !ok {
			return 0, ErrZone
		}
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.As16(), Scope_id: scope}
	putPort(&sa.Port, ap.Port())
	return unix.SizeofSockaddrInet6, nil
}

// scope returns the interface index for an IPv6 zone, cached (see
// rxBatch.zone). The cache is never invalidated: a zone names the
// interface it named when first used.
func (tx *txBatch) scope(zone string) (uint32, bool) {
	if s, ok := tx.scopes[zone]; ok {
		return s, true
	}
	var s uint32
	if ifi, err := net.InterfaceByName(zone); err == nil {
		s = uint32(ifi.Index)
	} else if v, err := strconv.ParseUint(zone, 10, 32); err == nil && v != 0 {
		s = uint32(v)
	} else {
		return 0, false
	}
	tx.scopes[zone] = s
	return s, true
}

// Ports in sockaddrs are in network byte order.
func getPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}

func putPort(p *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(port>>8), byte(port)
}
