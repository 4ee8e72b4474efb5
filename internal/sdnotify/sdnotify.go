// Package sdnotify tells systemd how a Type=notify service is doing, the
// protocol of sd_notify(3): one datagram of "KEY=VALUE" lines to the
// AF_UNIX socket named by $NOTIFY_SOCKET. drover sends READY=1 once the
// daemon routes and serves its control socket, and STOPPING=1 when it
// starts to shut down (deploy/systemd/drover.service).
package sdnotify

import (
	"fmt"
	"net"
	"os"
)

// Env is the variable systemd sets for a Type=notify service.
const Env = "NOTIFY_SOCKET"

// Notify sends state (e.g. "READY=1", or several lines) to $NOTIFY_SOCKET.
// It reports false, and does nothing, when the variable is unset: the
// daemon was not started by systemd, or by a unit without Type=notify.
func Notify(state string) (bool, error) {
	sock := os.Getenv(Env)
	if sock == "" {
		return false, nil
	}
	// A leading '@' names an abstract socket; the net package maps it to
	// the leading NUL byte the kernel expects.
	if sock[0] != '/' && sock[0] != '@' {
		return false, fmt.Errorf("%s=%q: not an absolute path or an abstract socket name", Env, sock)
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("%s: %w", Env, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("%s: %w", Env, err)
	}
	return true, nil
}
