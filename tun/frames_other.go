//go:build !linux

package tun

import (
	"errors"
	"fmt"
)

// Frames is the TUN frame device, which exists only on Linux: the
// virtio-net header and its offloads are Linux's.
type Frames struct{}

// Open fails with errors.ErrUnsupported outside Linux.
func Open(name string) (*Frames, error) {
	return nil, fmt.Errorf("tun %s: frame device: %w", name, errors.ErrUnsupported)
}

// ReadFrame fails with errors.ErrUnsupported outside Linux.
func (*Frames) ReadFrame([]byte) (int, error) { return 0, errors.ErrUnsupported }

// WriteFrame fails with errors.ErrUnsupported outside Linux.
func (*Frames) WriteFrame([][]byte) error { return errors.ErrUnsupported }

// ReadFrameNoWait implements FrameDevice.
func (*Frames) ReadFrameNoWait([]byte) (int, error) { return 0, errors.ErrUnsupported }

// Offloads reports none outside Linux.
func (*Frames) Offloads() Offloads { return Offloads{} }

// Name is empty outside Linux.
func (*Frames) Name() string { return "" }

// Close does nothing outside Linux.
func (*Frames) Close() error { return nil }
