package tun

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Frames is the Linux TUN device as a FrameDevice: IFF_TUN|IFF_NO_PI|
// IFF_VNET_HDR, so every read and write is one virtio-net header and one IP
// packet (Documentation/networking/tuntap.rst).
//
// The descriptor is non-blocking and registered with the Go poller, which
// parks ReadFrame without holding an OS thread and lets Close wake it. The
// callbacks handed to the poller (readFn, writeFn) are method values made
// once in Open, and their inputs and results live in the struct, so a read
// or write allocates nothing.
type Frames struct {
	name     string
	offloads Offloads
	file     *os.File
	rc       syscall.RawConn
	closed   atomic.Bool
	errDown  error // the wrapped EIO of a write while the interface is down, made once

	// rmu guards the read state. ReadFrame is meant for one goroutine; the
	// lock (uncontended, so a few ns per frame) makes a second reader wait
	// rather than race on riov.
	rmu    sync.Mutex
	riov   [2]unix.Iovec // the caller's b (only during ReadFrame), then spare
	rniov  int
	spare  [1]byte
	rn     int
	rerr   syscall.Errno
	readFn func(fd uintptr) bool // f.read

	// wmu guards the write state: held for one frame, not one packet.
	wmu          sync.Mutex
	iov          [MaxParts]unix.Iovec // points into the caller's parts only during WriteFrame
	niov         int
	wn           int
	werr         syscall.Errno
	writeFn      func(fd uintptr) bool // f.write
	readNoWaitFn func(fd uintptr) bool // f.readNoWait
}

// Open creates (or attaches to) the TUN interface name with
// IFF_TUN|IFF_NO_PI|IFF_VNET_HDR and asks for TUN_F_CSUM|TUN_F_TSO4|
// TUN_F_TSO6, plus TUN_F_USO4|TUN_F_USO6 where the kernel has them (6.2+;
// older kernels reject unknown bits with EINVAL, and Open retries without).
// A new interface is down: bring it up with Configure. Closing removes
// a non-persistent interface, with its addresses and routes.
func Open(name string) (*Frames, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("tun %s: open /dev/net/tun: %w", name, err)
	}
	f, err := setup(fd, name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	// The poller only takes a descriptor that is already non-blocking.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %s: set non-blocking: %w", f.name, err)
	}
	f.file = os.NewFile(uintptr(fd), "/dev/net/tun")
	if f.rc, err = f.file.SyscallConn(); err != nil {
		f.file.Close()
		return nil, fmt.Errorf("tun %s: %w", f.name, err)
	}
	f.readFn = f.read
	f.readNoWaitFn = f.readNoWait
	f.writeFn = f.write
	f.errDown = fmt.Errorf("tun %s: write: %w", f.name, unix.EIO)
	return f, nil
}

// setup attaches fd to the interface and sets its header size and offloads.
func setup(fd int, name string) (*Frames, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return nil, fmt.Errorf("tun %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return nil, fmt.Errorf("tun %s: TUNSETIFF: %w", name, err)
	}
	f := &Frames{name: ifr.Name()} // the kernel expands a name like "drv%d"
	// The header size belongs to the interface, not to this descriptor: an
	// interface we attach to may carry another program's setting (12, say,
	// for virtio_net_hdr_mrg_rxbuf), which would shift every packet.
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, VirtioHdrLen); err != nil {
		return nil, fmt.Errorf("tun %s: TUNSETVNETHDRSZ: %w", f.name, err)
	}
	sz, err := unix.IoctlGetInt(fd, unix.TUNGETVNETHDRSZ)
	if err != nil {
		return nil, fmt.Errorf("tun %s: TUNGETVNETHDRSZ: %w", f.name, err)
	}
	if sz != VirtioHdrLen {
		return nil, fmt.Errorf("tun %s: virtio-net header is %d bytes, want %d", f.name, sz, VirtioHdrLen)
	}
	// Little-endian header fields whatever the host (virtio 1.0's layout,
	// which router/gso decodes); the legacy default is the host's order.
	// Kernels before 4.0 lack the ioctl: on a little-endian host the
	// default is then the same.
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETLE, 1); err != nil && !hostLittleEndian() {
		return nil, fmt.Errorf("tun %s: TUNSETVNETLE: %w", f.name, err)
	}
	const (
		tso = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6
		uso = unix.TUN_F_USO4 | unix.TUN_F_USO6
	)
	err = unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tso|uso)
	if err == nil {
		f.offloads = Offloads{TSO: true, USO: true}
		return f, nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return nil, fmt.Errorf("tun %s: TUNSETOFFLOAD: %w", f.name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tso); err != nil {
		return nil, fmt.Errorf("tun %s: TUNSETOFFLOAD: %w", f.name, err)
	}
	f.offloads = Offloads{TSO: true}
	return f, nil
}

// hostLittleEndian reports whether the host stores integers little-endian.
func hostLittleEndian() bool {
	return binary.NativeEndian.Uint16([]byte{1, 0}) == 1
}

// ReadFrame reads one frame into b, which should be MaxFrame long, and
// returns its length. A frame longer than b is lost (ErrFrameTooLarge).
// Safe for concurrent use, though readers then take turns.
//
// The kernel reports a truncated frame as exactly len(b) bytes, like one
// that fits exactly, so the read offers one spare byte after b (readv): a
// frame that reaches into it did not fit.
func (f *Frames) ReadFrame(b []byte) (int, error) {
	return f.readFrame(b, f.readFn)
}

// ReadFrameNoWait is ReadFrame without waiting: ErrWouldBlock when no frame
// is queued.
func (f *Frames) ReadFrameNoWait(b []byte) (int, error) {
	return f.readFrame(b, f.readNoWaitFn)
}

func (f *Frames) readFrame(b []byte, fn func(uintptr) bool) (int, error) {
	f.rmu.Lock()
	niov := 0
	if len(b) > 0 {
		f.riov[0].Base = &b[0]
		f.riov[0].SetLen(len(b))
		niov++
	}
	f.riov[niov] = unix.Iovec{Base: &f.spare[0]}
	f.riov[niov].SetLen(1)
	niov++
	f.rniov = niov
	err := f.rc.Read(fn)
	n, rerr := f.rn, f.rerr
	f.riov[0], f.rn, f.rerr = unix.Iovec{}, 0, 0 // drop the pointer into b
	f.rmu.Unlock()
	if err != nil {
		return 0, f.pollErr("read", err)
	}
	if rerr == unix.EAGAIN {
		return 0, ErrWouldBlock
	}
	if rerr != 0 {
		return 0, f.sysErr("read", rerr)
	}
	if n > len(b) {
		return 0, ErrFrameTooLarge
	}
	return n, nil
}

// readNoWait is the poller callback for ReadFrameNoWait: it is done after
// one attempt, EAGAIN included.
func (f *Frames) readNoWait(fd uintptr) bool {
	if !f.read(fd) {
		f.rn, f.rerr = 0, unix.EAGAIN
	}
	return true
}

// read is the poller callback for ReadFrame: false (not done) on EAGAIN
// makes the poller wait for the descriptor to become readable. It calls
// readv itself, as write calls writev.
func (f *Frames) read(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall(unix.SYS_READV, fd, uintptr(unsafe.Pointer(&f.riov[0])), uintptr(f.rniov))
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		f.rn, f.rerr = int(n), e
		return true
	}
}

// WriteFrame writes the concatenation of parts as one frame with one writev.
// The frame starts with a virtio-net header (all zero for a plain packet).
// Safe for concurrent use. While the interface is down the kernel refuses
// the write with EIO (tun_get_user), returned wrapped, so errors.Is(err,
// syscall.EIO) tells it apart.
func (f *Frames) WriteFrame(parts [][]byte) error {
	if len(parts) > MaxParts {
		return ErrTooManyParts
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	n, total := 0, 0
	for _, p := range parts {
		if len(p) == 0 {
			continue // an iovec needs a base; an empty part adds nothing
		}
		f.iov[n].Base = &p[0]
		f.iov[n].SetLen(len(p))
		n++
		total += len(p)
	}
	f.niov = n
	err := f.rc.Write(f.writeFn)
	// Drop the pointers into the caller's buffers, which the array would
	// otherwise keep alive until a later frame overwrites them.
	clear(f.iov[:n])
	wn, werr := f.wn, f.werr
	f.wn, f.werr = 0, 0
	if err != nil {
		return f.pollErr("write", err)
	}
	if werr != 0 {
		return f.sysErr("write", werr)
	}
	if wn != total { // a TUN write takes the whole frame or fails
		return fmt.Errorf("tun %s: write: %d of %d bytes: %w", f.name, wn, total, io.ErrShortWrite)
	}
	return nil
}

// write is the poller callback for WriteFrame. It calls writev itself rather
// than through unix.Writev, which builds its iovec slice on every call.
// Like read's, its iovecs hold real pointers (Base *byte) in a heap array,
// which Go never moves, so the kernel may follow them.
func (f *Frames) write(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&f.iov[0])), uintptr(f.niov))
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		f.wn, f.werr = int(n), e
		return true
	}
}

// pollErr maps an error from the poller: after Close it is the poller's
// "use of closed file", which callers see as os.ErrClosed.
func (f *Frames) pollErr(op string, err error) error {
	if f.closed.Load() || errors.Is(err, os.ErrClosed) {
		return os.ErrClosed
	}
	return fmt.Errorf("tun %s: %s: %w", f.name, op, err)
}

// sysErr maps an error from read or writev. EBADFD is what tun_get and so
// every read and write return once the interface is gone (deleted, or its
// namespace destroyed) while the descriptor is still open.
func (f *Frames) sysErr(op string, err error) error {
	switch {
	case f.closed.Load() || errors.Is(err, unix.EBADFD):
		return os.ErrClosed
	case op == "write" && errors.Is(err, unix.EIO):
		return f.errDown
	}
	return fmt.Errorf("tun %s: %s: %w", f.name, op, err)
}

// Offloads reports what the kernel accepted (TUNSETOFFLOAD).
func (f *Frames) Offloads() Offloads { return f.offloads }

// Name is the interface's name, as the kernel assigned it.
func (f *Frames) Name() string { return f.name }

// Close closes the descriptor, which wakes a blocked ReadFrame with
// os.ErrClosed and, for a non-persistent interface, removes it. Closing
// again returns nil.
func (f *Frames) Close() error {
	if f.closed.Swap(true) {
		return nil
	}
	if err := f.file.Close(); err != nil {
		return fmt.Errorf("tun %s: close: %w", f.name, err)
	}
	return nil
}
