package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"github.com/vishvananda/netns"
)

// reexecInNetns moves the process into the named network namespace and
// replaces it with itself (args minus the --netns flag). A Go process cannot
// move all its threads into a namespace, but execve(2) from a thread that
// has joined one starts the new image, single-threaded, inside it. This is
// how testenv and `drover lab` start routers in host namespaces without
// ip(8).
func reexecInNetns(name string, args []string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("--netns: %w", err)
	}
	return execInNetns(name, exe, args)
}

// execInNetns joins the named namespace on this thread and execs prog.
func execInNetns(name, prog string, args []string) error {
	runtime.LockOSThread() // the exec must happen on the thread that joined
	h, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("--netns %s: %w", name, err)
	}
	if err := netns.Set(h); err != nil {
		return fmt.Errorf("--netns %s: enter: %w", name, err)
	}
	path, err := exec.LookPath(prog)
	if err != nil {
		return fmt.Errorf("netns %s: %w", name, err)
	}
	return fmt.Errorf("netns %s: exec %s: %w", name, path, syscall.Exec(path, append([]string{prog}, args...), os.Environ()))
}
