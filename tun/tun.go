package tun

import (
	"fmt"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// Device is a batch packet device. Read fills bufs[i][offset:] with one
// packet each and sets sizes[i]; Write sends bufs[i][offset:]. offset must be
// at least MinOffset: the Linux TUN writes its virtio-net header in front of
// each packet. BatchSize is the largest batch Read returns and never changes.
type Device interface {
	Read(bufs [][]byte, sizes []int, offset int) (n int, err error)
	Write(bufs [][]byte, offset int) (int, error)
	BatchSize() int
	MTU() (int, error)
	Name() (string, error)
	Close() error
}

// MinOffset is the smallest headroom Write accepts: room for the 10-byte
// virtio-net header, rounded up.
const MinOffset = 16

// Create opens (creating it if needed) the TUN interface name with the given
// MTU, with the kernel's offloads when available. Closing the Device removes
// a non-persistent interface together with its addresses and routes.
func Create(name string, mtu int) (Device, error) {
	d, err := wgtun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("create TUN %s: %w", name, err)
	}
	go func() {
		for range d.Events() { // closed by Close
		}
	}()
	return wgDevice{d}, nil
}

// wgDevice narrows wireguard's Device (which also has File and Events) and
// drains its event channel, which would otherwise fill up.
type wgDevice struct{ wgtun.Device }

var _ Device = wgDevice{}
