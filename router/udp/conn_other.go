//go:build !linux

package udp

import (
	"fmt"
	"net/netip"
)

// Conn is a batched UDP socket. Outside Linux, Listen never returns one.
type Conn struct{}

// Listen returns ErrUnsupported: recvmmsg and sendmmsg are Linux system calls.
func Listen(cfg Config) (*Conn, error) {
	return nil, fmt.Errorf("udp: listen %s: %w", cfg.Local, ErrUnsupported)
}

// ReadBatch returns ErrUnsupported.
func (c *Conn) ReadBatch(msgs []Msg) (int, error) { return 0, ErrUnsupported }

// WriteBatch returns ErrUnsupported.
func (c *Conn) WriteBatch(msgs []Msg) (int, error) { return 0, ErrUnsupported }

// LocalAddr returns the zero AddrPort.
func (c *Conn) LocalAddr() netip.AddrPort { return netip.AddrPort{} }

// Close returns ErrUnsupported.
func (c *Conn) Close() error { return ErrUnsupported }

// SetGRO returns ErrUnsupported.
func (c *Conn) SetGRO(on bool) error { return ErrUnsupported }

// Offloads reports none.
func (c *Conn) Offloads() (gso, gro bool) { return false, false }
