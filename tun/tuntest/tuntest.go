// Package tuntest is an in-memory tun.Device: tests inject packets the
// router reads (as if from the kernel) and collect the packets it writes.
package tuntest

import (
	"errors"
	"os"
	"sync"
)

// Device is an in-memory tun.Device. Packets sent on Inbound are returned by
// Read; packets the router Writes arrive on Outbound (copied).
type Device struct {
	Inbound  chan []byte
	Outbound chan []byte
	mtu      int
	batch    int

	closeOnce sync.Once
	closed    chan struct{}
}

// New returns a device with the given MTU and batch size.
func New(mtu, batch int) *Device {
	return &Device{
		Inbound:  make(chan []byte, 1024),
		Outbound: make(chan []byte, 1024),
		mtu:      mtu,
		batch:    batch,
		closed:   make(chan struct{}),
	}
}

// Read blocks for the first packet, then takes whatever else is queued, up
// to len(bufs).
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	var p []byte
	select {
	case p = <-d.Inbound:
	case <-d.closed:
		return 0, os.ErrClosed
	}
	n := 0
	for {
		if len(p) > len(bufs[n])-offset {
			return n, errors.New("tuntest: packet larger than buffer")
		}
		sizes[n] = copy(bufs[n][offset:], p)
		n++
		if n == len(bufs) {
			return n, nil
		}
		select {
		case p = <-d.Inbound:
		default:
			return n, nil
		}
	}
}

// Write copies each packet to Outbound; it drops packets when Outbound is
// full rather than blocking the router (as a real device would).
func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	select {
	case <-d.closed:
		return 0, os.ErrClosed
	default:
	}
	for _, b := range bufs {
		c := append([]byte(nil), b[offset:]...)
		select {
		case d.Outbound <- c:
		default:
		}
	}
	return len(bufs), nil
}

// BatchSize implements tun.Device.
func (d *Device) BatchSize() int { return d.batch }

// MTU implements tun.Device.
func (d *Device) MTU() (int, error) { return d.mtu, nil }

// Name implements tun.Device.
func (d *Device) Name() (string, error) { return "tuntest", nil }

// Close unblocks Read with os.ErrClosed.
func (d *Device) Close() error {
	d.closeOnce.Do(func() { close(d.closed) })
	return nil
}
