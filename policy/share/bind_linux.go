package share

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// bindToDevice sets SO_BINDTODEVICE: the socket sees only packets that
// arrived on dev.
func bindToDevice(dev string) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, dev)
		}); err != nil {
			return err
		}
		return serr
	}
}
