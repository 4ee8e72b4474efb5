// Package labns owns the lab's named network namespaces (drv-*): creating
// one with loopback up, running code inside it, deleting it, and sweeping
// what a killed run left behind. It imports nothing of drover and nothing
// of testing, so `drover lab` (package lab) and the tests of the packages
// below it (router/udp, router/gso, tun, through internal/netnstest) share
// it.
package labns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Prefix starts the name of everything the lab and the tests create, so leftovers can be
// recognised and swept.
const Prefix = "drv-"

var nsSeq atomic.Uint32

// UniqueName returns Prefix + tag + a suffix unique to this process, short
// enough for an interface name when tag is at most 4 characters.
func UniqueName(tag string) string {
	return fmt.Sprintf("%s%s%d-%d", Prefix, tag, os.Getpid()%100000, nsSeq.Add(1))
}

// NetNS is a named network namespace (/run/netns/NAME).
type NetNS struct {
	Name   string
	handle netns.NsHandle
}

var runDirOnce sync.Once

// shareRunDir makes /run/netns a shared mount point of its own before the
// first namespace is bind-mounted into it, as iproute2 does (ip/ipnetns.c,
// netns_add). Otherwise a later `ip netns add` by anyone bind-mounts the
// directory onto itself and covers our namespace files: they can then be
// neither unmounted nor removed (EBUSY) until reboot. Best effort: a
// failure here only means the old behaviour.
func shareRunDir() {
	const dir = "/run/netns"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == unix.EINVAL { // not a mount point yet
		if unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, "") == nil {
			_ = unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
		}
	}
}

// Create creates the named namespace with loopback up. The name must
// start with Prefix. The calling thread is never moved: the namespace is
// created on a throwaway locked thread.
func Create(name string) (*NetNS, error) {
	if !strings.HasPrefix(name, Prefix) {
		return nil, fmt.Errorf("netns %q: name must start with %q", name, Prefix)
	}
	runDirOnce.Do(shareRunDir)
	var h netns.NsHandle
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		h, err = netns.NewNamed(name)
	}()
	<-done
	if err != nil {
		return nil, fmt.Errorf("create netns %s: %w", name, err)
	}
	n := &NetNS{Name: name, handle: h}
	nl, err := n.Netlink()
	if err == nil {
		defer nl.Close()
		var lo netlink.Link
		if lo, err = nl.LinkByName("lo"); err == nil {
			err = nl.LinkSetUp(lo)
		}
	}
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("netns %s: loopback up: %w", name, err)
	}
	return n, nil
}

// Path is the namespace's bind mount.
func (n *NetNS) Path() string { return filepath.Join("/run/netns", n.Name) }

// Handle is the namespace file descriptor, valid until Close.
func (n *NetNS) Handle() netns.NsHandle { return n.handle }

// Netlink returns a netlink handle bound to the namespace; close it after use.
func (n *NetNS) Netlink() (*netlink.Handle, error) {
	h, err := netlink.NewHandleAt(n.handle)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", n.Name, err)
	}
	return h, nil
}

// Do runs fn on a fresh OS thread that has joined the namespace. The thread
// is thrown away afterwards (never unlocked), so no other goroutine ever runs
// in the namespace by accident. Sockets fn opens stay in the namespace after
// Do returns.
func (n *NetNS) Do(fn func() error) error {
	if err := DoIn(n.handle, fn); err != nil {
		return fmt.Errorf("netns %s: %w", n.Name, err)
	}
	return nil
}

// DoIn is Do for a namespace known only by its handle.
func DoIn(h netns.NsHandle, fn func() error) error {
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if e := netns.Set(h); e != nil {
			err = fmt.Errorf("enter netns: %w", e)
			return
		}
		err = fn()
	}()
	<-done
	return err
}

// Close deletes the namespace. Processes still inside keep it alive until
// they exit, but its name is gone.
func (n *NetNS) Close() error {
	if n.handle.IsOpen() {
		n.handle.Close()
	}
	err := netns.DeleteNamed(n.Name)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// Sweep deletes every namespace whose name starts with Prefix+tag: the
// leftovers of a run that was killed before it could clean up. Only call it
// with a tag specific to the caller.
func Sweep(tag string) []string {
	ents, _ := os.ReadDir("/run/netns")
	var gone []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), Prefix+tag) {
			if netns.DeleteNamed(e.Name()) == nil {
				gone = append(gone, e.Name())
			}
		}
	}
	return gone
}
