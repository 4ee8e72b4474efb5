package tun

import "errors"

// VirtioHdrLen is the size of struct virtio_net_hdr
// (include/uapi/linux/virtio_net.h), which precedes every frame.
const VirtioHdrLen = 10

// MaxFrame is the largest frame: the header and a 65535-byte packet. The
// kernel never hands a TUN device a larger packet: IPv4's total length is 16
// bits, and an IPv6 GSO packet stays below the device's gso_max_size (64 KiB
// unless an administrator enables BIG TCP on it, which drover does not).
const MaxFrame = VirtioHdrLen + 65535

// MaxParts is the most parts WriteFrame accepts in one call: one iovec each,
// well below the kernel's UIO_MAXIOV (1024).
const MaxParts = 256

// A frame is the virtio-net header (struct virtio_net_hdr,
// include/uapi/linux/virtio_net.h; VirtioHdrLen bytes) followed by the IP
// packet: flags (NEEDS_CSUM: the L4 checksum is partial), gso_type (none,
// TCPv4, TCPv6, UDP_L4), hdr_len (a hint only: on reads the kernel puts the
// length of its linear buffer there), gso_size (the MSS), csum_start and
// csum_offset. Open puts the device in little-endian mode (TUNSETVNETLE), so
// the 16-bit fields are little-endian on every host. Package router/gso
// decodes the header and does the segmentation and coalescing it asks for.
// A frame whose header is all zero is a plain packet with a complete
// checksum; writing one is always accepted, whatever Offloads reports,
// because Offloads only governs what the kernel sends to us.

// ErrFrameTooLarge is returned by ReadFrame when the frame did not fit in b.
// The kernel has then dropped it: tun_put_user copies what fits and frees
// the skb with the rest, and tun_chr_read_iter returns min(frame length,
// len(b)), so nothing of the frame can be read again. Callers count it and
// read on.
var ErrFrameTooLarge = errors.New("tun: frame larger than the read buffer (dropped)")

// ErrWouldBlock is returned by ReadFrameNoWait when no frame is queued.
var ErrWouldBlock = errors.New("tun: no frame queued")

// ErrTooManyParts is returned by WriteFrame when given more than MaxParts
// parts; nothing is written.
var ErrTooManyParts = errors.New("tun: frame in more than MaxParts parts")

// FrameDevice reads and writes whole frames: a virtio-net header followed by
// one IP packet, which may be a GSO super-packet of up to 64 KiB that the
// reader segments itself. It is the raw form of the Linux TUN device with
// IFF_VNET_HDR, so the router can fuse segmentation and coalescing with ESP
// sealing and opening instead of copying and checksumming each segment.
type FrameDevice interface {
	// ReadFrame reads one frame into b and returns its length. len(b)
	// should be MaxFrame; a longer frame is dropped with ErrFrameTooLarge.
	// ReadFrame is called from one goroutine. After Close it returns
	// os.ErrClosed.
	ReadFrame(b []byte) (int, error)
	// ReadFrameNoWait is ReadFrame for a frame already queued: it returns
	// ErrWouldBlock instead of waiting. A reader that has just handled a
	// frame uses it to take the ones that arrived meanwhile in the same
	// batch.
	ReadFrameNoWait(b []byte) (int, error)
	// WriteFrame writes the concatenation of parts as one frame (one
	// writev), so headers and payload need not be contiguous. It does not
	// retain parts. Safe for concurrent use; after Close it returns
	// os.ErrClosed.
	WriteFrame(parts [][]byte) error
	// Offloads reports what the kernel accepted (TUNSETOFFLOAD).
	Offloads() Offloads
	// Name is the interface's name.
	Name() string
	// Close releases the device and unblocks ReadFrame.
	Close() error
}

// Offloads are the GSO frame types the kernel may hand to ReadFrame; without
// them it segments in software before the packet reaches the device.
// Checksum offload (TUN_F_CSUM, partial checksums with NEEDS_CSUM) is
// always on, since TSO and USO require it.
type Offloads struct {
	// TSO: TUN_F_TSO4|TUN_F_TSO6, so the kernel hands us TCP GSO frames
	// (GSOTCPv4, GSOTCPv6).
	TSO bool
	// USO: TUN_F_USO4|TUN_F_USO6 (Linux 6.2+), so the kernel hands us UDP
	// GSO frames (GSOUDPL4).
	USO bool
}

var _ FrameDevice = (*Frames)(nil)
