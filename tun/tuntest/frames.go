// Package tuntest has an in-memory tun.FrameDevice, Frames, so that router
// tests run without root.
package tuntest

import (
	"os"
	"sync"

	"github.com/drovernet/drover/tun"
)

// Frames is an in-memory tun.FrameDevice. Whole frames (virtio-net header
// included) sent on Inbound are returned by ReadFrame, as if from the
// kernel; each frame the router writes arrives on Outbound, its parts
// concatenated into a fresh slice.
type Frames struct {
	Inbound  chan []byte
	Outbound chan []byte
	// Offload is what Offloads reports; NewFrames sets TSO and USO, as a
	// current kernel would. Set it before the router starts.
	Offload tun.Offloads

	closeOnce sync.Once
	closed    chan struct{}
}

var _ tun.FrameDevice = (*Frames)(nil)

// NewFrames returns a frame device with room for 1024 frames each way.
func NewFrames() *Frames {
	return &Frames{
		Inbound:  make(chan []byte, 1024),
		Outbound: make(chan []byte, 1024),
		Offload:  tun.Offloads{TSO: true, USO: true},
		closed:   make(chan struct{}),
	}
}

// ReadFrame blocks for the next frame on Inbound and copies it into b. A
// frame longer than b is dropped with tun.ErrFrameTooLarge, as the kernel
// drops it. After Close it returns os.ErrClosed, even with frames queued.
func (d *Frames) ReadFrame(b []byte) (int, error) {
	return d.read(b, true)
}

// ReadFrameNoWait is ReadFrame for a frame already on Inbound:
// tun.ErrWouldBlock when there is none.
func (d *Frames) ReadFrameNoWait(b []byte) (int, error) {
	return d.read(b, false)
}

// read takes the next frame from Inbound, waiting for one if wait.
func (d *Frames) read(b []byte, wait bool) (int, error) {
	select {
	case <-d.closed:
		return 0, os.ErrClosed
	default:
	}
	var p []byte
	if wait {
		select {
		case p = <-d.Inbound:
		case <-d.closed:
			return 0, os.ErrClosed
		}
	} else {
		select {
		case p = <-d.Inbound:
		default:
			return 0, tun.ErrWouldBlock
		}
	}
	if len(p) > len(b) {
		return 0, tun.ErrFrameTooLarge
	}
	return copy(b, p), nil
}

// WriteFrame copies the concatenation of parts to Outbound. It drops the
// frame when Outbound is full rather than block the router, as a real
// device would never block it. Safe for concurrent use; after Close it
// returns os.ErrClosed.
func (d *Frames) WriteFrame(parts [][]byte) error {
	select {
	case <-d.closed:
		return os.ErrClosed
	default:
	}
	if len(parts) > tun.MaxParts {
		return tun.ErrTooManyParts
	}
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	c := make([]byte, 0, n)
	for _, p := range parts {
		c = append(c, p...)
	}
	select {
	case d.Outbound <- c:
	default:
	}
	return nil
}

// Offloads returns d.Offload.
func (d *Frames) Offloads() tun.Offloads { return d.Offload }

// Name implements tun.FrameDevice.
func (d *Frames) Name() string { return "tuntest" }

// Close unblocks ReadFrame with os.ErrClosed. Closing again does nothing.
func (d *Frames) Close() error {
	d.closeOnce.Do(func() { close(d.closed) })
	return nil
}
