package udp

import (
	"errors"
	"fmt"
	"net/netip"
)

// Msg is one datagram in a batch. The Conn borrows Buf and Head for the
// duration of one ReadBatch or WriteBatch call and keeps no reference to
// them afterwards.
type Msg struct {
	// Buf is the payload to send (WriteBatch), or the buffer to receive into
	// (ReadBatch): len(Buf), not cap(Buf), is how much of it may be filled.
	Buf []byte
	// Head, if not empty, is sent in front of Buf as part of the same datagram (WriteBatch only: a
	// gather write, two iovecs, nothing copied). ReadBatch ignores it.
	//
	// It lets a caller put headers it built elsewhere (VXLAN's outer and
	// inner headers) in front of a payload that stays where it was read,
	// inside a buffer with no headroom for them. The datagram is Head||Buf,
	// of len(Head)+len(Buf) bytes: that sum is the message's size for GSO
	// grouping (Config.NoGSO) and for N. Either part may be empty.
	Head []byte
	// N is set by both calls. ReadBatch: the number of bytes received into
	// Buf. WriteBatch: the number of bytes sent, len(Head)+len(Buf), or -1
	// if this message was not sent (bad destination, or the kernel refused
	// it).
	N int
	// Addr is the destination (WriteBatch) or the source (ReadBatch). Sources
	// of IPv4 datagrams are always plain IPv4 addresses, never IPv4-mapped
	// IPv6 ones, whatever the socket's family, so they compare equal to the
	// underlay addresses peers announce. Link-local IPv6 sources carry their
	// zone (the interface name).
	Addr netip.AddrPort
	// Truncated is set by ReadBatch when the datagram was longer than Buf
	// and only its first N bytes were kept. The caller should drop it: the
	// rest is gone.
	Truncated bool
	// Segment is set by ReadBatch on a Conn with GRO on (SetGRO): when the
	// kernel coalesced several datagrams from one source into Buf, each is
	// Segment bytes long except the last, which may be shorter; 0 means Buf
	// holds one datagram. WriteBatch ignores it (see Config.NoGSO).
	Segment int
}

// size is the length of the datagram m sends: Head||Buf.
func (m *Msg) size() int { return len(m.Head) + len(m.Buf) }

// Config configures Listen. The zero value of every field but Local means
// "use the default".
type Config struct {
	// Local is the address and port to bind. Port 0 picks a free port (see
	// Conn.LocalAddr). An IPv4 or IPv4-mapped address gives an IPv4 socket;
	// an IPv6 address gives an IPv6-only socket; the IPv6 unspecified
	// address "::" gives a dual-stack socket that serves both families; an
	// invalid (zero) address does too, or gives an IPv4 socket on a kernel
	// without IPv6. The caller chooses the port: 4500 for ESP-in-UDP (RFC 3948
	// §3), 4789 for VXLAN (RFC 7348 §5).
	Local netip.AddrPort
	// RecvBuffer and SendBuffer are the socket buffer sizes in bytes
	// (SO_RCVBUF, SO_SNDBUF). 0 means DefaultSocketBuffer; a negative value
	// leaves the kernel default. Running as root (CAP_NET_ADMIN) the size is
	// forced past net.core.rmem_max/wmem_max with SO_RCVBUFFORCE and
	// SO_SNDBUFFORCE; otherwise the kernel caps it at those sysctls.
	RecvBuffer, SendBuffer int
	// BatchSize is the most datagrams one system call moves, and so the
	// size of the Conn's preallocated scratch. 0 means DefaultBatchSize; at
	// most MaxBatchSize.
	BatchSize int
	// NoGSO turns off UDP generic segmentation offload on send. By default
	// WriteBatch sends each run of consecutive messages to one destination
	// with equal sizes (len(Head)+len(Buf), however split between the two;
	// the last may be shorter) as one UDP_SEGMENT system-call entry, where
	// the kernel has it (Linux 4.18+, probed in Listen); a group the kernel
	// refuses is resent datagram by datagram, and after EIO (no checksum
	// offload on the route) GSO stays off. The receiver sees the same
	// datagrams either way: each one message's Head||Buf.
	NoGSO bool
}

const (
	// DefaultBatchSize is Config.BatchSize when it is 0.
	DefaultBatchSize = 64
	// MaxBatchSize is the kernel's UIO_MAXIOV: recvmmsg and sendmmsg
	// silently clamp a longer vector to it.
	MaxBatchSize = 1024
	// DefaultSocketBuffer is Config.RecvBuffer and Config.SendBuffer when 0:
	// room for about 1500 full-size datagrams queued (the kernel charges
	// each ~2 KiB of truesize against the buffer), so a burst while the
	// reader is descheduled is not dropped.
	DefaultSocketBuffer = 4 << 20
)

// Errors returned per message by WriteBatch, without a system call.
var (
	// ErrAddrFamily: the destination is invalid, or is of a family the
	// socket cannot send to (IPv6 from an IPv4 socket, IPv4 from an
	// IPv6-only socket).
	ErrAddrFamily = errors.New("udp: destination address invalid or not of the socket's family")
	// ErrZone: the destination's IPv6 zone names no interface.
	ErrZone = errors.New("udp: unknown IPv6 zone")
)

// ErrUnsupported is returned by Listen where batched UDP is not implemented
// (anything but Linux).
var ErrUnsupported = errors.New("udp: batched UDP sockets need Linux")

// withDefaults returns cfg with zero fields replaced by defaults.
func (cfg Config) withDefaults() Config {
	if cfg.RecvBuffer == 0 {
		cfg.RecvBuffer = DefaultSocketBuffer
	}
	if cfg.SendBuffer == 0 {
		cfg.SendBuffer = DefaultSocketBuffer
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	return cfg
}

func (cfg Config) validate() error {
	if cfg.BatchSize < 0 || cfg.BatchSize > MaxBatchSize {
		return fmt.Errorf("BatchSize %d: must be 1..%d", cfg.BatchSize, MaxBatchSize)
	}
	return nil
}
